"""Migrations and repeatable deployment on every available engine."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from dataclasses import replace

import pytest
import sqlalchemy as sa

from dbtools import commands
from dbtools.deploy import repeatable
from dbtools.db.engines import DEPLOYMENT_LOG
from dbtools.db.environments import mask
from dbtools.deploy.migration_env import mssql_lock
from dbtools.errors import DeploymentError
from dbtools.upsert.specs import current_specs
from dbtools.deploy.render import render_objects

from .catalog import snapshot
from .conftest import HEAD, UPGRADE_STEPS

JOB_TABLES = {
    "BlobDeltaTableConfig",
    "BlobDeltaHighWatermark",
    "BlobDeltaRun",
    "BlobDeltaRunStep",
    "BlobDeltaMissingParentsQueue",
    "BlobDeltaStepScript",
    "BlobDeltaPlanScript",
    "BlobDeltaTargetVersion",
    "BlobDeltaQueuePopulationScript",
    "BlobDeltaDeletionLog",
}
# Each entity spec adds its target, staging, reject and lookup tables; the batch log is shared.
JOB_TABLES |= {"UpsertBatchLog"} | {
    name for spec in current_specs()
    for name in (spec.table, spec.staging, spec.rejects, *(lk.table for lk in spec.lookups))}
# Paged sync sessions (revision 0012).
JOB_TABLES |= {"SyncScopeState", "SyncSession", "SyncSessionPage"}
#: Job tables of one engine alone: PostgreSQL's run candidates (revision 0017).
ENGINE_JOB_TABLES = {"postgresql": {"BlobDeltaRunCandidate"}, "mssql": set()}


def shipped(server):
    return {obj.name: obj for obj in render_objects(server.engine.name)}


def catalog(server):
    engine = server.job_engine()
    try:
        with engine.connect() as conn:
            return snapshot(conn, server.engine)
    finally:
        engine.dispose()


def deployment_log(server):
    """The whole deployment log, less the timestamp, in insertion order."""
    engine = server.job_engine()
    table = repeatable.log_table(server.engine)
    try:
        with engine.connect() as conn:
            return [
                tuple(row)
                for row in conn.execute(
                    sa.select(table.c.ObjectName, table.c.ObjectType, table.c.Action, table.c.Checksum,
                              table.c.PackageVersion).order_by(table.c.DeploymentId)
                )
            ]
    finally:
        engine.dispose()


def routine_text(server, name):
    engine = server.job_engine()
    try:
        with engine.connect() as conn:
            if server.engine.name == "mssql":
                return conn.exec_driver_sql("SELECT OBJECT_DEFINITION(OBJECT_ID(?))", (f"dbo.{name}",)).scalar()
            return conn.exec_driver_sql(
                "SELECT string_agg(p.prosrc, '') FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname = %(s)s AND p.proname = %(p)s",
                {"s": server.engine.job_schema, "p": name},
            ).scalar()
    finally:
        engine.dispose()


def test_upgrade_from_empty_creates_the_job_tables_and_deploys_every_procedure(server):
    result = commands.migrate(url=server.url_string)

    assert result.outcome.steps == UPGRADE_STEPS
    assert [(o.name, o.action) for o in result.outcome.objects] == [
        (name, "Deployed") for name in sorted(shipped(server))
    ]
    # A new connection sees the migration committed, revision and tables: on SQL Server the online
    # lock leaves one transaction level, so the driver's single COMMIT ends the transaction.
    engine = server.job_engine()
    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names(schema=server.engine.job_schema))
        versions = conn.exec_driver_sql(
            f"SELECT version_num FROM {server.engine.job_object('alembic_version')}").scalars().all()
    engine.dispose()
    assert versions == [HEAD]
    assert tables == JOB_TABLES | ENGINE_JOB_TABLES[server.engine.name] | {DEPLOYMENT_LOG, "alembic_version"}
    # The log records each revision applied (who and when: dbtools history), then each object deployed.
    revisions = [(to, "REVISION", "Deployed", revision_checksum(to), "0.1.0") for _from, to, _up in UPGRADE_STEPS]
    assert deployment_log(server) == revisions + [
        (name, obj.kind, "Deployed", obj.checksum, "0.1.0") for name, obj in sorted(shipped(server).items())
    ]


def revision_checksum(revision: str) -> str:
    import hashlib

    from alembic.script import ScriptDirectory

    path = ScriptDirectory.from_config(commands.alembic_config()).get_revision(revision).path
    return hashlib.sha256(Path(path).read_bytes().replace(b"\r\n", b"\n")).hexdigest()


def test_up_down_up_leaves_an_identical_catalog_and_a_second_up_changes_nothing(server):
    commands.migrate(url=server.url_string)
    first = catalog(server)

    down = commands.downgrade(url=server.url_string, revision="base")
    at_base = catalog(server)
    commands.migrate(url=server.url_string)
    second = catalog(server)
    log_after_up = deployment_log(server)
    again = commands.migrate(url=server.url_string)

    assert [s[2] for s in down.outcome.steps] == [False] * len(UPGRADE_STEPS)
    assert {o.name for o in down.outcome.objects} == set(shipped(server))
    tables_at_base = {row[1] for row in at_base["columns"]}
    assert tables_at_base == {"alembic_version"}
    assert [r for r in at_base.get("routines", at_base.get("modules", []))] == []
    assert second == first
    assert again.outcome.steps == []
    assert {(o.name, o.action) for o in again.outcome.objects} == {(n, "Unchanged") for n in shipped(server)}
    assert catalog(server) == first
    assert deployment_log(server) == log_after_up


def test_the_deployment_log_shows_each_procedure_once_per_changed_text(server, monkeypatch):
    commands.migrate(url=server.url_string)
    original = render_objects(server.engine.name)
    name = original[0].name

    def edited(engine_name):
        return [
            replace(obj, sql=obj.sql.replace("Do not edit in the database", "Do not edit in the database (v2)"))
            if obj.name == name else obj
            for obj in render_objects(engine_name)
        ]

    monkeypatch.setattr(repeatable, "render_objects", edited)
    changed = commands.migrate(url=server.url_string)
    commands.migrate(url=server.url_string)
    text_v2 = routine_text(server, name)
    monkeypatch.setattr(repeatable, "render_objects", render_objects)
    reverted = commands.migrate(url=server.url_string)

    v1 = {o.name: o.checksum for o in original}
    v2 = edited(server.engine.name)[0].checksum
    assert v2 != v1[name]
    assert [(o.name, o.action) for o in changed.outcome.objects if o.action != "Unchanged"] == [(name, "Deployed")]
    assert [(o.name, o.action) for o in reverted.outcome.objects if o.action != "Unchanged"] == [(name, "Deployed")]
    assert "(v2)" in text_v2
    assert "(v2)" not in routine_text(server, name)
    rows = [(r[0], r[2], r[3]) for r in deployment_log(server) if r[0] == name]
    assert rows == [(name, "Deployed", v1[name]), (name, "Deployed", v2), (name, "Deployed", v1[name])]


def test_an_upgrade_that_stops_below_head_deploys_no_procedure(server):
    result = commands.migrate(url=server.url_string, revision="0001")

    assert result.outcome.steps == [("base", "0001", True)]
    assert result.outcome.objects == []
    assert "below head" in result.outcome.note
    snap = catalog(server)
    assert snap.get("routines", snap.get("modules")) == []


def test_a_procedure_dropped_outside_dbtools_is_redeployed_by_the_next_migrate(server):
    commands.migrate(url=server.url_string)
    name = sorted(shipped(server))[0]
    engine = server.job_engine()
    with engine.begin() as conn:
        if server.engine.name == "mssql":
            conn.exec_driver_sql(f"DROP PROCEDURE dbo.{name}")
        else:
            conn.exec_driver_sql(f'DROP ROUTINE "BlobDeltaJobs"."{name}"')
    engine.dispose()

    result = commands.migrate(url=server.url_string)

    assert (name, "Deployed") in [(o.name, o.action) for o in result.outcome.objects]
    checksum = shipped(server)[name].checksum
    assert [r for r in deployment_log(server) if r[0] == name] == [
        (name, shipped(server)[name].kind, "Deployed", checksum, "0.1.0")
    ] * 2
    assert routine_text(server, name) is not None


def test_alembic_with_an_environment_does_what_dbtools_migrate_does(server, tmp_path, repo):
    # Assemble: an environments file whose URL takes its password from the environment.
    secret = server.url.password or "unused-secret"
    template = server.url.set(password="${DBTOOLS_T_SECRET}").render_as_string(hide_password=False)
    env_file = tmp_path / "environments.toml"
    env_file.write_text(f'[t]\nurl = "{template}"\n', encoding="utf-8")
    env = dict(os.environ, DBTOOLS_ENVIRONMENTS=str(env_file), DBTOOLS_T_SECRET=str(secret))

    # Act: plain alembic, then the same through dbtools.
    proc = subprocess.run(
        [sys.executable, "-m", "alembic", "-x", "env=t", "upgrade", "head"],
        cwd=repo, env=env, capture_output=True, text=True,
    )
    via_alembic = catalog(server)
    log_alembic = deployment_log(server)
    commands.downgrade(url=server.url_string, revision="base")
    commands.migrate(url=server.url_string)

    # Assert
    assert proc.returncode == 0, proc.stderr
    assert str(secret) not in proc.stderr + proc.stdout or secret == "unused-secret"
    assert "deployed procedure" in proc.stderr
    assert catalog(server) == via_alembic
    assert [r for r in deployment_log(server) if r[2] == "Deployed"][-len(log_alembic):] == log_alembic


@pytest.mark.parametrize("query", ["recent_runs", "run_steps", "watermarks", "missing_parents"])
def test_the_design_monitoring_queries_read_back_what_was_written(server, query):
    """Requirements 002 section 5: the four monitoring queries work on the job tables."""
    commands.migrate(url=server.url_string)
    e = server.engine
    t = e.job_object
    run_id = "0190a0b0-0000-7000-8000-000000000001"
    stream = "0190a0b0-0000-7000-8000-0000000000aa"
    engine = server.job_engine()
    with engine.begin() as conn:
        params = {"run": run_id, "stream": stream}
        ph = (lambda n: "?") if e.name == "mssql" else (lambda n: f"%({n})s")
        conn.exec_driver_sql(
            f"INSERT INTO {t('BlobDeltaTableConfig')} ({e.quote('TableName')}, {e.quote('SourceDatabase')}, "
            f"{e.quote('SourceTable')}, {e.quote('TargetDatabase')}, {e.quote('TargetTable')}, "
            f"{e.quote('MetadataDatabase')}, {e.quote('MetadataTable')}) VALUES "
            "('Probe_FileTable.dbo.ProbeAttachment', 'Gwent_LA_FileTable', 'ReferralAttachment', "
            "'Delta', 'ReferralAttachment', 'AdvancedRBS_MetaData', 'ReferralAttachmentMetadata')"
        )
        conn.exec_driver_sql(
            f"INSERT INTO {t('BlobDeltaHighWatermark')} ({e.quote('TableName')}, {e.quote('LastHighWaterModifiedOn')}, "
            f"{e.quote('LastRunId')}) VALUES ('Probe_FileTable.dbo.ProbeAttachment', '2026-11-01T00:00:00', {ph('run')})",
            (run_id,) if e.name == "mssql" else params,
        )
        conn.exec_driver_sql(
            f"INSERT INTO {t('BlobDeltaRun')} ({e.quote('RunId')}, {e.quote('Mode')}, {e.quote('BatchSize')}, "
            f"{e.quote('MaxDOP')}, {e.quote('RunStartedAt')}, {e.quote('Status')}) "
            f"VALUES ({ph('run')}, 'AllTables', 500, 2, '2026-11-02T01:00:00', 'Succeeded')",
            (run_id,) if e.name == "mssql" else params,
        )
        conn.exec_driver_sql(
            f"INSERT INTO {t('BlobDeltaRunStep')} ({e.quote('RunId')}, {e.quote('TableName')}, {e.quote('StepNumber')}, "
            f"{e.quote('StepName')}, {e.quote('BatchNumber')}, {e.quote('RowsProcessed')}, {e.quote('TotalRowsProcessed')}, "
            f"{e.quote('Status')}) VALUES ({ph('run')}, 'Probe_FileTable.dbo.ProbeAttachment', 1, 'Roots', 1, 500, 500, 'Completed')",
            (run_id,) if e.name == "mssql" else params,
        )
        conn.exec_driver_sql(
            f"INSERT INTO {t('BlobDeltaMissingParentsQueue')} ({e.quote('RunId')}, {e.quote('TableName')}, "
            f"{e.quote('stream_id')}) VALUES ({ph('run')}, 'Probe_FileTable.dbo.ProbeAttachment', {ph('stream')})",
            (run_id, stream) if e.name == "mssql" else params,
        )
    queries = _monitoring_queries(e)
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.exec_driver_sql(
            queries[query], (run_id,) if e.name == "mssql" and "?" in queries[query] else
            ({"run": run_id} if "%(run)s" in queries[query] else ()))]
    engine.dispose()
    normalised = [tuple(str(v) if v is not None else None for v in r) for r in rows]
    expected = {
        "recent_runs": [(run_id, "Incremental", "Succeeded", None)],
        "run_steps": [("Probe_FileTable.dbo.ProbeAttachment", "1", "1", "500", "500", "Completed", None)],
        "watermarks": [
            ("Gwent_LA_FileTable.dbo.ClientAttachment", None, None, "False", "False", None),
            ("Gwent_LA_FileTable.dbo.ReferralAttachment", None, None, "False", "False", None),
            ("Probe_FileTable.dbo.ProbeAttachment", "2026-11-01 00:00:00", run_id, "False", "False", None),
        ],
        "missing_parents": [(run_id, "Probe_FileTable.dbo.ProbeAttachment", stream, None, "False")],
    }[query]
    assert [tuple(v.lower() if isinstance(v, str) and len(v) == 36 else v for v in r) for r in normalised] == expected


def _monitoring_queries(e):
    t, q = e.job_object, e.quote
    top = "TOP (50) " if e.name == "mssql" else ""
    limit = "" if e.name == "mssql" else " LIMIT 50"
    p = "?" if e.name == "mssql" else "%(run)s"
    flag = (lambda c: f"CASE WHEN {q(c)} = 1 THEN 'True' ELSE 'False' END") if e.name == "mssql" else (
        lambda c: f"CASE WHEN {q(c)} THEN 'True' ELSE 'False' END")
    return {
        "recent_runs": f"SELECT {top}{q('RunId')}, {q('RunType')}, {q('Status')}, {q('ErrorMessage')} "
                       f"FROM {t('BlobDeltaRun')} ORDER BY {q('RunStartedAt')} DESC{limit}",
        "run_steps": f"SELECT {q('TableName')}, {q('StepNumber')}, {q('BatchNumber')}, {q('RowsProcessed')}, "
                     f"{q('TotalRowsProcessed')}, {q('Status')}, {q('ErrorMessage')} FROM {t('BlobDeltaRunStep')} "
                     f"WHERE {q('RunId')} = {p} ORDER BY {q('TableName')}, {q('StepNumber')}, {q('BatchNumber')}",
        "watermarks": f"SELECT {q('TableName')}, {q('LastHighWaterModifiedOn')}, {q('LastRunId')}, "
                      f"{flag('IsInitialFullLoadDone')}, {flag('IsRunning')}, {q('RunLeaseExpiresAt')} "
                      f"FROM {t('BlobDeltaHighWatermark')} ORDER BY {q('TableName')}",
        "missing_parents": f"SELECT {q('RunId')}, {q('TableName')}, {q('stream_id')}, {q('BusinessUnit')}, "
                           f"{flag('Processed')} FROM {t('BlobDeltaMissingParentsQueue')} WHERE {q('RunId')} = {p} "
                           f"ORDER BY {q('TableName')}, {q('CreatedAt')}",
    }


def test_deployed_reports_the_latest_state_and_deploy_count_of_every_object(server, monkeypatch):
    assert commands.deployed(url=server.url_string)[1:] == ([], None)
    commands.migrate(url=server.url_string)
    name = sorted(shipped(server))[0]
    monkeypatch.setattr(repeatable, "render_objects", lambda e: [
        replace(o, sql=o.sql.replace("Do not edit in the database", "Do not edit (v2)")) for o in render_objects(e)])
    commands.migrate(url=server.url_string)
    monkeypatch.setattr(repeatable, "render_objects", render_objects)
    commands.migrate(url=server.url_string)

    _target, objects, revision = commands.deployed(url=server.url_string)

    assert revision == HEAD
    assert [(o.name, o.kind, o.action, o.checksum, o.deploy_count) for o in objects] == [
        (n, obj.kind, "Deployed", obj.checksum, 3) for n, obj in sorted(shipped(server).items())
    ]
    assert objects[0].name == name


def test_the_local_environment_migrates_the_embedded_postgresql(tmp_path, monkeypatch):
    """The quick start's main job: `dbtools migrate --env local` then `dbtools deployed --env local`."""
    monkeypatch.setenv("DBTOOLS_HOME", str(tmp_path))

    migrated = commands.migrate(env="local")
    target, objects, revision = commands.deployed(env="local")

    assert migrated.outcome.steps == UPGRADE_STEPS
    assert revision == HEAD
    assert target.label == "env local"
    assert [(o.name, o.action, o.deploy_count) for o in objects] == [
        (o.name, "Deployed", 1) for o in render_objects("postgresql")]
    assert (tmp_path / "pgdata" / "PG_VERSION").exists()


