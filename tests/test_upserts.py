"""Entity upserts through the three paths (dbtools.upsert.writers and the rendered procedures).

Every test runs on both engines; the writers and procedures must agree row for row and count
for count. Assemble / Act / Assert; whole tables are compared, never counts alone.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import multiprocessing
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.pool import NullPool

from dbtools.db.engines import JOB_DATABASE
from dbtools.deploy.entities import create_entity, drop_entity
from dbtools.db.procs import ProcedureValidationError, call_procedure
from dbtools.deploy.render import jinja_environment, render_entity_objects
from dbtools.retry import RetryPolicy
from dbtools.deploy.repeatable import sql_text
from dbtools.upsert.specs import spec_named
from dbtools.upsert.writers import (COUNT_OUTPUTS, ONE_OUTPUTS, PATHS, Counts, UpsertError, _preparer, _stored_reason,
                                    prefetched, prepare, writer_for)
from dbtools.uuid7 import uuid7

from .test_retry import kill_session, recording_policy
from .upsert_bed import (ACTIVITY, CLICK, PROVIDER_DEVICE, T0, Oracle, activity, by_key, device, expected_row,
                         make_bed)

BATCH_PATHS = ("tvp", "bulk")


@pytest.fixture
def bed(server):
    bed = make_bed(server)
    yield bed
    bed.engine.dispose()


def keys(n):
    return [uuid7() for _ in range(n)]


# ----------------------------------------------------------------------------- newest wins
@pytest.mark.parametrize("path", PATHS)
def test_a_new_event_is_inserted_a_newer_one_updates_and_an_older_or_equal_one_is_skipped(bed, path):
    a, b = keys(2)
    writer = writer_for(path, bed.engine, ACTIVITY)
    writer.upsert([activity(a, 10, customer=1), activity(b, 10, customer=2, details={"v": 1})])

    counts = writer.upsert([
        activity(a, 20, customer=11, kind="search"),  # newer: applied
        activity(b, 5, customer=99),  # older: never overwrites newer
    ])
    replay = writer.upsert([activity(a, 20, customer=11, kind="search")])  # equal: idempotent

    assert counts == Counts(received=2, updated=1, skipped=1)
    assert replay == Counts(received=1, skipped=1)
    assert bed.table(ACTIVITY) == sorted([
        expected_row(activity(a, 20, customer=11, kind="search")),
        expected_row(activity(b, 10, customer=2, details={"v": 1})),
    ], key=lambda r: r[0])


@pytest.mark.parametrize("path", BATCH_PATHS)
def test_duplicates_in_one_batch_are_resolved_to_the_newest_before_the_target_is_touched(bed, path):
    a, b = keys(2)
    writer = writer_for(path, bed.engine, ACTIVITY)

    counts = writer.upsert([
        activity(a, 1, customer=1), activity(a, 3, customer=3), activity(a, 2, customer=2),
        activity(b, 7, customer=70), activity(b, 7, customer=71),  # a tie: the first row sent stays
    ])

    assert counts == Counts(received=5, inserted=2, skipped=3)
    assert bed.table(ACTIVITY) == sorted([expected_row(activity(a, 3, customer=3)),
                                          expected_row(activity(b, 7, customer=70))], key=lambda r: r[0])
    assert set(bed.versions(ACTIVITY)) == {str(a), str(b)}
    assert bed.staged(ACTIVITY) == 0


@pytest.mark.parametrize("path", PATHS)
def test_expected_row_version_guards_the_update_and_a_stale_one_is_conflicted(bed, path):
    a, b, c = keys(3)
    writer = writer_for(path, bed.engine, ACTIVITY)
    writer.upsert([activity(a, 1), activity(b, 1)])
    versions = bed.versions(ACTIVITY)

    counts = writer.upsert([
        activity(a, 2, customer=2, ExpectedRowVersion=versions[str(a)]),  # matches: updated
        activity(b, 2, customer=2, ExpectedRowVersion=versions[str(b)] + 1000),  # stale: conflicted
        activity(c, 2, customer=2, ExpectedRowVersion=1),  # no stored row to match: conflicted
    ])

    assert counts == Counts(received=3, updated=1, conflicted=2)
    assert bed.table(ACTIVITY) == sorted([expected_row(activity(a, 2, customer=2)), expected_row(activity(b, 1))],
                                         key=lambda r: r[0])
    after = bed.versions(ACTIVITY)
    assert after[str(a)] != versions[str(a)] and after[str(b)] == versions[str(b)]


@pytest.mark.parametrize("path", PATHS)
def test_bad_rows_are_rejected_with_their_reasons_and_nothing_is_lost(bed, path):
    a, b, c, d, e, f, g, h, i = keys(9)
    rows = [
        activity(a, 1),
        {"event_id": b, "activity_type": "login", "time_stamp_utc": T0},  # customer_id missing
        activity(c, 1, kind="teleport"),  # not in the lookup
        activity(d, 1, details="{not json"),
        activity(e, 1, details='"a scalar"'),  # JSON, but not an object or array
        activity(f, 1, kind="x" * 51),
        activity(g, 1, customer="seven"),  # cannot be sent as an int: rejected by the writer
        activity(h, 1, kind="log\x00in"),  # would fail the whole chunk on PostgreSQL
        activity(i, 1, details={"note": "\ud800"}),  # not Unicode: cannot be encoded at all
        activity(a, 2, customer=2),
    ]
    writer = writer_for(path, bed.engine, ACTIVITY)

    counts = writer.upsert(rows)

    assert counts.rejected == 8 and counts.accounted == counts.received == 10
    assert bed.rejects(ACTIVITY) == [
        (2, "missing required field customer_id", str(b)),
        (3, "activity_type is not in CustomerActivityTypes", str(c)),
        (4, "details_json is not a JSON object or array", str(d)),
        (5, "details_json is not a JSON object or array", str(e)),
        (6, "activity_type is longer than 50 characters", str(f)),
        (7, "customer_id 'seven' is not an integer", None),
        (8, "activity_type 'log\\x00in' contains a NUL character, which PostgreSQL text cannot hold", None),
        (9, "details_json '{\"note\":\"\\ud800\"}' contains a lone surrogate, which is not Unicode text", None),
    ]
    assert bed.table(ACTIVITY) == [expected_row(activity(a, 2, customer=2))]


@pytest.mark.postgresql_only
@pytest.mark.parametrize("path", PATHS)
def test_text_arrives_unchanged_from_a_session_whose_client_encoding_is_not_utf8(bed, path):
    from sqlalchemy.pool import NullPool

    engine = sa.create_engine(bed.server.url, poolclass=NullPool, connect_args={"client_encoding": "LATIN1"})
    key = keys(1)[0]
    row = activity(key, 1, details={"note": "café crème, naïve"})
    try:
        counts = writer_for(path, engine, ACTIVITY).upsert([row])
    finally:
        engine.dispose()

    assert counts == Counts(received=1, inserted=1)
    assert bed.table(ACTIVITY) == [expected_row(row)]


def test_the_second_entity_works_through_every_path_with_no_sql_of_its_own(bed):
    ids = keys(3)
    click = lambda k, minutes, page: {"ingestion_id": k, "click_id": f"clk_{page}", "user_id": 2**40,  # noqa: E731
                                      "page_url": f"https://shop.example/{page}",
                                      "clicked_at": T0.replace(minute=minutes), "attributes_json": {"p": page}}
    results = [writer_for(path, bed.engine, CLICK).upsert([click(ids[0], 1, "a"), click(ids[1], 1, "b")])
               for path in PATHS]
    replayed = writer_for("bulk", bed.engine, CLICK).upsert([click(ids[0], 1, "a"), click(ids[2], 2, "c")])

    assert results == [Counts(received=2, inserted=2), Counts(received=2, skipped=2), Counts(received=2, skipped=2)]
    assert replayed == Counts(received=2, inserted=1, skipped=1)
    assert bed.table(CLICK) == sorted([expected_row(click(k, m, p), CLICK)
                                       for k, m, p in ((ids[0], 1, "a"), (ids[1], 1, "b"), (ids[2], 2, "c"))],
                                      key=lambda r: r[0])


# ----------------------------------------------------------------------------- procedures
def call_reconcile(bed, batch_id):
    with bed.engine.begin() as conn:
        return call_procedure(conn, bed.server.engine, ACTIVITY.reconcile, {"BatchId": batch_id},
                              outputs={**COUNT_OUTPUTS, "Replayed": "bit"})


def stage(bed, batch_id, rows):
    q, t = bed.server.engine.quote, bed.place(ACTIVITY)
    cols = ["BatchId", "RowNumber", *(c.name for c in ACTIVITY.columns)]
    mark = "?" if bed.server.engine.name == "mssql" else "%s"
    with bed.engine.begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO {t(ACTIVITY.staging)} ({', '.join(q(c) for c in cols)}) "
                             f"VALUES ({', '.join(mark for _ in cols)})",
                             [(batch_id, n, *(r[c.name] for c in ACTIVITY.columns)) for n, r in rows])


def test_a_batch_reconciled_twice_reports_its_first_counts_and_changes_nothing(bed):
    a, b = keys(2)
    batch = uuid7(bed.server.engine.name)
    stage(bed, batch, [(1, activity(a, 1)), (2, activity(b, 1))])
    first = call_reconcile(bed, batch)
    table = bed.table(ACTIVITY)
    stage(bed, batch, [(1, activity(a, 9, customer=9)), (2, activity(b, 9, customer=9))])  # a retried writer

    again = call_reconcile(bed, batch)

    assert (first["RowsReceived"], first["RowsInserted"], bool(first["Replayed"])) == (2, 2, False)
    assert {k: v for k, v in again.items() if k != "Replayed"} == {k: v for k, v in first.items() if k != "Replayed"}
    assert bool(again["Replayed"]) is True
    assert bed.table(ACTIVITY) == table
    assert bed.staged(ACTIVITY) == 0, "the replayed batch's staged rows are removed too"


def test_reconcile_without_a_batch_id_or_with_a_row_number_twice_is_refused_and_changes_nothing(bed):
    a, b = keys(2)
    batch = uuid7(bed.server.engine.name)
    stage(bed, batch, [(1, activity(a, 1)), (1, activity(b, 1))])

    with pytest.raises(ProcedureValidationError, match="BatchId.* is required"):
        call_reconcile(bed, None)
    with pytest.raises(ProcedureValidationError, match="Every row needs a RowNumber, unique within the batch"):
        call_reconcile(bed, batch)

    assert bed.table(ACTIVITY) == [] and bed.rejects(ACTIVITY) == []
    assert bed.staged(ACTIVITY) == 2


@pytest.mark.parametrize("numbers", [(None, 2), (1, 1)], ids=["a row number missing", "a row number twice"])
def test_a_row_type_batch_with_a_row_number_missing_or_twice_is_refused_and_changes_nothing(bed, numbers):
    writer = writer_for("tvp", bed.engine, ACTIVITY)
    rows = [prepare(ACTIVITY, activity(k, 1), 1)._replace(row_number=n) for k, n in zip(keys(2), numbers)]

    with pytest.raises(ProcedureValidationError, match="Every row needs a RowNumber, unique within the batch"):
        with bed.engine.begin() as conn:
            writer._apply(conn, uuid7(bed.server.engine.name), rows)

    assert bed.table(ACTIVITY) == [] and bed.rejects(ACTIVITY) == []


# ----------------------------------------------------------------------------- another database
ELSEWHERE_DB = "dbtools_events_elsewhere"
#: CustomerActivityEvent's columns and lookup under other names, its tables in another database.
ELSEWHERE = dataclasses.replace(
    ACTIVITY, entity="ElsewhereEvent", table="ElsewhereEvents", database=ELSEWHERE_DB, source="tests/test_upserts.py",
    objects={"row_type": "ElsewhereEventType", "upsert_one": "UpsertElsewhereEvent",
             "upsert_many": "UpsertElsewhereEventsType", "staging": "ElsewhereEvents_Staging",
             "rejects": "ElsewhereEvents_Rejects", "reconcile": "ReconcileElsewhereEventsBatch"})


def entity_database(bed, action):
    """Drop ELSEWHERE_DB (a database on SQL Server, a schema on PostgreSQL), then create it anew unless "drop"."""
    info, quoted = bed.server.engine, bed.server.engine.quote(ELSEWHERE_DB)
    if info.name == "mssql":
        admin = sa.create_engine(bed.server.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        statements = [f"IF DB_ID(N'{ELSEWHERE_DB}') IS NOT NULL BEGIN "
                      f"ALTER DATABASE {quoted} SET SINGLE_USER WITH ROLLBACK IMMEDIATE; DROP DATABASE {quoted}; END"]
        if action == "create":
            statements.append(f"CREATE DATABASE {quoted}")
    else:
        admin = bed.engine
        statements = [f"DROP SCHEMA IF EXISTS {quoted} CASCADE"] + ([f"CREATE SCHEMA {quoted}"] if action == "create" else [])
    with admin.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)


def tables_named(bed, names, database=None):
    """The tables of ``names`` that exist in the job DB (or in ``database``)."""
    info = bed.server.engine
    with bed.engine.connect() as conn:
        if info.name == "mssql":
            catalog = f"{info.quote(database)}.INFORMATION_SCHEMA.TABLES" if database else "INFORMATION_SCHEMA.TABLES"
            rows = conn.exec_driver_sql(f"SELECT TABLE_NAME FROM {catalog} WHERE TABLE_SCHEMA = 'dbo'").all()
        else:
            rows = conn.exec_driver_sql("SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                                        (database or info.job_schema,)).all()
    return sorted({r[0] for r in rows} & set(names))


@pytest.fixture
def elsewhere(bed):
    """ELSEWHERE created in its own database, as its migration would, and its procedures deployed."""
    entity_database(bed, "create")
    info = bed.server.engine
    objects = render_entity_objects(info, jinja_environment(info), [ELSEWHERE])
    with bed.engine.begin() as conn:
        ctx = MigrationContext.configure(conn)
        create_entity(ctx, ELSEWHERE)
        for obj in objects:
            ctx.execute(sql_text(obj.sql))
    yield ELSEWHERE
    with bed.engine.begin() as conn:
        drop_entity(MigrationContext.configure(conn), ELSEWHERE)
    entity_database(bed, "drop")


def test_an_entity_configured_in_another_database_keeps_its_tables_there_on_every_path(bed, elsewhere):
    ids = keys(4)
    batches = {"single": [activity(ids[0], 1), activity(ids[1], 1)],
               "tvp": [activity(ids[1], 5, customer=2), activity(ids[2], 1), activity(ids[3], 1, kind="bogus")],
               "bulk": [activity(ids[0], 0, customer=9), activity(ids[2], 7, customer=3), activity(ids[3], 2)]}
    oracle = Oracle(ELSEWHERE, valid=lambda row: row["activity_type"] != "bogus")

    for path, rows in batches.items():
        counts = writer_for(path, bed.engine, elsewhere).upsert(rows)
        expected = sum((oracle.apply([r]) for r in rows), Counts()) if path == "single" else oracle.apply(rows)
        assert counts == expected, path

    assert bed.table(elsewhere) == oracle.table()
    assert bed.rejects(elsewhere) == [(3, "activity_type is not in CustomerActivityTypes", str(ids[3]))]
    assert bed.staged(elsewhere) == 0
    assert tables_named(bed, elsewhere.tables, ELSEWHERE_DB) == sorted(elsewhere.tables)
    own = (elsewhere.table, elsewhere.staging, elsewhere.rejects)  # its lookup shares the job DB entity's name
    assert tables_named(bed, own) == [], "nothing of it in the job DB"
    assert bed.table(ACTIVITY) == [], "the job DB's own entity of the same columns is untouched"


def test_an_entity_whose_database_is_missing_is_refused_and_nothing_is_created(bed):
    entity_database(bed, "drop")
    what = "database" if bed.server.engine.name == "mssql" else "schema"

    with pytest.raises(sa.exc.DBAPIError, match=f"entity spec tests/test_upserts.py: {what} {ELSEWHERE_DB} does not "
                                                 "exist; create it before migrating"):
        with bed.engine.begin() as conn:
            create_entity(MigrationContext.configure(conn), ELSEWHERE)

    assert tables_named(bed, (ELSEWHERE.table, ELSEWHERE.staging, ELSEWHERE.rejects)) == []
    with bed.engine.connect() as conn:
        assert not sa.inspect(conn).has_type(ELSEWHERE.row_type, schema=bed.server.engine.job_schema) \
            if bed.server.engine.name == "postgresql" else conn.exec_driver_sql(
                "SELECT TYPE_ID(?)", (f"dbo.{ELSEWHERE.row_type}",)).scalar() is None


@pytest.mark.mssql_only
def test_an_entity_database_with_another_collation_than_the_job_database_is_refused(bed):
    entity_database(bed, "drop")
    admin = sa.create_engine(bed.server.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        job = conn.exec_driver_sql(f"SELECT CONVERT(nvarchar(128), DATABASEPROPERTYEX(N'{JOB_DATABASE}', 'Collation'))"
                                   ).scalar()
        other = "Latin1_General_100_BIN2" if job != "Latin1_General_100_BIN2" else "Latin1_General_CS_AS"
        conn.exec_driver_sql(f"CREATE DATABASE [{ELSEWHERE_DB}] COLLATE {other}")
    try:
        with pytest.raises(sa.exc.DBAPIError, match=f"database {ELSEWHERE_DB} has the collation {other} and the job "
                                                     f"database {job}; they must match"):
            with bed.engine.begin() as conn:
                create_entity(MigrationContext.configure(conn), ELSEWHERE)
        assert tables_named(bed, ELSEWHERE.tables, ELSEWHERE_DB) == []
    finally:
        entity_database(bed, "drop")


# ----------------------------------------------------------------------------- composite keys
#: JasperDevice's key is (ServiceProviderId, ICCID); its tables come with the revision that froze its spec.
JASPER_MIGRATED = any((Path(__file__).resolve().parent.parent / "migrations" / "versions")
                      .glob("*_entities/jasper_device.toml"))
X, Y = "89014103211118510720", "89014103211118510721"


@pytest.fixture(params=["ProviderDevice", "JasperDevice"])
def device_spec(request, bed):
    """A composite-key entity: PROVIDER_DEVICE, created here as a migration would (its procedures
    deployed), or JasperDevice as its own migration made it."""
    if request.param == "JasperDevice":
        if not JASPER_MIGRATED:
            pytest.skip("waits for the revision that creates JasperDevice (0012)")
        yield spec_named("JasperDevice")
        return
    info = bed.server.engine
    objects = render_entity_objects(info, jinja_environment(info), [PROVIDER_DEVICE])
    with bed.engine.begin() as conn:
        ctx = MigrationContext.configure(conn)
        create_entity(ctx, PROVIDER_DEVICE)
        for obj in objects:
            ctx.execute(sql_text(obj.sql))
    yield PROVIDER_DEVICE
    with bed.engine.begin() as conn:
        drop_entity(MigrationContext.configure(conn), PROVIDER_DEVICE)


def per_call(path, rows):
    """The batches a writer applies: each row alone on the single-row path, else all at once."""
    return [[r] for r in rows] if path == "single" else [rows]


@pytest.mark.parametrize("path", PATHS)
def test_the_same_iccid_under_two_providers_is_two_rows_on_every_path(bed, device_spec, path):
    spec = device_spec
    rows = [device(spec, 1, X, 10, "Active"), device(spec, 2, X, 10, "Suspended")]

    counts = writer_for(path, bed.engine, spec).upsert(rows)

    assert counts == Counts(received=2, inserted=2)
    assert bed.table(spec) == sorted((expected_row(r, spec) for r in rows), key=by_key(spec))
    assert set(bed.versions(spec)) == {(1, X), (2, X)}


@pytest.mark.parametrize("path", PATHS)
def test_the_newest_modified_date_wins_per_provider_and_iccid_and_an_older_row_never_overwrites(bed, device_spec, path):
    spec = device_spec
    writer = writer_for(path, bed.engine, spec)
    writer.upsert([device(spec, 1, X, 10, "a"), device(spec, 2, X, 10, "b"), device(spec, 1, Y, 10, "c")])
    rows = [
        device(spec, 1, X, 20, "newer"),  # newer than (1, X): updated
        device(spec, 2, X, 15, "between"),  # older than (1, X)'s new row, newer than (2, X)'s: updated
        device(spec, 2, X, 5, "older"),  # older than (2, X): never overwrites
        device(spec, 1, Y, 30, "d"), device(spec, 1, Y, 25, "e"),  # (1, Y) twice: the newest wins
        device(spec, 2, Y, 1, "new"),  # a new pair, though (1, Y) and (2, X) exist: inserted
    ]

    counts = writer.upsert(rows)
    replay = writer.upsert(rows)  # equal ordering values change nothing

    assert counts == Counts(received=6, inserted=1, updated=3, skipped=2)
    assert replay == Counts(received=6, skipped=6)
    assert bed.table(spec) == sorted((expected_row(r, spec) for r in (rows[0], rows[1], rows[3], rows[5])),
                                     key=by_key(spec))
    assert bed.staged(spec) == 0


@pytest.mark.parametrize("path", PATHS)
def test_any_mix_of_providers_and_iccids_ends_as_newest_wins_per_pair_predicts(bed, device_spec, path):
    spec = device_spec
    oracle = Oracle(spec)
    batches = [[device(spec, p, i, m, f"s{n}") for n, (p, i, m) in enumerate(batch)] for batch in (
        [(1, X, 3), (2, X, 1), (1, Y, 2), (2, X, 4), (3, X, 4)],
        [(2, X, 2), (1, X, 3), (3, Y, 9), (1, Y, 1), (2, Y, 5), (2, X, 6)],
    )]

    for rows in batches:
        counts = writer_for(path, bed.engine, spec).upsert(rows)
        assert counts == sum((oracle.apply(part) for part in per_call(path, rows)), Counts())

    assert bed.table(spec) == oracle.table()


@pytest.mark.parametrize("path", PATHS)
def test_a_row_missing_either_key_column_is_rejected_on_every_path(bed, device_spec, path):
    spec = device_spec
    no_provider = device(spec, 1, X, 1)
    del no_provider["ServiceProviderId"]
    rows = [no_provider, device(spec, 2, None, 1), device(spec, 3, "9" * 33, 1), device(spec, 3, X, 1)]

    counts = writer_for(path, bed.engine, spec).upsert(rows)

    assert counts == Counts(received=4, inserted=1, rejected=3)
    assert bed.rejects(spec) == [(1, "missing required field ServiceProviderId", (None, X)),
                                 (2, "missing required field ICCID", (2, None)),
                                 (3, "ICCID is longer than 32 characters", (3, "9" * 33))]
    assert bed.table(spec) == [expected_row(rows[3], spec)]


@pytest.mark.parametrize("path", PATHS)
def test_expected_row_version_is_compared_with_the_row_of_the_same_provider_and_iccid(bed, device_spec, path):
    spec = device_spec
    writer = writer_for(path, bed.engine, spec)
    writer.upsert([device(spec, 1, X, 1, "a"), device(spec, 2, X, 1, "b"), device(spec, 1, Y, 1, "c")])
    writer.upsert([device(spec, 1, Y, 2, "c2")])  # (1, Y) now has another version than (1, X)
    versions = bed.versions(spec)

    counts = writer.upsert([
        device(spec, 1, X, 3, "a3", ExpectedRowVersion=versions[(1, X)]),  # matches: updated
        device(spec, 2, X, 3, "b3", ExpectedRowVersion=versions[(2, X)] + 1000),  # stale: conflicted
        device(spec, 3, X, 3, "x3", ExpectedRowVersion=versions[(1, X)]),  # no stored (3, X): conflicted
        device(spec, 1, Y, 3, "c3", ExpectedRowVersion=versions[(1, X)]),  # (1, X)'s version, not (1, Y)'s: conflicted
    ])

    assert counts == Counts(received=4, updated=1, conflicted=3)
    assert bed.table(spec) == sorted([expected_row(device(spec, 1, X, 3, "a3"), spec),
                                      expected_row(device(spec, 2, X, 1, "b"), spec),
                                      expected_row(device(spec, 1, Y, 2, "c2"), spec)], key=by_key(spec))
    after = bed.versions(spec)
    assert after[(1, X)] != versions[(1, X)]
    assert (after[(2, X)], after[(1, Y)]) == (versions[(2, X)], versions[(1, Y)])


def test_the_single_row_procedure_tells_a_replayed_reject_by_every_key_column(bed, device_spec):
    spec = device_spec
    batch = uuid7(bed.server.engine.name)
    too_long = "s" * 51

    def call(row):
        with bed.engine.begin() as conn:
            return call_procedure(conn, bed.server.engine, spec.upsert_one, {**row, "BatchId": batch},
                                  outputs=ONE_OUTPUTS)["Outcome"]

    outcomes = [call(device(spec, 1, X, 1, too_long)),  # RowNumber defaults to 1
                call(device(spec, 1, X, 1, too_long)),  # the same reject: a replay
                call(device(spec, 2, X, 1, too_long)),  # the same ICCID under another provider
                call(device(spec, 1, Y, 1, too_long))]  # another ICCID of the same provider

    assert outcomes == ["Rejected"] * 4
    reason = "Status is longer than 50 characters"
    assert bed.rejects(spec) == [(1, reason, (1, X)), (1, reason, (1, Y)), (1, reason, (2, X))]
    assert bed.table(spec) == []


# ----------------------------------------------------------------------------- properties
VALID_KINDS = ("page_view", "login", "purchase")


@st.composite
def interleavings(draw):
    """Versions of a few events, split into batches sent through random paths."""
    ids = [uuid.UUID(int=i + 1) for i in range(draw(st.integers(1, 5)))]
    rows = draw(st.lists(st.builds(
        lambda k, minute, customer, kind: activity(ids[k], minute, customer=customer, kind=kind),
        st.integers(0, len(ids) - 1), st.integers(0, 6), st.integers(1, 3), st.sampled_from(VALID_KINDS + ("bogus",)),
    ), min_size=1, max_size=25))
    cuts = sorted(draw(st.lists(st.integers(1, len(rows)), max_size=4, unique=True)))
    batches = [rows[i:j] for i, j in zip([0, *cuts], [*cuts, len(rows)]) if rows[i:j]]
    return [(draw(st.sampled_from(PATHS)), batch) for batch in batches]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=interleavings())
def test_any_interleaving_of_versions_across_paths_ends_as_newest_wins_predicts(bed, plan):
    bed.clear(ACTIVITY)
    oracle = Oracle(valid=lambda row: row["activity_type"] in VALID_KINDS)

    for path, batch in plan:
        counts = writer_for(path, bed.engine, ACTIVITY, batch_size=len(batch) if path != "single" else 1).upsert(batch)
        expected = Counts()
        for part in ([r] for r in batch) if path == "single" else [batch]:
            expected += oracle.apply(part)
        assert counts == expected, (path, batch)

    assert bed.table(ACTIVITY) == oracle.table()


# ----------------------------------------------------------------------------- concurrency
def _write_in_process(url: str, path: str, rows: list[dict], queue) -> None:
    from sqlalchemy.pool import NullPool

    from dbtools.retry import RetryPolicy

    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        counts = writer_for(path, engine, ACTIVITY, batch_size=50,
                            policy=RetryPolicy(initial_wait=0.05, max_attempts=10)).upsert(rows)
        queue.put(("ok", counts.as_dict()))
    except Exception as exc:  # reported to the test
        queue.put(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        engine.dispose()


@pytest.mark.parametrize("paths", [("bulk", "tvp"), ("single", "bulk")])
def test_two_processes_writing_the_same_keys_at_once_lose_no_update_and_violate_no_key(bed, paths):
    ids = keys(400)
    # Each process writes every key; which one is newer alternates key by key.
    first = [activity(k, 10 if i % 2 else 20, customer=1) for i, k in enumerate(ids)]
    second = [activity(k, 20 if i % 2 else 10, customer=2) for i, k in enumerate(ids)]
    second.reverse()  # the other process goes through the keys the other way round
    url = bed.engine.url.render_as_string(hide_password=False)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_write_in_process, args=(url, path, rows, queue))
             for path, rows in zip(paths, (first, second))]

    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)

    assert [r[0] for r in results] == ["ok", "ok"], results
    totals = [Counts(**r[1]) for r in results]
    assert all(c.received == 400 and c.accounted == 400 and c.rejected == c.conflicted == 0 for c in totals)
    assert sum(c.inserted for c in totals) == 400, "each key inserted exactly once"
    winners = {str(r["event_id"]): r for r in first + second
               if (r["customer_id"] == 1) == (ids.index(r["event_id"]) % 2 == 0)}
    assert bed.table(ACTIVITY) == sorted((expected_row(r) for r in winners.values()), key=lambda r: r[0])


# ----------------------------------------------------------------------------- faults
@pytest.mark.parametrize("path", PATHS)
def test_a_connection_dropped_mid_chunk_is_retried_to_the_same_result_as_a_clean_run(bed, path, monkeypatch):
    ids = keys(30)
    rows = [activity(k, i % 3) for i, k in enumerate(ids)] + [activity(ids[0], 9, customer=5)]
    policy, _sleeps, events = recording_policy(initial_wait=0.01)
    writer = writer_for(path, bed.engine, ACTIVITY, policy=policy)
    original = type(writer).write_one if path == "single" else type(writer)._apply
    calls = []

    def flaky(self, conn, *args):
        calls.append(1)
        result = original(self, conn, *args)
        if len(calls) == 1:  # the work is done but not committed when the session dies
            kill_session(conn, bed.server.engine.name)
        return result

    monkeypatch.setattr(type(writer), "write_one" if path == "single" else "_apply", flaky)
    counts = writer.upsert(rows)

    assert len(events) == 1, "one transient failure, one retry"
    oracle = Oracle()
    expected = sum((oracle.apply([r]) for r in rows), Counts()) if path == "single" else oracle.apply(rows)
    assert counts == expected
    assert bed.table(ACTIVITY) == oracle.table()
    assert bed.staged(ACTIVITY) == 0


@pytest.mark.parametrize("path", BATCH_PATHS)
def test_a_deadlock_victim_is_retried_and_a_non_transient_error_fails_at_once(bed, path, monkeypatch):
    ids = keys(5)
    policy, _sleeps, events = recording_policy(initial_wait=0.01)
    writer = writer_for(path, bed.engine, ACTIVITY, policy=policy)
    original = type(writer)._apply
    raised = []

    def deadlocked_once(self, conn, *args):
        result = original(self, conn, *args)
        if not raised:
            raised.append(1)  # as the driver reports a deadlock victim, after the work
            raise sa.exc.OperationalError("CALL ...", {}, psycopg.errors.DeadlockDetected("deadlock detected"))
        return result

    monkeypatch.setattr(type(writer), "_apply", deadlocked_once)
    counts = writer.upsert([activity(k, 1) for k in ids])

    assert counts == Counts(received=5, inserted=5) and [e.reason for e in events] == ["PostgreSQL SQLSTATE 40P01"]
    assert len(bed.table(ACTIVITY)) == 5

    def broken(self, conn, *args):
        raise sa.exc.IntegrityError("CALL ...", {}, psycopg.errors.UniqueViolation("duplicate key"))

    monkeypatch.setattr(type(writer), "_apply", broken)
    events.clear()
    with pytest.raises(sa.exc.IntegrityError, match="duplicate key"):
        writer.upsert([activity(uuid7(), 1)])
    assert events == []


@pytest.mark.parametrize("path", BATCH_PATHS)
def test_a_batch_id_applied_by_another_session_meanwhile_is_replayed_not_failed(bed, path, monkeypatch):
    """A retry can overtake the first attempt, which the server is still running: same batch id."""
    ids = keys(3)
    rows = [activity(ids[0], 1), activity(ids[1], 1, kind="bogus"), {**activity(ids[2], 1), "customer_id": "x"}]
    batch = uuid7(bed.server.engine.name)
    monkeypatch.setattr("dbtools.upsert.writers.uuid7", lambda *args: batch)
    first, retry = (writer_for(path, bed.engine, ACTIVITY) for _ in range(2))
    chunk = next(first._prepared_chunks(rows))
    attempts = []
    original_applied = type(retry)._applied
    monkeypatch.setattr(type(retry), "_applied", lambda self, *a: attempts.append(1) or original_applied(self, *a))
    outcome = {}

    with bed.engine.connect() as conn:  # the first attempt, still running (not committed)
        transaction = conn.begin()
        first._file_rejects(conn, batch, chunk.rejected)
        applied = first._apply(conn, batch, chunk.rows, chunk.payload)
        worker = threading.Thread(target=lambda: outcome.update(counts=retry.upsert(rows)))
        worker.start()
        assert wait_until_blocked(bed), "the retry waits for the first attempt's locks"
        transaction.commit()
    worker.join(30)

    assert outcome["counts"] == applied + Counts(received=1, rejected=1)
    if bed.server.engine.name == "postgresql":  # its read of the log does not wait: it applies, then hits the key
        assert len(attempts) == 2, "the retry failed on the batch log's key once, then replayed"
    else:  # a locking read of the uncommitted log row waits for the first attempt, then replays at once
        assert len(attempts) in (1, 2)
    oracle = Oracle(valid=lambda row: row["activity_type"] != "bogus" and row["customer_id"] != "x")
    oracle.apply(rows)
    assert bed.table(ACTIVITY) == oracle.table()
    assert bed.rejects(ACTIVITY) == [(2, "activity_type is not in CustomerActivityTypes", str(ids[1])),
                                     (3, "customer_id 'x' is not an integer", None)], "each reject filed once"
    assert bed.staged(ACTIVITY) == 0


@dataclasses.dataclass(frozen=True)
class CommitThenDrop(RetryPolicy):
    """Commits the first attempt, then reports the connection lost: an outcome the client cannot know."""

    dropped: list = dataclasses.field(default_factory=list)
    #: Which unit of work (1: the first the writer runs) commits and then loses its connection.
    drop_on: int = 1
    runs: list = dataclasses.field(default_factory=list)

    def run(self, engine, work):
        self.runs.append(1)
        drop = len(self.runs) == self.drop_on

        def attempt():
            with engine.begin() as conn:
                result = work(conn)
            if drop and not self.dropped:
                self.dropped.append(1)
                raise sa.exc.OperationalError("COMMIT", None, ConnectionError("connection lost"),
                                              connection_invalidated=True)
            return result
        return self.call(attempt)


@pytest.mark.parametrize("path", BATCH_PATHS)
@pytest.mark.parametrize("with_valid_rows", [True, False], ids=["valid and rejected rows", "rejected rows only"])
def test_a_chunk_committed_before_its_connection_dropped_is_replayed_and_files_its_rejects_once(bed, path,
                                                                                             with_valid_rows):
    ids = keys(3)
    rows = [{**activity(ids[1], 1), "customer_id": "x"}, {**activity(ids[2], 1), "time_stamp_utc": "later"}]
    if with_valid_rows:
        rows.insert(0, activity(ids[0], 1))
    events = []
    # The bulk path on PostgreSQL stages a chunk in a unit of work of its own before the reconcile:
    # drop the reconcile's (the staging one's is the next test's).
    staged_first = path == "bulk" and with_valid_rows and bed.server.engine.name == "postgresql"
    writer = writer_for(path, bed.engine, ACTIVITY,
                        policy=CommitThenDrop(initial_wait=0.01, sleep=lambda _: None, on_retry=events.append,
                                              drop_on=2 if staged_first else 1))

    counts = writer.upsert(rows)

    assert len(events) == 1, "the dropped connection was retried once"
    oracle = Oracle(valid=lambda row: row["customer_id"] != "x" and row["time_stamp_utc"] != "later")
    assert counts == oracle.apply(rows)
    assert bed.table(ACTIVITY) == oracle.table()
    first = 2 if with_valid_rows else 1
    assert bed.rejects(ACTIVITY) == [(first, "customer_id 'x' is not an integer", None),
                                     (first + 1, "time_stamp_utc 'later' is not an ISO 8601 timestamp", None)]
    assert bed.staged(ACTIVITY) == 0
    q, log = bed.server.engine.quote, bed.server.engine.job_object("UpsertBatchLog")
    with bed.engine.connect() as conn:
        logged = conn.exec_driver_sql(f"SELECT {q('BatchId')}, {q('RowsReceived')}, {q('RowsRejected')} "
                                      f"FROM {log}").all()
    # One log row for the chunk: the reconcile's (valid rows only), or the writer's for a chunk of rejects.
    assert [(str(b).lower(), int(n), int(r)) for b, n, r in logged] == [
        (str(writer.batch_ids[0]), 1, 0) if with_valid_rows else (str(writer.batch_ids[0]), 2, 2)]


@pytest.mark.postgresql_only
def test_a_chunk_staged_ahead_whose_commit_was_lost_is_staged_again_once_and_applied_once(bed):
    ids = keys(7)
    rows = [activity(k, 1) for k in ids] + [activity(ids[0], 2, customer=9), {**activity(ids[1], 3), "customer_id": "x"}]
    events = []
    writer = writer_for("bulk", bed.engine, ACTIVITY, batch_size=3,
                        policy=CommitThenDrop(initial_wait=0.01, sleep=lambda _: None, on_retry=events.append))

    counts = writer.upsert(rows)

    assert len(events) == 1, "the staging COPY, committed and then dropped, was retried once"
    oracle = Oracle(valid=lambda row: row["customer_id"] != "x")
    assert counts == oracle.apply(rows[:3]) + oracle.apply(rows[3:6]) + oracle.apply(rows[6:])
    assert bed.table(ACTIVITY) == oracle.table()
    assert bed.rejects(ACTIVITY) == [(9, "customer_id 'x' is not an integer", None)]
    assert bed.staged(ACTIVITY) == 0, "the first attempt's staged rows were replaced, not applied twice"


@pytest.mark.mssql_only
@pytest.mark.parametrize("bulkcopy", [True, False], ids=["mssql-python bulk copy", "pyodbc fast_executemany"])
def test_sql_server_stages_through_mssql_python_bulk_copy_or_pyodbc_to_the_same_table(bed, bulkcopy):
    from dbtools.upsert.writers import mssql_bulkcopy_available

    if bulkcopy and not mssql_bulkcopy_available():
        pytest.skip("mssql-python 1.4+ (its bulk copy) is not installed")
    ids = keys(7)
    rows = [activity(k, 1) for k in ids] + [activity(ids[0], 2, customer=9), {**activity(ids[1], 3), "customer_id": "x"},
                                            activity(ids[2], 0), activity(ids[3], 2, details={"note": "naïve 😀"})]
    writer = writer_for("bulk", bed.engine, ACTIVITY, batch_size=3, mssql_bulkcopy=bulkcopy)

    counts = writer.upsert(rows)

    oracle = Oracle(valid=lambda row: row["customer_id"] != "x")
    assert counts == sum((oracle.apply(rows[i:i + 3]) for i in range(0, len(rows), 3)), Counts())
    assert bed.table(ACTIVITY) == oracle.table()
    assert bed.rejects(ACTIVITY) == [(9, "customer_id 'x' is not an integer", None)]
    assert bed.staged(ACTIVITY) == 0


def test_mssql_python_gets_the_pyodbc_connection_string_without_its_driver():
    from dbtools.upsert.writers import mssql_python_connection_string

    url = sa.make_url("mssql+pyodbc://dbtools:p%3Bw@db.example:1433/BlobDeltaJobs"
                      "?driver=ODBC+Driver+18+for+SQL+Server&TrustServerCertificate=yes")

    text = mssql_python_connection_string(url)

    assert "driver" not in text.lower()
    assert "Server=db.example,1433" in text and "Database=BlobDeltaJobs" in text and "UID=dbtools" in text
    assert "PWD={p;w}" in text and "TrustServerCertificate=yes" in text



# ----------------------------------------------------------------------------- SQL Server: bulk copy or pyodbc
AZURE_ODBC = ("Driver={ODBC Driver 18 for SQL Server};Server=tcp:srv.database.windows.net,1433;Database=db;"
              "Uid=dbtools;Pwd={p;w};Encrypt=yes;TrustServerCertificate=no;Connection Timeout=30;")


@pytest.mark.parametrize("url, refused", [
    (sa.URL.create("mssql+pyodbc", query={"odbc_connect": AZURE_ODBC}), ["Connection Timeout"]),
    ("mssql+pyodbc://u:p@h:1433/db?driver=ODBC+Driver+18+for+SQL+Server&MARS_Connection=yes", ["MARS_Connection"]),
    ("mssql+pyodbc://u:p@h:1433/db?driver=ODBC+Driver+18+for+SQL+Server&LongAsMax=Yes", ["LongAsMax"]),
    ("mssql+pyodbc://u:p@h:1433/db?driver=ODBC+Driver+18+for+SQL+Server&odbc_autotranslate=no", ["AutoTranslate"]),
    ("mssql+pyodbc://u:p@h:1433/db?driver=ODBC+Driver+18+for+SQL+Server&ApplicationIntent=ReadWrite"
     "&MultiSubnetFailover=yes&Encrypt=yes&TrustServerCertificate=yes", []),
])
def test_a_keyword_mssql_python_refuses_selects_pyodbc_for_the_staging(url, refused):
    from dbtools.upsert.writers import mssql_python_connection_string, mssql_python_refused_keywords

    url = sa.make_url(url)

    assert mssql_python_refused_keywords(url) == refused
    assert (mssql_python_connection_string(url) is None) == bool(refused)
    writer = writer_for("bulk", _FakeMssqlEngine(url), ACTIVITY)
    assert writer.mssql_bulkcopy is (not refused and mssql_bulkcopy_available())


def test_the_shipped_sql_server_environments_select_the_bulk_copy():
    import re
    import tomllib

    from dbtools.paths import repo_root
    from dbtools.upsert.writers import mssql_python_connection_string

    environments = tomllib.loads((repo_root() / "environments.toml").read_text(encoding="utf-8"))
    urls = [sa.make_url(re.sub(r"\$\{\w+\}", "x", env["url"])) for env in environments.values()
            if env["url"].startswith("mssql")]

    assert len(urls) >= 3
    for url in urls:
        assert mssql_python_connection_string(url) is not None, url


def test_the_keywords_taken_for_the_bulk_copy_are_ones_mssql_python_accepts_and_passes_on():
    constants = pytest.importorskip("mssql_python.constants")
    helpers = pytest.importorskip("mssql_python.helpers")
    from dbtools.upsert.writers import MSSQL_PYTHON_KEYWORDS

    assert MSSQL_PYTHON_KEYWORDS <= set(constants._ALLOWED_CONNECTION_STRING_PARAMS)
    assert MSSQL_PYTHON_KEYWORDS <= set(helpers._PYCORE_CONNECTION_KEY_MAP)


def mssql_bulkcopy_available():
    from dbtools.upsert.writers import mssql_bulkcopy_available as available

    return available()


class _FakeMssqlEngine:
    """Just enough of an Engine for a SQL Server writer built here (no server): its URL, and
    begin() recording the statements of each transaction."""

    def __init__(self, url="mssql+pyodbc://u:p@h:1433/db?driver=ODBC+Driver+18+for+SQL+Server&Encrypt=yes"):
        self.url = sa.make_url(url)
        self.transactions = []

    def begin(self):
        import contextlib

        @contextlib.contextmanager
        def transaction():
            statements = []
            conn = type("Conn", (), {"exec_driver_sql": lambda _, sql, params=None: statements.append(sql.split()[0])})()
            yield conn
            self.transactions.append(statements)  # committed
        return transaction()


def _staging_writer(monkeypatch, bulkcopy_error, mssql_bulkcopy=True, url=None):
    from dbtools.upsert import writers

    engine = _FakeMssqlEngine(*([url] if url else []))
    writer = writer_for("bulk", engine, ACTIVITY, mssql_bulkcopy=mssql_bulkcopy)
    copies = []

    def bulkcopy(batch_id, rows):
        copies.append(batch_id)
        if bulkcopy_error is not None:
            raise bulkcopy_error

    monkeypatch.setattr(writer, "_bulkcopy_mssql", bulkcopy)
    monkeypatch.setattr(writer, "_insert_mssql", lambda conn, batch_id, rows: conn.exec_driver_sql("INSERT ..."))
    assert isinstance(writer, writers.BulkStagingWriter)
    return writer, engine, copies


@pytest.mark.parametrize("error", [
    ImportError("No module named 'mssql_py_core'"),
    RuntimeError("The SELECT permission was denied on the object 'CustomerActivity_Staging'."),
    ValueError("Unknown keyword 'connection timeout' is not recognized"),
], ids=["native core missing", "server refusal", "connection string refused"])
def test_a_bulk_copy_that_fails_stages_the_chunk_through_pyodbc_and_the_rest_too(monkeypatch, error):
    writer, engine, copies = _staging_writer(monkeypatch, error)
    first, second = uuid7(), uuid7()

    writer._stage_mssql(first, [])
    writer._stage_mssql(second, [])

    assert copies == [first], "after an error that is not transient, no further bulk copy is tried"
    assert writer.mssql_bulkcopy is False
    # The bulk copy's own DELETE (committed), then per chunk DELETE + INSERT in one committed transaction.
    assert engine.transactions == [["DELETE"], ["DELETE", "INSERT"], ["DELETE", "INSERT"]]


def test_a_transient_bulk_copy_error_stages_that_chunk_through_pyodbc_and_keeps_the_bulk_copy(monkeypatch):
    writer, engine, copies = _staging_writer(monkeypatch, RuntimeError("Connection is broken: reset by peer"))
    batch = uuid7()

    writer._stage_mssql(batch, [])

    assert copies == [batch]
    assert writer.mssql_bulkcopy is True
    assert engine.transactions == [["DELETE"], ["DELETE", "INSERT"]]


def test_a_bulk_copy_that_succeeds_is_the_only_staging(monkeypatch):
    writer, engine, copies = _staging_writer(monkeypatch, None)
    batch = uuid7()

    writer._stage_mssql(batch, [])

    assert copies == [batch] and writer.mssql_bulkcopy is True
    assert engine.transactions == [["DELETE"]]


def test_a_bulk_copy_forced_on_for_a_url_mssql_python_refuses_stages_through_pyodbc(monkeypatch):
    url = "mssql+pyodbc://u:p@h:1433/db?driver=ODBC+Driver+18+for+SQL+Server&LongAsMax=Yes"
    writer, engine, copies = _staging_writer(monkeypatch, None, url=url)

    writer._stage_mssql(uuid7(), [])

    assert copies == [] and writer.mssql_bulkcopy is False
    assert engine.transactions == [["DELETE", "INSERT"]]


SINGLE_REPLAYS = {
    # first row -> (the row, its reject as filed (RowNumber, Reason, key), or None for a valid row)
    "a row the writer rejects": (lambda key: {**activity(key, 1), "customer_id": "x"},
                                 lambda key: (1, "customer_id 'x' is not an integer", None)),
    "a row the procedure rejects": (lambda key: {**activity(key, 1), "activity_type": "bogus"},
                                    lambda key: (1, "activity_type is not in CustomerActivityTypes", str(key))),
    "a valid row": (lambda key: activity(key, 1), None),
}


@pytest.mark.parametrize("first", list(SINGLE_REPLAYS))
def test_a_single_row_call_committed_before_its_connection_dropped_files_its_reject_once(bed, first):
    ids = keys(2)
    make_first, filed = SINGLE_REPLAYS[first]
    rows = [make_first(ids[0]), {**activity(ids[1], 1), "activity_type": "bogus"}]
    events = []
    writer = writer_for("single", bed.engine, ACTIVITY,
                        policy=CommitThenDrop(initial_wait=0.01, sleep=lambda _: None, on_retry=events.append))

    counts = writer.upsert(rows)

    assert len(events) == 1, "the dropped connection was retried once"
    oracle = Oracle(valid=lambda row: row["activity_type"] != "bogus" and row["customer_id"] != "x")
    expected = oracle.apply(rows)
    if filed is None:
        # The retried call finds its own row stored: the single-row path cannot tell a replay from
        # a repeat, so the row counts as skipped. The table is the same as after a clean run.
        expected = Counts(received=2, skipped=1, rejected=1)
    assert counts == expected
    assert bed.table(ACTIVITY) == oracle.table()
    second = (2, "activity_type is not in CustomerActivityTypes", str(ids[1]))
    assert bed.rejects(ACTIVITY) == ([filed(ids[0])] if filed else []) + [second], "each reject filed once"


def wait_until_blocked(bed, seconds=20.0) -> bool:
    """Wait until some session of the test database waits for a lock."""
    sql = ("SELECT COUNT(*) FROM sys.dm_exec_requests WHERE blocking_session_id <> 0"
           if bed.server.engine.name == "mssql" else
           "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with bed.engine.connect() as conn:
            if conn.exec_driver_sql(sql).scalar():
                return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("path", PATHS)
def test_a_reason_longer_than_the_reject_table_holds_is_filed_cut_to_400_utf16_units(bed, path):
    ids = keys(2)
    field = "\U0001F600" * 300 + "\ud800"  # 600 UTF-16 units of emoji, then a lone surrogate
    rows = [{**activity(ids[0], 1), field: 1}, activity(ids[1], 1)]

    writer = writer_for(path, bed.engine, ACTIVITY)
    counts = writer.upsert(rows)

    reason = f"unknown fields {field[:-1]}\\ud800; allowed: event_id, customer_id, activity_type, time_stamp_utc, " \
             "details_json, ExpectedRowVersion"
    assert counts == Counts(received=2, inserted=1, rejected=1)
    assert [(e.row_number, e.reason) for e in writer.errors] == [(1, reason)], "the writer reports it whole"
    filed = "unknown fields " + "\U0001F600" * 192  # 15 + 2 * 192 = 399 units: a 193rd emoji would not fit
    assert reason.startswith(filed)
    assert bed.rejects(ACTIVITY) == [(1, filed, None)]
    assert bed.table(ACTIVITY) == [expected_row(activity(ids[1], 1))]


def call_upsert_one(bed, row, batch_id):
    # No ExpectedRowVersion: its default NULL (an untyped NULL does not convert to binary(8) on SQL Server).
    with bed.engine.begin() as conn:
        return call_procedure(conn, bed.server.engine, ACTIVITY.upsert_one, {**row, "BatchId": batch_id},
                              outputs=ONE_OUTPUTS)


def test_the_single_row_procedure_files_a_repeated_reject_once_and_every_other_reject(bed):
    a, b = keys(2)
    batch = uuid7(bed.server.engine.name)
    bogus = {"activity_type": "bogus"}

    outcomes = [call_upsert_one(bed, {**activity(a, 1), **bogus}, batch)["Outcome"],  # RowNumber defaults to 1
                call_upsert_one(bed, {**activity(a, 1), **bogus}, batch)["Outcome"],  # the same reject: a replay
                call_upsert_one(bed, {**activity(b, 1), **bogus}, batch)["Outcome"],  # another key, same number
                call_upsert_one(bed, {**activity(a, 1), "activity_type": "x" * 51}, batch)["Outcome"],  # another reason
                call_upsert_one(bed, {**activity(a, 2), **bogus}, batch)["Outcome"]]  # another version of the key

    assert outcomes == ["Rejected"] * 5
    assert bed.rejects(ACTIVITY) == sorted([(1, "activity_type is not in CustomerActivityTypes", str(a)),
                                            (1, "activity_type is not in CustomerActivityTypes", str(b)),
                                            (1, "activity_type is longer than 50 characters", str(a)),
                                            (1, "activity_type is not in CustomerActivityTypes", str(a))])
    assert bed.table(ACTIVITY) == []


# ----------------------------------------------------------------------------- reading ahead
@pytest.mark.parametrize("path", BATCH_PATHS)
def test_an_input_that_fails_keeps_the_chunks_before_it_and_raises_its_own_error(bed, path):
    ids = keys(7)

    def events():
        yield from (activity(k, 1) for k in ids)
        raise ValueError("the feed broke after 7 rows")

    writer = writer_for(path, bed.engine, ACTIVITY, batch_size=3)
    assert writer.prefetch, "the batch paths read the next chunk while the database works"

    with pytest.raises(ValueError, match="the feed broke after 7 rows"):
        writer.upsert(events())

    oracle = Oracle()
    oracle.apply([activity(k, 1) for k in ids[:3]])
    oracle.apply([activity(k, 1) for k in ids[3:6]])
    assert bed.table(ACTIVITY) == oracle.table(), "the two whole chunks are written, the partial one is not"
    assert len(writer.batch_ids) == 2


@pytest.mark.parametrize("path", BATCH_PATHS)
def test_a_chunk_that_fails_stops_the_reading_ahead(bed, path, monkeypatch):
    taken = []

    def events():
        for k in keys(100):
            taken.append(k)
            yield activity(k, 1)

    def broken(self, conn, *args):
        raise sa.exc.IntegrityError("CALL ...", {}, psycopg.errors.UniqueViolation("duplicate key"))

    writer = writer_for(path, bed.engine, ACTIVITY, batch_size=2)
    monkeypatch.setattr(type(writer), "_apply", broken)

    with pytest.raises(sa.exc.IntegrityError, match="duplicate key"):
        writer.upsert(events())

    deadline = time.monotonic() + 10
    while any(t.name == "dbtools-prefetch" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.name == "dbtools-prefetch" for t in threading.enumerate()), "the reading thread ended"
    if path == "bulk" and bed.server.engine.name == "postgresql":
        # Two more chunks are taken by the staging stage (one staged, one being staged); of the
        # five, only three still hold their COPY body (a staged chunk drops it).
        assert len(taken) <= 5 * 2, "the failed chunk, one staged, one being staged, one ready, one being read"
        deadline = time.monotonic() + 10
        while bed.staged(ACTIVITY) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert bed.staged(ACTIVITY) == 0, "the chunks staged ahead of the failure were removed"
    else:
        assert len(taken) <= 3 * 2, "at most the failed chunk, the ready one and the one being read"
    assert bed.table(ACTIVITY) == []


def test_reading_ahead_keeps_the_order_and_holds_at_most_two_items_beyond_the_consumer():
    produced = []

    def numbers():
        for n in range(50):
            produced.append(n)
            yield n

    seen = []
    for item in prefetched(numbers()):
        time.sleep(0.002)  # a slow consumer: the producer waits, it does not run ahead
        assert len(produced) <= item + 3, (item, len(produced))
        seen.append(item)

    assert seen == list(range(50))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("n", [0, 1, 4, 5])
def test_the_input_is_cut_into_whole_chunks_and_no_empty_chunk_is_built_at_its_end(path, n):
    engine = sa.create_engine("postgresql+psycopg://dbtools@localhost/none")  # never connected
    writer = writer_for(path, engine, ACTIVITY, batch_size=2)
    built = []
    builder = writer._chunk_builder
    writer._chunk_builder = lambda batch_id: (built.append(batch_id), builder(batch_id))[1]
    rows = [activity(k, 1) for k in keys(n)]

    chunks = list(writer._prepared_chunks(rows))

    assert [(c.sent, c.valid, [r.row_number for r in c.rows] if c.rows is not None else None) for c in chunks] == [
        (len(part), len(part), [i + 1 for i in part] if path != "bulk" else None)
        for part in [range(n)[i:i + 2] for i in range(0, n, 2)]]
    assert built == [c.batch_id for c in chunks], "one builder per chunk sent, none for the end of the input"


def test_reading_ahead_with_prefetch_off_gives_the_same_table_and_counts(bed):
    rows = [activity(k, i % 4, customer=i) for i, k in enumerate(keys(40))] * 2
    on = writer_for("bulk", bed.engine, ACTIVITY, batch_size=7).upsert(rows)
    table_on = bed.table(ACTIVITY)
    bed.clear(ACTIVITY)

    off = writer_for("bulk", bed.engine, ACTIVITY, batch_size=7, prefetch=False).upsert(rows)

    assert (off, bed.table(ACTIVITY)) == (on, table_on)


# ----------------------------------------------------------------------------- arguments
def test_a_bad_path_or_batch_size_is_refused_naming_the_allowed_values(bed):
    with pytest.raises(UpsertError, match=r"--path 'fast' is not a known path; allowed values: single, tvp, bulk"):
        writer_for("fast", bed.engine, ACTIVITY)
    with pytest.raises(UpsertError, match="batch_size must be an integer of 1 or more, got 0"):
        writer_for("tvp", bed.engine, ACTIVITY, batch_size=0)


@pytest.mark.parametrize("reason, stored", [
    ("short", "short"),
    ("a\x00b \udc80", "a\\x00b \\udc80"),  # from a reader: escaped, as neither engine stores them
    ("x" * 401, "x" * 400),
    ("\U0001F600" * 201, "\U0001F600" * 200),  # 400 UTF-16 units
    ("x" + "\U0001F600" * 200, "x" + "\U0001F600" * 199),  # a pair is never cut in half
])
def test_a_reason_is_stored_escaped_and_cut_to_400_utf16_units(reason, stored):
    assert _stored_reason(reason) == stored


@pytest.mark.parametrize("row, reason", [
    ({"event_id": "not-a-uuid"}, "event_id 'not-a-uuid' is not a UUID"),
    ({"customer_id": 2**31}, "customer_id 2147483648 is out of range for a 32-bit integer"),
    ({"customer_id": True}, "customer_id True is not an integer"),
    ({"time_stamp_utc": "yesterday"}, "time_stamp_utc 'yesterday' is not an ISO 8601 timestamp"),
    ({"details_json": 5}, "details_json 5 is not JSON text, an object or an array"),
    ({"details_json": {"at": dt.date(2026, 12, 3)}},
     "details_json {'at': datetime.date(2026, 12, 3)} cannot be written as JSON: Object of type date is not JSON serializable"),
    ({"activity_type": "log\x00in"}, "activity_type 'log\\x00in' contains a NUL character, which PostgreSQL text "
                                      "cannot hold"),
    ({"activity_type": "\ud800"}, "activity_type '\\ud800' contains a lone surrogate, which is not Unicode text"),
    ({"details_json": {"note": "caf\u00e9 \ud800"}},
     "details_json '{\"note\":\"café \\ud800\"}' contains a lone surrogate, which is not Unicode text"),
    ({"RowNumber": 2**63}, "RowNumber 9223372036854775808 is out of range for a 64-bit integer"),
    ({"RowNumber": "3"}, "RowNumber '3' is not an integer"),
    ({"colour": "red"}, "unknown fields colour; allowed: event_id, customer_id, activity_type, time_stamp_utc, "
                        "details_json, ExpectedRowVersion"),
    ({"col\x00our": 1, "\ud800": 2, "caf\u00e9": 3},
     "unknown fields \\ud800, caf\u00e9, col\\x00our; allowed: event_id, customer_id, activity_type, time_stamp_utc, "
     "details_json, ExpectedRowVersion"),
])
def test_a_value_the_writer_cannot_convert_is_rejected_with_the_column_named(row, reason):
    assert prepare(ACTIVITY, row, 7).reason == reason
    assert prepare(ACTIVITY, row, 7).row_number == 7


_ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**64, max_value=2**64), st.uuids(),
    st.text(alphabet=st.characters(codec=None, min_codepoint=0, max_codepoint=0xDFFF), max_size=60),
    st.datetimes(timezones=st.one_of(st.none(), st.timezones())), st.dates(),
    st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(alphabet="ab\x00\ud800\u00e9", max_size=4),
                                                   st.dates()), max_size=3),
    st.lists(st.integers(), max_size=3), st.builds(lambda t: f"{{\"k\": \"{t}\"}}", st.text(max_size=5)))


def _good_values(spec):
    values = {"uuid": st.uuids(), "int": st.integers(min_value=-2**31, max_value=2**31 - 1),
              "bigint": st.integers(min_value=-2**63, max_value=2**63 - 1), "string": st.text(max_size=60),
              "timestamp": st.datetimes(), "json": st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)}
    return {c.name: values[c.type] for c in spec.columns}


@pytest.mark.parametrize("spec", [ACTIVITY, CLICK, PROVIDER_DEVICE], ids=lambda s: s.entity)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_fast_row_converter_returns_what_the_generic_one_does(spec, data):
    """The writers' converter takes rows that need no conversion on a generated fast path; for any
    row, valid or not, it returns what the generic converter returns (values, reason, RowNumber)."""
    fast, generic = _preparer(spec), _preparer(spec, fast=False)
    names = [c.name for c in spec.columns] + ["ExpectedRowVersion", "RowNumber", "colour"]
    good = _good_values(spec)
    row = {}
    for name in names:
        choice = data.draw(st.sampled_from(["good", "odd", "absent"] if name in good else ["odd", "absent", "absent"]))
        if choice == "good":
            row[name] = data.draw(good[name])
        elif choice == "odd":
            row[name] = data.draw(_ODD_VALUES)
    assert fast(row, 7) == generic(row, 7)


@given(moment=st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30)),
       spec=st.sampled_from(["seconds", "milliseconds", "microseconds", "minutes", "hours", "auto"]),
       compact=st.booleans())
def test_a_utc_timestamp_written_with_z_reads_as_the_aware_reading_of_it_does(moment, spec, compact):
    from dbtools.upsert.writers import _to_timestamp

    text = moment.isoformat(timespec=spec)
    if compact:
        text = text.replace("-", "").replace(":", "")
    reference = dt.datetime.fromisoformat(text + "+00:00").astimezone(dt.timezone.utc).replace(tzinfo=None)

    assert _to_timestamp(text + "Z") == reference
    assert _to_timestamp(text + "+00:00") == reference
