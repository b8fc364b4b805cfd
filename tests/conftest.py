"""The two-engine test bed.

Every test that takes ``server`` runs once per engine:

* PostgreSQL: ``DBTOOLS_TEST_PG_URL`` when set, else a throwaway server from the pgserver
  wheel started for this session (nothing pre-installed is assumed). Each test gets a fresh
  database.
* SQL Server: ``DBTOOLS_TEST_MSSQL_URL`` when set, else a testcontainers SQL Server
  container when a Docker engine answers, else the test is skipped with the reason. Each
  test starts with no BlobDeltaJobs database.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from dbtools.db.engines import JOB_DATABASE, EngineInfo, engine_for
from dbtools.db.environments import parse_url

ENGINES = ("postgresql", "mssql")


@dataclass
class Server:
    """A database to test against: its URL (server-level for SQL Server) and engine."""

    url: URL
    engine: EngineInfo

    @property
    def url_string(self) -> str:
        return self.url.render_as_string(hide_password=False)

    @property
    def cli_url(self) -> str:
        """The URL as a user gives it to the CLI: the password as ${DBTOOLS_TEST_SECRET}, which is
        exported to this process (and so to the CLI processes it starts)."""
        if self.url.password is None:
            return self.url_string
        os.environ["DBTOOLS_TEST_SECRET"] = str(self.url.password)
        template = self.url.set(password="__SECRET__").render_as_string(hide_password=False)
        return template.replace("__SECRET__", "${DBTOOLS_TEST_SECRET}")

    def job_engine(self) -> sa.Engine:
        url = self.url.set(database=JOB_DATABASE) if self.engine.name == "mssql" else self.url
        return sa.create_engine(url, poolclass=NullPool)


# ----------------------------------------------------------------------------- PostgreSQL
@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[URL]:
    given = os.environ.get("DBTOOLS_TEST_PG_URL")
    if given:
        yield parse_url(given, context="DBTOOLS_TEST_PG_URL")
        return
    import pgserver

    data_dir = tempfile.mkdtemp(prefix="dbtools-test-pg-")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pgserver.get_server(data_dir, cleanup_mode="stop")
    try:
        yield make_url(server.get_uri()).set(drivername="postgresql+psycopg")
    finally:
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


@contextlib.contextmanager
def fresh_pg_database(admin_url: URL) -> Iterator[URL]:
    """A new, empty PostgreSQL database for one test; dropped afterwards."""
    name = f"dbtools_t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.set(database=name)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


# ----------------------------------------------------------------------------- SQL Server
_mssql_state: dict[str, object] = {}


def _mssql_url() -> URL:
    """Server URL for SQL Server, or pytest.skip with the reason."""
    if "url" in _mssql_state:
        return _mssql_state["url"]  # type: ignore[return-value]
    if "skip" in _mssql_state:
        if os.environ.get("DBTOOLS_REQUIRE_MSSQL"):
            pytest.fail(f"DBTOOLS_REQUIRE_MSSQL is set but {_mssql_state['skip']}", pytrace=False)
        pytest.skip(str(_mssql_state["skip"]))
    reason = _start_mssql()
    if reason:
        if os.environ.get("DBTOOLS_REQUIRE_MSSQL"):
            pytest.fail(f"DBTOOLS_REQUIRE_MSSQL is set but {reason}", pytrace=False)
        _mssql_state["skip"] = reason
        pytest.skip(reason)
    return _mssql_state["url"]  # type: ignore[return-value]


def _start_mssql() -> str | None:
    """Find or start a SQL Server; return a skip reason when there is none."""
    given = os.environ.get("DBTOOLS_TEST_MSSQL_URL")
    if not given:
        try:
            import docker

            docker.from_env().ping()
        except Exception as exc:  # no engine, no socket, no permission: all mean "no Docker"
            return (
                "SQL Server suite skipped: DBTOOLS_TEST_MSSQL_URL is not set and no Docker engine "
                f"answers ({type(exc).__name__}); .github/workflows/ci.yml runs it against a container"
            )
    try:
        import pyodbc  # noqa: F401
    except ImportError as exc:
        return f"SQL Server suite skipped: pyodbc cannot load ({exc}); install unixODBC and ODBC Driver 18"
    if given:
        _mssql_state["url"] = parse_url(given, context="DBTOOLS_TEST_MSSQL_URL")
        return None
    try:
        from testcontainers.community.mssql import SqlServerContainer
    except ImportError:  # testcontainers < 4.5
        from testcontainers.mssql import SqlServerContainer

    driver = os.environ.get("DBTOOLS_TEST_MSSQL_DRIVER", "ODBC Driver 18 for SQL Server")
    container = SqlServerContainer(
        os.environ.get("DBTOOLS_TEST_MSSQL_IMAGE", "mcr.microsoft.com/mssql/server:2022-latest"),
        dialect="mssql+pyodbc",
    )
    container.start()
    _mssql_state["container"] = container
    url = make_url(container.get_connection_url()).set(
        database="master",
        query={"driver": driver, "TrustServerCertificate": "yes"},
    )
    _mssql_state["url"] = url
    return None


def _reset_mssql(url: URL) -> None:
    engine = sa.create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(
            f"IF DB_ID(N'{JOB_DATABASE}') IS NOT NULL BEGIN "
            f"ALTER DATABASE [{JOB_DATABASE}] SET SINGLE_USER WITH ROLLBACK IMMEDIATE; "
            f"DROP DATABASE [{JOB_DATABASE}]; END"
        )
    engine.dispose()


def pytest_sessionfinish(session, exitstatus):
    container = _mssql_state.get("container")
    if container is not None:
        container.stop()


# ----------------------------------------------------------------------------- both
@pytest.fixture(params=ENGINES)
def server(request) -> Iterator[Server]:
    """A clean database on each available engine (job DB not yet created)."""
    name = request.param
    marks = {m.name for m in request.node.iter_markers()}
    if name == "mssql" and "postgresql_only" in marks:
        pytest.skip("PostgreSQL-only test")
    if name == "postgresql" and "mssql_only" in marks:
        pytest.skip("SQL Server-only test")
    if name == "postgresql":
        admin_url = request.getfixturevalue("pg_admin_url")
        with fresh_pg_database(admin_url) as url:
            yield Server(url, engine_for("postgresql"))
        return
    url = _mssql_url()
    _reset_mssql(url)
    yield Server(url, engine_for("mssql"))


@pytest.fixture
def repo() -> Path:
    return Path(__file__).resolve().parent.parent


class SourceObjects:
    """Creates tables in 'other databases': schemas on PostgreSQL, databases on SQL Server."""

    def __init__(self, server: Server):
        self.server = server
        self.databases: list[str] = []

    def table(self, database: str, table: str, columns: str) -> None:
        e = self.server.engine
        if e.name == "postgresql":
            engine = sa.create_engine(self.server.url, poolclass=NullPool)
            with engine.begin() as conn:
                conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {e.quote(database)}")
                conn.exec_driver_sql(f"CREATE TABLE {e.quote(database)}.{e.quote(table)} ({columns})")
            engine.dispose()
            return
        admin = sa.create_engine(self.server.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            if conn.exec_driver_sql("SELECT DB_ID(?)", (database,)).scalar() is None:
                conn.exec_driver_sql(f"CREATE DATABASE {e.quote(database)}")
                self.databases.append(database)
        admin.dispose()
        engine = sa.create_engine(self.server.url.set(database=database), poolclass=NullPool)
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE TABLE [dbo].{e.quote(table)} ({columns})")
        engine.dispose()

    def drop_all(self) -> None:
        if not self.databases:
            return
        admin = sa.create_engine(self.server.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for database in self.databases:
                quoted = self.server.engine.quote(database)
                conn.exec_driver_sql(
                    f"ALTER DATABASE {quoted} SET SINGLE_USER WITH ROLLBACK IMMEDIATE; DROP DATABASE {quoted};"
                )
        admin.dispose()


@pytest.fixture
def sources(server) -> Iterator[SourceObjects]:
    objects = SourceObjects(server)
    try:
        yield objects
    finally:
        objects.drop_all()


def revision_chain() -> list[tuple[str, str, bool]]:
    """Every upgrade step from base to head, as migration outcomes report them."""
    from alembic.script import ScriptDirectory

    from dbtools.commands import alembic_config

    script = ScriptDirectory.from_config(alembic_config())
    revisions = list(reversed(list(script.walk_revisions("base", "heads"))))
    return [(r.down_revision or "base", r.revision, True) for r in revisions]


UPGRADE_STEPS = revision_chain()
HEAD = UPGRADE_STEPS[-1][1]
