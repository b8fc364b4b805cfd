"""Hold a delta run at a chosen point, kill sessions, and wait: the concurrency tests' tools."""

from __future__ import annotations

import contextlib
import time

from dbtools.delta.sample import TARGET_DB

GATE_KEY = 770077


@contextlib.contextmanager
def interrupted_after(bed, batches: int):
    """Runs started in the body stop after ``batches`` committed batches (steps 1 and later).

    A trigger on BlobDeltaRunStep fails the recording of the next batch, so that batch rolls back
    and its table fails: the state a run leaves when its session dies at that batch boundary.
    """
    job = bed.info.job_object
    if bed.info.name == "mssql":
        bed.sql(f"CREATE TRIGGER [dbo].[dbtools_test_interrupt] ON {job('BlobDeltaRunStep')} AFTER INSERT AS BEGIN "
                "SET NOCOUNT ON; IF EXISTS (SELECT 1 FROM inserted AS i WHERE i.Status = N'Completed' AND i.StepNumber > 0 "
                f"AND (SELECT COUNT(*) FROM {job('BlobDeltaRunStep')} AS s WHERE s.RunId = i.RunId "
                f"AND s.Status = N'Completed' AND s.StepNumber > 0) > {int(batches)}) "
                "THROW 50099, N'dbtools tests: the run is interrupted here', 1; END")
    else:
        bed.sql("CREATE SCHEMA IF NOT EXISTS dbtools_test")
        bed.sql("GRANT USAGE ON SCHEMA dbtools_test TO PUBLIC")
        bed.sql("CREATE OR REPLACE FUNCTION dbtools_test.interrupt() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF (SELECT count(*) FROM {job('BlobDeltaRunStep')} AS s WHERE s.\"RunId\" = NEW.\"RunId\" "
                f"AND s.\"Status\" = 'Completed' AND s.\"StepNumber\" > 0) >= {int(batches)} THEN "
                "RAISE EXCEPTION 'dbtools tests: the run is interrupted here'; END IF; RETURN NEW; END $$")
        bed.sql(f"CREATE TRIGGER dbtools_test_interrupt BEFORE INSERT ON {job('BlobDeltaRunStep')} FOR EACH ROW "
                "WHEN (NEW.\"Status\" = 'Completed' AND NEW.\"StepNumber\" > 0) EXECUTE FUNCTION dbtools_test.interrupt()")
    try:
        yield
    finally:
        if bed.info.name == "mssql":
            bed.sql("DROP TRIGGER [dbo].[dbtools_test_interrupt]")
        else:
            bed.sql(f"DROP TRIGGER dbtools_test_interrupt ON {job('BlobDeltaRunStep')}")