def _access_facts(server) -> list[tuple]:
    """What a deployment's access step writes: PostgreSQL's EXECUTE grants on the job schema's
    routines; SQL Server's signing certificate (re-created, it gets a new thumbprint) and signatures."""
    engine = server.job_engine()
    try:
        with engine.connect() as conn:
            if server.engine.name == "postgresql":
                sql = ("SELECT p.proname, a.grantee::regrole::text, a.privilege_type FROM pg_catalog.pg_proc AS p "
                       "CROSS JOIN LATERAL aclexplode(p.proacl) AS a "
                       "WHERE p.pronamespace = '\"BlobDeltaJobs\"'::regnamespace ORDER BY 1, 2, 3")
            else:
                sql = ("SELECT c.name, CONVERT(varchar(64), c.thumbprint, 2), OBJECT_NAME(cp.major_id) "
                       "FROM sys.certificates AS c LEFT JOIN sys.crypt_properties AS cp ON cp.thumbprint = c.thumbprint "
                       "ORDER BY 1, 3")
            return [tuple(r) for r in conn.exec_driver_sql(sql)]
    finally:
        engine.dispose()


@pytest.mark.parametrize("args", [["current"], ["history", "-i"], ["stamp", "head"]], ids=lambda a: a[0])
def test_read_only_alembic_commands_and_stamp_deploy_and_grant_nothing(server, repo, args):
    # Assemble: a job DB at head, one of its procedures dropped outside dbtools and, on PostgreSQL,
    # one grant revoked: a deployment would put both back.
    commands.migrate(url=server.url_string)
    name = sorted(shipped(server))[0]
    engine = server.job_engine()
    with engine.begin() as conn:
        if server.engine.name == "mssql":
            conn.exec_driver_sql(f"DROP PROCEDURE dbo.{name}")
        else:
            conn.exec_driver_sql(f'DROP ROUTINE "BlobDeltaJobs"."{name}"')
            conn.exec_driver_sql('REVOKE EXECUTE ON FUNCTION "BlobDeltaJobs"."fn_BlobDelta_RunEnd"(uuid) '
                                 'FROM "BlobDeltaOperator"')
    engine.dispose()
    before = (catalog(server), deployment_log(server), _access_facts(server))

    # Act
    proc = subprocess.run([sys.executable, "-m", "alembic", "-x", f"url={server.url_string}", *args],
                          cwd=repo, capture_output=True, text=True)

    # Assert: the command worked, and the catalog, the deployment log and the grants are as they were.
    assert proc.returncode == 0, proc.stderr
    if args[0] != "stamp":
        assert HEAD in proc.stdout
    assert (catalog(server), deployment_log(server), _access_facts(server)) == before
    assert routine_text(server, name) is None


