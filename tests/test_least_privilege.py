"""Least privilege: a member of BlobDeltaOperator runs deltas and reads run tables, nothing else."""

from __future__ import annotations

import contextlib
import secrets
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from dbtools.delta import runner
from dbtools.db.engines import JOB_DATABASE
from dbtools.errors import driver_message
from dbtools.deploy.privileges import ROLE
from dbtools.delta.sample import METADATA_DB, SOURCE_DB, TARGET_DB

from .delta_bed import REFERRAL, TABLES, make_bed, window_of


@pytest.fixture
def bed(server):
    bed = make_bed(server)
    try:
        yield bed
    finally:
        bed.close()


@contextlib.contextmanager
def operator_login(server, *, member: bool = True, configured_users: bool = True) -> Iterator[sa.Engine]:
    """A new login whose only right is membership of BlobDeltaOperator (or nothing at all, with
    ``member=False``); an engine on the job DB as it. SQL Server: ``configured_users=False`` gives
    it no user in the configured databases."""
    name = f"dbtools_op_{secrets.token_hex(4)}"
    password = "Op-" + secrets.token_hex(12) + "-x1"
    admin = sa.create_engine(server.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    q = server.engine.quote
    with admin.connect() as conn:
        if server.engine.name == "mssql":
            conn.exec_driver_sql(f"CREATE LOGIN {q(name)} WITH PASSWORD = N'{password}', CHECK_POLICY = OFF, "
                                 f"DEFAULT_DATABASE = {q(JOB_DATABASE)}")
            conn.exec_driver_sql(f"USE {q(JOB_DATABASE)}; CREATE USER {q(name)} FOR LOGIN {q(name)};"
                                 + (f" ALTER ROLE {q(ROLE)} ADD MEMBER {q(name)};" if member else ""))
            # A login must be able to enter each configured database (the resolver checks
            # HAS_DBACCESS): a user there with no rights at all, as the README tells DBAs.
            for database in (SOURCE_DB, TARGET_DB, METADATA_DB) if configured_users else ():
                conn.exec_driver_sql(f"USE {q(database)}; CREATE USER {q(name)} FOR LOGIN {q(name)};")
            url = server.url.set(username=name, password=password, database=JOB_DATABASE)
        else:
            conn.exec_driver_sql(f"CREATE ROLE {q(name)} LOGIN PASSWORD '{password}'"
                                 + (f" IN ROLE {q(ROLE)}" if member else ""))
            url = server.url.set(username=name, password=password)
    member = sa.create_engine(url, poolclass=NullPool)
    try:
        yield member
    finally:
        member.dispose()
        with admin.connect() as conn:
            if server.engine.name == "mssql":
                conn.exec_driver_sql(
                    "DECLARE @Session int = 0; "
                    "DECLARE @SqlKill nvarchar(100); "
                    "WHILE 1 = 1 BEGIN "
                    "SELECT TOP (1) @Session = session_id FROM sys.dm_exec_sessions "
                    "WHERE login_name = ? AND session_id > @Session ORDER BY session_id; "
                    "IF @@ROWCOUNT = 0 BREAK; "
                    "SET @SqlKill = N'KILL ' + CONVERT(nvarchar(10), @Session); "
                    "BEGIN TRY EXEC (@SqlKill); END TRY BEGIN CATCH END CATCH; END",
                    (name,))
                conn.exec_driver_sql(f"USE {q(JOB_DATABASE)}; DROP USER IF EXISTS {q(name)}; USE master; "
                                     f"DROP LOGIN {q(name)};")
            else:
                conn.exec_driver_sql(f"DROP OWNED BY {q(name)}")  # rights a test granted it here
                conn.exec_driver_sql(f"DROP ROLE {q(name)}")
        admin.dispose()


def denial(member: sa.Engine, statement: str) -> str | None:
    """The permission error a statement raises for the member, or None when it is allowed."""
    try:
        with member.begin() as conn:
            conn.exec_driver_sql(statement)
    except sa.exc.DBAPIError as exc:
        text = driver_message(exc.orig)
        sqlstate = getattr(getattr(exc.orig, "diag", None), "sqlstate", None)
        if sqlstate == "42501" or "permission was denied" in text or "(916)" in text or "(229)" in text \
                or "(230)" in text or "(262)" in text:
            return text
        raise
    return None


def begin_run(member: sa.Engine, info, mode: str, table: str | None) -> uuid.UUID:
    """Start an incremental run through the PostgreSQL step function directly, as a member may."""
    with member.begin() as conn:
        return conn.exec_driver_sql(
            f"SELECT run_id FROM {info.job_object('fn_BlobDelta_RunBegin')}(%(m)s, %(t)s, 500, 0, NULL, 'Incremental', "
            f"true, NULL, NULL, 0::smallint)", {"m": mode, "t": table}).scalar_one()


def test_a_member_of_the_operator_role_runs_deltas_and_reads_the_run_tables(bed):
    # Assemble
    with operator_login(bed.server) as member:
        # Act
        result = runner.run_operator(member, bed.info, mode="AllTables")
        status = runner.run_status(member, bed.info, result.run_id)

        # Assert: the run did what an administrator's run does, and the member saw all of it.
        assert result.status == "Succeeded", status.error if status else None
        for table in TABLES:
            assert bed.target_ids(table) == bed.expected(table, *window_of(status, table))
            assert bed.watermark(table)[1] == result.run_id
        assert status.status == "Succeeded"
        assert sorted({s["table_name"] for s in status.steps}) == sorted(TABLES)
        requested_by = bed.sql(f"SELECT {bed.info.quote('RequestedBy')} FROM {bed.info.job_object('BlobDeltaRun')}")
        assert [r[0] for r in requested_by] == [member.url.username]


@pytest.mark.mssql_only
def test_a_login_without_a_user_in_the_configured_databases_is_told_so_in_lines_that_fit(bed):
    # Assemble: a member whose login has no user in the source, target and metadata databases.
    with operator_login(bed.server, configured_users=False) as member:
        # Act
        result = runner.run_operator(member, bed.info, mode="SingleTable", table=REFERRAL, execute=False)

    # Assert: one line per role names what HAS_DBACCESS found and the fix; all four fit the cap.
    error = result.plan[0].error
    lines = error.splitlines()
    assert [line.split(": ", 1)[1].split(" database ")[0] for line in lines] == [
        "source", "target", "metadata", "business unit"], error
    assert all(line.startswith(f"Table '{REFERRAL}': ") and " has no user for the caller's login or its CONNECT is "
               "revoked (BlobDeltaTableConfig." in line and line.endswith("Database); it needs CONNECT only.")
               for line in lines), error
    assert "(truncated)" not in error


@pytest.mark.postgresql_only
def test_a_schema_the_engine_role_may_not_use_is_named_with_the_fix_and_migrate_fixes_it(bed):
    from dbtools import commands

    # Assemble: the engine role loses USAGE on the source schema (as for a schema configured after
    # the last deployment).
    bed.sql(f"REVOKE USAGE ON SCHEMA {bed.info.quote(SOURCE_DB)} FROM \"BlobDeltaEngine\"")
    engine = bed.engine()
    try:
        # Act
        refused = runner.run_operator(engine, bed.info, mode="SingleTable", table=REFERRAL, execute=False)
        commands.migrate(url=bed.server.url_string)
        planned = runner.run_operator(engine, bed.info, mode="SingleTable", table=REFERRAL, execute=False)
    finally:
        engine.dispose()

    # Assert
    assert refused.plan[0].error.splitlines() == [
        f"Table '{REFERRAL}': {role} database \"{SOURCE_DB}\" gives role \"BlobDeltaEngine\" no USAGE "
        f"(BlobDeltaTableConfig.{prefix}Database); run dbtools migrate, which grants it."
        for role, prefix in (("source", "Source"), ("business unit", "BusinessUnit"))]
    assert planned.plan[0].error is None


@pytest.mark.mssql_only
def test_every_configured_database_holds_a_user_made_from_the_engine_certificate(bed):
    # Assemble: the job database's certificate, which signs every package procedure.
    thumbprint, private_key = bed.sql("SELECT thumbprint, pvt_key_encryption_type FROM sys.certificates "
                                      "WHERE name = N'BlobDeltaEngineSigning'")[0]
    signed = bed.sql("SELECT OBJECT_NAME(cp.major_id) FROM sys.crypt_properties AS cp "
                     "WHERE cp.thumbprint = ? AND cp.crypt_type = 'SPVC' ORDER BY 1", (thumbprint,))

    # Act
    copies = {db: bed.sql(f"SELECT p.name FROM {bed.info.quote(db)}.sys.certificates AS c "
                          f"JOIN {bed.info.quote(db)}.sys.database_principals AS p ON p.sid = c.sid "
                          "WHERE c.thumbprint = ?", (thumbprint,))
              for db in (SOURCE_DB, TARGET_DB, METADATA_DB)}

    # Assert: signed with a key nobody holds any more, and copied where the engine reads and writes.
    assert private_key == "NA"
    assert [r[0] for r in signed] == ["usp_BlobDelta_ResolveTableConfig", "usp_BlobDelta_Run",
                                      "usp_BlobDelta_RunOperator"]
    assert copies == {db: [("BlobDeltaEngineSigning",)] for db in (SOURCE_DB, TARGET_DB, METADATA_DB)}


@pytest.mark.mssql_only
def test_a_member_sees_no_catalog_of_the_other_databases_and_its_run_resolves_them_through_the_certificate(bed):
    # The one assumption of the module signing no PostgreSQL run can check: OBJECT_ID() and
    # [Db].sys.columns of another database answer inside the signed procedures (through the
    # certificate users' grants), and not to the member itself.
    target = f"[{TARGET_DB}].[dbo].[ReferralAttachment]"
    with operator_login(bed.server) as member:
        # Act: what the member sees itself, then a plan and a run through the operator procedure.
        with member.connect() as conn:
            own_id = conn.exec_driver_sql(f"SELECT OBJECT_ID(N'{target}')").scalar()
            own_columns = conn.exec_driver_sql(
                f"SELECT COUNT(*) FROM [{TARGET_DB}].sys.columns AS c "
                f"WHERE c.object_id = (SELECT t.object_id FROM [{TARGET_DB}].sys.tables AS t WHERE t.name = N'ReferralAttachment')"
            ).scalar()
        plan = runner.run_operator(member, bed.info, mode="AllTables", execute=False)
        result = runner.run_operator(member, bed.info, mode="AllTables")

    # Assert: nothing for the member; names, columns and rows for its plan and run.
    assert (own_id, own_columns) == (None, 0)
    assert {p.table: (p.error, p.rows > 0) for p in plan.plan} == {t: (None, True) for t in TABLES}
    assert result.status == "Succeeded"
    status = bed.status(result.run_id)
    for table in TABLES:
        assert bed.target_ids(table) == bed.expected(table, *window_of(status, table))


def test_a_member_of_the_operator_role_cannot_read_or_change_source_metadata_target_or_configuration(bed):
    # Assemble: what a member must not do directly, table by table.
    info = bed.info
    job = info.job_object
    q = info.quote
    source = bed.table(SOURCE_DB, "ReferralAttachment")
    metadata = bed.table(METADATA_DB, "ReferralAttachment")
    target = bed.table(TARGET_DB, "ReferralAttachment")
    some_id = f"'{uuid.uuid4()}'"
    forbidden = {
        "read configuration": f"SELECT * FROM {job('BlobDeltaTableConfig')}",
        "change configuration": f"UPDATE {job('BlobDeltaTableConfig')} SET {q('SafetyBufferMinutes')} = 0",
        "read step scripts": f"SELECT * FROM {job('BlobDeltaStepScript')}",
        "change a watermark": f"UPDATE {job('BlobDeltaHighWatermark')} SET {q('LastHighWaterModifiedOn')} = NULL",
        "write a run row": f"DELETE FROM {job('BlobDeltaRunStep')}",
        "read the source": f"SELECT * FROM {source}",
        "change the source": f"DELETE FROM {source}",
        "read the metadata": f"SELECT * FROM {metadata}",
        "change the metadata": f"UPDATE {metadata} SET {q('ModifiedOn')} = {q('ModifiedOn')}",
        "read the target": f"SELECT * FROM {target}",
        "write the target": f"DELETE FROM {target} WHERE stream_id = {some_id}",
        "call the resolver": (f"EXEC {job('usp_BlobDelta_ResolveTableConfig')} @TableName = N'{REFERRAL}'"
                              if info.name == "mssql" else
                              f"CALL {job('usp_BlobDelta_ResolveTableConfig')}('{REFERRAL}')"),
    }
    if info.name == "postgresql":
        # The engine's functions that hand out script text or window state are not granted.
        forbidden["read the next step's script"] = f"SELECT * FROM {job('fn_BlobDelta_NextStep')}(NULL, '{REFERRAL}')"
        forbidden["compute a window"] = f"SELECT * FROM {job('fn_BlobDelta_Window')}('{REFERRAL}', NULL, now()::timestamp, 'Full')"
    before = bed.job_state()

    with operator_login(bed.server) as member:
        # Act
        denied = {what: denial(member, sql) for what, sql in forbidden.items()}
        allowed = {what: denial(member, f"SELECT * FROM {job(table)}")
                   for what, table in (("read runs", "BlobDeltaRun"), ("read run steps", "BlobDeltaRunStep"))}

    # Assert: every attempt was refused with a permission error, and nothing changed.
    assert [what for what, error in denied.items() if error is None] == []
    assert allowed == {"read runs": None, "read run steps": None}
    assert bed.job_state() == before


def test_a_login_outside_the_operator_role_cannot_run_a_delta_or_read_runs(bed):
    # Assemble: a login with access to the job database (and on PostgreSQL to its schema, so
    # that only the routines' own EXECUTE rights stand in the way) but no membership.
    before = bed.job_state()
    with operator_login(bed.server, member=False) as outsider:
        if bed.info.name == "postgresql":
            bed.sql(f"GRANT USAGE ON SCHEMA {bed.info.quote(bed.info.job_schema)} TO {bed.info.quote(outsider.url.username)}")
        # Act
        with pytest.raises(sa.exc.DBAPIError) as refused:
            runner.run_operator(outsider, bed.info, mode="AllTables")
        reading = denial(outsider, f"SELECT * FROM {bed.info.job_object('BlobDeltaRun')}")
        operator = bed.info.job_object("usp_BlobDelta_RunOperator")
        calling = denial(outsider, f"EXEC {operator} @Mode = N'AllTables'" if bed.info.name == "mssql"
                         else f"CALL {operator}('AllTables')")

    # Assert
    message = driver_message(refused.value.orig)
    assert "permission" in message and "denied" in message
    assert reading is not None
    assert calling is not None
    assert bed.job_state() == before


@pytest.mark.postgresql_only
def test_the_engine_functions_a_member_may_call_cannot_move_a_watermark_past_unprocessed_rows(bed):
    # Assemble: a run whose tables are leased and windowed but not yet processed.
    info = bed.info
    job = info.job_object
    with operator_login(bed.server) as member:
        run_id = begin_run(member, bed.info, "SingleTable", REFERRAL)
        with member.begin() as conn:
            conn.exec_driver_sql(f"SELECT * FROM {job('fn_BlobDelta_TableBegin')}(%(r)s, %(t)s)", {"r": run_id, "t": REFERRAL})
        watermark_before = bed.watermark(REFERRAL)

        # Act: skip the batches and ask for the watermark, then for the run's end.
        with pytest.raises(sa.exc.DBAPIError) as early_end:
            with member.begin() as conn:
                conn.exec_driver_sql(f"SELECT {job('fn_BlobDelta_TableEnd')}(%(r)s, %(t)s)", {"r": run_id, "t": REFERRAL})
        with pytest.raises(sa.exc.DBAPIError) as early_finish:
            with member.begin() as conn:
                conn.exec_driver_sql(f"SELECT {job('fn_BlobDelta_RunEnd')}(%(r)s)", {"r": run_id})

    # Assert: both refused with a clear reason; the watermark did not move, the lease is still the run's.
    assert "has not finished every step of table" in driver_message(early_end.value.orig)
    assert "still holds a table lease" in driver_message(early_finish.value.orig)
    assert bed.watermark(REFERRAL) == watermark_before
    assert watermark_before[3] == run_id


@pytest.mark.postgresql_only
def test_a_run_cannot_be_closed_before_every_table_in_its_scope_was_worked(bed):
    # Assemble: a member starts an all-tables run and works no table.
    job = bed.info.job_object
    with operator_login(bed.server) as member:
        run_id = begin_run(member, bed.info, "AllTables", None)

        # Act
        with pytest.raises(sa.exc.DBAPIError) as refused:
            with member.begin() as conn:
                conn.exec_driver_sql(f"SELECT {job('fn_BlobDelta_RunEnd')}(%(r)s)", {"r": run_id})

    # Assert: refused, naming both tables; the run is still Running.
    assert driver_message(refused.value.orig).startswith(
        f"Run {run_id} has not started table(s) {', '.join(sorted(TABLES))}; it is not finished.")
    assert bed.status(run_id).status == "Running"


@pytest.mark.postgresql_only
def test_code_that_fires_under_the_engine_runs_with_the_engine_role_not_the_deploying_superuser(bed):
    # Assemble: a trigger on a target table that stamps who it runs as into the row it writes
    # (names stay unique within a folder, as a FileTable requires).
    target = bed.table(TARGET_DB, "ReferralAttachment")
    bed.sql("CREATE FUNCTION public.stamp_user() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN NEW.name := current_user || ' ' || NEW.stream_id; RETURN NEW; END $$")
    bed.sql(f"CREATE TRIGGER stamp BEFORE INSERT ON {target} FOR EACH ROW EXECUTE FUNCTION public.stamp_user()")
    bed.sql("GRANT EXECUTE ON FUNCTION public.stamp_user() TO PUBLIC")
    owners = bed.sql(
        "SELECT p.proname, r.rolname, r.rolsuper FROM pg_catalog.pg_proc AS p "
        "JOIN pg_catalog.pg_roles AS r ON r.oid = p.proowner "
        "WHERE p.pronamespace = %(s)s::regnamespace AND p.prosecdef ORDER BY 1", {"s": bed.info.quote(bed.info.job_schema)})

    # Act
    with operator_login(bed.server) as member:
        result = runner.run_operator(member, bed.info, mode="SingleTable", table=REFERRAL)

    # Assert: every definer function belongs to the unprivileged engine role, and the trigger ran as it.
    assert result.status == "Succeeded"
    assert owners == [(name, "BlobDeltaEngine", False) for name in (
        "fn_BlobDelta_RunAbort", "fn_BlobDelta_RunBegin", "fn_BlobDelta_RunEnd", "fn_BlobDelta_TableAdvance",
        "fn_BlobDelta_TableBegin", "fn_BlobDelta_TableEnd", "fn_BlobDelta_TableFail")]
    assert {r[0].split(" ")[0] for r in bed.sql(f"SELECT name FROM {target}")} == {"BlobDeltaEngine"}
