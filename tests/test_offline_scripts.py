"""Offline scripts (`dbtools migrate --sql`) for DBAs to review and apply."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from dbtools import commands
from dbtools.deploy import mssql_script
from dbtools.db.engines import engine_for
from dbtools.deploy.render import render_objects

from .batch_rules import split_batches, violations
from .catalog import snapshot
from .conftest import HEAD, UPGRADE_STEPS, fresh_pg_database

MSSQL_URL = "mssql+pyodbc://dba:${DBTOOLS_UNSET_SECRET}@sql.example.invalid/master?driver=ODBC+Driver+18+for+SQL+Server"


def mssql_offline_script(direction: str) -> str:
    if direction == "upgrade":
        return commands.migrate(url=MSSQL_URL, sql=True).script
    return commands.downgrade(url=MSSQL_URL, revision="base", sql=True, start="head").script


def psql_binary() -> str:
    import pgserver

    bundled = Path(pgserver.__file__).parent / "pginstall" / "bin" / "psql"
    if bundled.exists():
        return str(bundled)
    found = shutil.which("psql")
    if not found:
        pytest.skip("no psql: neither the pgserver wheel's nor one on PATH")
    return found


def apply_with_psql(url: sa.URL, script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "migrate.sql"
    path.write_text(script, encoding="utf-8")
    libpq = url.set(drivername="postgresql").render_as_string(hide_password=False)
    return subprocess.run(
        [psql_binary(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", libpq, "-f", str(path)],
        capture_output=True, text=True,
    )


def catalog_and_log(url: sa.URL):
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            snap = snapshot(conn, engine_for("postgresql"))
            log = [tuple(r) for r in conn.exec_driver_sql(
                'SELECT "ObjectName", "ObjectType", "Action", "Checksum", "PackageVersion" '
                'FROM "BlobDeltaJobs"."BlobDeltaDeploymentLog" ORDER BY "DeploymentId"')]
            version = conn.exec_driver_sql('SELECT version_num FROM "BlobDeltaJobs".alembic_version').scalar()
            return snap, log, version
    finally:
        engine.dispose()


def test_the_postgresql_offline_script_applied_with_psql_equals_an_online_migrate(pg_admin_url, tmp_path):
    script = commands.migrate(url="postgresql://offline/db", sql=True).script

    with fresh_pg_database(pg_admin_url) as offline_db, fresh_pg_database(pg_admin_url) as online_db:
        proc = apply_with_psql(offline_db, script, tmp_path)
        assert proc.returncode == 0, proc.stderr
        commands.migrate(url=online_db.render_as_string(hide_password=False))

        assert catalog_and_log(offline_db) == catalog_and_log(online_db)


def test_a_postgresql_offline_script_from_head_logs_nothing_when_no_procedure_changed(pg_admin_url, tmp_path):
    with fresh_pg_database(pg_admin_url) as db:
        commands.migrate(url=db.render_as_string(hide_password=False))
        before = catalog_and_log(db)
        script = commands.migrate(url="postgresql://offline/db", sql=True, start=HEAD).script

        proc = apply_with_psql(db, script, tmp_path)

        assert proc.returncode == 0, proc.stderr
        assert catalog_and_log(db) == before


def test_the_postgresql_offline_downgrade_removes_everything_psql_applied(pg_admin_url, tmp_path):
    up = commands.migrate(url="postgresql://offline/db", sql=True).script
    down = commands.downgrade(url="postgresql://offline/db", revision="base", sql=True, start="head").script

    with fresh_pg_database(pg_admin_url) as db:
        assert apply_with_psql(db, up, tmp_path).returncode == 0
        proc = apply_with_psql(db, down, tmp_path)
        assert proc.returncode == 0, proc.stderr
        engine = sa.create_engine(db, poolclass=NullPool)
        with engine.connect() as conn:
            snap = snapshot(conn, engine_for("postgresql"))
        engine.dispose()

    assert {row[1] for row in snap["columns"]} == {"alembic_version"}
    assert snap["routines"] == []


@pytest.mark.parametrize("start, database_at", [(None, HEAD), ("0002", HEAD), ("0002", None)],
                         ids=["from-empty-run-twice", "from-0002-on-head", "from-0002-on-empty"])
def test_a_postgresql_offline_script_for_another_revision_stops_first_and_changes_nothing(
        pg_admin_url, tmp_path, start, database_at):
    script = commands.migrate(url="postgresql://offline/db", sql=True, start=start).script

    with fresh_pg_database(pg_admin_url) as db:
        if database_at:
            commands.migrate(url=db.render_as_string(hide_password=False), revision=database_at)
            before = catalog_and_log(db)

        proc = apply_with_psql(db, script, tmp_path)

        assert proc.returncode != 0
        expected = start or "base (no revision)"
        assert (f"dbtools: this script migrates from revision {expected}, but the database is at "
                f"{database_at or 'base (no revision)'}; nothing was changed.") in proc.stderr
        if database_at:
            assert catalog_and_log(db) == before
        else:
            engine = sa.create_engine(db, poolclass=NullPool)
            try:
                with engine.connect() as conn:
                    assert conn.exec_driver_sql("SELECT count(*) FROM pg_catalog.pg_namespace "
                                                "WHERE nspname = 'BlobDeltaJobs'").scalar() == 0
            finally:
                engine.dispose()


@pytest.mark.parametrize("direction", ["upgrade", "downgrade"])
def test_the_sql_server_offline_script_obeys_the_sqlcmd_batch_rules(direction):
    script = mssql_offline_script(direction)

    assert violations(script) == []


def test_the_sql_server_offline_script_creates_the_job_database_then_works_inside_it():
    batches = [b.strip() for b in split_batches(commands.migrate(url=MSSQL_URL, sql=True).script)]

    create_db = next(i for i, b in enumerate(batches) if "CREATE DATABASE [BlobDeltaJobs]" in b)
    use = batches.index("USE [BlobDeltaJobs];")
    begin = next(i for i, b in enumerate(batches) if b.startswith("BEGIN TRANSACTION;"))
    first_table = next(i for i, b in enumerate(batches) if "CREATE TABLE" in b)
    check = next(i for i, b in enumerate(batches) if "[BlobDeltaJobs].[dbo].[alembic_version]" in b)
    assert check < create_db < use < begin < first_table
    assert batches[0].startswith("-- dbtools ")
    assert batches[0].endswith("\nSET QUOTED_IDENTIFIER ON;\nSET ANSI_NULLS ON;\nSET ARITHABORT ON;\nSET XACT_ABORT ON;\n"
                               + mssql_script.START + ";")
    assert batches[1:3] == [mssql_script.revision_check("BlobDeltaJobs", "dbo", None) + ";",
                            mssql_script.guard(None) + ";"]
    assert batches[begin].startswith("BEGIN TRANSACTION;\n\nSET XACT_ABORT ON;")
    assert batches[create_db + 1] == mssql_script.guard(None) + ";"
    assert batches[use + 1] == mssql_script.guard("DB_NAME() <> N'BlobDeltaJobs'") + ";"
    assert batches[-4:] == ["COMMIT;", mssql_script.guard("@@TRANCOUNT <> 0") + ";", "SET NOEXEC OFF;",
                            mssql_script.FINISH + ";"]


@pytest.mark.parametrize("direction", ["upgrade", "downgrade"])
def test_the_sql_server_script_writes_the_deployment_log_without_returning_result_sets(direction):
    # OUTPUT without INTO: a stray result set per row in sqlcmd and SSMS, and Msg 334 once a
    # trigger is put on the log.
    script = mssql_offline_script(direction)
    rows = [line for line in script.splitlines() if line.startswith("INSERT INTO dbo.[BlobDeltaDeploymentLog]")]

    assert rows and all(" OUTPUT " not in line for line in rows)
    assert "OUTPUT inserted.[DeploymentId]" not in script


@pytest.mark.parametrize("start", [None, "0010"])
def test_the_sql_server_revision_check_raises_outside_the_try_that_reads_the_version(start):
    # A RAISERROR of severity 11 or more inside a TRY jumps to its CATCH: the wrong-revision stop
    # would be reported as "the database's revision could not be read".
    check = mssql_script.revision_check("BlobDeltaJobs", "dbo", start)
    inside_try = check[check.index("BEGIN TRY\n"):check.index("END TRY\n")]
    inside_catch = check[check.index("BEGIN CATCH\n"):check.index("END CATCH;\n")]

    assert "sp_executesql" in inside_try and "RAISERROR" not in inside_try
    assert inside_catch == "BEGIN CATCH\n    SET @ReadError = ERROR_MESSAGE();\n"
    assert check.index("could not be read") < check.index("this script migrates from revision")
    assert "ELSE IF ISNULL(@Current, N'') <> ISNULL(" + ("NULL" if start is None else f"N'{start}'") + ", N'')" in check


@pytest.mark.parametrize("direction", ["upgrade", "downgrade"])
def test_every_batch_of_the_sql_server_transaction_proves_it_ran_before_the_next_one_runs(direction):
    """SSMS runs on after an error; each batch's guard stops the script unless the batch before
    it ran to its end: its step marker was set, or the module it created is fresh."""
    batches = [b.strip() for b in split_batches(mssql_offline_script(direction))]
    begin = next(i for i, b in enumerate(batches) if b.startswith("BEGIN TRANSACTION;"))
    commit = batches.index("COMMIT;")

    inside = batches[begin:commit]
    statements, guards = inside[0::2], inside[1::2]

    assert len(statements) == len(guards) >= 2
    step = 0
    for statement, guard in zip(statements, guards):
        module = re.match(r"(CREATE OR ALTER|ALTER) (PROCEDURE|FUNCTION|VIEW) (\S+)", statement)
        if module:
            assert guard == mssql_script.module_guard(module.group(3)) + ";", statement[:80]
        else:
            step += 1
            assert statement.endswith(mssql_script.step_marker(step) + ";"), statement[-120:]
            assert guard == mssql_script.step_guard(step) + ";"


def test_every_sql_server_procedure_is_one_whole_batch_of_the_offline_script():
    batches = [b.strip().rstrip(";") for b in split_batches(commands.migrate(url=MSSQL_URL, sql=True).script)]

    for obj in render_objects("mssql"):
        assert batches.count(obj.sql.strip().rstrip(";")) == 1, obj.name


@pytest.mark.parametrize("bad_script, problem", [
    ("BEGIN TRANSACTION;\nCREATE OR ALTER PROCEDURE dbo.p AS SELECT 1;\nGO\nCOMMIT;\nGO",
     "not the first statement"),
    ("CREATE OR ALTER PROCEDURE dbo.p AS SELECT 1;\nGO", "QUOTED_IDENTIFIER OFF"),
    ("SET QUOTED_IDENTIFIER ON;\nSET ANSI_NULLS OFF;\nGO\nCREATE PROCEDURE dbo.p AS SELECT 1;\nGO", "ANSI_NULLS OFF"),
    ("BEGIN TRANSACTION;\nGO\nCREATE DATABASE x;\nGO\nCOMMIT;\nGO", "CREATE DATABASE inside a transaction"),
    ("BEGIN TRANSACTION;\nGO\nCREATE TABLE t (a int);\nGO", "open transaction"),
])
def test_the_batch_rule_checker_catches_each_kind_of_broken_script(bad_script, problem):
    assert any(problem in v for v in violations(bad_script)), violations(bad_script)


def identity_tables(url: sa.URL) -> set[str]:
    """The job tables with an identity column, as the migrations create them (read on PostgreSQL)."""
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return {r[0] for r in conn.exec_driver_sql(
                "SELECT c.relname FROM pg_catalog.pg_attribute AS a JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid "
                "JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'BlobDeltaJobs' AND a.attidentity <> '' AND a.attnum > 0 AND NOT a.attisdropped")}
    finally:
        engine.dispose()


@pytest.mark.parametrize("start", [None] + [step[1] for step in UPGRADE_STEPS[:-1]])
def test_every_identity_insert_of_an_offline_script_names_a_table_with_an_identity_column(pg_admin_url, start):
    # Alembic's offline bulk insert on SQL Server wrapped every table in SET IDENTITY_INSERT, which
    # fails (Msg 8106) on a table without an identity column.
    script = commands.migrate(url=MSSQL_URL, sql=True, start=start).script
    with fresh_pg_database(pg_admin_url) as url:
        commands.migrate(url=url.render_as_string(hide_password=False))
        with_identity = identity_tables(url)

    named = set(re.findall(r"SET IDENTITY_INSERT (?:\w+|\[[^\]]+\])\.\[?([^\]\s;]+)\]? O(?:N|FF)", script))

    assert with_identity >= {"BlobDeltaRunStep", "BlobDeltaDeletionLog"}, with_identity
    assert named <= with_identity, named - with_identity


@pytest.mark.parametrize("start", [None] + [step[1] for step in UPGRADE_STEPS[:-1]])
def test_every_default_the_sql_server_script_creates_is_named_df_table_column(start):
    # A default SQL Server names itself differently on every server; a later revision could not
    # drop it by name.
    script = commands.migrate(url=MSSQL_URL, sql=True, start=start).script
    defaults = []
    table = None
    for line in script.splitlines():
        created = re.match(r"\s*(?:CREATE TABLE|ALTER TABLE) (?:\[?\w+\]?\.)?\[?(\w+)\]?", line)
        if created:
            table = created.group(1)
        text = line.replace("COLLATE DATABASE_DEFAULT", "")
        if re.search(r"\bDEFAULT\b", text) and not re.search(r"DEFAULT VALUES|@\w+ \w+(\(\d+\))? = ", text):
            defaults.append((table, text.strip()))

    assert "ADD DEFAULT" not in script
    if start is None:
        assert len(defaults) >= 20 and {t for t, _ in defaults} >= {"BlobDeltaRun", "BlobDeltaTableConfig",
                                                                    "BlobDeltaDeploymentLog"}
    for table, text in defaults:
        column = re.search(r"(?:^|\bADD )\[?(\w+)\]? \w", re.sub(r"^ALTER TABLE \S+ ", "", text)).group(1)
        assert f"CONSTRAINT [DF_{table}_{column}] DEFAULT " in text, (table, text)


def test_a_from_empty_script_applies_to_a_job_database_downgraded_to_base(pg_admin_url, tmp_path):
    # Alembic empties alembic_version at base but keeps the table; offline it cannot check first.
    script = commands.migrate(url="postgresql://offline/db", sql=True).script

    with fresh_pg_database(pg_admin_url) as db, fresh_pg_database(pg_admin_url) as online_db:
        commands.migrate(url=db.render_as_string(hide_password=False))
        commands.downgrade(url=db.render_as_string(hide_password=False), revision="base")
        proc = apply_with_psql(db, script, tmp_path)
        commands.migrate(url=online_db.render_as_string(hide_password=False))

        assert proc.returncode == 0, proc.stderr
        (snap, _, version), (online_snap, _, online_version) = catalog_and_log(db), catalog_and_log(online_db)
        assert (snap, version) == (online_snap, online_version)


@pytest.mark.parametrize("engine_url", ["postgresql://offline/db", MSSQL_URL], ids=["postgresql", "mssql"])
def test_an_offline_script_checks_the_revision_again_under_the_migration_lock(engine_url):
    script = commands.migrate(url=engine_url, sql=True, start="0002").script

    lock = script.index("dbtools.migrate")
    if engine_url == MSSQL_URL:
        batches = [b.strip() for b in split_batches(script)]
        at = next(i for i, b in enumerate(batches) if "sys.sp_getapplock" in b)
        # The lock's batch, its guard, then the check under the lock (and its guard).
        assert batches[at + 2].startswith(mssql_script.revision_recheck("dbo", "0002"))
        assert "THROW 50022, N'dbtools: the database is no longer at revision 0002" in batches[at + 2]
        assert batches[at + 3].startswith("IF @@ERROR <> 0")
    else:
        after = script[lock:]
        assert after.index("the database is no longer at revision %") < after.index("ALTER TABLE")
        assert script.index("BEGIN;") < lock


def _offline_mssql_operations():
    import io

    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    buffer = io.StringIO()
    context = MigrationContext.configure(
        dialect_name="mssql", opts={"as_sql": True, "output_buffer": buffer, "literal_binds": True})
    return Operations(context), buffer


def test_a_default_whose_text_holds_default_is_named_before_its_own_default_keyword():
    from sqlalchemy.dialects import mssql
    from sqlalchemy.schema import CreateTable

    table = sa.Table("Modes", sa.MetaData(), sa.Column("Id", sa.Integer, primary_key=True, autoincrement=False),
                     sa.Column("Mode", sa.String(30), nullable=False, server_default="IN DEFAULT MODE"))
    op, buffer = _offline_mssql_operations()

    created = str(CreateTable(table).compile(dialect=mssql.dialect()))
    op.add_column("Modes", sa.Column("Other", sa.String(30), server_default=sa.text("N'A DEFAULT B'")))

    assert "[Mode] VARCHAR(30) NOT NULL CONSTRAINT [DF_Modes_Mode] DEFAULT 'IN DEFAULT MODE'," in created
    assert "ALTER TABLE [Modes] ADD [Other] VARCHAR(30) NULL CONSTRAINT [DF_Modes_Other] DEFAULT N'A DEFAULT B';" \
        in buffer.getvalue()


def test_an_offline_bulk_insert_sets_identity_insert_only_for_rows_that_give_the_identity_a_value():
    # An integer primary key is IDENTITY through SQLAlchemy's implicit autoincrement, without
    # sa.Identity; rows that leave it out must not run under IDENTITY_INSERT ON (Msg 545).
    implicit = sa.Table("Implicit", sa.MetaData(), sa.Column("Id", sa.Integer, primary_key=True),
                        sa.Column("Name", sa.String(10)))
    explicit = sa.Table("Explicit", sa.MetaData(), sa.Column("Id", sa.Integer, sa.Identity(), primary_key=True),
                        sa.Column("Name", sa.String(10)))
    plain = sa.Table("Plain", sa.MetaData(), sa.Column("Code", sa.String(10), primary_key=True))
    op, buffer = _offline_mssql_operations()

    op.bulk_insert(implicit, [{"Id": 1, "Name": "a"}])
    op.bulk_insert(implicit, [{"Name": "b"}])
    op.bulk_insert(explicit, [{"Id": 7, "Name": "c"}])
    op.bulk_insert(plain, [{"Code": "d"}])

    wrapped = re.findall(r"SET IDENTITY_INSERT \[(\w+)\] (ON|OFF)", buffer.getvalue())
    assert wrapped == [("Implicit", "ON"), ("Implicit", "OFF"), ("Explicit", "ON"), ("Explicit", "OFF")]
    assert "INSERT INTO [Implicit] ([Name]) VALUES ('b');" in buffer.getvalue()