def test_alembic_current_on_a_server_without_a_job_database_creates_nothing(server, repo):
    # Act
    proc = subprocess.run([sys.executable, "-m", "alembic", "-x", f"url={server.url_string}", "current"],
                          cwd=repo, capture_output=True, text=True)

    # Assert: nothing to report, and no job database (SQL Server) or schema (PostgreSQL) was made.
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
    engine = sa.create_engine(server.url)
    try:
        with engine.connect() as conn:
            if server.engine.name == "mssql":
                exists = conn.exec_driver_sql("SELECT DB_ID(N'BlobDeltaJobs')").scalar() is not None
            else:
                exists = conn.exec_driver_sql(
                    "SELECT count(*) FROM pg_catalog.pg_namespace WHERE nspname = 'BlobDeltaJobs'").scalar() > 0
    finally:
        engine.dispose()
    assert not exists


def test_two_migrations_at_once_both_succeed_one_after_the_other(server, repo):
    # Assemble: two processes (Alembic's context is one per process) started together on an empty
    # database; each waits for a start file, so both are past their imports when it appears.
    import tempfile

    start = Path(tempfile.mkdtemp()) / "go"
    code = ("import pathlib, sys, time\n"
            "from dbtools import commands\n"
            f"while not pathlib.Path({str(start)!r}).exists(): time.sleep(0.01)\n"
            "r = commands.migrate(url=sys.argv[1])\n"
            "print(len(r.outcome.steps), sum(o.action == 'Deployed' for o in r.outcome.objects))\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, server.url_string], cwd=repo, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]

    # Act
    time.sleep(2)
    start.touch()
    results = [p.communicate(timeout=300) for p in procs]

    # Assert: no collision; one applied every revision and deployed, the other found head and did
    # nothing; the catalog is one migration's.
    assert [p.returncode for p in procs] == [0, 0], [err for _out, err in results]
    done = sorted(tuple(map(int, out.split())) for out, _err in results)
    assert done[0] == (0, 0) and done[1][0] == len(UPGRADE_STEPS) and done[1][1] > 0
    once = catalog(server)
    commands.downgrade(url=server.url_string, revision="base")
    commands.migrate(url=server.url_string)
    assert catalog(server) == once


def test_a_migration_waits_for_the_lock_a_bounded_time_then_fails_naming_the_holder(server, monkeypatch):
    # Assemble: a job DB at head, and another session holding the migration lock.
    commands.migrate(url=server.url_string)
    before = (catalog(server), deployment_log(server))
    monkeypatch.setenv("DBTOOLS_MIGRATE_LOCK_TIMEOUT", "1.5")
    engine = server.job_engine()
    holder = engine.connect()
    try:
        with holder.begin():
            if server.engine.name == "mssql":
                pid = holder.exec_driver_sql("SELECT @@SPID").scalar()
                # The migration's own lock statement: one transaction level, so the holder's
                # rollback (closing it) ends the transaction and frees the lock.
                got, trancount = holder.exec_driver_sql(mssql_lock(0)).one()
                assert (got >= 0, trancount) == (True, 1)
            else:
                pid = holder.exec_driver_sql("SELECT pg_backend_pid()").scalar()
                holder.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtextextended('dbtools.migrate', 0))")

            # Act
            started = time.monotonic()
            with pytest.raises(DeploymentError) as refused:
                commands.migrate(url=server.url_string)
            waited = time.monotonic() - started
    finally:
        holder.close()
        engine.dispose()

    # Assert: it waited, then named the holder; nothing changed.
    kind = "session" if server.engine.name == "mssql" else "PID"
    assert str(refused.value).startswith(f"another migration holds the migration lock on {mask(server.url)}: {kind} {pid} ")
    assert "waited 1.5 s (DBTOOLS_MIGRATE_LOCK_TIMEOUT)" in str(refused.value)
    assert 1.5 <= waited < 30
    assert (catalog(server), deployment_log(server)) == before


