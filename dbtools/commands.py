"""Library-first commands: plain functions the CLI (and tests) call.

Each function takes the target as ``env`` (a name from ``environments.toml``) or ``url``
(``url`` wins), does one thing and returns a value; printing is the CLI's job.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError
from sqlalchemy.pool import NullPool

from .engines import DEPLOYMENT_LOG, JOB_DATABASE, engine_for
from .environments import Target, offline_target, resolve_target
from .errors import ConfigurationError, ConnectionFailed, DeploymentError, first_line
from .migration_env import Outcome
from .paths import repo_root
from .render import write_rendered
from .repeatable import log_table


def alembic_config(target: Target | None = None, stdout=None) -> Config:
    """The repository's Alembic config, optionally bound to a resolved target."""
    cfg = Config(str(repo_root() / "alembic.ini"), stdout=stdout)
    if target is not None:
        cfg.attributes["dbtools.target"] = target
    return cfg


def _run(func, target: Target, revision: str, *, sql: bool, buffer: io.StringIO | None) -> Outcome:
    cfg = alembic_config(target, stdout=buffer)
    if buffer is not None:
        cfg.output_buffer = buffer
    try:
        func(cfg, revision, sql=sql)
    except CommandError as exc:
        raise DeploymentError(f"alembic: {exc}") from exc
    except sa.exc.DBAPIError as exc:
        raise DeploymentError(f"migration failed on {target.masked}: {first_line(exc.orig)}") from exc
    return cfg.attributes["dbtools.outcome"]


@dataclass
class MigrateResult:
    outcome: Outcome
    script: str | None = None


def migrate(env: str | None = None, url: str | None = None, *, revision: str = "head",
            sql: bool = False, start: str | None = None) -> MigrateResult:
    """Upgrade the job database to ``revision`` and deploy procedures when that is head.

    With ``sql=True`` nothing is contacted: the complete script (schema changes and the
    rendered procedures) is returned instead, ``start:revision`` when ``start`` is given.
    """
    if sql:
        target = offline_target(env, url)
        buffer = io.StringIO()
        spec = f"{start}:{revision}" if start else revision
        outcome = _run(command.upgrade, target, spec, sql=True, buffer=buffer)
        return MigrateResult(outcome, buffer.getvalue())
    if start:
        raise ConfigurationError("--from is only for offline scripts (--sql)")
    with resolve_target(env, url) as target:
        return MigrateResult(_run(command.upgrade, target, revision, sql=False, buffer=None))


def downgrade(env: str | None = None, url: str | None = None, *, revision: str,
              sql: bool = False, start: str | None = None) -> MigrateResult:
    """Downgrade the job database to ``revision`` (``base`` removes every object)."""
    if sql:
        if not start:
            raise ConfigurationError("an offline downgrade needs --from REV (the revision the database is at)")
        target = offline_target(env, url)
        buffer = io.StringIO()
        outcome = _run(command.downgrade, target, f"{start}:{revision}", sql=True, buffer=buffer)
        return MigrateResult(outcome, buffer.getvalue())
    with resolve_target(env, url) as target:
        return MigrateResult(_run(command.downgrade, target, revision, sql=False, buffer=None))


def render(engine: str, out_dir: Path) -> list[Path]:
    """Render every procedure of ``engine`` into ``out_dir``; return the files written."""
    return write_rendered(engine_for(engine).name, out_dir)


@dataclass(frozen=True)
class DeployedObject:
    name: str
    kind: str
    action: str
    checksum: str | None
    package_version: str
    deployed_at: object
    deployed_by: str
    deploy_count: int


def job_engine(target: Target) -> sa.Engine:
    """An engine on the job DB of ``target`` (the BlobDeltaJobs database on SQL Server)."""
    url = target.url.set(database=JOB_DATABASE) if target.engine.name == "mssql" else target.url
    return sa.create_engine(url, poolclass=NullPool)


def deployed(env: str | None = None, url: str | None = None) -> tuple[Target, list[DeployedObject], str | None]:
    """What the deployment log says is deployed now, with the current revision."""
    with resolve_target(env, url) as target:
        if target.engine.name == "mssql" and not _job_database_exists(target):
            return target, [], None
        engine = job_engine(target)
        try:
            try:
                conn = engine.connect()
            except sa.exc.DBAPIError as exc:
                raise ConnectionFailed(
                    f"cannot connect to {target.masked} ({target.label}): {first_line(exc.orig)}") from exc
            with conn:
                schema = target.engine.job_schema
                inspector = sa.inspect(conn)
                if not inspector.has_table(DEPLOYMENT_LOG, schema=schema):
                    return target, [], _current_revision(conn, schema)
                table = log_table(target.engine)
                rows = conn.execute(sa.select(table).order_by(table.c.DeploymentId)).all()
                latest: dict[str, sa.Row] = {}
                deploys: dict[str, int] = {}
                for row in rows:
                    latest[row.ObjectName] = row
                    deploys[row.ObjectName] = deploys.get(row.ObjectName, 0) + (row.Action == "Deployed")
                objects = [
                    DeployedObject(r.ObjectName, r.ObjectType, r.Action, r.Checksum, r.PackageVersion,
                                   r.DeployedAt, r.DeployedBy, deploys[name])
                    for name, r in sorted(latest.items())
                ]
                return target, objects, _current_revision(conn, schema)
        finally:
            engine.dispose()


def _job_database_exists(target: Target) -> bool:
    """SQL Server: whether BlobDeltaJobs exists (connecting to it before it does fails with 4060)."""
    server = sa.create_engine(target.url, poolclass=NullPool)
    try:
        with server.connect() as conn:
            return conn.exec_driver_sql("SELECT DB_ID(?)", (JOB_DATABASE,)).scalar() is not None
    except sa.exc.DBAPIError as exc:
        raise ConnectionFailed(
            f"cannot connect to {target.masked} ({target.label}): {first_line(exc.orig)}") from exc
    finally:
        server.dispose()


def _current_revision(conn: sa.Connection, schema: str) -> str | None:
    if not sa.inspect(conn).has_table("alembic_version", schema=schema):
        return None
    table = sa.table("alembic_version", sa.column("version_num"), schema=schema)
    return conn.execute(sa.select(table.c.version_num)).scalar()
