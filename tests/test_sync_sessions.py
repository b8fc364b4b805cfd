"""Paged sync sessions (usp_Sync_Begin, usp_Sync_Page, usp_Sync_Promote; dbtools.sync.session).

One module for the three procedures and the runner that drives them, on every engine: the
carrier API of tests/carrier_api.py plays the paged source; production is compared whole with
an oracle (the newest row per ServiceProviderId and ICCID of everything the source sent).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from dbtools.db.procs import ProcedureValidationError, call_procedure
from dbtools.retry import RetryPolicy
from dbtools.sync.http import HttpSource
from dbtools.sync.jsonl import JsonLinesSource
from dbtools.sync.session import SyncError, SyncInProgress, _Stager, sync
from dbtools.sync.source import Page
from dbtools.upsert.specs import spec_named
from dbtools.uuid7 import uuid7

from .carrier_api import CarrierApi, iso_z, make_devices
from .upsert_bed import by_key, make_bed, normalise

JASPER = spec_named("JasperDevice")
FIXED_CLOCK = dt.datetime(2026, 3, 31, 12, 0, 0)
QUICK = RetryPolicy(max_attempts=3, initial_wait=0.0, max_wait=0.0, sleep=lambda s: None)
#: Devices modified from here on are inside a full sync's window at the fixed clock (since Feb 27).
START = dt.datetime(2026, 3, 30)


def devices_from(count: int, **options) -> list[dict]:
    return make_devices(count, **{"start": START, **options})


def run(bed, scope, source, **options):
    """A sync at the fixed clock with a quick retry policy (options override)."""
    return sync(bed.engine, JASPER, scope, source, **{"as_of": FIXED_CLOCK, "policy": QUICK, **options})


# ----------------------------------------------------------------------------- helpers
@pytest.fixture
def bed(server):
    return make_bed(server)


@pytest.fixture
def api(monkeypatch) -> Iterator[CarrierApi]:
    with CarrierApi(page_size=10) as carrier:
        for name, value in carrier.env().items():
            monkeypatch.setenv(name, value)
        yield carrier


def http(api: CarrierApi, **options) -> HttpSource:
    return HttpSource(api.url, **{**api.source_options(), "sleep": lambda s: None, **options})


def production(bed) -> list[tuple]:
    """The whole JasperDevices table, in key order, as plain values."""
    return sorted(bed.table(JASPER), key=by_key(JASPER))


def oracle(*sent: tuple[int, list[dict]]) -> list[tuple]:
    """The newest row per (provider, ICCID) of everything sent, as production holds it: each
    (provider, devices) in the order sent, a later row winning a tie (a later page)."""
    newest: dict[tuple, dict] = {}
    for provider, devices in sent:
        for d in devices:
            row = {"ServiceProviderId": provider, **d}
            key = (provider, row["ICCID"])
            when = _ts(row["ModifiedDate"])
            if key not in newest or _ts(newest[key]["ModifiedDate"]) <= when:
                newest[key] = row
    rows = [tuple(_typed(c, r.get(c.name)) for c in JASPER.columns) for r in newest.values()]
    return sorted((normalise(JASPER, r) for r in rows), key=by_key(JASPER))


def _ts(value) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.astimezone(dt.timezone.utc).replace(tzinfo=None) if value.tzinfo else value


def _typed(column, value):
    return _ts(value) if column.type == "timestamp" and value is not None else value


def sessions(bed) -> list[dict]:
    with bed.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT * FROM {bed.server.engine.job_object('SyncSession')}").mappings().all()
    return [dict(r) for r in rows]


def session_row(bed, session_id) -> dict:
    return next(s for s in sessions(bed) if str(s["SessionId"]).lower() == str(session_id).lower())


def staged_by_session(bed) -> dict[str, int]:
    q = bed.server.engine.quote
    with bed.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT {q('SessionId')}, COUNT(*) FROM {JASPER.table_object(bed.server.engine, JASPER.staging)} "
            f"GROUP BY {q('SessionId')}").all()
    return {str(s).lower(): n for s, n in rows}


class Killed(Exception):
    """Stands for the process dying between two pages."""


class StopsAfter:
    """A source that delivers pages up to ``k`` and then dies (as a killed process would)."""

    def __init__(self, inner, k: int):
        self.inner, self.k = inner, k

    def describe(self) -> str:
        return self.inner.describe()

    def pages(self, since, first_page=1):
        for page in self.inner.pages(since, first_page):
            yield page
            if page.number >= self.k:
                raise Killed(f"killed after page {page.number}")


class ListSource:
    """Pages given as lists of rows; the last one marked last (unless ``last`` is False)."""

    def __init__(self, *pages: list, last: bool = True):
        self.rows, self.last = pages, last
        self.asked: list[tuple] = []

    def describe(self) -> str:
        return "pages in a list"

    def pages(self, since, first_page=1):
        self.asked.append((since, first_page))
        for n in range(first_page, len(self.rows) + 1):
            yield Page(n, self.rows[n - 1], self.last and n == len(self.rows))


# ----------------------------------------------------------------------------- since and staging
def test_a_full_sync_asks_since_one_month_and_one_day_before_the_clock_and_clears_only_its_own_scopes_staging(bed, api):
    # Assemble: provider 2 has a session open with a staged page; provider 1 an open one too.
    api.put(*devices_from(25))
    other = sync_until_killed(bed, api, provider=2, k=1)
    own = sync_until_killed(bed, api, provider=1, k=2)
    before = staged_by_session(bed)
    assert before == {str(other).lower(): 10, str(own).lower(): 20}
    api.clear_requests()

    # Act: a full sync of provider 1, with a fixed clock.
    result = run(bed, 1, http(api), full=True, as_of=FIXED_CLOCK)

    # Assert: since = 2026-03-31 12:00 - 1 month - 1 day; provider 2's staging and session untouched.
    assert result.sync_type == "Full" and result.status == "Promoted"
    assert result.since == dt.datetime(2026, 2, 27, 12, 0, 0)
    assert set(api.since_asked()) == {"2026-02-27T12:00:00Z"}
    assert staged_by_session(bed) == {str(other).lower(): 10}
    assert session_row(bed, other)["Status"] == "Open"
    old = session_row(bed, own)
    assert (old["Status"], str(old["SupersededBy"]).lower()) == ("Superseded", str(result.session_id).lower())
    assert production(bed) == oracle((1, api.devices))


def test_an_incremental_sync_asks_for_the_last_sync_point_minus_the_buffer(bed, api):
    # Assemble: a full sync promoted at the fixed clock.
    api.put(*devices_from(12, start=dt.datetime(2026, 3, 20)))
    first = run(bed, 7, http(api), as_of=FIXED_CLOCK)
    assert first.sync_type == "Full"  # the scope never completed one
    changed = [{**d, "Status": "DEACTIVATED", "ModifiedDate": iso_z(dt.datetime(2026, 3, 31, 13))}
               for d in api.devices[:3]]
    api.put(*changed)
    api.clear_requests()

    # Act
    second = run(bed, 7, http(api), as_of=FIXED_CLOCK + dt.timedelta(hours=2))

    # Assert: since = the first session's start (the fixed clock) - 300 s.
    assert second.sync_type == "Incremental"
    assert second.since == FIXED_CLOCK - dt.timedelta(seconds=300)
    assert set(api.since_asked()) == {"2026-03-31T11:55:00Z"}
    assert production(bed) == oracle((7, api.devices))
    assert (second.received, second.updated, second.inserted) == (3, 3, 0)


def sync_until_killed(bed, api, *, provider: int, k: int, full: bool = False):
    """Start a sync that dies after page k; return its session id."""
    seen = []
    with pytest.raises(Killed):
        run(bed, provider, StopsAfter(http(api), k), full=full, on_page=lambda p: seen.append(p.session_id))
    return seen[0]


# ----------------------------------------------------------------------------- sessions that stop
@pytest.mark.parametrize("k", [1, 3, 4])
def test_a_session_killed_after_page_k_resumes_at_page_k_plus_1_and_ends_as_an_uninterrupted_sync(bed, api, k):
    # Assemble: 45 devices in pages of 10 (5 pages); a sync that dies after page k.
    api.put(*devices_from(45))
    killed = sync_until_killed(bed, api, provider=5, k=k)
    assert production(bed) == []  # nothing promoted while pages are missing
    api.clear_requests()

    # Act
    resumed = run(bed, 5, http(api))

    # Assert: the same session, resumed at page k + 1 ...
    assert (resumed.session_id, resumed.resumed, resumed.first_page) == (killed, True, k + 1)
    assert api.pages_asked() == list(range(k + 1, 6))
    assert (resumed.pages_loaded, resumed.received, resumed.inserted, resumed.rejected) == (5 - k, 45, 45, 0)
    # ... and the table of an uninterrupted sync (of another provider, from the same source).
    clean = run(bed, 6, http(api))
    assert clean.resumed is False and clean.pages_loaded == 5
    five = [r[1:] for r in production(bed) if r[0] == 5]
    six = [r[1:] for r in production(bed) if r[0] == 6]
    assert five == six and len(five) == 45
    assert production(bed) == oracle((5, api.devices), (6, api.devices))


def test_a_session_that_never_receives_its_last_page_leaves_production_untouched(bed, api):
    # Assemble: a promoted sync, then the source turns into a runaway.
    api.put(*devices_from(15))
    run(bed, 3, http(api))
    before = production(bed)
    api.put(*[{**d, "Status": "RETIRED", "ModifiedDate": iso_z(dt.datetime(2027, 1, 1))} for d in api.devices])
    api.never_last = True

    # Act
    with pytest.raises(SyncError, match=r"page limit.*stays open at page 4"):
        run(bed, 3, http(api, page_limit=3))

    # Assert
    assert production(bed) == before
    open_sessions = [s for s in sessions(bed) if s["Status"] == "Open"]
    assert len(open_sessions) == 1 and open_sessions[0]["PagesReceived"] == 3
    assert open_sessions[0]["LastPageNumber"] is None


def test_a_source_that_ends_without_a_last_page_leaves_the_session_open(bed):
    source = ListSource([{"ICCID": "1", "Status": "A", "RatePlan": "Unlimited", "CommunicationPlan": "Data Only",
                          "ModifiedDate": "2026-01-01T00:00:00Z"}], last=False)
    with pytest.raises(SyncError, match="ended after page 1 without a last page"):
        run(bed, 1, source)
    assert production(bed) == []
    assert [s["Status"] for s in sessions(bed)] == ["Open"]


def test_a_promote_that_fails_part_way_leaves_production_untouched_and_the_session_resumable(bed, api):
    # Assemble: a table with rows, and a trigger that fails the promote on one device.
    api.put(*devices_from(30))
    run(bed, 4, http(api))
    changed = [{**d, "Status": "PURGED", "ModifiedDate": iso_z(dt.datetime(2026, 6, 1))} for d in api.devices]
    api.put(*changed)
    before = production(bed)
    fail_on(bed, api.devices[17]["ICCID"])
    api.clear_requests()

    # Act
    with pytest.raises(sa.exc.DBAPIError, match="failed.*The table is unchanged"):
        run(bed, 4, http(api))

    # Assert: production as before; the session Failed, all its pages kept.
    assert production(bed) == before
    failed = [s for s in sessions(bed) if s["Status"] == "Failed"]
    assert len(failed) == 1 and failed[0]["PagesReceived"] == 3 and "refused" in failed[0]["ErrorMessage"]

    # And it resumes: no page fetched again, promoted whole.
    drop_failure(bed)
    api.clear_requests()
    result = run(bed, 4, http(api))
    assert (str(result.session_id).lower(), result.status) == (str(failed[0]["SessionId"]).lower(), "Promoted")
    assert api.pages_asked() == [] and result.pages_loaded == 0
    assert production(bed) == oracle((4, api.devices))


def fail_on(bed, iccid: str) -> None:
    engine = bed.server.engine
    table = JASPER.table_object(engine, JASPER.table)
    with bed.engine.begin() as conn:
        if engine.name == "postgresql":
            conn.exec_driver_sql(
                "CREATE FUNCTION public.dbtools_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF NEW.\"ICCID\" = '{iccid}' THEN RAISE EXCEPTION 'device %% refused by a test trigger', NEW.\"ICCID\"; "
                "END IF; RETURN NEW; END $$")
            conn.exec_driver_sql(f"CREATE TRIGGER dbtools_test_refuse BEFORE INSERT OR UPDATE ON {table} "
                                 "FOR EACH ROW EXECUTE FUNCTION public.dbtools_test_refuse()")
        else:
            conn.exec_driver_sql(
                f"CREATE TRIGGER [dbo].[dbtools_test_refuse] ON {table} AFTER INSERT, UPDATE AS "
                f"IF EXISTS (SELECT 1 FROM inserted WHERE [ICCID] = N'{iccid}') "
                f"THROW 50099, N'device {iccid} refused by a test trigger', 1;")


def drop_failure(bed) -> None:
    engine = bed.server.engine
    with bed.engine.begin() as conn:
        if engine.name == "postgresql":
            conn.exec_driver_sql(f"DROP TRIGGER dbtools_test_refuse ON {JASPER.table_object(engine, JASPER.table)}")
            conn.exec_driver_sql("DROP FUNCTION public.dbtools_test_refuse()")
        else:
            conn.exec_driver_sql("DROP TRIGGER [dbo].[dbtools_test_refuse]")


# ----------------------------------------------------------------------------- newest wins
def test_duplicate_iccids_across_pages_resolve_to_the_newest_and_a_stale_page_never_overwrites_newer_rows(bed):
    # Assemble: production holds a device modified in June.
    def row(iccid, month, status):
        return {"ICCID": iccid, "Status": status, "RatePlan": "Unlimited", "CommunicationPlan": "Data Only",
                "ModifiedDate": dt.datetime(2026, month, 1)}
    run(bed, 9, ListSource([row("A", 6, "June"), row("B", 1, "January")]))

    # Act: A appears on three pages (an older one, the newest, an older one); B newer, twice, tied.
    result = run(bed, 9, ListSource(
        [row("A", 3, "March"), row("B", 2, "Feb-first")],
        [row("A", 5, "May"), row("B", 2, "Feb-later")],
        [row("A", 4, "April")],
    ))

    # Assert: A stays June (every staged A is older); B takes the later page of the tie.
    statuses = {r[1]: r[3] for r in production(bed)}
    assert statuses == {"A": "June", "B": "Feb-later"}
    assert (result.received, result.inserted, result.updated, result.skipped, result.rejected) == (5, 0, 1, 4, 0)


def test_the_same_iccid_under_two_providers_is_two_devices(bed):
    rows = [{"ICCID": "X", "Status": "S", "RatePlan": "Unlimited", "CommunicationPlan": "Data Only",
             "ModifiedDate": "2026-01-01T00:00:00Z"}]
    run(bed, 1, ListSource(rows))
    run(bed, 2, ListSource([{**rows[0], "Status": "T"}]))
    assert [(r[0], r[1], r[3]) for r in production(bed)] == [(1, "X", "S"), (2, "X", "T")]


# ----------------------------------------------------------------------------- rejects
def test_bad_rows_are_rejected_with_their_page_row_and_reason_and_the_counts_add_up(bed, tmp_path):
    # Assemble: JSON Lines pages with one bad row of each kind.
    good = {"ICCID": "G1", "Status": "Active", "RatePlan": "Unlimited", "CommunicationPlan": "Data Only",
            "ModifiedDate": "2026-01-02T00:00:00Z"}
    page1 = [good, {**good, "ICCID": "G2", "Status": None}, {**good, "ICCID": "G3", "RatePlan": "Gold"}]
    page2 = [{**good, "ICCID": "G4", "ModifiedDate": "yesterday"}, {**good, "ICCID": "G5", "ServiceProviderId": 99},
             {**good, "ICCID": "G1", "ModifiedDate": "2026-01-01T00:00:00Z"}]
    (tmp_path / "page-0001.jsonl").write_text("\n".join(json.dumps(r) for r in page1) + "\n")
    (tmp_path / "page-0002.jsonl").write_text("\n".join(json.dumps(r) for r in page2) + "\n{not json\n")

    # Act
    result = run(bed, 8, JsonLinesSource(tmp_path))

    # Assert
    assert [(p, r) for p, r, _ in result.rejects] == [(1, 2), (1, 3), (2, 1), (2, 2), (2, 4)]
    reasons = [reason for _, _, reason in result.rejects]
    assert reasons[0] == "missing required field Status"
    assert reasons[1] == "RatePlan is not in JasperRatePlans"
    assert reasons[2].startswith("ModifiedDate 'yesterday' is not an ISO 8601 timestamp")
    assert reasons[3] == "ServiceProviderId is not the session's scope"
    assert "not valid JSON" in reasons[4]
    assert (result.received, result.inserted, result.updated, result.skipped, result.rejected) == (7, 1, 0, 1, 5)
    assert result.received == result.inserted + result.updated + result.skipped + result.rejected
    assert [r[1] for r in production(bed)] == ["G1"]
    done = session_row(bed, result.session_id)
    assert (done["RowsReceived"], done["RowsRejected"], done["PagesReceived"], done["LastPageNumber"]) == (7, 5, 2, 2)


# ----------------------------------------------------------------------------- pages
def test_a_page_loaded_again_replaces_itself_and_never_duplicates_rows(bed):
    # Assemble: a session, page 1 loaded once.
    engine, info = bed.engine, bed.server.engine
    rows = [{"ICCID": f"P{n}", "Status": "S", "RatePlan": "Unlimited", "CommunicationPlan": "Data Only",
             "ModifiedDate": "2026-01-01T00:00:00Z"} for n in range(4)]
    with engine.connect() as conn:
        session = begin(conn, info, 11)
        load_page(conn, info, session, Page(1, rows, False))
        # Act: the same page again (a retry after an unknown commit outcome), with one row fewer.
        out = load_page(conn, info, session, Page(1, rows[:3], False))
        conn.commit()
    # Assert
    assert out["PagesReceived"] == 1
    assert staged_by_session(bed) == {str(session).lower(): 3}
    assert session_row(bed, session)["RowsReceived"] == 3


def test_a_promote_refuses_while_a_page_up_to_the_last_is_missing(bed):
    engine, info = bed.engine, bed.server.engine
    row = {"ICCID": "M", "Status": "S", "RatePlan": "Unlimited", "CommunicationPlan": "Data Only",
           "ModifiedDate": "2026-01-01T00:00:00Z"}
    with engine.connect() as conn:
        session = begin(conn, info, 12)
        load_page(conn, info, session, Page(1, [row], False))
        load_page(conn, info, session, Page(4, [row], True))
        conn.commit()
        auto = conn.execution_options(isolation_level="AUTOCOMMIT")
        with pytest.raises(ProcedureValidationError, match=r"2 pages missing up to the last page 4: 2, 3\. Resume"):
            call_procedure(auto, info, "usp_Sync_Promote", {"SessionId": bind(info, session)}, {"Status": "nvarchar(20)"})
    assert production(bed) == []
    assert session_row(bed, session)["Status"] == "Open"


def begin(conn, info, scope) -> uuid.UUID:
    with conn.begin():
        out = call_procedure(conn, info, "usp_Sync_Begin", {"Entity": "JasperDevice"},
                             {"Scope": "nvarchar(450)", "SessionId": "uniqueidentifier"}, {"Scope": str(scope)})
    return uuid.UUID(str(out["SessionId"]))


def bind(info, value):
    return str(value) if info.name == "mssql" else value


def load_page(conn, info, session, page: Page) -> dict:
    stager = _Stager(info, JASPER, "0")
    valid, rejected = stager.convert(page)
    load = uuid7(info.name)
    with conn.begin_nested() if conn.in_transaction() else conn.begin():
        stager.stage(conn, load, session, page.number, valid, rejected)
        return call_procedure(conn, info, "usp_Sync_Page",
                              {"SessionId": bind(info, session), "PageNumber": page.number, "LoadId": bind(info, load),
                               "RowsReceived": len(page.rows), "IsLastPage": page.is_last},
                              {"PagesReceived": "int", "LastPageNumber": "int"})


# ----------------------------------------------------------------------------- one sync per scope
def test_two_syncs_of_the_same_scope_at_once_one_proceeds_and_the_other_is_refused_with_the_holders_session_id(bed, api):
    # Assemble: a sync held on a slow second page.
    api.put(*devices_from(25))
    api.slow(2, 3.0)
    started = threading.Event()
    outcome: dict = {}

    def first() -> None:
        try:
            outcome["result"] = run(bed, 21, http(api),
                                     on_page=lambda p: (outcome.setdefault("session", p.session_id), started.set()))
        except BaseException as exc:  # reported below
            outcome["error"] = exc
            started.set()

    worker = threading.Thread(target=first)
    worker.start()
    assert started.wait(30)

    # Act: a second sync of the same scope, and one of another scope.
    with pytest.raises(SyncInProgress) as refused:
        run(bed, 21, http(api))
    other = run(bed, 22, http(api))
    worker.join(60)

    # Assert
    assert str(outcome["session"]) in str(refused.value)
    assert "is in progress in another session" in str(refused.value)
    assert outcome.get("error") is None and outcome["result"].status == "Promoted"
    assert other.status == "Promoted"
    assert production(bed) == oracle((21, api.devices), (22, api.devices))


# ----------------------------------------------------------------------------- HTTP through a session
def test_a_500_during_a_sync_is_retried_and_the_session_completes(bed, api):
    api.put(*devices_from(20))
    api.fail(page=2, status=500, times=2)
    result = run(bed, 31, http(api))
    assert result.status == "Promoted"
    assert production(bed) == oracle((31, api.devices))


def test_a_401_stops_the_sync_at_once_with_a_clear_message_and_the_session_stays_open(bed, api):
    api.put(*devices_from(20))
    api.fail(page=1, status=401)
    with pytest.raises(SyncError, match=r"HTTP 401.*refused the credentials.*stays open at page 1"):
        run(bed, 32, http(api))
    assert production(bed) == []


# ----------------------------------------------------------------------------- parameters
def test_begin_names_every_bad_parameter_and_changes_nothing(bed):
    with bed.engine.connect() as conn, pytest.raises(ProcedureValidationError) as bad:
        with conn.begin():
            call_procedure(conn, bed.server.engine, "usp_Sync_Begin", {"Entity": "Nope", "SyncType": "Sometimes"},
                           {"SessionId": "uniqueidentifier"})
    text = str(bad.value)
    assert "'Nope' is not an entity loaded by sync sessions; allowed values: JasperDevice" in text
    assert "Scope" in text and "is required" in text
    assert "SyncType" in text and "allowed values: Full, Incremental" in text
    assert sessions(bed) == []


def test_a_scope_that_is_not_a_provider_id_is_refused(bed):
    with pytest.raises(ProcedureValidationError, match=r"Scope\"? 'seven' is not a valid ServiceProviderId \(int\)"):
        run(bed, "seven", ListSource([]))
    assert sessions(bed) == []


@pytest.mark.postgresql_only
def test_a_connection_dropped_between_pages_reconnects_resumes_the_same_session_and_completes(bed, api):
    # Assemble: after page 2 is committed, the runner's server session is terminated (as a
    # failover or an administrator would), which also frees the scope's lock.
    api.put(*devices_from(40))
    seen = []

    def drop_after_page_two(progress) -> None:
        seen.append((progress.session_id, progress.number))
        if progress.number == 2:
            with bed.engine.connect() as conn:
                killed = conn.exec_driver_sql(
                    "SELECT count(pg_catalog.pg_terminate_backend(a.pid)) FROM pg_catalog.pg_stat_activity AS a "
                    "WHERE a.datname = pg_catalog.current_database() AND a.pid <> pg_catalog.pg_backend_pid() "
                    "AND a.backend_type = 'client backend'").scalar_one()
            assert killed >= 1

    # Act
    result = run(bed, 41, http(api), on_page=drop_after_page_two)

    # Assert: one session throughout, every page once, the full table.
    assert {s for s, _ in seen} == {result.session_id}
    assert [n for _, n in seen] == [1, 2, 3, 4]
    assert result.status == "Promoted" and result.received == 40
    assert [s["Status"] for s in sessions(bed)] == ["Promoted"]
    assert production(bed) == oracle((41, api.devices))


@pytest.mark.parametrize("scope, reason", [
    ("-", r"Scope\"? '-' is not a valid ServiceProviderId \(int\)"),
    ("+", r"Scope\"? '\+' is not a valid ServiceProviderId \(int\)"),
    ("4294967296", r"Scope\"? '4294967296' is not a valid ServiceProviderId \(int\)"),
    ("7" * 301, r"Scope\"? is longer than 300 characters"),
])
def test_a_scope_sql_server_or_postgresql_would_read_differently_is_refused_on_both(bed, scope, reason):
    with pytest.raises(ProcedureValidationError, match=reason):
        run(bed, scope, ListSource([]))
    assert sessions(bed) == []