def test_the_sql_server_migration_lock_leaves_one_transaction_level_and_refuses_any_other():
    from types import SimpleNamespace

    from dbtools.db.engines import engine_for
    from dbtools.deploy.migration_env import take_migration_lock

    sql = mssql_lock(1.5)
    nested = SimpleNamespace(exec_driver_sql=lambda statement: SimpleNamespace(one=lambda: (None, 2)))

    # A plain batch (no parameter markers: no sp_executesql frame around BEGIN TRANSACTION); the
    # extra level an explicit BEGIN opens under IMPLICIT_TRANSACTIONS ON is committed at once.
    assert "?" not in sql
    assert ("IF @TranCountBefore = 0\nBEGIN\n    BEGIN TRANSACTION;\n    IF @@TRANCOUNT > 1\n"
            "        COMMIT TRANSACTION;\nEND;\nIF @@TRANCOUNT = 1\n    EXEC @Result = sys.sp_getapplock ") in sql
    assert "@LockTimeout = 1500, @DbPrincipal = N'public';" in sql and sql.endswith("SELECT @Result, @@TRANCOUNT;")
    with pytest.raises(DeploymentError) as refused:
        take_migration_lock(nested, engine_for("mssql"), "h/master", 1.5)
    assert str(refused.value) == ("the migration transaction on h/master is 2 levels deep, not one (@@TRANCOUNT); "
                                  "nothing was changed")