@contextlib.contextmanager
def files_gated(bed, table_name: str):
    """Hold every insert of a *file* into a target table until the body ends; yields the gate's holder.

    A trigger on the target waits for a lock the holder keeps: a run writes its roots and folders
    (steps 1 and 2), commits them batch by batch, and then waits at its first file (step 3), so a
    test can kill its session, or its client, there. The trigger is dropped afterwards.
    """
    target = bed.table(TARGET_DB, table_name)
    engine = bed.engine()
    holder = engine.connect()
    mssql = bed.info.name == "mssql"
    gate = bed.table(TARGET_DB, "dbtools_gate")
    if mssql:
        bed.sql(f"CREATE TABLE {gate} (x int NOT NULL)")
        # A trigger must be created in its own database: through that database's sp_executesql.
        bed.sql(f"EXEC [{TARGET_DB}].sys.sp_executesql N'CREATE TRIGGER [dbo].[dbtools_gate_files] ON [dbo].[{table_name}] "
                "AFTER INSERT AS BEGIN SET NOCOUNT ON; IF EXISTS (SELECT 1 FROM inserted WHERE is_directory = 0) "
                "DECLARE @n int = (SELECT COUNT(*) FROM [dbo].[dbtools_gate] WITH (HOLDLOCK)); END'")
    else:
        bed.sql("CREATE FUNCTION public.dbtools_gate() RETURNS trigger LANGUAGE plpgsql AS "
                f"$$ BEGIN IF NOT NEW.is_directory THEN PERFORM pg_advisory_xact_lock_shared({GATE_KEY}); END IF; "
                "RETURN NEW; END $$")
        bed.sql(f"CREATE TRIGGER dbtools_gate_files BEFORE INSERT ON {target} FOR EACH ROW EXECUTE FUNCTION public.dbtools_gate()")
    tx = holder.begin()
    try:
        if mssql:
            holder.exec_driver_sql(f"SELECT COUNT_BIG(*) FROM {gate} WITH (TABLOCKX, HOLDLOCK)").scalar()
        else:
            holder.exec_driver_sql(f"SELECT pg_advisory_xact_lock({GATE_KEY})")
        yield holder
    finally:
        tx.rollback()
        holder.close()
        engine.dispose()
        if mssql:
            bed.sql(f"EXEC [{TARGET_DB}].sys.sp_executesql N'DROP TRIGGER [dbo].[dbtools_gate_files]'")
            bed.sql(f"DROP TABLE {gate}")
        else:
            bed.sql(f"DROP TRIGGER dbtools_gate_files ON {target}")
            bed.sql("DROP FUNCTION public.dbtools_gate()")


@contextlib.contextmanager
def locked(bed, what: str):
    """Hold an exclusive lock on a table for the body; yields the holding connection."""
    engine = bed.engine()
    conn = engine.connect()
    tx = conn.begin()
    try:
        if bed.info.name == "mssql":
            # COUNT_BIG opens the scan (TOP (0) would be optimised to a constant scan that locks nothing).
            conn.exec_driver_sql(f"SELECT COUNT_BIG(*) FROM {what} WITH (TABLOCKX, HOLDLOCK)").scalar()
            held = conn.exec_driver_sql(
                "SELECT COUNT(*) FROM sys.dm_tran_locks WHERE request_session_id = @@SPID AND resource_type = N'OBJECT' "
                "AND request_mode = N'X' AND request_status = N'GRANT'").scalar()
            assert held == 1, f"no exclusive table lock on {what}"
        else:
            conn.exec_driver_sql(f"LOCK TABLE {what} IN ACCESS EXCLUSIVE MODE")
        yield conn
    finally:
        tx.rollback()
        conn.close()
        engine.dispose()


def in_thread(fn):
    """Start ``fn`` in a thread; returns (thread, results) where results gets 'value' or 'error'."""
    import threading

    results = {}

    def target():
        try:
            results["value"] = fn()
        except Exception as exc:
            results["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    return thread, results


def kill(bed, sessions) -> None:
    killer = bed.engine().execution_options(isolation_level="AUTOCOMMIT")
    with killer.connect() as other:
        for session in sessions:
            other.exec_driver_sql(f"KILL {int(session)}" if bed.info.name == "mssql"
                                  else f"SELECT pg_terminate_backend({int(session)})")


def wait_until(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def session_id(bed, conn) -> int:
    return conn.exec_driver_sql("SELECT @@SPID" if bed.info.name == "mssql" else "SELECT pg_backend_pid()").scalar()


def blocked_sessions(bed, holder: int) -> list[int]:
    """Sessions waiting on ``holder``'s locks, seen from a fresh connection (PostgreSQL snapshots
    pg_stat_activity for the length of a transaction)."""
    engine = bed.engine().execution_options(isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        if bed.info.name == "mssql":
            return [r[0] for r in conn.exec_driver_sql(
                "SELECT session_id FROM sys.dm_exec_requests WHERE blocking_session_id = ?", (holder,))]
        return [r[0] for r in conn.exec_driver_sql(
            "SELECT pid FROM pg_stat_activity WHERE %(h)s = ANY(pg_blocking_pids(pid))", {"h": holder})]
