"""usp_BlobDelta_Run / usp_BlobDelta_RunOperator on every available engine."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta

import psycopg
import pytest
import sqlalchemy as sa

from dbtools.db.procs import ProcedureValidationError
from dbtools.retry import RetryPolicy
from dbtools.delta import sample
from dbtools.delta.sample import Blob

from .blocking import blocked_sessions, files_gated, in_thread, kill, locked, session_id, wait_until
from .delta_bed import CLIENT, REFERRAL, TABLES, make_bed, utcnow, window_of


def minus_one_month(moment):
    """One calendar month earlier, clamped to the month's end, as both engines do."""
    import calendar

    year, month = (moment.year, moment.month - 1) if moment.month > 1 else (moment.year - 1, 12)
    return moment.replace(year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1]))


@pytest.fixture
def bed(server):
    bed = make_bed(server)
    yield bed
    bed.close()


def test_plan_mode_reports_each_window_and_row_count_and_changes_nothing(bed):
    before = bed.job_state()

    result = bed.run(execute=False)

    assert result.run_id is None and result.status == "Planned"
    assert [p.table for p in result.plan] == list(TABLES)
    for p in result.plan:
        blobs = bed.data.blobs[p.table.rsplit(".", 1)[1]]
        assert p.error is None
        assert p.rows == len(blobs), "every sample blob is inside the first window"
        assert p.window_start < p.window_end
    assert bed.job_state() == before


def test_a_run_loads_every_blob_of_the_window_with_its_ancestors_and_never_an_orphan(bed):
    result = bed.run(batch_size=7)

    status = bed.status(result.run_id)
    assert (result.status, status.status, status.error) == ("Succeeded", "Succeeded", None)
    for table in TABLES:
        start, end = window_of(status, table)
        assert bed.target_ids(table) == bed.expected(table, start, end)
        assert bed.orphans(table) == []
        watermark, last_run, running, lease, full_done = bed.watermark(table)
        assert (watermark, last_run, running, lease, full_done) == (end, result.run_id, False, None, False)


def test_the_window_ends_a_safety_buffer_before_the_run_and_starts_a_buffer_before_the_watermark(bed):
    watermark = utcnow() - timedelta(days=2)
    bed.set_watermark(REFERRAL, watermark)
    bed.configure(REFERRAL, SafetyBufferMinutes=90)

    result = bed.run(mode="SingleTable", table=REFERRAL)

    status = bed.status(result.run_id)
    start, end = window_of(status, REFERRAL)
    assert start == watermark - timedelta(minutes=90)
    assert end == status.started_at - timedelta(minutes=90)
    assert bed.target_ids(REFERRAL) == bed.expected(REFERRAL, start, end)
    assert bed.target_ids(CLIENT) == set(), "SingleTable touches no other table"


def test_a_row_on_the_window_start_is_loaded_and_one_just_before_it_is_not(bed):
    watermark = utcnow() - timedelta(hours=12)
    bed.set_watermark(REFERRAL, watermark)
    start = watermark - timedelta(minutes=240)
    on_start = bed.new_root(REFERRAL, "/901/", start)
    before_start = bed.new_root(REFERRAL, "/902/", start - timedelta(milliseconds=1))

    bed.run(mode="SingleTable", table=REFERRAL)

    loaded = bed.target_ids(REFERRAL)
    assert on_start.stream_id in loaded
    assert before_start.stream_id not in loaded


def test_late_writes_inside_the_buffer_and_on_the_window_end_are_picked_up_by_the_next_run(bed):
    first = bed.run(mode="SingleTable", table=REFERRAL)
    _start, end = window_of(bed.status(first.run_id), REFERRAL)
    # Written after the first run, stamped inside its window's last buffer or exactly on its end.
    late = bed.new_root(REFERRAL, "/911/", end - timedelta(minutes=30))
    on_end = bed.new_root(REFERRAL, "/912/", end)
    too_recent = bed.new_root(REFERRAL, "/913/", utcnow() - timedelta(minutes=10))

    second = bed.run(mode="SingleTable", table=REFERRAL)

    start2, end2 = window_of(bed.status(second.run_id), REFERRAL)
    loaded = bed.target_ids(REFERRAL)
    assert start2 == end - timedelta(minutes=240) and end2 > end
    assert {late.stream_id, on_end.stream_id} <= loaded
    assert too_recent.stream_id not in loaded, "ModifiedOn after WindowEnd waits for a later run"


def test_a_business_unit_run_loads_only_that_unit(bed):
    unit = bed.data.business_units[1]

    result = bed.run(mode="SingleTable", table=CLIENT, business_unit=unit)

    start, end = window_of(bed.status(result.run_id), CLIENT)
    assert bed.target_ids(CLIENT) == bed.expected(CLIENT, start, end, unit)
    assert bed.target_ids(CLIENT) != bed.expected(CLIENT, start, end)


def test_a_business_unit_run_leaves_the_watermark_so_the_next_run_loads_the_other_units(bed):
    # Assemble: a watermark older than every row, then one unit loaded on its own.
    bed.set_watermark(CLIENT, utcnow() - timedelta(days=12))
    unit = bed.data.business_units[1]
    before = bed.watermark(CLIENT)
    scoped = bed.run(mode="SingleTable", table=CLIENT, business_unit=unit)

    # Act: the next run for every unit.
    after_scoped = bed.watermark(CLIENT)
    everyone = bed.run(mode="SingleTable", table=CLIENT)

    # Assert: the unit's run finished the table but moved neither the watermark nor the
    # full-load flag; the next run took every unit's rows of the same window.
    start, end = window_of(bed.status(everyone.run_id), CLIENT)
    assert scoped.status == everyone.status == "Succeeded"
    assert after_scoped == (before[0], scoped.run_id, False, None, before[4])
    assert start == window_of(bed.status(scoped.run_id), CLIENT)[0]
    assert bed.target_ids(CLIENT) == bed.expected(CLIENT, start, end)
    assert bed.watermark(CLIENT)[0] == end


def test_missing_parents_are_back_filled_before_their_children(bed):
    # Only the files changed in this window: their folders are older than the window.
    watermark = utcnow() - timedelta(hours=8)
    bed.set_watermark(REFERRAL, watermark)
    table = REFERRAL.rsplit(".", 1)[1]
    fresh = watermark - timedelta(minutes=60)
    files = [b for b in bed.data.blobs[table] if not b.is_directory][:5]
    ids = ", ".join(bed.mark(f"i{i}") for i in range(len(files)))
    bed.sql(f"UPDATE {bed.table('AdvancedRBS_MetaData', table)} SET {bed.info.quote('ModifiedOn')} = {bed.mark('m')} "
            f"WHERE stream_id IN ({ids})", bed.params(m=fresh, **{f"i{i}": f.stream_id for i, f in enumerate(files)}))
    for f in files:
        object.__setattr__(f, "modified_on", fresh)

    result = bed.run(mode="SingleTable", table=REFERRAL, batch_size=2)

    status = bed.status(result.run_id)
    start, end = window_of(status, REFERRAL)
    assert bed.target_ids(REFERRAL) == bed.expected(REFERRAL, start, end)
    assert {f.stream_id for f in files} <= bed.target_ids(REFERRAL)
    assert bed.orphans(REFERRAL) == []
    queued = [s for s in status.steps if s["step_name"] == "QueuePopulation"]
    assert queued and queued[0]["rows_processed"] > 0


def test_a_held_lease_fails_that_table_fast_naming_the_holder_and_the_other_table_still_runs(bed):
    holder = uuid.uuid4()
    q = bed.info.quote
    bed.sql(f"UPDATE {bed.info.job_object('BlobDeltaHighWatermark')} SET {q('IsRunning')} = {bed.mark('r')}, "
            f"{q('LeaseRunId')} = {bed.mark('h')}, {q('RunLeaseExpiresAt')} = {bed.mark('e')} "
            f"WHERE {q('TableName')} = {bed.mark('t')}",
            bed.params(r=True, h=holder, e=utcnow() + timedelta(hours=1), t=REFERRAL))

    plan = bed.run(execute=False)
    result = bed.run()

    status = bed.status(result.run_id)
    skipped = {p.table: p for p in plan.plan}
    assert skipped[REFERRAL].skipped.startswith(f"Table '{REFERRAL}' is being processed by run {holder}")
    assert (skipped[REFERRAL].rows, skipped[REFERRAL].steps) == (None, ())
    assert skipped[CLIENT].skipped is None and skipped[CLIENT].rows > 0
    assert result.status == "Failed"
    assert f"is being processed by run {holder}" in status.error
    assert status.error.count(f"Table '{REFERRAL}'") == 1, status.error
    assert bed.target_ids(REFERRAL) == set()
    assert bed.target_ids(CLIENT) != set()
    assert bed.watermark(REFERRAL)[3] == holder, "someone else's lease is left alone"


def test_an_expired_lease_is_taken_over(bed):
    q = bed.info.quote
    bed.sql(f"UPDATE {bed.info.job_object('BlobDeltaHighWatermark')} SET {q('IsRunning')} = {bed.mark('r')}, "
            f"{q('LeaseRunId')} = {bed.mark('h')}, {q('RunLeaseExpiresAt')} = {bed.mark('e')}",
            bed.params(r=True, h=uuid.uuid4(), e=utcnow() - timedelta(minutes=1)))

    result = bed.run()

    assert result.status == "Succeeded"
    assert all(bed.watermark(t)[1:4] == (result.run_id, False, None) for t in TABLES)


def test_a_failing_step_fails_its_table_releases_the_lease_and_the_other_table_still_runs(bed):
    bed.configure(CLIENT, ScriptSet="Flat")  # ClientAttachment has no ModifiedOn in its target: Flat fails there

    result = bed.run()

    status = bed.status(result.run_id)
    failed = [s for s in status.steps if s["status"] == "Failed"]
    assert result.status == "Failed"
    assert [(s["table_name"], s["step_name"]) for s in failed] == [(CLIENT, "Upsert")]
    assert status.error.startswith(f"Table '{CLIENT}', step 1 Upsert, batch 1: ")
    assert bed.watermark(CLIENT)[0:4] == (None, None, False, None)
    start, end = window_of(status, REFERRAL)
    assert bed.target_ids(REFERRAL) == bed.expected(REFERRAL, start, end)