@pytest.mark.parametrize("version, refused", [((14, 11), True), ((15, 6), True), ((16, 0), False), ((17, 2), False)])
def test_migrate_refuses_a_postgresql_older_than_16_before_writing_anything(version, refused):
    from dbtools.db.engines import engine_for
    from dbtools.deploy.migration_env import require_server_version

    if refused:
        with pytest.raises(DeploymentError) as raised:
            require_server_version(engine_for("postgresql"), version, "host/db")
        assert str(raised.value) == (f"host/db runs PostgreSQL {version[0]}.{version[1]}; dbtools needs PostgreSQL 16 "
                                     "or later (its upsert validation uses IS JSON). Nothing was changed.")
    else:
        require_server_version(engine_for("postgresql"), version, "host/db")
    require_server_version(engine_for("mssql"), (15, 0), "host")  # only PostgreSQL is checked this way


def test_the_offline_postgresql_script_checks_the_server_version_first():
    script = commands.migrate(url="postgresql://offline/db", sql=True).script
    body = script.split("\n\n", 1)[1].lstrip("\n")

    assert body.startswith("DO $dbtools$\nBEGIN\n    IF pg_catalog.current_setting('server_version_num')::integer < 160000 THEN")


@pytest.mark.mssql_only
def test_every_default_constraint_is_named_df_table_column_and_an_old_system_name_is_renamed(server):
    # Assemble: the job DB at the revision before 0011, one default given a system name again (as
    # every default had before this package version named them).
    commands.migrate(url=server.url_string, revision=UPGRADE_STEPS[-2][1])
    engine = server.job_engine()
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE dbo.BlobDeltaRun DROP CONSTRAINT DF_BlobDeltaRun_Status; "
                             "ALTER TABLE dbo.BlobDeltaRun ADD DEFAULT N'Running' FOR Status;")
        renamed_before = conn.exec_driver_sql(
            "SELECT COUNT(*) FROM sys.default_constraints WHERE is_system_named = 1").scalar()

    # Act
    commands.migrate(url=server.url_string)

    # Assert
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT t.name, c.name, dc.name, dc.is_system_named FROM sys.default_constraints AS dc "
            "JOIN sys.tables AS t ON t.object_id = dc.parent_object_id "
            "JOIN sys.columns AS c ON c.object_id = dc.parent_object_id AND c.column_id = dc.parent_column_id").all()
    engine.dispose()
    assert renamed_before == 1
    assert rows and all((name, system) == (f"DF_{table}_{column}", False) for table, column, name, system in rows), rows
    assert ("BlobDeltaRun", "Status", "DF_BlobDeltaRun_Status", False) in [tuple(r) for r in rows]


