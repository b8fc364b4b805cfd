"""usp_BlobDelta_Run when something breaks outside a step script, on every available engine.

A deadlock victim, a target that goes away, bookkeeping the engine cannot write: each fails one
table at most, gives its lease back and lets the next table run; what nothing can record fails the
run, with every lease given back, and a resume finishes it.
"""

from __future__ import annotations

import contextlib

import pytest
import sqlalchemy as sa

from dbtools.deploy import render
from dbtools.delta.sample import TARGET_DB

from .delta_bed import CLIENT, REFERRAL, TABLES, make_bed, window_of

REFUSED = "dbtools tests: the engine may not write this row"


@pytest.fixture
def bed(server):
    bed = make_bed(server)
    yield bed
    bed.close()


@contextlib.contextmanager
def run_steps_refused(bed, table: str, *, failed_rows_too_at_step_0: bool):
    """A trigger on BlobDeltaRunStep refuses the rows of ``table`` with a step number above 0 (the
    batches and their failure records), and with ``failed_rows_too_at_step_0`` also the Failed rows
    at step 0 (where a table's failure is recorded when nothing else can be)."""
    job = bed.info.job_object
    step0 = " OR (i.{s} = 0 AND i.{st} = 'Failed')" if failed_rows_too_at_step_0 else ""
    if bed.info.name == "mssql":
        bed.sql(f"CREATE TRIGGER [dbo].[dbtools_test_refuse] ON {job('BlobDeltaRunStep')} AFTER INSERT AS BEGIN "
                "SET NOCOUNT ON; IF EXISTS (SELECT 1 FROM inserted AS i WHERE i.TableName = N'" + table + "' "
                "AND (i.StepNumber > 0" + step0.format(s="StepNumber", st="Status").replace("'Failed'", "N'Failed'")
                + ")) THROW 50098, N'" + REFUSED + "', 1; END")
    else:
        bed.sql("CREATE SCHEMA IF NOT EXISTS dbtools_test")
        bed.sql("GRANT USAGE ON SCHEMA dbtools_test TO PUBLIC")
        bed.sql("CREATE OR REPLACE FUNCTION dbtools_test.refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"RAISE EXCEPTION '{REFUSED}'; END $$")
        condition = (f"NEW.\"TableName\" = '{table}' AND (NEW.\"StepNumber\" > 0"
                     + step0.format(s='"StepNumber"', st='"Status"').replace("i.", "NEW.") + ")")
        bed.sql(f"CREATE TRIGGER dbtools_test_refuse BEFORE INSERT ON {job('BlobDeltaRunStep')} FOR EACH ROW "
                f"WHEN ({condition}) EXECUTE FUNCTION dbtools_test.refuse()")
    try:
        yield
    finally:
        if bed.info.name == "mssql":
            bed.sql("DROP TRIGGER [dbo].[dbtools_test_refuse]")
        else:
            bed.sql(f"DROP TRIGGER dbtools_test_refuse ON {job('BlobDeltaRunStep')}")


def deadlocks_on_writes_to(bed, table: str, times: int, *, target: str | None = None, when: str | None = None) -> None:
    """The first ``times`` writes to a target fail as a deadlock victim would (SQLSTATE 40P01); a
    sequence, which no rollback takes back, counts the attempts. ``target`` names another table,
    ``when`` limits it to the rows inserted there that match (a row trigger's WHEN)."""
    target = target or bed.table(TARGET_DB, table.rsplit(".", 1)[1])
    bed.sql("CREATE SCHEMA IF NOT EXISTS dbtools_test")
    bed.sql("CREATE SEQUENCE dbtools_test.write_attempts")
    bed.sql("CREATE FUNCTION dbtools_test.deadlock() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
            "SET search_path = pg_catalog AS $$ BEGIN "
            f"IF nextval('dbtools_test.write_attempts') <= {int(times)} THEN "
            "RAISE EXCEPTION USING ERRCODE = '40P01', MESSAGE = 'deadlock detected (dbtools tests)'; END IF; "
            f"RETURN {'NEW' if when else 'NULL'}; END $$")
    bed.sql("GRANT USAGE ON SCHEMA dbtools_test TO PUBLIC")
    if when:
        bed.sql(f"CREATE TRIGGER dbtools_test_deadlock BEFORE INSERT ON {target} "
                f"FOR EACH ROW WHEN ({when}) EXECUTE FUNCTION dbtools_test.deadlock()")
    else:
        bed.sql(f"CREATE TRIGGER dbtools_test_deadlock BEFORE INSERT OR UPDATE ON {target} "
                "FOR EACH STATEMENT EXECUTE FUNCTION dbtools_test.deadlock()")


def write_attempts(bed) -> int:
    return bed.sql("SELECT last_value FROM dbtools_test.write_attempts")[0][0]


def steps_of(status, table: str) -> list[tuple[int, str, str]]:
    return [(s["step_number"], s["step_name"], s["status"]) for s in status.steps if s["table_name"] == table]


def latest_run(bed):
    q, t = bed.info.quote, bed.info.job_object
    top, limit = ("TOP (1) ", "") if bed.info.name == "mssql" else ("", " LIMIT 1")
    [(run_id,)] = bed.sql(f"SELECT {top}{q('RunId')} FROM {t('BlobDeltaRun')} ORDER BY {q('RunStartedAt')} DESC{limit}")
    return bed.status(run_id)


def assert_loaded(bed, status, table: str) -> None:
    start, end = window_of(status, table)
    assert bed.target_ids(table) == bed.expected(table, start, end)
    assert bed.orphans(table) == []


# ----------------------------------------------------------------------------- deadlock victims


@pytest.mark.postgresql_only
def test_a_batch_chosen_as_a_deadlock_victim_runs_again_and_the_run_equals_a_clean_one(bed):
    # SQL Server cannot raise Msg 1205 on demand (THROW and RAISERROR refuse system numbers): its
    # retry of the same shape is checked on the procedure's text below.
    # Assemble: the first two writes to the referral target are deadlock victims.
    deadlocks_on_writes_to(bed, REFERRAL, times=2)

    # Act
    result = bed.run(batch_size=4)

    # Assert: the batch ran a third time and succeeded; no batch failed; both tables loaded whole.
    status = bed.status(result.run_id)
    assert result.status == "Succeeded", status.error
    assert [s for s in status.steps if s["status"] != "Completed"] == []
    assert write_attempts(bed) >= 3, "the two deadlocks and the attempt that succeeded"
    for table in TABLES:
        assert_loaded(bed, status, table)
        assert bed.watermark(table)[1:4] == (result.run_id, False, None)


@pytest.mark.postgresql_only
def test_a_deadlock_while_a_batch_is_recorded_runs_the_whole_batch_again(bed):
    # Assemble: the first two batch rows the engine writes are deadlock victims (the script's
    # work went through: the whole batch, script included, must run again).
    deadlocks_on_writes_to(bed, REFERRAL, times=2, target=bed.info.job_object("BlobDeltaRunStep"),
                           when="NEW.\"Status\" = 'Completed' AND NEW.\"StepNumber\" > 0")

    # Act
    result = bed.run(batch_size=4)

    # Assert
    status = bed.status(result.run_id)
    assert result.status == "Succeeded", status.error
    assert write_attempts(bed) > 2
    assert [s for s in status.steps if s["status"] != "Completed"] == []
    for table in TABLES:
        assert_loaded(bed, status, table)


@pytest.mark.postgresql_only
def test_a_batch_that_stays_a_deadlock_victim_fails_its_table_after_three_retries_and_the_other_table_runs(bed):
    # Assemble: every write to the client target is a deadlock victim.
    deadlocks_on_writes_to(bed, CLIENT, times=1_000)

    # Act
    result = bed.run(batch_size=4)

    # Assert: one first attempt and three retries, then the table failed alone and gave its lease back.
    status = bed.status(result.run_id)
    assert result.status == "Failed"
    assert write_attempts(bed) == 1 + render.BATCH_RETRIES
    failed = [s for s in status.steps if s["status"] == "Failed"]
    assert [(s["table_name"], s["step_number"]) for s in failed] == [(CLIENT, failed[0]["step_number"])]
    assert status.error.startswith(f"Table '{CLIENT}', step ") and "deadlock detected (dbtools tests)" in status.error
    assert bed.target_ids(CLIENT) == set()
    assert bed.watermark(CLIENT)[0:4] == (None, None, False, None)
    assert_loaded(bed, status, REFERRAL)


def test_the_sql_server_engine_runs_a_deadlock_victims_batch_again_a_bounded_number_of_times():
    # What the PostgreSQL tests above prove by running it, read on the SQL Server text: Msg 1205 is
    # retried while the batch's own count of deadlocks is below the bound, and only there.
    [run] = [o for o in render.render_objects("mssql") if o.name == "usp_BlobDelta_Run"]
    sql = " ".join(run.sql.split())

    assert f"IF @Error IS NOT NULL AND @ErrorNumber = 1205 AND @Deadlocks < {render.BATCH_RETRIES} BEGIN SET @Deadlocks += 1;" in sql
    assert sql.count("@ErrorNumber = 1205") == 1
    assert sql.count("SET @Deadlocks = 0;") == 1
    assert sql.index("SET @Deadlocks = 0;") < sql.index("BEGIN TRY BEGIN TRANSACTION; SET @ScriptDone = 0;")


# ----------------------------------------------------------------------------- targets that go away


@pytest.mark.parametrize("dropped", TABLES)
def test_a_target_dropped_before_its_turn_fails_that_table_alone_with_its_lease_released(bed, dropped):
    # Assemble
    other = next(t for t in TABLES if t != dropped)
    bed.sql(f"DROP TABLE {bed.table(TARGET_DB, dropped.rsplit('.', 1)[1])}")

    # Act
    result = bed.run()

    # Assert: the dropped one failed at its window, naming it; the other loaded whole.
    status = bed.status(result.run_id)
    assert result.status == "Failed"
    assert steps_of(status, dropped) == [(0, "Window", "Failed")]
    assert status.error.startswith(f"Table '{dropped}': ") and dropped.rsplit(".", 1)[1] in status.error
    assert status.error.count(f"Table '{dropped}'") == 1, status.error
    assert bed.watermark(dropped)[0:4] == (None, None, False, None)
    assert_loaded(bed, status, other)
    assert bed.watermark(other)[1:4] == (result.run_id, False, None)


# ----------------------------------------------------------------------------- bookkeeping that fails


def test_a_failure_the_batch_cannot_record_fails_that_table_alone_and_the_next_table_runs(bed):
    # Assemble: the client table's batches cannot be recorded, nor can their failures (the first
    # table of the run: the referral table comes after it).
    with run_steps_refused(bed, CLIENT, failed_rows_too_at_step_0=False):
        # Act
        result = bed.run()

    # Assert: the client table failed (recorded at its window), rolled back, gave its lease back;
    # the referral table loaded whole.
    status = bed.status(result.run_id)
    assert result.status == "Failed"
    assert steps_of(status, CLIENT) == [(0, "Window", "Completed"), (0, "Window", "Failed")]
    # The client table's first batch is its queue population (step 2a runs first); both messages kept.
    assert status.error == (f"Table '{CLIENT}': step 2 QueuePopulation, batch 1: {REFUSED} "
                            f"(recording this failure failed: {REFUSED})")
    assert [s["error"] for s in status.steps if s["status"] == "Failed"] == [status.error.split(": ", 1)[1]]
    assert bed.target_ids(CLIENT) == set()
    assert bed.watermark(CLIENT)[0:4] == (None, None, False, None)
    assert_loaded(bed, status, REFERRAL)
    assert bed.watermark(REFERRAL)[1:4] == (result.run_id, False, None)


def test_an_error_nothing_can_record_fails_the_run_with_every_lease_released_and_a_resume_finishes_it(bed):
    # Assemble: neither the client table's batches nor any failure of it can be recorded.
    with run_steps_refused(bed, CLIENT, failed_rows_too_at_step_0=True):
        # Act
        with pytest.raises(sa.exc.DBAPIError) as raised:
            bed.run()
    failed = latest_run(bed)
    leases = [bed.watermark(t)[2:4] for t in TABLES]
    resumed = bed.run(resume=failed.run_id)

    # Assert: the error reached the caller; the run was marked Failed with it, held no lease and
    # had not started the next table; the resume (without the trigger) finished both.
    assert REFUSED in str(raised.value)
    assert failed.status == "Failed"
    assert failed.error == (f"Table '{CLIENT}': step 2 QueuePopulation, batch 1: {REFUSED} "
                            f"(recording this failure failed: {REFUSED})\n{REFUSED}")
    assert steps_of(failed, CLIENT) == [(0, "Window", "Completed")]
    assert steps_of(failed, REFERRAL) == []
    assert leases == [(False, None), (False, None)]
    assert (resumed.run_id, resumed.status) == (failed.run_id, "Succeeded")
    status = bed.status(failed.run_id)
    for table in TABLES:
        assert_loaded(bed, status, table)


# ----------------------------------------------------------------------------- inside a transaction


@pytest.mark.parametrize("execute", [False, True], ids=["plan", "run"])
def test_a_plan_or_a_run_inside_an_open_transaction_is_refused_and_changes_nothing(bed, execute):
    # Assemble
    from dbtools.db.procs import call_procedure
    from dbtools.delta.runner import OPERATOR_OUTPUTS

    before = bed.job_state()
    engine = bed.engine()

    # Act
    try:
        with engine.connect() as conn:
            with pytest.raises(Exception) as refused:
                with conn.begin():
                    # A read opens the transaction on SQL Server too (a driver's manual commit is an
                    # implicit transaction, which only a statement like this one starts).
                    conn.exec_driver_sql(f"SELECT COUNT(*) FROM {bed.info.job_object('BlobDeltaRun')}").scalar()
                    call_procedure(conn, bed.info, "usp_BlobDelta_RunOperator",
                                   {"Mode": "AllTables", "Execute": execute}, OPERATOR_OUTPUTS)
            if bed.info.name == "postgresql":
                held = conn.exec_driver_sql("SELECT count(*) FROM pg_catalog.pg_locks "
                                            "WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid()").scalar()
            else:
                held = conn.exec_driver_sql("SELECT COUNT(*) FROM sys.dm_tran_locks WHERE resource_type = N'APPLICATION' "
                                            "AND request_session_id = @@SPID").scalar()
    finally:
        engine.dispose()

    # Assert: refused by the engine (SQL Server: its own check; PostgreSQL: its COMMIT), no lock kept.
    message = str(refused.value)
    if bed.info.name == "mssql":
        assert "call it outside a transaction (@@TRANCOUNT = 0)" in message
    else:
        assert "invalid transaction termination" in message
    assert held == 0
    assert bed.job_state() == before