def test_resuming_a_failed_run_continues_with_the_same_windows_and_equals_a_clean_run(bed):
    bed.configure(CLIENT, ScriptSet="Flat")
    failed = bed.run(batch_size=3)
    window_before = window_of(bed.status(failed.run_id), CLIENT)
    bed.configure(CLIENT, ScriptSet="Hierarchical")  # the operator fixes the configuration

    resumed = bed.run(resume=failed.run_id)

    status = bed.status(failed.run_id)
    assert (resumed.run_id, resumed.status, status.status) == (failed.run_id, "Succeeded", "Succeeded")
    assert window_of(status, CLIENT) == window_before
    assert bed.target_ids(CLIENT) == bed.expected(CLIENT, *window_before)
    assert bed.orphans(CLIENT) == []
    referral_batches = [s for s in status.steps if s["table_name"] == REFERRAL and s["step_number"] > 0]
    assert all(s["status"] == "Completed" for s in referral_batches)
    assert len({(s["step_number"], s["batch_number"]) for s in referral_batches}) == len(referral_batches), \
        "the finished table was not run again"


def test_a_succeeded_run_cannot_be_resumed_and_nothing_changes(bed):
    done = bed.run()
    before = bed.job_state()

    with pytest.raises(ProcedureValidationError) as raised:
        bed.run(resume=done.run_id)

    assert str(raised.value) == (f"@ResumeRunId '{done.run_id}' has status Succeeded; "
                                 "only Running or Failed runs can be resumed.")
    assert bed.job_state() == before


def test_full_sync_starts_from_the_baseline_clears_the_scope_and_marks_the_initial_load(bed):
    bed.run()
    table = REFERRAL.rsplit(".", 1)[1]
    stray = Blob(uuid.uuid4(), "stray", "/950/", None, True, utcnow() - timedelta(days=400), bed.data.business_units[0])
    bed.sql(f"INSERT INTO {bed.table('Gwent_LA_FileTable_Delta', table)} (stream_id, name, path_locator, is_directory, "
            f"creation_time, last_write_time) VALUES ({', '.join(bed.mark(c) for c in 'abcdef')})",
            bed.params(a=stray.stream_id, b="stray", c="/950/", d=True, e=utcnow(), f=utcnow()))
    bed.sql(f"INSERT INTO {bed.table('AdvancedRBS_MetaData', table)} (stream_id, {bed.info.quote('ModifiedOn')}, "
            f"{bed.info.quote('OwningBusinessUnit')}) VALUES ({bed.mark('a')}, {bed.mark('b')}, {bed.mark('c')})",
            bed.params(a=stray.stream_id, b=stray.modified_on, c=stray.business_unit))

    result = bed.run(mode="SingleTable", table=REFERRAL, sync_type="Full")

    status = bed.status(result.run_id)
    start, end = window_of(status, REFERRAL)
    assert status.run_type == "Full" and result.status == "Succeeded"
    assert start == minus_one_month(status.started_at) - timedelta(days=1)
    assert bed.target_ids(REFERRAL) == bed.expected(REFERRAL, start, end), "the stray target row was cleared"
    assert bed.watermark(REFERRAL)[4] is True


@pytest.mark.parametrize("kwargs, messages", [
    ({"mode": "Everything"}, ["@Mode 'Everything' is not allowed; allowed values: AllTables, SingleTable."]),
    ({"mode": "SingleTable"}, ["@TableName is required when @Mode = 'SingleTable'."]),
    ({"mode": "SingleTable", "table": "x'; DROP TABLE y;--"},
     ["@TableName 'x''; DROP TABLE y;--' is not configured in {BlobDeltaTableConfig}; allowed values: "
      f"{CLIENT}, {REFERRAL}."]),
    ({"mode": "AllTables", "table": REFERRAL},
     [f"@TableName must be NULL when @Mode = 'AllTables' (got '{REFERRAL}')."]),
    ({"batch_size": 0, "max_dop": -1, "sync_type": "Sometimes"},
     ["@SyncType 'Sometimes' is not allowed; allowed values: Incremental, Full.",
      "@BatchSize must be 1 or more (got 0).", "@MaxDOP must be 0 or more (got -1)."]),
])
def test_every_bad_parameter_is_reported_together_and_nothing_changes(bed, kwargs, messages):
    before = bed.job_state()

    with pytest.raises(ProcedureValidationError) as raised:
        bed.run(**kwargs)

    assert str(raised.value).splitlines() == [m.replace("{BlobDeltaTableConfig}", job_table(bed, "BlobDeltaTableConfig"))
                                              for m in messages]
    assert bed.job_state() == before


def job_table(bed, name: str) -> str:
    """A job table as the engine names it in messages: dbo.X on SQL Server, "BlobDeltaJobs"."X" on PostgreSQL."""
    return f"dbo.{name}" if bed.info.name == "mssql" else f'"BlobDeltaJobs"."{name}"'


def test_a_resume_of_an_unknown_run_is_refused(bed):
    unknown = uuid.uuid4()
    with pytest.raises(ProcedureValidationError) as raised:
        bed.run(resume=unknown)
    assert str(raised.value) == f"@ResumeRunId '{unknown}' is not a run in {job_table(bed, 'BlobDeltaRun')}."


def test_run_ids_sort_by_time_in_the_engines_own_order(bed):
    from dbtools.uuid7 import sort_key, timestamp_ms

    ids = [bed.run(mode="SingleTable", table=CLIENT).run_id for _ in range(3)]

    assert sorted(ids, key=lambda u: sort_key(u, bed.info.name)) == ids
    assert all(abs(timestamp_ms(u, bed.info.name) / 1000 - time.time()) < 600 for u in ids)


# ----------------------------------------------------------------------------- concurrency


def test_two_clients_on_the_same_table_at_once_exactly_one_works_it(bed):
    table = REFERRAL.rsplit(".", 1)[1]
    with locked(bed, bed.table("AdvancedRBS_MetaData", table)):
        first, results = in_thread(lambda: bed.run(mode="SingleTable", table=REFERRAL))
        wait_until(lambda: bed.watermark(REFERRAL)[2])  # the first client holds the lease and waits on the lock
        holder = bed.watermark(REFERRAL)[3]

        second = bed.run(mode="SingleTable", table=REFERRAL)
    first.join(timeout=120)

    assert second.status == "Failed"
    assert f"is being processed by run {holder}" in bed.status(second.run_id).error
    assert results["value"].run_id == holder and results["value"].status == "Succeeded"
    start, end = window_of(bed.status(holder), REFERRAL)
    assert bed.target_ids(REFERRAL) == bed.expected(REFERRAL, start, end)


def test_a_client_killed_mid_batch_then_resumed_equals_a_clean_run(bed):
    with files_gated(bed, REFERRAL.rsplit(".", 1)[1]) as lock:
        # Roots and folders are committed batch by batch; the client then blocks at its first file
        # (step 3) and is killed there.
        # No retries: this client dies with its session, as a killed process would.
        thread, results = in_thread(lambda: bed.run(mode="SingleTable", table=REFERRAL, batch_size=2,
                                                     policy=RetryPolicy(max_attempts=1)))
        holder = session_id(bed, lock)
        wait_until(lambda: blocked_sessions(bed, holder))
        kill(bed, blocked_sessions(bed, holder))
    thread.join(timeout=120)
    errors = [results["error"]] if "error" in results else []
    q = bed.info.quote
    interrupted = uuid.UUID(str(bed.sql(
        f"SELECT {q('RunId')} FROM {bed.info.job_object('BlobDeltaRun')} WHERE {q('Status')} = 'Running'")[0][0]))
    half_done = bed.target_ids(REFERRAL)

    resumed = bed.run(resume=interrupted)

    status = bed.status(interrupted)
    start, end = window_of(status, REFERRAL)
    assert errors, "the client saw its session die"
    assert half_done and half_done < bed.expected(REFERRAL, start, end)
    assert (resumed.status, status.status) == ("Succeeded", "Succeeded")
    assert bed.target_ids(REFERRAL) == bed.expected(REFERRAL, start, end)
    assert bed.orphans(REFERRAL) == []
    completed = [(s["step_number"], s["batch_number"]) for s in status.steps
                 if s["table_name"] == REFERRAL and s["status"] == "Completed"]
    assert len(completed) == len(set(completed))
    assert bed.watermark(REFERRAL)[:4] == (end, interrupted, False, None)


def test_a_dropped_connection_mid_run_is_retried_as_a_resume_of_the_same_run(bed):
    events = []
    policy = RetryPolicy(initial_wait=0.01, on_retry=events.append)
    with locked(bed, bed.info.job_object("BlobDeltaMissingParentsQueue")) as lock:
        thread, results = in_thread(lambda: bed.run(mode="SingleTable", table=REFERRAL, batch_size=2, policy=policy))
        holder = session_id(bed, lock)
        wait_until(lambda: blocked_sessions(bed, holder))
        kill(bed, blocked_sessions(bed, holder))
    thread.join(timeout=120)

    q = bed.info.quote
    runs = bed.sql(f"SELECT {q('RunId')}, {q('Status')} FROM {bed.info.job_object('BlobDeltaRun')}")
    result = results["value"]
    start, end = window_of(bed.status(result.run_id), REFERRAL)
    assert [e.reason for e in events] in (["connection dropped"], ["PostgreSQL SQLSTATE 57P01"])
    assert [(uuid.UUID(str(r[0])), r[1]) for r in runs] == [(result.run_id, "Succeeded")], "one run, resumed"
    assert bed.target_ids(REFERRAL) == bed.expected(REFERRAL, start, end)