def revision_module(revision: str):
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(commands.alembic_config()).get_revision(revision).module


def test_0011_renames_only_the_packages_own_tables_each_named_as_a_literal(monkeypatch):
    # Assemble: every table revisions 0001-0010 create in the job DB, read from their offline script.
    import re

    from dbtools.db.engines import JOB_DATABASE, engine_for

    named = revision_module("0011")
    script = commands.migrate(url="mssql+pyodbc://u@h/master?driver=ODBC+Driver+18+for+SQL+Server",
                              sql=True, revision="0010").script
    created = set(re.findall(r"CREATE TABLE (?:\[dbo\]|dbo)\.\[?(\w+)", script)) - {"alembic_version"}
    spec = next(s for s in current_specs() if s.lookups)
    monkeypatch.setattr(named, "current_specs", lambda: [replace(spec, database="Sales")])

    # Act
    owned = named.owned_tables()
    batch = named.rename_batch(engine_for("mssql"), {"O'Brien]s", "Plain"})

    # Assert: the job DB's tables are exactly what the revisions created there; in an entity
    # database exactly that spec's tables; names go in as quoted literals with ' doubled.
    assert list(owned) == [JOB_DATABASE, "Sales"]
    assert owned[JOB_DATABASE] == created
    assert owned["Sales"] == set(spec.tables)
    assert "t.object_id IN (OBJECT_ID(N'[dbo].[O''Brien]]s]', N'U'),\n" in batch
    assert "OBJECT_ID(N'[dbo].[Plain]', N'U'))\n" in batch
    assert "ROW_NUMBER() OVER (PARTITION BY s.schema_id, n.NewName" in batch and "WHERE r.Candidate = 1;" in batch


@pytest.mark.mssql_only
def test_0011_leaves_other_tables_alone_and_renames_one_of_two_defaults_whose_new_names_coincide(server):
    from dbtools.db.engines import engine_for

    # Assemble: at head, another application's table with a system-named default, and two tables
    # whose defaults both map to DF_T_A_B_C.
    commands.migrate(url=server.url_string)
    engine = server.job_engine()
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE dbo.OtherApplication (Flag int NOT NULL DEFAULT 0); "
                             "CREATE TABLE dbo.T_A_B (C int NOT NULL DEFAULT 1); "
                             "CREATE TABLE dbo.T_A (B_C int NOT NULL DEFAULT 2);")

    # Act: the package's batch, once for the package's tables, once for the two colliding ones.
    named = revision_module("0011")
    with engine.begin() as conn:
        conn.exec_driver_sql(named.rename_batch(engine_for("mssql"), set(named.owned_tables()[named.JOB_DATABASE])))
        conn.exec_driver_sql(named.rename_batch(engine_for("mssql"), {"T_A_B", "T_A"}))
        rows = conn.exec_driver_sql(
            "SELECT t.name, dc.name, dc.is_system_named FROM sys.default_constraints AS dc "
            "JOIN sys.tables AS t ON t.object_id = dc.parent_object_id "
            "WHERE t.name IN (N'OtherApplication', N'T_A_B', N'T_A') ORDER BY t.name").all()
    engine.dispose()

    # Assert: the other table keeps its system name; one of the two (the lower object_id) is
    # renamed, the other keeps its system name instead of failing the batch (Msg 15335).
    assert [(table, system) for table, _name, system in rows if table == "OtherApplication"] == [
        ("OtherApplication", True)]
    pair = sorted((bool(system), name) for table, name, system in rows if table != "OtherApplication")
    assert len(pair) == 2 and pair[0] == (False, "DF_T_A_B_C") and pair[1][0] is True, rows


def cli(server, *args):
    from .test_cli import dbtools

    return dbtools(*args, "--url", server.cli_url)


def test_history_lists_applied_and_pending_revisions_with_who_and_when(server):
    import json

    commands.migrate(url=server.url_string, revision=UPGRADE_STEPS[-2][1])

    proc = cli(server, "history", "--json")

    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    revisions = [step[1] for step in UPGRADE_STEPS]
    assert [r["revision"] for r in result["revisions"]] == revisions
    assert [r["state"] for r in result["revisions"]] == ["applied"] * (len(revisions) - 2) + ["current", "pending"]
    assert (result["current"], result["head"]) == (revisions[-2], revisions[-1])
    user = server.url.username
    for r in result["revisions"][:-1]:
        assert r["applied_by"] and (user is None or user in r["applied_by"]), r
        assert r["applied_at"].endswith("Z") and r["package_version"] == "0.1.0"
    assert result["revisions"][-1]["applied_at"] is None and result["revisions"][-1]["description"]


def test_check_finds_no_drift_at_head_then_a_missing_an_edited_procedure_and_a_pending_revision(server):
    import json

    commands.migrate(url=server.url_string)
    clean = cli(server, "check")
    names = sorted(shipped(server))
    engine = server.job_engine()
    with engine.begin() as conn:
        if server.engine.name == "mssql":
            conn.exec_driver_sql(f"DROP PROCEDURE dbo.{names[0]}")
            edited = shipped(server)[names[1]].sql.replace("SET NOCOUNT ON;", "SET NOCOUNT ON; -- edited by hand", 1)
            conn.exec_driver_sql(edited)
        else:
            conn.exec_driver_sql(f'DROP ROUTINE "BlobDeltaJobs"."{names[0]}"')
            edited = shipped(server)[names[1]].sql.replace("BEGIN\n", "BEGIN\n    -- edited by hand\n", 1)
            conn.exec_driver_sql(edited.replace("%", "%%"))  # the driver's placeholders
    engine.dispose()
    drifted = cli(server, "check", "--json")
    commands.downgrade(url=server.url_string, revision=UPGRADE_STEPS[-2][1])
    pending = cli(server, "check", "--json")

    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "No drift" in clean.stdout
    assert drifted.returncode == 1
    assert json.loads(drifted.stdout)["objects"] == [
        {"object": names[0], "kind": shipped(server)[names[0]].kind, "problem": "missing"},
        {"object": names[1], "kind": shipped(server)[names[1]].kind, "problem": "edited by hand since it was deployed"}]
    assert json.loads(drifted.stdout)["pending"] == []
    assert pending.returncode == 1
    assert json.loads(pending.stdout)["pending"] == [UPGRADE_STEPS[-1][1]]


@pytest.mark.parametrize("engine_name", ["mssql", "postgresql"])
def test_a_definition_this_login_may_not_read_is_unverified_never_drift(engine_name):
    from dbtools.db.engines import engine_for

    # Assemble: the package's objects as SQL Server shows them to a login without VIEW DEFINITION:
    # one it may execute is listed with a NULL definition, the others are not listed.
    info = engine_for(engine_name)
    objects = render_objects(engine_name)
    first, *rest = sorted(objects, key=lambda o: o.name)
    definitions = {first.name: [None]}
    state = {o.name: ("Deployed", o.checksum) for o in objects}
    needed = repeatable.unreadable_definition(info)

    # Act
    hidden = commands.object_drift(info, objects, definitions, state, readable=False)
    visible = commands.object_drift(info, objects, definitions, state, readable=True)
    as_kept = {o.name: [repeatable._comparable(engine_name, o.sql, rendered=True)] for o in objects}
    no_log = commands.object_drift(info, objects, as_kept, None, readable=True)

    # Assert: nothing is drift; each object names the right needed. With the right on the schema
    # an unlisted object is missing, and a NULL text still says nothing about an edit.
    assert hidden == ([], [{"object": o.name, "kind": o.kind, "problem": needed} for o in [first, *rest]])
    assert needed.startswith("definition not readable: this login needs VIEW DEFINITION on schema ")
    assert visible == ([{"object": o.name, "kind": o.kind, "problem": "missing"} for o in rest],
                       [{"object": first.name, "kind": first.kind, "problem": needed}])
    assert no_log[0] == [] and [u["object"] for u in no_log[1]] == [DEPLOYMENT_LOG]
    assert no_log[1][0]["problem"].startswith(f"not readable: this login needs SELECT on {info.job_object(DEPLOYMENT_LOG)}")
    assert commands.object_drift(info, objects, {**as_kept, first.name: ["edited"]}, None, readable=True)[0] == [
        {"object": first.name, "kind": first.kind, "problem": "differs from this package's text"}]
    assert repeatable.edited(engine_name, first, [None]) is False


def test_check_exits_2_when_it_finds_no_drift_but_could_not_read_everything(monkeypatch):
    from click.testing import CliRunner

    from dbtools.cli import cli as dbtools_cli

    unverified = [{"object": "usp_X", "kind": "PROCEDURE", "problem": "definition not readable: this login needs "
                   "VIEW DEFINITION on schema [dbo]"}]
    monkeypatch.setattr(commands, "check", lambda env, url: {
        "target": "h", "current": HEAD, "head": HEAD, "pending": [], "objects": [], "unverified": unverified,
        "drift": False})

    result = CliRunner().invoke(dbtools_cli, ["check", "--url", "postgresql://h/db"])

    assert result.exit_code == 2, result.output
    assert "usp_X: definition not readable: this login needs VIEW DEFINITION on schema [dbo]" in result.output
    assert "Not verified: this login could not read 1 of the objects compared" in result.output
    assert "No drift" not in result.output and "Drift:" not in result.output