def test_a_run_id_that_already_exists_is_refused(bed):
    done = bed.run(mode="SingleTable", table=CLIENT)

    with pytest.raises(ProcedureValidationError, match=f"@RunId '{done.run_id}' already exists"):
        from dbtools.db.procs import call_procedure
        from dbtools.delta.runner import OPERATOR_OUTPUTS

        engine = bed.engine().execution_options(isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            call_procedure(conn, bed.info, "usp_BlobDelta_RunOperator",
                           {"Mode": "AllTables"}, OPERATOR_OUTPUTS,
                           {"RunId": str(done.run_id) if bed.info.name == "mssql" else done.run_id})


# ----------------------------------------------------------------------------- Flat script set


def _flat_table(bed, *, microseconds=False, offsets=False, target_key=True):
    """A Flat table (key, ModifiedOn, BU, payload) as source+metadata, its target, and its configuration.

    ModifiedOn is kept to the millisecond, or to the microsecond (and finer) with ``microseconds``,
    or with a time-zone offset (timestamptz / datetimeoffset) with ``offsets``. Without
    ``target_key`` the target has no primary key."""
    q = bed.info.quote
    pg = bed.info.name == "postgresql"
    modified_type = ("timestamp(6)" if pg else "datetime2(7)") if microseconds else ("timestamp(3)" if pg else "datetime2(3)")
    if offsets:
        modified_type = "timestamptz(3)" if pg else "datetimeoffset(3)"
    columns = (f"{q('NoteId')} {'uuid' if pg else 'uniqueidentifier'} NOT NULL PRIMARY KEY, "
               f"{q('Body')} {'text' if pg else 'nvarchar(200)'} NOT NULL, "
               f"{q('ModifiedOn')} {modified_type} NOT NULL, "
               f"{q('OwningBusinessUnit')} {'uuid' if pg else 'uniqueidentifier'} NOT NULL")
    for db in ("Gwent_LA_FileTable", "Gwent_LA_FileTable_Delta"):
        keyed = columns if target_key or db == "Gwent_LA_FileTable" else columns.replace(" PRIMARY KEY", "")
        bed.sql(f"CREATE TABLE {bed.table(db, 'Notes')} ({keyed})")
    t = bed.info.job_object
    names = ["TableName", "SourceDatabase", "SourceTable", "TargetDatabase", "TargetTable", "MetadataDatabase",
             "MetadataTable", "MetadataIdColumn", "ScriptSet", "BusinessUnitDatabase", "BusinessUnitTable",
             "MetadataBusinessUnitCol"]
    values = ["Notes", "Gwent_LA_FileTable", "Notes", "Gwent_LA_FileTable_Delta", "Notes", "Gwent_LA_FileTable",
              "Notes", "NoteId", "Flat", "Gwent_LA_FileTable", "LA_BU", "OwningBusinessUnit"]
    bed.sql(f"INSERT INTO {t('BlobDeltaTableConfig')} ({', '.join(q(n) for n in names)}) "
            f"VALUES ({', '.join(bed.mark(n) for n in names)})", bed.params(**dict(zip(names, values))))
    bed.deploy()


def _notes(bed, db, *, offsets=False):
    q = bed.info.quote
    modified = q("ModifiedOn")
    if offsets and bed.info.name == "mssql":
        # pyodbc cannot fetch datetimeoffset (ODBC type -155): read it as ISO 8601 text.
        modified = f"CONVERT(nvarchar(40), {modified}, 127)"
    return sorted((uuid.UUID(str(r[0])), r[1], r[2]) for r in bed.sql(
        f"SELECT {q('NoteId')}, {q('Body')}, {modified} FROM {bed.table(db, 'Notes')}"))


def _put_note(bed, db, note_id, body, modified_on, *, update=False):
    q = bed.info.quote
    unit = bed.data.business_units[0]
    if update:
        bed.sql(f"UPDATE {bed.table(db, 'Notes')} SET {q('Body')} = {bed.mark('b')}, {q('ModifiedOn')} = {bed.mark('m')} "
                f"WHERE {q('NoteId')} = {bed.mark('i')}", bed.params(b=body, m=modified_on, i=note_id))
    else:
        bed.sql(f"INSERT INTO {bed.table(db, 'Notes')} ({q('NoteId')}, {q('Body')}, {q('ModifiedOn')}, "
                f"{q('OwningBusinessUnit')}) VALUES ({bed.mark('i')}, {bed.mark('b')}, {bed.mark('m')}, {bed.mark('u')})",
                bed.params(i=note_id, b=body, m=modified_on, u=unit))


def test_flat_tables_upsert_and_an_older_version_never_overwrites_a_newer_one(bed):
    _flat_table(bed)
    base = utcnow() - timedelta(days=1)
    a, b, c = (uuid.UUID(int=n) for n in (1, 2, 3))
    for note, body in ((a, "a v1"), (b, "b v1"), (c, "c v1")):
        _put_note(bed, "Gwent_LA_FileTable", note, body, base)
    first = bed.run(mode="SingleTable", table="Notes", batch_size=2)
    # a: a newer version at the source; b: the target already holds a newer version than the
    # source's (e.g. written by a later delta), and the source changes b at an older time.
    _put_note(bed, "Gwent_LA_FileTable", a, "a v2", base + timedelta(hours=2), update=True)
    _put_note(bed, "Gwent_LA_FileTable_Delta", b, "b v3 (newer)", base + timedelta(hours=5), update=True)
    _put_note(bed, "Gwent_LA_FileTable", b, "b v2 (older)", base + timedelta(hours=1), update=True)
    bed.set_watermark("Notes", base + timedelta(hours=4))  # so the window covers base+1h .. now-4h

    second = bed.run(mode="SingleTable", table="Notes", batch_size=2)

    assert (first.status, second.status) == ("Succeeded", "Succeeded")
    assert _notes(bed, "Gwent_LA_FileTable_Delta") == [
        (a, "a v2", base + timedelta(hours=2)),
        (b, "b v3 (newer)", base + timedelta(hours=5)),
        (c, "c v1", base),
    ]


def _upsert_steps(bed, run_id):
    return [(s["batch_number"], s["rows_processed"], s["last_modified_on"], s["status"])
            for s in bed.status(run_id).steps if s["step_name"] == "Upsert"]


def test_each_batch_starts_where_the_previous_one_ended_and_records_its_last_modified_on(bed):
    # Keyset batches: batch k starts at batch k-1's last ModifiedOn instead of re-reading the window.
    _flat_table(bed)
    base = utcnow() - timedelta(days=1)
    times = [base + timedelta(minutes=n) for n in range(5)]
    notes = [uuid.UUID(int=n + 1) for n in range(5)]
    for note, at in zip(notes, times):
        _put_note(bed, "Gwent_LA_FileTable", note, f"note {note.int}", at)

    result = bed.run(mode="SingleTable", table="Notes", batch_size=2)

    assert result.status == "Succeeded"
    assert _upsert_steps(bed, result.run_id) == [
        (1, 2, times[1], "Completed"),
        (2, 2, times[3], "Completed"),
        (3, 1, times[4], "Completed"),
        (4, 0, times[4], "Completed"),  # the empty closing batch keeps the position
    ]
    assert _notes(bed, "Gwent_LA_FileTable_Delta") == _notes(bed, "Gwent_LA_FileTable")


def test_rows_sharing_one_modified_on_across_batch_boundaries_are_all_loaded(bed):
    _flat_table(bed)
    same = utcnow() - timedelta(days=1)
    for n in range(7):
        _put_note(bed, "Gwent_LA_FileTable", uuid.UUID(int=n + 1), f"tied {n}", same)
    _put_note(bed, "Gwent_LA_FileTable", uuid.UUID(int=99), "later", same + timedelta(seconds=1))

    result = bed.run(mode="SingleTable", table="Notes", batch_size=2)

    assert result.status == "Succeeded"
    assert _notes(bed, "Gwent_LA_FileTable_Delta") == _notes(bed, "Gwent_LA_FileTable")
    assert [rows for _, rows, _, _ in _upsert_steps(bed, result.run_id)] == [2, 2, 2, 2, 0]


def test_a_modified_on_finer_than_a_millisecond_is_never_skipped_at_a_batch_boundary(bed):
    # Positions are stored to the millisecond: .123600 rounds up to .124, and a batch that started
    # at >= .124 would skip .123800. The engine starts each batch 1 ms before the stored position.
    _flat_table(bed, microseconds=True)
    moment = (utcnow() - timedelta(days=1)).replace(microsecond=123600)
    first, second = uuid.UUID(int=1), uuid.UUID(int=2)
    _put_note(bed, "Gwent_LA_FileTable", first, "first", moment)
    _put_note(bed, "Gwent_LA_FileTable", second, "second", moment + timedelta(microseconds=200))

    result = bed.run(mode="SingleTable", table="Notes", batch_size=1)

    assert result.status == "Succeeded"
    assert _notes(bed, "Gwent_LA_FileTable_Delta") == _notes(bed, "Gwent_LA_FileTable")
    assert len(_notes(bed, "Gwent_LA_FileTable_Delta")) == 2


def test_a_modified_on_with_a_time_zone_offset_is_windowed_and_batched_as_utc(bed):
    # Rows stamped +02:00 across batch boundaries, and one an hour inside the window's end. On SQL
    # Server a datetimeoffset position is kept in UTC; on PostgreSQL the engine pins TimeZone to UTC,
    # whatever the session's own (here +05:30), so the window and the positions mean UTC instants.
    from datetime import timezone

    _flat_table(bed, offsets=True)
    plus_two = timezone(timedelta(hours=2))
    base = (utcnow() - timedelta(days=1)).replace(tzinfo=timezone.utc).astimezone(plus_two)
    stamps = [base + timedelta(minutes=n) for n in range(4)]
    stamps.append((utcnow() - timedelta(hours=5)).replace(tzinfo=timezone.utc).astimezone(plus_two))
    for n, at in enumerate(stamps):
        # pyodbc drops a datetime's tzinfo: SQL Server gets the offset in ISO 8601 text instead.
        value = at.isoformat(timespec="milliseconds") if bed.info.name == "mssql" else at
        _put_note(bed, "Gwent_LA_FileTable", uuid.UUID(int=n + 1), f"note {n}", value)
    if bed.info.name == "postgresql":
        bed.sql("DO $$ BEGIN EXECUTE format('ALTER DATABASE %%I SET timezone = %%L', current_database(), 'Asia/Kolkata'); END $$")
    try:
        result = bed.run(mode="SingleTable", table="Notes", batch_size=1)
    finally:
        if bed.info.name == "postgresql":
            bed.sql("DO $$ BEGIN EXECUTE format('ALTER DATABASE %%I RESET timezone', current_database()); END $$")

    assert result.status == "Succeeded"
    assert _notes(bed, "Gwent_LA_FileTable_Delta", offsets=True) == _notes(bed, "Gwent_LA_FileTable", offsets=True)
    assert len(_notes(bed, "Gwent_LA_FileTable_Delta", offsets=True)) == 5


def test_a_hierarchy_whose_blobs_all_share_one_modified_on_loads_whole_in_batches_of_one(bed):
    table = REFERRAL.rsplit(".", 1)[1]
    same = utcnow() - timedelta(days=2)
    bed.sql(f"UPDATE {bed.table('AdvancedRBS_MetaData', table)} SET {bed.info.quote('ModifiedOn')} = {bed.mark('m')}",
            bed.params(m=same))
    for blob in bed.data.blobs[table]:
        object.__setattr__(blob, "modified_on", same)

    result = bed.run(mode="SingleTable", table=REFERRAL, batch_size=1)

    start, end = window_of(bed.status(result.run_id), REFERRAL)
    assert result.status == "Succeeded"
    assert bed.target_ids(REFERRAL) == bed.expected(REFERRAL, start, end)
    assert bed.target_ids(REFERRAL) == {b.stream_id for b in bed.data.blobs[table]}
    assert bed.orphans(REFERRAL) == []


HOSTILE_TABLE = "Evil]\"'; DROP TABLE x;--{MetadataObject}"
HOSTILE_KEY = "id]\"';--"
HOSTILE_MODIFIED = "Mod'On]\"{UpdateList}"
HOSTILE_UNIT = "BU\"]' OR 1=1"
HOSTILE_CONFIG = "Hostile ]'\" name"


def _hostile_flat_table(bed):
    """A Flat table whose table and column names are hostile, configured under a hostile TableName."""
    q = bed.info.quote
    pg = bed.info.name == "postgresql"
    columns = (f"{q(HOSTILE_KEY)} {'uuid' if pg else 'uniqueidentifier'} NOT NULL PRIMARY KEY, "
               f"{q('Body')} {'text' if pg else 'nvarchar(200)'} NOT NULL, "
               f"{q(HOSTILE_MODIFIED)} {'timestamp(3)' if pg else 'datetime2(3)'} NOT NULL, "
               f"{q(HOSTILE_UNIT)} {'uuid' if pg else 'uniqueidentifier'} NOT NULL")
    for db in ("Gwent_LA_FileTable", "Gwent_LA_FileTable_Delta"):
        bed.sql(f"CREATE TABLE {bed.table(db, HOSTILE_TABLE)} ({columns})")
    names = ["TableName", "SourceDatabase", "SourceTable", "TargetDatabase", "TargetTable", "MetadataDatabase",
             "MetadataTable", "MetadataIdColumn", "MetadataModifiedOnCol", "MetadataBusinessUnitCol", "ScriptSet",
             "BusinessUnitDatabase", "BusinessUnitTable", "IsActive"]
    values = [HOSTILE_CONFIG, "Gwent_LA_FileTable", HOSTILE_TABLE, "Gwent_LA_FileTable_Delta", HOSTILE_TABLE,
              "Gwent_LA_FileTable", HOSTILE_TABLE, HOSTILE_KEY, HOSTILE_MODIFIED, HOSTILE_UNIT, "Flat",
              "Gwent_LA_FileTable", "LA_BU", False]
    bed.sql(f"INSERT INTO {bed.info.job_object('BlobDeltaTableConfig')} ({', '.join(q(n) for n in names)}) "
            f"VALUES ({', '.join(bed.mark(n) for n in names)})", bed.params(**dict(zip(names, values))))
    bed.deploy()


def _hostile_rows(bed, db):
    q = bed.info.quote
    return sorted((uuid.UUID(str(r[0])), r[1], r[2], uuid.UUID(str(r[3]))) for r in bed.sql(
        f"SELECT {q(HOSTILE_KEY)}, {q('Body')}, {q(HOSTILE_MODIFIED)}, {q(HOSTILE_UNIT)} "
        f"FROM {bed.table(db, HOSTILE_TABLE)}"))


def _put_hostile(bed, note_id, body, modified_on, *, update=False):
    q = bed.info.quote
    t = bed.table("Gwent_LA_FileTable", HOSTILE_TABLE)
    if update:
        bed.sql(f"UPDATE {t} SET {q('Body')} = {bed.mark('b')}, {q(HOSTILE_MODIFIED)} = {bed.mark('m')} "
                f"WHERE {q(HOSTILE_KEY)} = {bed.mark('i')}", bed.params(b=body, m=modified_on, i=note_id))
    else:
        bed.sql(f"INSERT INTO {t} ({q(HOSTILE_KEY)}, {q('Body')}, {q(HOSTILE_MODIFIED)}, {q(HOSTILE_UNIT)}) "
                f"VALUES ({bed.mark('i')}, {bed.mark('b')}, {bed.mark('m')}, {bed.mark('u')})",
                bed.params(i=note_id, b=body, m=modified_on, u=bed.data.business_units[note_id.int % 2]))


def test_hostile_table_and_column_names_in_configuration_run_a_whole_delta_as_plain_names(bed):
    # Every name from configuration is quoted: a table and columns named like injections are just
    # names, planned, loaded, updated and watermarked like any other, and nothing else is touched.
    _hostile_flat_table(bed)
    base = utcnow() - timedelta(days=1)
    notes = [uuid.UUID(int=n) for n in range(1, 6)]
    for n, note in enumerate(notes):
        _put_hostile(bed, note, f"v1 {n}", base + timedelta(minutes=n))
    before = {name: rows for name, rows in bed.job_state().items() if name not in ("BlobDeltaTableConfig",)}

    plan = bed.run(mode="SingleTable", table=HOSTILE_CONFIG, execute=False)
    first = bed.run(mode="SingleTable", table=HOSTILE_CONFIG, batch_size=2)
    _put_hostile(bed, notes[0], "v2", base + timedelta(hours=2), update=True)
    bed.set_watermark(HOSTILE_CONFIG, base + timedelta(hours=4))
    second = bed.run(mode="SingleTable", table=HOSTILE_CONFIG, batch_size=2)

    assert [(t.table, t.rows, t.error) for t in plan.plan] == [(HOSTILE_CONFIG, 5, None)]
    assert (first.status, second.status) == ("Succeeded", "Succeeded"), (first, second)
    assert _hostile_rows(bed, "Gwent_LA_FileTable_Delta") == _hostile_rows(bed, "Gwent_LA_FileTable")
    assert _hostile_rows(bed, "Gwent_LA_FileTable_Delta")[0][1:3] == ("v2", base + timedelta(hours=2))
    assert bed.watermark(HOSTILE_CONFIG)[1] == second.run_id
    after = bed.job_state()
    for name in sample.TABLES:
        assert after[name] == before[name], f"{name} was touched"


def test_run_ids_the_engine_makes_itself_are_uuid7_in_the_engines_order(bed):
    from dbtools.db.procs import call_procedure
    from dbtools.delta.runner import OPERATOR_OUTPUTS
    from dbtools.uuid7 import sort_key

    engine = bed.engine().execution_options(isolation_level="AUTOCOMMIT")
    ids = []
    for _ in range(3):
        with engine.connect() as conn:  # no RunId passed in: the procedure makes one
            out = call_procedure(conn, bed.info, "usp_BlobDelta_RunOperator",
                                 {"Mode": "SingleTable", "TableName": CLIENT}, OPERATOR_OUTPUTS)
        ids.append(uuid.UUID(str(out["RunId"])))
        time.sleep(0.01)

    assert all(u.version == 7 for u in ids)
    assert sorted(ids, key=lambda u: sort_key(u, bed.info.name)) == ids


def test_a_run_whose_lease_is_taken_over_mid_table_fails_that_table_and_moves_no_watermark(bed):
    table = REFERRAL.rsplit(".", 1)[1]
    with locked(bed, bed.table("AdvancedRBS_MetaData", table)):
        thread, results = in_thread(lambda: bed.run(mode="SingleTable", table=REFERRAL))
        wait_until(lambda: bed.watermark(REFERRAL)[2])
        # Another run takes the lease over (as if this one's had expired) while the batch waits.
        q = bed.info.quote
        bed.sql(f"UPDATE {bed.info.job_object('BlobDeltaHighWatermark')} SET {q('LeaseRunId')} = {bed.mark('h')} "
                f"WHERE {q('TableName')} = {bed.mark('t')}", bed.params(h=uuid.uuid4(), t=REFERRAL))
    thread.join(timeout=120)

    result = results["value"]
    status = bed.status(result.run_id)
    assert result.status == "Failed"
    assert "The lease on this table was taken over by another run; the batch was rolled back." in status.error
    assert bed.target_ids(REFERRAL) == set()
    assert bed.watermark(REFERRAL)[0] is None


# ----------------------------------------------------------------------------- first loads (revision 0008)


def _count_insert_attempts(bed):
    """Give the target a column of its own numbered by an identity: its values are never given
    back, also when the insert rolls back, so gaps show rows inserted and rolled back."""
    q = bed.info.quote
    kind = "bigint GENERATED BY DEFAULT AS IDENTITY" if bed.info.name == "postgresql" else "bigint IDENTITY(1, 1) NOT NULL"
    bed.sql(f"ALTER TABLE {bed.table('Gwent_LA_FileTable_Delta', 'Notes')} ADD {q('Attempt')} {kind}")


def _insert_attempts(bed):
    """(identity values given out, rows in the target)."""
    target = bed.table("Gwent_LA_FileTable_Delta", "Notes")
    if bed.info.name == "postgresql":
        given = "pg_catalog.pg_sequence_last_value(pg_catalog.pg_get_serial_sequence('\"Gwent_LA_FileTable_Delta\".\"Notes\"', 'Attempt')::regclass)"
    else:
        given = (f"(SELECT CONVERT(bigint, c.last_value) FROM [Gwent_LA_FileTable_Delta].sys.identity_columns AS c "
                 f"WHERE c.object_id = OBJECT_ID(N'{target}') AND c.name = N'Attempt')")
    return tuple(bed.sql(f"SELECT {given}, (SELECT COUNT(*) FROM {target})")[0])


def _poisoned_notes(bed, count=6, *, target_key=True):
    """Notes a minute apart whose fourth cannot be written to the target (a CHECK there): with
    batches of two, a first load copies the first batch and fails in the second."""
    _flat_table(bed, target_key=target_key)
    q = bed.info.quote
    bed.sql(f"ALTER TABLE {bed.table('Gwent_LA_FileTable_Delta', 'Notes')} "
            f"ADD CONSTRAINT {q('CK_Notes_NoPoison')} CHECK ({q('Body')} <> 'poison')")
    base = utcnow() - timedelta(days=1)
    notes = [uuid.UUID(int=n + 1) for n in range(count)]
    for n, note in enumerate(notes):
        _put_note(bed, "Gwent_LA_FileTable", note, "poison" if n == 3 else f"note {n}", base + timedelta(minutes=n))
    return base, notes


def _cure_poison(bed, base, notes):
    """Make the poisoned fourth note writable, keeping its ModifiedOn."""
    _put_note(bed, "Gwent_LA_FileTable", notes[3], "cured", base + timedelta(minutes=3), update=True)


def _write_late(bed, base, notes):
    """A newer version of the first note, stamped past the failed load's position."""
    _put_note(bed, "Gwent_LA_FileTable", notes[0], "late version", base + timedelta(minutes=10), update=True)


def test_the_window_row_records_a_first_load_only_when_the_target_holds_no_row(bed):
    # A first load, then an incremental run into the filled target, then a Full sync (its clean
    # slate empties the target first), then a Full sync of one business unit (others' rows stay).
    _flat_table(bed)
    base = utcnow() - timedelta(days=1)
    for n in range(3):
        _put_note(bed, "Gwent_LA_FileTable", uuid.UUID(int=n + 1), f"note {n}", base + timedelta(minutes=n))
    runs = [bed.run(mode="SingleTable", table="Notes", batch_size=2),
            bed.run(mode="SingleTable", table="Notes", batch_size=2),
            bed.run(mode="SingleTable", table="Notes", batch_size=2, sync_type="Full"),
            bed.run(mode="SingleTable", table="Notes", batch_size=2, sync_type="Full",
                    business_unit=bed.data.business_units[1])]

    assert [r.status for r in runs] == ["Succeeded"] * 4
    assert [bed.first_load_flags(r.run_id) for r in runs] == [
        {"Notes": True}, {"Notes": False}, {"Notes": True}, {"Notes": False}]
    assert _notes(bed, "Gwent_LA_FileTable_Delta") == _notes(bed, "Gwent_LA_FileTable")


def test_a_first_load_and_a_load_that_looks_up_every_row_leave_the_same_rows(bed):
    # Ties across batch boundaries and a ModifiedOn finer than the millisecond, where the first
    # load still looks rows up. The second load starts with one unrelated row in the target, so
    # it is no first load and looks every row up.
    _flat_table(bed, microseconds=True)
    _count_insert_attempts(bed)
    moment = (utcnow() - timedelta(days=1)).replace(microsecond=123600)
    stamps = [moment] * 5 + [moment + timedelta(microseconds=200), moment + timedelta(microseconds=900),
                             moment + timedelta(milliseconds=1), moment + timedelta(milliseconds=2, microseconds=400),
                             moment + timedelta(seconds=1)]
    for n, at in enumerate(stamps):
        _put_note(bed, "Gwent_LA_FileTable", uuid.UUID(int=n + 1), f"note {n}", at)
    first = bed.run(mode="SingleTable", table="Notes", batch_size=2)
    first_rows = _notes(bed, "Gwent_LA_FileTable_Delta")
    first_attempts = _insert_attempts(bed)
    bed.sql(f"DELETE FROM {bed.table('Gwent_LA_FileTable_Delta', 'Notes')}")
    stray = uuid.UUID(int=999)
    _put_note(bed, "Gwent_LA_FileTable_Delta", stray, "stray", moment - timedelta(days=30))
    bed.set_watermark("Notes", None)

    second = bed.run(mode="SingleTable", table="Notes", batch_size=2)

    assert (first.status, second.status) == ("Succeeded", "Succeeded")
    assert (bed.first_load_flags(first.run_id), bed.first_load_flags(second.run_id)) == (
        {"Notes": True}, {"Notes": False})
    assert first_rows == _notes(bed, "Gwent_LA_FileTable")
    assert [r for r in _notes(bed, "Gwent_LA_FileTable_Delta") if r[0] != stray] == first_rows
    assert len(first_rows) == len(stamps)
    assert first_attempts == (len(stamps), len(stamps)), "the first load inserted every row once, no batch ran twice"


def test_a_late_write_to_a_row_a_first_load_already_copied_is_applied_when_the_load_resumes(bed):
    # The first load copies notes 1-2, then fails on the poisoned note 4. Meanwhile note 1 gets a
    # newer version, stamped past the load's position: the resumed first load would insert it
    # again without looking, hits the key, and runs that batch again with the target lookups.
    base, notes = _poisoned_notes(bed)
    _count_insert_attempts(bed)
    failed = bed.run(mode="SingleTable", table="Notes", batch_size=2)
    copied = _notes(bed, "Gwent_LA_FileTable_Delta")
    _cure_poison(bed, base, notes)
    _write_late(bed, base, notes)
    given_before, _ = _insert_attempts(bed)

    resumed = bed.run(resume=failed.run_id)

    given_after, _ = _insert_attempts(bed)
    assert (failed.status, resumed.status) == ("Failed", "Succeeded")
    assert copied == [(notes[0], "note 0", base), (notes[1], "note 1", base + timedelta(minutes=1))]
    # The resume inserts notes 3-6 (four identity values) and tries note 1 once without looking,
    # which rolls back (one more). PostgreSQL's ON CONFLICT update of note 1 also takes one.
    # Without the shortcut the rolled-back try would not happen.
    assert given_after - given_before == 4 + 1 + (1 if bed.info.name == "postgresql" else 0)
    assert bed.first_load_flags(failed.run_id) == {"Notes": False}, "the rerun ended the shortcut for this load"
    assert _notes(bed, "Gwent_LA_FileTable_Delta") == _notes(bed, "Gwent_LA_FileTable")
    assert _notes(bed, "Gwent_LA_FileTable_Delta")[0] == (notes[0], "late version", base + timedelta(minutes=10))
    assert [s["status"] for s in bed.status(failed.run_id).steps if s["step_name"] == "Upsert"] == [
        "Completed", "Failed", "Completed", "Completed", "Completed", "Completed"]


def test_once_a_copied_row_came_back_the_rest_of_the_first_load_looks_every_row_up(bed):
    # Batches of one. The first load copies notes 1-3 and fails on the poisoned note 4. Meanwhile
    # notes 1 and 2 get newer versions, stamped between notes 4 and 5 and between notes 5 and 6.
    # The resumed load inserts note 1 again without looking, hits the key and runs that batch
    # again with lookups; note 2, two batches later, is looked up at once instead of hitting the
    # key a second time.
    base, notes = _poisoned_notes(bed)
    _count_insert_attempts(bed)
    failed = bed.run(mode="SingleTable", table="Notes", batch_size=1)
    _cure_poison(bed, base, notes)
    _put_note(bed, "Gwent_LA_FileTable", notes[0], "late version 1", base + timedelta(minutes=3, seconds=30), update=True)
    _put_note(bed, "Gwent_LA_FileTable", notes[1], "late version 2", base + timedelta(minutes=4, seconds=30), update=True)
    given_before, _ = _insert_attempts(bed)

    resumed = bed.run(resume=failed.run_id)

    given_after, _ = _insert_attempts(bed)
    assert (failed.status, resumed.status) == ("Failed", "Succeeded")
    # Notes 4, 5 and 6 are inserted (three identity values) and note 1 is tried once without
    # looking, which rolls back (one more); PostgreSQL's ON CONFLICT updates of notes 1 and 2 take
    # one each. A second try without looking, for note 2, would take one more.
    assert given_after - given_before == 3 + 1 + (2 if bed.info.name == "postgresql" else 0)
    assert bed.first_load_flags(failed.run_id) == {"Notes": False}
    assert _notes(bed, "Gwent_LA_FileTable_Delta") == _notes(bed, "Gwent_LA_FileTable")
    assert _notes(bed, "Gwent_LA_FileTable_Delta")[:2] == [
        (notes[0], "late version 1", base + timedelta(minutes=3, seconds=30)),
        (notes[1], "late version 2", base + timedelta(minutes=4, seconds=30))]


def test_a_resumed_first_load_looks_rows_up_again_once_another_run_has_opened_the_table(bed):
    # Another run loaded the table after the first load failed; the first load, resumed, must
    # not take the target for its own any more.
    base, notes = _poisoned_notes(bed)
    failed = bed.run(mode="SingleTable", table="Notes", batch_size=2)
    _cure_poison(bed, base, notes)
    other = bed.run(mode="SingleTable", table="Notes", batch_size=2)
    _put_note(bed, "Gwent_LA_FileTable", notes[5], "newer", base + timedelta(minutes=30), update=True)

    resumed = bed.run(resume=failed.run_id)

    assert (failed.status, other.status, resumed.status) == ("Failed", "Succeeded", "Succeeded")
    assert bed.first_load_flags(other.run_id) == {"Notes": False}
    assert bed.first_load_flags(failed.run_id) == {"Notes": False}
    assert _notes(bed, "Gwent_LA_FileTable_Delta") == _notes(bed, "Gwent_LA_FileTable")


def test_a_flat_table_with_its_own_metadata_table_loads_and_keeps_newer_target_rows(bed):
    # The source is looked up by key for each metadata row when the metadata is another table.
    _flat_table(bed)
    q = bed.info.quote
    pg = bed.info.name == "postgresql"
    meta = bed.table("AdvancedRBS_MetaData", "NotesMeta")
    bed.sql(f"CREATE TABLE {meta} ({q('NoteId')} {'uuid' if pg else 'uniqueidentifier'} NOT NULL PRIMARY KEY, "
            f"{q('ModifiedOn')} {'timestamp(3)' if pg else 'datetime2(3)'} NOT NULL, "
            f"{q('OwningBusinessUnit')} {'uuid' if pg else 'uniqueidentifier'} NOT NULL)")
    bed.configure("Notes", MetadataDatabase="AdvancedRBS_MetaData", MetadataTable="NotesMeta")
    bed.deploy()
    base = utcnow() - timedelta(days=1)
    notes = [uuid.UUID(int=n + 1) for n in range(5)]

    def put(note, body, at, *, update=False):
        _put_note(bed, "Gwent_LA_FileTable", note, body, at, update=update)
        if update:
            bed.sql(f"UPDATE {meta} SET {q('ModifiedOn')} = {bed.mark('m')} WHERE {q('NoteId')} = {bed.mark('i')}",
                    bed.params(m=at, i=note))
        else:
            bed.sql(f"INSERT INTO {meta} VALUES ({bed.mark('i')}, {bed.mark('m')}, {bed.mark('u')})",
                    bed.params(i=note, m=at, u=bed.data.business_units[0]))

    for n, note in enumerate(notes):
        put(note, f"v1 {n}", base + timedelta(minutes=n))
    first = bed.run(mode="SingleTable", table="Notes", batch_size=2)
    put(notes[0], "v2", base + timedelta(hours=2), update=True)
    _put_note(bed, "Gwent_LA_FileTable_Delta", notes[1], "newer in target", base + timedelta(hours=6), update=True)
    put(notes[1], "older", base + timedelta(hours=1), update=True)
    bed.set_watermark("Notes", base + timedelta(hours=4))

    second = bed.run(mode="SingleTable", table="Notes", batch_size=2)

    assert (first.status, second.status) == ("Succeeded", "Succeeded")
    assert bed.first_load_flags(first.run_id) == {"Notes": True}
    assert _notes(bed, "Gwent_LA_FileTable_Delta") == [
        (notes[0], "v2", base + timedelta(hours=2)),
        (notes[1], "newer in target", base + timedelta(hours=6)),
    ] + [(note, f"v1 {n}", base + timedelta(minutes=n)) for n, note in enumerate(notes) if n >= 2]


def test_a_first_load_into_a_target_without_a_unique_key_looks_every_row_up(bed):
    # Without a unique key on the id, a plain insert of a row the target holds would not fail but
    # duplicate it. SQL Server looks every row up then (the late write updates its copy);
    # PostgreSQL's Flat script needs the key anyway (ON CONFLICT) and says so.
    base, notes = _poisoned_notes(bed, target_key=False)
    failed = bed.run(mode="SingleTable", table="Notes", batch_size=2)
    _cure_poison(bed, base, notes)
    _write_late(bed, base, notes)

    resumed = bed.run(resume=failed.run_id)

    status = bed.status(failed.run_id)
    if bed.info.name == "postgresql":
        assert resumed.status == "Failed"
        assert "there is no unique or exclusion constraint matching the ON CONFLICT specification" in status.error
        assert _notes(bed, "Gwent_LA_FileTable_Delta") == []
    else:
        assert resumed.status == "Succeeded"
        assert _notes(bed, "Gwent_LA_FileTable_Delta") == _notes(bed, "Gwent_LA_FileTable")


def test_a_first_load_into_a_target_with_an_instead_of_insert_trigger_looks_every_row_up(bed):
    # An INSTEAD OF INSERT trigger that skips keys the target holds turns the key violation a first
    # load relies on into silence: the late write would be lost. With such a trigger SQL Server
    # looks every row up. (PostgreSQL has no INSTEAD OF trigger on tables; a BEFORE INSERT trigger
    # returning NULL drops the row on every path, ON CONFLICT's update included.)
    if bed.info.name != "mssql":
        pytest.skip("SQL Server only: INSTEAD OF INSERT triggers exist on SQL Server tables alone")
    base, notes = _poisoned_notes(bed)
    bed.sql("EXEC [Gwent_LA_FileTable_Delta].sys.sp_executesql N'"
            "CREATE TRIGGER dbo.SkipKnownNotes ON dbo.Notes INSTEAD OF INSERT AS BEGIN SET NOCOUNT ON; "
            "INSERT INTO dbo.Notes (NoteId, Body, ModifiedOn, OwningBusinessUnit) "
            "SELECT i.NoteId, i.Body, i.ModifiedOn, i.OwningBusinessUnit FROM inserted AS i "
            "WHERE NOT EXISTS (SELECT 1 FROM dbo.Notes AS n WHERE n.NoteId = i.NoteId); END'")
    failed = bed.run(mode="SingleTable", table="Notes", batch_size=2)
    _cure_poison(bed, base, notes)
    _write_late(bed, base, notes)

    resumed = bed.run(resume=failed.run_id)

    assert (failed.status, resumed.status) == ("Failed", "Succeeded")
    assert _notes(bed, "Gwent_LA_FileTable_Delta") == _notes(bed, "Gwent_LA_FileTable")


# ----------------------------------------------------------------------------- probing batches (revision 0009)


def _nodes(plan: dict, parent: dict | None = None):
    """Every node of an EXPLAIN (FORMAT JSON, VERBOSE) plan, with its parent node ({} for the top)."""
    yield plan, parent or {}
    for child in plan.get("Plans", []):
        yield from _nodes(child, plan)


def _read(node: dict) -> tuple[str, str] | None:
    """(schema, table) the node reads, if it scans a table (writing one is not reading it)."""
    return (node["Schema"], node["Relation Name"]) if "Relation Name" in node and node["Node Type"] != "ModifyTable" else None


def _per_row_subplan(node: dict) -> bool:
    return node.get("Parent Relationship") == "SubPlan" and not node.get("Subplan Name", "").startswith("hashed")


def _scanned(plan: dict) -> set[tuple[str, str]]:
    return {_read(node) for node, _ in _nodes(plan)} - {None}


def _first_row_only(node: dict, parent: dict) -> bool:
    """An unfiltered scan right under LIMIT 1 stops at the first row it meets: whether a table
    holds any row (revision 0016's step 2a asks it of a first load's target), not a read of it."""
    return (parent.get("Node Type") == "Limit" and parent.get("Plan Rows") == 1 and "Filter" not in node
            and len(parent.get("Plans", [])) == 1)


#: A scan node with one of these reads by an index condition or by row addresses.
BOUNDED = ("Index Cond", "TID Cond", "Recheck Cond")


def _reads_without_index(plan: dict, relations: set[tuple[str, str]]):
    """(node, parent) of every read of ``relations`` bounded by neither an index condition nor row addresses."""
    return [(node, parent) for node, parent in _nodes(plan)
            if _read(node) in relations and not any(key in node for key in BOUNDED)]


def _unbounded_scans(plan: dict, relations: set[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(schema, node type, parent node type) of every read of ``relations`` that is not bounded by
    an index condition or row addresses, nor by LIMIT 1 (_first_row_only): a read of the whole table."""
    return [(node["Schema"], node["Node Type"], parent.get("Node Type", ""))
            for node, parent in _reads_without_index(plan, relations) if not _first_row_only(node, parent)]


@pytest.mark.parametrize("statistics", ["full", "empty"])
@pytest.mark.parametrize("step", ["QueuePopulation", "Roots", "MissingParentsBatch", "Children", "Deletions"])
def test_postgresqls_upsert_batches_probe_the_source_and_target_per_row_whatever_the_targets_statistics(
        bed, step, statistics):
    # Revision 0009: as plain joins, a Children batch was planned as hash joins over the whole
    # source and target once the target's statistics showed it filling up. Revision 0010's upserts
    # keep probing both per row (LATERAL ... LIMIT 1, [NOT] EXISTS ... OFFSET 0), which no
    # statistics can undo, and find a moved folder's subtree by a range of the path index and its
    # rows by address. So every read of the source or the target is bounded: an index condition or
    # a row address, never a whole table (with sequential scans priced out, as on a large table).
    if bed.info.name != "postgresql":
        pytest.skip("PostgreSQL only: the plans of PostgreSQL's scripts")
    q, t = bed.info.quote, bed.info.job_object
    assert bed.run().status == "Succeeded"
    name = REFERRAL.rsplit(".", 1)[1]
    target = bed.table(sample.TARGET_DB, name)
    bed.sql(f"ANALYZE {target}")  # a full target, and statistics that say so
    if statistics == "empty":
        # ... or that say it is empty, as after DELETE and VACUUM of a target reloaded since (the
        # Deletions step was then planned as a loop over the target per target row).
        bed.sql(f"UPDATE pg_catalog.pg_class SET reltuples = 0, relpages = 1 WHERE oid = '{target}'::regclass")
    [(script,)] = bed.sql(f"SELECT {t('fn_BlobDelta_FillScript')}(%(t)s, s.{q('ScriptText')}) "
                          f"FROM (SELECT {q('ScriptText')}, {q('StepName')} FROM {t('BlobDeltaStepScript')} "
                          f"      WHERE {q('ScriptSet')} = 'Hierarchical' "
                          f"      UNION ALL SELECT {q('ScriptText')}, 'QueuePopulation' FROM {t('BlobDeltaQueuePopulationScript')}) AS s "
                          f"WHERE s.{q('StepName')} = %(s)s", {"t": REFERRAL, "s": step})
    moments = sorted(b.modified_on for b in bed.data.blobs[name])
    # The last batch of a first load: the window's start, its end, and a position near the end.
    values = (500, None, moments[0], moments[-1] + timedelta(seconds=1), None, uuid.uuid4(), REFERRAL, moments[-3], True)

    engine = bed.engine()
    try:
        with engine.connect() as conn:
            # EXPLAIN takes no server-side parameters: the values are bound by the client.
            cursor = psycopg.ClientCursor(conn.connection.driver_connection)
            cursor.execute("SET enable_seqscan = off")  # these test tables are small; a real target is not
            cursor.execute(f"PREPARE batch (integer, uuid, timestamp, timestamp, uuid, uuid, text, timestamp, boolean) AS {script}")
            cursor.execute("EXPLAIN (FORMAT JSON, VERBOSE) EXECUTE batch (%s, %s, %s, %s, %s, %s, %s, %s, %s)", values)
            plan = cursor.fetchone()[0][0]["Plan"]
            conn.rollback()
    finally:
        engine.dispose()

    relations = {(sample.SOURCE_DB, name), (sample.TARGET_DB, name)}
    assert relations <= _scanned(plan)
    assert _unbounded_scans(plan, relations) == []
    # The metadata (walked by the window, looked up by id) and the run's candidates (revision 0017)
    # are read by index too, where a step reads them.
    assert _unbounded_scans(plan, {(sample.METADATA_DB, name), ("BlobDeltaJobs", "BlobDeltaRunCandidate")}) == []
    # The one read bounded by LIMIT 1 alone: step 2a's probe of whether a first load's target is empty.
    assert [_read(node) for node, parent in _reads_without_index(plan, relations) if _first_row_only(node, parent)] \
        == ([(sample.TARGET_DB, name)] if step == "QueuePopulation" else [])
    assert [node["Node Type"] for node, _ in _nodes(plan)
            if node["Node Type"] in ("Hash", "Merge Join") and _scanned(node) & relations] == []


def _configure(bed, table_name, **values):
    q, t = bed.info.quote, bed.info.job_object
    bed.sql(f"INSERT INTO {t('BlobDeltaTableConfig')} ({', '.join(q(n) for n in values)}) "
            f"VALUES ({', '.join(bed.mark(n) for n in values)})", bed.params(**values))
    bed.deploy()


def _refused(bed, table: str, target: str) -> tuple:
    """Plan, then run, a table the engine refuses: the plan's (table, error) pairs, the run's status
    and error, the target's row count and the table's lease rows (none: no lease was taken)."""
    q = bed.info.quote
    plan = bed.run(mode="SingleTable", table=table, execute=False)
    result = bed.run(mode="SingleTable", table=table)
    return ([(p.table, p.error) for p in plan.plan], result.status, bed.status(result.run_id).error,
            bed.sql(f"SELECT COUNT(*) FROM {target}"),
            bed.sql(f"SELECT COUNT(*) FROM {bed.info.job_object('BlobDeltaHighWatermark')} WHERE {q('TableName')} = '{table}'"))


def test_a_hierarchical_target_whose_parent_column_is_stored_is_refused_before_anything_is_written(bed):
    # Assemble: the sample source copied to a plain table whose parent_path_locator is an ordinary column.
    pg = bed.info.name == "postgresql"
    path = "text" if pg else "hierarchyid"
    bed.sql(f"CREATE TABLE {bed.table('Gwent_LA_FileTable_Delta', 'Plain')} (stream_id {'uuid' if pg else 'uniqueidentifier'} "
            f"NOT NULL PRIMARY KEY, name {'text' if pg else 'nvarchar(255)'} NOT NULL, file_stream {'bytea' if pg else 'varbinary(max)'}, "
            f"path_locator {path} NOT NULL UNIQUE, parent_path_locator {path} NULL, is_directory {'boolean' if pg else 'bit'} NOT NULL, "
            f"creation_time {'timestamptz' if pg else 'datetimeoffset(7)'} NOT NULL, "
            f"last_write_time {'timestamptz' if pg else 'datetimeoffset(7)'} NOT NULL)")
    _configure(bed, "Plain", TableName="Plain", SourceDatabase="Gwent_LA_FileTable", SourceTable="ReferralAttachment",
               TargetDatabase="Gwent_LA_FileTable_Delta", TargetTable="Plain", MetadataDatabase="AdvancedRBS_MetaData",
               MetadataTable="ReferralAttachment", MetadataBusinessUnitCol="OwningBusinessUnit",
               BusinessUnitDatabase="Gwent_LA_FileTable", BusinessUnitTable="LA_BU",
               QueuePopulationScriptName="HierarchicalMissingParents")
    message = ("the target's parent_path_locator must be computed from path_locator, as in a FileTable; a stored "
               "column would not follow a moved folder (README, \"Hierarchical targets\").")

    refused = _refused(bed, "Plain", bed.table("Gwent_LA_FileTable_Delta", "Plain"))

    assert refused == ([("Plain", message)], "Failed", f"Table 'Plain': {message}", [(0,)], [(0,)])


def test_the_twin_target_computes_file_type_and_cached_file_size_and_refuses_a_write_that_names_them(bed):
    # The sample tables are as strict as a FileTable: its computed columns cannot be written.
    target = bed.table("Gwent_LA_FileTable_Delta", "ReferralAttachment")
    size = "octet_length(file_stream)" if bed.info.name == "postgresql" else "CAST(DATALENGTH(file_stream) AS bigint)"

    result = bed.run(mode="SingleTable", table=REFERRAL)

    assert result.status == "Succeeded"
    rows = bed.sql(f"SELECT name, file_type, cached_file_size, {size} FROM {target}")
    assert {ft for _name, ft, _cached, _length in rows} == {"bin", None}, "files and folders"
    assert all((ft, cached) == ((name.rsplit(".", 1)[1] if "." in name else None), length)
               for name, ft, cached, length in rows)
    with pytest.raises(sa.exc.DBAPIError):
        bed.sql(f"UPDATE {target} SET file_type = 'txt'")
    assert bed.sql(f"SELECT name, file_type, cached_file_size, {size} FROM {target}") == rows


def test_a_flat_target_whose_key_is_an_identity_column_is_refused_before_anything_is_written(bed):
    # Assemble: a Flat source keyed by an int, and a target whose key is an identity column.
    pg = bed.info.name == "postgresql"
    q = bed.info.quote
    rest = (f"{q('Body')} {'text' if pg else 'nvarchar(100)'} NOT NULL, {q('ModifiedOn')} {'timestamp(3)' if pg else 'datetime2(3)'} "
            f"NOT NULL, {q('OwningBusinessUnit')} {'uuid' if pg else 'uniqueidentifier'} NOT NULL")
    bed.sql(f"CREATE TABLE {bed.table('Gwent_LA_FileTable', 'Counters')} ({q('Id')} integer NOT NULL PRIMARY KEY, {rest})")
    identity = "integer GENERATED BY DEFAULT AS IDENTITY" if pg else "int IDENTITY(1, 1)"
    bed.sql(f"CREATE TABLE {bed.table('Gwent_LA_FileTable_Delta', 'Counters')} ({q('Id')} {identity} NOT NULL PRIMARY KEY, {rest})")
    _configure(bed, "Counters", TableName="Counters", SourceDatabase="Gwent_LA_FileTable", SourceTable="Counters",
               TargetDatabase="Gwent_LA_FileTable_Delta", TargetTable="Counters", MetadataDatabase="Gwent_LA_FileTable",
               MetadataTable="Counters", MetadataIdColumn="Id", MetadataBusinessUnitCol="OwningBusinessUnit",
               ScriptSet="Flat", BusinessUnitDatabase="Gwent_LA_FileTable", BusinessUnitTable="LA_BU")
    bed.sql(f"INSERT INTO {bed.table('Gwent_LA_FileTable', 'Counters')} ({q('Id')}, {q('Body')}, {q('ModifiedOn')}, "
            f"{q('OwningBusinessUnit')}) VALUES (7, {bed.mark('b')}, {bed.mark('m')}, {bed.mark('u')})",
            bed.params(b="seven", m=utcnow() - timedelta(days=1), u=bed.data.business_units[0]))

    message = (f"the target's key column {q('Id')} is an identity column; the engine copies keys from the source "
               "and never writes an identity column.")

    refused = _refused(bed, "Counters", bed.table("Gwent_LA_FileTable_Delta", "Counters"))

    assert refused == ([("Counters", message)], "Failed", f"Table 'Counters': {message}", [(0,)], [(0,)])


def _flat_stamps(bed, target_columns: str, source_columns: str = "", *, name: str = "Stamps",
                 target_own: tuple[str, ...] = ()) -> tuple[str, str]:
    """A Flat source ``name`` keyed by an int Id (its own metadata table) with Body, OwningBusinessUnit
    and ModifiedOn, and its target with the same columns but those named in ``target_own`` (which
    ``target_columns`` define), then ``target_columns``; returns (source, target)."""
    pg = bed.info.name == "postgresql"
    q = bed.info.quote
    common = {"Id": f"{q('Id')} integer NOT NULL PRIMARY KEY",
              "Body": f"{q('Body')} {'text' if pg else 'nvarchar(100)'} NOT NULL",
              "OwningBusinessUnit": f"{q('OwningBusinessUnit')} {'uuid' if pg else 'uniqueidentifier'} NOT NULL",
              "ModifiedOn": f"{q('ModifiedOn')} {'timestamp(3)' if pg else 'datetime2(3)'} NOT NULL"}
    source, target = bed.table("Gwent_LA_FileTable", name), bed.table("Gwent_LA_FileTable_Delta", name)
    bed.sql(f"CREATE TABLE {source} ({', '.join([*common.values(), *([source_columns] if source_columns else [])])})")
    bed.sql(f"CREATE TABLE {target} ({', '.join([*(d for c, d in common.items() if c not in target_own), target_columns])})")
    _configure(bed, name, TableName=name, SourceDatabase="Gwent_LA_FileTable", SourceTable=name,
               TargetDatabase="Gwent_LA_FileTable_Delta", TargetTable=name, MetadataDatabase="Gwent_LA_FileTable",
               MetadataTable=name, MetadataIdColumn="Id", MetadataBusinessUnitCol="OwningBusinessUnit",
               ScriptSet="Flat", BusinessUnitDatabase="Gwent_LA_FileTable", BusinessUnitTable="LA_BU")
    return source, target


def test_a_flat_target_leaves_the_columns_its_server_generates_to_it_and_copies_the_others(bed):
    # Assemble: the source has plain ValidFrom and ValidTo columns; in the target the server fills
    # them, and refuses a value for them: a temporal table's period columns on SQL Server (GENERATED
    # ALWAYS, Msg 13536), stored generated columns on PostgreSQL.
    pg = bed.info.name == "postgresql"
    q = bed.info.quote
    stamp = "timestamp(3)" if pg else "datetime2(3)"
    generated = (f"{q('ValidFrom')} timestamp(3) GENERATED ALWAYS AS ({q('ModifiedOn')}) STORED, "
                 f"{q('ValidTo')} timestamp(3) GENERATED ALWAYS AS ({q('ModifiedOn')} + interval '1 day') STORED" if pg else
                 "[ValidFrom] datetime2(3) GENERATED ALWAYS AS ROW START NOT NULL, "
                 "[ValidTo] datetime2(3) GENERATED ALWAYS AS ROW END NOT NULL, PERIOD FOR SYSTEM_TIME ([ValidFrom], [ValidTo])")
    source, target = _flat_stamps(bed, generated, f"{q('ValidFrom')} {stamp} NULL, {q('ValidTo')} {stamp} NULL")
    long_ago = datetime(2001, 1, 1)
    for key, body in ((1, "one"), (2, "two")):
        bed.sql(f"INSERT INTO {source} ({q('Id')}, {q('Body')}, {q('ModifiedOn')}, {q('OwningBusinessUnit')}, "
                f"{q('ValidFrom')}, {q('ValidTo')}) VALUES ({key}, {bed.mark('b')}, {bed.mark('m')}, {bed.mark('u')}, "
                f"{bed.mark('f')}, {bed.mark('t')})",
                bed.params(b=body, m=utcnow() - timedelta(days=1), u=bed.data.business_units[0],
                           f=long_ago, t=long_ago + timedelta(days=1)))
    copied = f"{q('Id')}, {q('Body')}, {q('ModifiedOn')}, {q('OwningBusinessUnit')}"

    result = bed.run(mode="SingleTable", table="Stamps")

    assert result.status == "Succeeded", bed.status(result.run_id).error
    assert bed.sql(f"SELECT {copied} FROM {target} ORDER BY {q('Id')}") == \
        bed.sql(f"SELECT {copied} FROM {source} ORDER BY {q('Id')}")
    filled = bed.sql(f"SELECT {q('ValidFrom')}, {q('ModifiedOn')} FROM {target} ORDER BY {q('Id')}")
    assert len(filled) == 2 and all(valid_from != long_ago for valid_from, _ in filled), "the server's values, not the source's"
    if pg:
        assert all(valid_from == modified for valid_from, modified in filled)


@pytest.mark.parametrize("column", ["Id", "ModifiedOn"], ids=["a computed key", "a generated ModifiedOn"])
def test_a_flat_target_whose_key_or_modified_on_the_server_fills_is_refused_before_anything_is_written(bed, column):
    # Assemble: the server fills the target's key (a persisted computed column on SQL Server, a stored
    # generated one on PostgreSQL) or its ModifiedOn (a period column on SQL Server, a stored generated
    # column on PostgreSQL): the key would not be the source's, and newest-wins would compare a load time.
    pg = bed.info.name == "postgresql"
    q = bed.info.quote
    if column == "Id":
        own = (f"{q('Seed')} integer NOT NULL DEFAULT 7, {q('Id')} integer GENERATED ALWAYS AS ({q('Seed')}) STORED PRIMARY KEY"
               if pg else "[Seed] int NOT NULL DEFAULT 7, [Id] AS ([Seed]) PERSISTED NOT NULL PRIMARY KEY")
    else:
        own = (f"{q('Stamp')} timestamp(3) NOT NULL DEFAULT now(), "
               f"{q('ModifiedOn')} timestamp(3) GENERATED ALWAYS AS ({q('Stamp')}) STORED" if pg else
               "[ModifiedOn] datetime2(3) GENERATED ALWAYS AS ROW START NOT NULL, "
               "[ValidTo] datetime2(3) GENERATED ALWAYS AS ROW END NOT NULL, PERIOD FOR SYSTEM_TIME ([ModifiedOn], [ValidTo])")
    source, target = _flat_stamps(bed, own, name="Clocked", target_own=(column,))
    bed.sql(f"INSERT INTO {source} ({q('Id')}, {q('Body')}, {q('ModifiedOn')}, {q('OwningBusinessUnit')}) "
            f"VALUES (7, {bed.mark('b')}, {bed.mark('m')}, {bed.mark('u')})",
            bed.params(b="seven", m=utcnow() - timedelta(days=1), u=bed.data.business_units[0]))
    message = (f"the target's column {q(column)} is computed by the server; the engine copies the key and "
               "ModifiedOn columns from the source and compares them, so neither may be computed or generated.")

    refused = _refused(bed, "Clocked", target)

    assert refused == ([("Clocked", message)], "Failed", f"Table 'Clocked': {message}", [(0,)], [(0,)])


def test_a_flat_target_with_a_sparse_column_set_gets_its_sparse_columns_one_by_one(bed):
    # A list naming a sparse column and its column set is Msg 360; the column set is left out.
    if bed.info.name != "mssql":
        pytest.skip("SQL Server only: sparse columns and column sets exist on SQL Server alone")
    sparse = "[Note] nvarchar(50) SPARSE NULL, [Extras] xml COLUMN_SET FOR ALL_SPARSE_COLUMNS"
    source, target = _flat_stamps(bed, sparse, sparse)
    for key, body, note in ((1, "one", "first"), (2, "two", None)):
        bed.sql(f"INSERT INTO {source} ([Id], [Body], [ModifiedOn], [OwningBusinessUnit], [Note]) VALUES (?, ?, ?, ?, ?)",
                (key, body, utcnow() - timedelta(days=1), str(bed.data.business_units[0]), note))

    result = bed.run(mode="SingleTable", table="Stamps")

    assert result.status == "Succeeded", bed.status(result.run_id).error
    assert bed.sql(f"SELECT [Id], [Body], [Note], CONVERT(nvarchar(max), [Extras]) FROM {target} ORDER BY [Id]") == \
        bed.sql(f"SELECT [Id], [Body], [Note], CONVERT(nvarchar(max), [Extras]) FROM {source} ORDER BY [Id]")


def test_a_flat_target_whose_sparse_columns_the_source_lacks_gets_them_through_its_column_set(bed):
    # The source has only an xml column named as the target's column set: writing it fills the sparse
    # columns, so the column set is copied when none of its sparse columns is.
    if bed.info.name != "mssql":
        pytest.skip("SQL Server only: sparse columns and column sets exist on SQL Server alone")
    source, target = _flat_stamps(bed, "[Note] nvarchar(50) SPARSE NULL, [Extras] xml COLUMN_SET FOR ALL_SPARSE_COLUMNS",
                                  "[Extras] xml NULL")
    for key, body, extras in ((1, "one", "<Note>first</Note>"), (2, "two", None)):
        bed.sql(f"INSERT INTO {source} ([Id], [Body], [ModifiedOn], [OwningBusinessUnit], [Extras]) VALUES (?, ?, ?, ?, ?)",
                (key, body, utcnow() - timedelta(days=1), str(bed.data.business_units[0]), extras))

    result = bed.run(mode="SingleTable", table="Stamps")

    assert result.status == "Succeeded", bed.status(result.run_id).error
    assert bed.sql(f"SELECT [Id], [Body], [Note] FROM {target} ORDER BY [Id]") == [(1, "one", "first"), (2, "two", None)]


def test_a_hierarchical_target_that_compares_names_differently_from_its_source_is_refused(bed):
    # Assemble: a FileTable-shaped target whose names compare in another collation than the source's.
    pg = bed.info.name == "postgresql"
    ddl = sample.blob_table_ddl(bed.info, "Gwent_LA_FileTable_Delta", "Binary")
    ddl = (ddl.replace("name text NOT NULL", 'name text COLLATE "POSIX" NOT NULL') if pg else
           ddl.replace("name nvarchar(255) NOT NULL", "name nvarchar(255) COLLATE Latin1_General_100_BIN2 NOT NULL"))
    bed.sql(ddl)
    _configure(bed, "Binary", TableName="Binary", SourceDatabase="Gwent_LA_FileTable", SourceTable="ReferralAttachment",
               TargetDatabase="Gwent_LA_FileTable_Delta", TargetTable="Binary", MetadataDatabase="AdvancedRBS_MetaData",
               MetadataTable="ReferralAttachment", MetadataBusinessUnitCol="OwningBusinessUnit",
               BusinessUnitDatabase="Gwent_LA_FileTable", BusinessUnitTable="LA_BU",
               QueuePopulationScriptName="HierarchicalMissingParents")

    result = bed.run(mode="SingleTable", table="Binary")

    error = bed.status(result.run_id).error
    assert result.status == "Failed"
    assert error.startswith("Table 'Binary': the source's and the target's name columns compare names differently")
    assert error.endswith("give them the same collation.")
    assert bed.sql(f"SELECT COUNT(*) FROM {bed.table('Gwent_LA_FileTable_Delta', 'Binary')}") == [(0,)]


def test_a_business_unit_listed_twice_in_its_table_duplicates_no_candidate_row(bed):
    # Assemble: the business-unit table loses its key and lists every unit twice. A script that
    # joined it (rather than testing EXISTS) would see each candidate twice: a key violation in its
    # batch table, or in the target (SQL Server 2627). Both kinds of table are in the run.
    q = bed.info.quote
    units = bed.table("Gwent_LA_FileTable", "LA_BU")
    if bed.info.name == "postgresql":
        [(key,)] = bed.sql("SELECT conname FROM pg_catalog.pg_constraint WHERE contype = 'p' "
                           "AND conrelid = '\"Gwent_LA_FileTable\".\"LA_BU\"'::regclass")
    else:
        [(key,)] = bed.sql("SELECT name FROM [Gwent_LA_FileTable].sys.key_constraints "
                           "WHERE type = 'PK' AND parent_object_id = OBJECT_ID(N'[Gwent_LA_FileTable].[dbo].[LA_BU]')")
    bed.sql(f"ALTER TABLE {units} DROP CONSTRAINT {q(key)}")
    bed.sql(f"INSERT INTO {units} SELECT * FROM {units}")
    _flat_table(bed)
    base = utcnow() - timedelta(days=1)
    for n in range(5):
        _put_note(bed, "Gwent_LA_FileTable", uuid.UUID(int=n + 1), f"note {n}", base + timedelta(minutes=n))

    # Act
    plan = bed.run(execute=False, batch_size=2)
    result = bed.run(batch_size=2)

    # Assert: every row once; each plan row equals what the run did.
    status = bed.status(result.run_id)
    assert result.status == "Succeeded", status.error
    assert len(bed.sql(f"SELECT {q('BusinessUnitId')} FROM {units}")) == 2 * len(bed.data.business_units)
    for table in TABLES:
        start, end = window_of(status, table)
        assert bed.target_ids(table) == bed.expected(table, start, end)
        assert bed.orphans(table) == []
    assert _notes(bed, "Gwent_LA_FileTable_Delta") == _notes(bed, "Gwent_LA_FileTable")
    planned = {p.table: sum(s.inserted for s in p.steps) for p in plan.plan}
    done = {}
    for s in status.steps:
        done[s["table_name"]] = done.get(s["table_name"], 0) + (s["rows_inserted"] or 0)
    assert planned == done