def test_check_by_a_login_that_may_not_read_everything_names_the_right_and_finds_no_drift(server):
    import secrets

    from sqlalchemy.pool import NullPool

    from dbtools.db.engines import JOB_DATABASE

    # Assemble: at head, a login that may read the job tables but not the module definitions
    # (SQL Server: db_datareader and EXECUTE on one procedure) or, on PostgreSQL, not the log.
    commands.migrate(url=server.url_string)
    name, password = f"dbtools_ro_{secrets.token_hex(4)}", "Ro-" + secrets.token_hex(12) + "-x1"
    q = server.engine.quote
    admin = sa.create_engine(server.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if server.engine.name == "mssql":
            conn.exec_driver_sql(f"CREATE LOGIN {q(name)} WITH PASSWORD = N'{password}', CHECK_POLICY = OFF")
            conn.exec_driver_sql(f"USE {q(JOB_DATABASE)}; CREATE USER {q(name)} FOR LOGIN {q(name)}; "
                                 f"ALTER ROLE db_datareader ADD MEMBER {q(name)}; "
                                 f"GRANT EXECUTE ON dbo.usp_BlobDelta_RunOperator TO {q(name)};")
        else:
            conn.exec_driver_sql(f"CREATE ROLE {q(name)} LOGIN PASSWORD '{password}'")
            conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA {q(server.engine.job_schema)} TO {q(name)}")
            conn.exec_driver_sql(f"GRANT SELECT ON {server.engine.job_object('alembic_version')} TO {q(name)}")
    url = server.url.set(username=name, password=password).render_as_string(hide_password=False)
    try:
        # Act
        result = commands.check(url=url)
    finally:
        with admin.connect() as conn:
            if server.engine.name == "mssql":
                conn.exec_driver_sql(f"USE {q(JOB_DATABASE)}; DROP USER {q(name)}; USE master; DROP LOGIN {q(name)};")
            else:
                conn.exec_driver_sql(f"DROP OWNED BY {q(name)}")
                conn.exec_driver_sql(f"DROP ROLE {q(name)}")
        admin.dispose()

    # Assert: no drift; what it could not read is listed with the right it needs.
    assert (result["pending"], result["objects"], result["drift"]) == ([], [], False)
    if server.engine.name == "mssql":
        assert result["unverified"] == [
            {"object": n, "kind": o.kind, "problem": "definition not readable: this login needs VIEW DEFINITION on schema [dbo]"}
            for n, o in sorted(shipped(server).items())]
    else:
        assert [(u["object"], u["problem"].split(";")[0]) for u in result["unverified"]] == [
            (DEPLOYMENT_LOG, f"not readable: this login needs SELECT on {server.engine.job_object(DEPLOYMENT_LOG)}")]


def test_the_downgrade_preview_reads_row_counts_without_scanning_a_large_table(server, monkeypatch):
    # Assemble: a table of 5,000 rows in the job schema, its statistics fresh.
    commands.migrate(url=server.url_string)
    info = server.engine
    qualified = info.job_object("dbtools_count_probe")
    engine = server.job_engine()
    with engine.begin() as conn:
        if info.name == "mssql":
            conn.exec_driver_sql(f"SELECT TOP (5000) CONVERT(int, 1) AS i INTO {qualified} "
                                 "FROM sys.all_columns AS a CROSS JOIN sys.all_columns AS b")
        else:
            conn.exec_driver_sql(f"CREATE TABLE {qualified} AS SELECT g AS i FROM generate_series(1, 5000) AS g")
            conn.exec_driver_sql(f"ANALYZE {qualified}")

    # Act
    with engine.connect() as conn:
        small = commands._row_count(conn, info, qualified)
        missing = commands._row_count(conn, info, info.job_object("dbtools_no_such_table"))
        monkeypatch.setattr(commands, "EXACT_COUNT_PAGES", 0)  # as if it were a large table
        large = commands._row_count(conn, info, qualified)
    engine.dispose()

    # Assert: SQL Server reads sys.partitions (no scan, approximate by definition); PostgreSQL
    # counts a small table and estimates a large one from the catalog as its planner does.
    assert missing is None
    if info.name == "mssql":
        assert small == large == (5000, False)
    else:
        assert (small, large) == ((5000, True), (5000, False))


def test_stamp_adopts_a_job_database_without_running_or_deploying_anything(server):
    import json

    commands.migrate(url=server.url_string)
    engine = server.job_engine()
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM {server.engine.job_object('alembic_version')}")
    engine.dispose()
    before = (catalog(server), deployment_log(server))

    proc = cli(server, "stamp", HEAD)

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(f"stamped {HEAD}")
    assert json.loads(cli(server, "history", "--json").stdout)["current"] == HEAD
    assert (catalog(server), deployment_log(server)) == before


def test_a_procedure_edited_by_hand_is_deployed_again_by_the_next_migrate(server):
    commands.migrate(url=server.url_string)
    name = sorted(shipped(server))[1]
    engine = server.job_engine()
    with engine.begin() as conn:
        if server.engine.name == "mssql":
            conn.exec_driver_sql(shipped(server)[name].sql.replace("SET NOCOUNT ON;", "SET NOCOUNT ON; -- edited", 1))
        else:
            conn.exec_driver_sql(shipped(server)[name].sql.replace("BEGIN\n", "BEGIN\n    -- edited\n", 1)
                                 .replace("%", "%%"))
    engine.dispose()
    edited_text = routine_text(server, name)

    result = commands.migrate(url=server.url_string)

    assert [(o.name, o.action) for o in result.outcome.objects if o.action != "Unchanged"] == [(name, "Deployed")]
    assert "edited" in edited_text and "edited" not in routine_text(server, name)
    assert cli(server, "check").returncode == 0
