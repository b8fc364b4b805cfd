"""The two paged sources the package ships: JSON Lines page files, and a paged HTTP JSON API
(played by the local carrier API of tests/carrier_api.py)."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest

from dbtools.errors import ConfigurationError
from dbtools.sync.http import HttpSource, retry_after_seconds, since_text
from dbtools.sync.jsonl import JsonLinesSource
from dbtools.sync.source import Page, PagedSource, SourceError
from dbtools.upsert.writers import RowError

from .carrier_api import PASSWORD_ENV, USERNAME_ENV, CarrierApi, make_devices

T0 = dt.datetime(2026, 1, 1)
HOUR = dt.timedelta(hours=1)


# ----------------------------------------------------------------------------- JSON Lines pages
def write_pages(folder: Path, pages: dict[str, list]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in pages.items():
        text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_json_lines_pages_come_in_page_order_and_the_highest_numbered_file_is_the_last(tmp_path):
    # Assemble: three pages, written out of order, beside a file that is no page
    folder = write_pages(tmp_path / "drop", {
        "page-0003.jsonl": [{"ICCID": "5"}],
        "page-0001.jsonl": [{"ICCID": "1"}, {"ICCID": "2"}],
        "page-0002.jsonl": [{"ICCID": "3"}, "", {"ICCID": "4"}],
        "README.txt": ["not a page"],
    })
    source = JsonLinesSource(folder)

    # Act
    pages = list(source.pages(T0))

    # Assert
    assert isinstance(source, PagedSource)
    assert [(p.number, p.is_last) for p in pages] == [(1, False), (2, False), (3, True)]
    assert [[r["ICCID"] for r in p.rows] for p in pages] == [["1", "2"], ["3", "4"], ["5"]]


def test_first_page_skips_the_files_of_earlier_pages(tmp_path):
    # Assemble: page 1 is not even valid UTF-8, so reading it would fail
    folder = write_pages(tmp_path, {"page-2.jsonl": [{"n": 2}], "page-3.jsonl": [{"n": 3}]})
    (folder / "page-1.jsonl").write_bytes(b"\xff\xfe broken")

    # Act
    pages = list(JsonLinesSource(folder).pages(T0, first_page=2))

    # Assert
    assert [(p.number, [r["n"] for r in p.rows], p.is_last) for p in pages] == [(2, [2], False), (3, [3], True)]


def test_a_missing_page_file_is_an_error_naming_the_page_before_any_page_is_read(tmp_path):
    # Assemble
    folder = write_pages(tmp_path, {"page-0001.jsonl": [{}], "page-0002.jsonl": [{}], "page-0004.jsonl": [{}]})

    # Act
    with pytest.raises(SourceError) as caught:
        next(JsonLinesSource(folder).pages(T0))

    # Assert
    assert "page 3 is missing" in str(caught.value)
    assert "page-0004.jsonl" in str(caught.value)


def test_two_files_of_one_page_number_and_an_empty_folder_are_errors(tmp_path):
    # Assemble
    twice = write_pages(tmp_path / "twice", {"page-1.jsonl": [{}], "page-0001.jsonl": [{}]})
    empty = write_pages(tmp_path / "empty", {})

    # Act
    with pytest.raises(SourceError) as both:
        list(JsonLinesSource(twice).pages(T0))
    with pytest.raises(SourceError) as none:
        list(JsonLinesSource(empty).pages(T0))

    # Assert
    assert "page-0001.jsonl and page-1.jsonl are both page 1" in str(both.value)
    assert "no page files" in str(none.value)


def test_a_line_that_is_not_a_json_object_is_kept_as_a_rejectable_row(tmp_path):
    # Assemble: a blank line, a broken line and a JSON list among good rows
    folder = write_pages(tmp_path, {"page-0001.jsonl": [{"ICCID": "1"}, "", "{broken", "[1, 2]", {"ICCID": "2"}]})

    # Act
    (page,) = JsonLinesSource(folder).pages(T0)

    # Assert: every row keeps its place; the bad ones are RowErrors a writer files as rejects
    assert [type(r) for r in page.rows] == [dict, RowError, RowError, dict]
    assert page.rows[1].row_number == 2 and page.rows[2].row_number == 3
    assert page.rows[1].reason.startswith("page-0001.jsonl line 3: not valid JSON")
    assert page.rows[2].reason == "page-0001.jsonl line 4: not a JSON object"
    assert page.is_last


# ----------------------------------------------------------------------------- the HTTP source
@pytest.fixture
def api(monkeypatch):
    """Seven devices modified an hour apart from T0, three to a page; its credentials exported."""
    with CarrierApi(make_devices(7, start=T0, step=HOUR), page_size=3) as server:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        yield server


def http_source(api: CarrierApi, waits: list[float] | None = None, **options) -> HttpSource:
    """An HttpSource for ``api`` whose sleeps are recorded in ``waits`` instead of slept."""
    sleep = waits.append if waits is not None else (lambda seconds: None)
    return HttpSource(api.url, **{**api.source_options(), "sleep": sleep, **options})


def iccids(pages: list[Page]) -> list[list[str]]:
    return [[row["ICCID"][-2:] for row in page.rows] for page in pages]


def test_pages_ask_modified_since_and_page_number_exactly_as_sent(api):
    # Assemble: since with microseconds, which are rounded down
    source = http_source(api)

    # Act
    pages = list(source.pages(T0 + 2 * HOUR + dt.timedelta(microseconds=999)))

    # Assert: devices 3..7 (modified at or after 02:00), three to a page
    assert [(p.number, p.is_last) for p in pages] == [(1, False), (2, True)]
    assert iccids(pages) == [["03", "04", "05"], ["06", "07"]]
    assert [r.query for r in api.requests] == [{"modifiedSince": "2026-01-01T02:00:00Z", "pageNumber": "1"},
                                               {"modifiedSince": "2026-01-01T02:00:00Z", "pageNumber": "2"}]
    assert all(r.authorized for r in api.requests)


def test_an_aware_since_is_sent_in_utc_and_first_page_resumes_where_asked(api):
    # Assemble
    since = dt.datetime(2026, 1, 1, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=-1)))  # 02:00Z

    # Act
    pages = list(http_source(api).pages(since, first_page=2))

    # Assert
    assert since_text(since) == "2026-01-01T02:00:00Z"
    assert [p.number for p in pages] == [2]
    assert api.pages_asked() == [2]
    assert api.since_asked() == ["2026-01-01T02:00:00Z"]


def test_parameter_and_field_names_are_configurable(monkeypatch):
    # Assemble: a carrier with other names for everything
    with CarrierApi(make_devices(4, start=T0, step=HOUR), page_size=2, since_param="since", page_param="page",
                    rows_field="items", last_page_field="done", page_number_field="page") as other:
        for name, value in other.env().items():
            monkeypatch.setenv(name, value)
        source = http_source(other)

        # Act
        pages = list(source.pages(T0 + HOUR))

    # Assert
    assert iccids(pages) == [["02", "03"], ["04"]]
    assert [r.query for r in other.requests] == [{"since": "2026-01-01T01:00:00Z", "page": "1"},
                                                 {"since": "2026-01-01T01:00:00Z", "page": "2"}]


def test_a_500_is_retried_to_success(api):
    # Assemble: page 2 fails twice
    api.fail(page=2, status=500, times=2)
    waits: list[float] = []

    # Act
    pages = list(http_source(api, waits, initial_wait=1.0).pages(T0))

    # Assert: every device arrived once, page 2 was asked three times, with growing waits
    assert iccids(pages) == [["01", "02", "03"], ["04", "05", "06"], ["07"]]
    assert api.pages_asked() == [1, 2, 2, 2, 3]
    assert [r.status for r in api.requests] == [200, 500, 500, 200, 200]
    assert len(waits) == 2 and 0.8 <= waits[0] <= 1.2 and 1.6 <= waits[1] <= 2.4


def test_a_429_waits_as_long_as_its_retry_after_says(api):
    # Assemble
    api.fail(page=1, status=429, retry_after=7)
    waits: list[float] = []

    # Act
    pages = list(http_source(api, waits).pages(T0))

    # Assert
    assert waits == [7.0]
    assert api.pages_asked() == [1, 1, 2, 3]
    assert len(pages) == 3


def test_a_retry_after_is_read_as_seconds_or_an_http_date_and_capped_at_max_wait(api):
    # Assemble
    now = dt.datetime(2026, 3, 1, 8, 0, 0, tzinfo=dt.timezone.utc)
    api.fail(page=1, status=503, retry_after=3600)
    waits: list[float] = []

    # Act
    list(http_source(api, waits, max_wait=30).pages(T0))

    # Assert
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds("Sun, 01 Mar 2026 08:00:45 GMT", now=lambda: now) == 45.0
    assert retry_after_seconds("Sun, 01 Mar 2026 07:00:00 GMT", now=lambda: now) == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds("-1") is None
    assert waits == [30.0]


def test_a_dropped_connection_and_a_page_slower_than_the_timeout_are_retried(api):
    # Assemble: page 1's first answer never comes; page 2's first is slower than the client waits
    api.fail(page=1, drop=True)
    api.slow(page=2, seconds=1.0, times=1)
    waits: list[float] = []

    # Act
    pages = list(http_source(api, waits, timeout=0.3).pages(T0))

    # Assert
    assert iccids(pages) == [["01", "02", "03"], ["04", "05", "06"], ["07"]]
    assert len(waits) == 2
    assert api.pages_asked()[:2] == [1, 1] and api.pages_asked().count(2) == 2


def test_a_401_fails_at_once_with_a_clear_message(api, monkeypatch):
    # Assemble: a wrong API key in the environment
    monkeypatch.setenv(PASSWORD_ENV, "not-the-key")
    waits: list[float] = []

    # Act
    with pytest.raises(SourceError) as caught:
        list(http_source(api, waits).pages(T0))

    # Assert
    message = str(caught.value)
    assert message == (f"{api.url}: page 1: HTTP 401 Unauthorized: the service refused the credentials from the "
                       f"environment variables {USERNAME_ENV} and {PASSWORD_ENV}; check them (not retried)")
    assert len(api.requests) == 1 and waits == []
    assert "not-the-key" not in message


def test_a_403_fails_at_once_with_a_clear_message(api):
    # Assemble
    api.fail(page=2, status=403)

    # Act
    received = []
    with pytest.raises(SourceError) as caught:
        for page in http_source(api).pages(T0):
            received.append(page.number)

    # Assert
    assert received == [1]
    assert "page 2: HTTP 403 Forbidden: the service refused the credentials" in str(caught.value)
    assert USERNAME_ENV in str(caught.value) and PASSWORD_ENV in str(caught.value)
    assert api.pages_asked() == [1, 2]


def test_the_page_limit_stops_a_runaway_source(api):
    # Assemble: a source that never says its last page
    api.never_last = True
    source = http_source(api, page_limit=4)

    # Act
    received = []
    with pytest.raises(SourceError) as caught:
        for page in source.pages(T0):
            received.append(page.number)

    # Assert: pages up to the limit arrived, then a message naming the limit and how to raise it
    assert received == [1, 2, 3, 4]
    assert api.pages_asked() == [1, 2, 3, 4]
    assert "page limit reached: page 4 was not the last page and the limit is 4 pages" in str(caught.value)
    assert "raise page_limit (now 4)" in str(caught.value)


def test_the_error_budget_stops_a_source_that_keeps_failing(api):
    # Assemble: page 2 fails for ever, and page 1 once (the budget spans the pages)
    api.fail(page=1, status=502, times=1)
    api.fail(page=2, status=503, times=None)
    waits: list[float] = []

    # Act
    with pytest.raises(SourceError) as caught:
        list(http_source(api, waits, error_budget=3).pages(T0))

    # Assert: three failures retried, the fourth ends it
    assert api.pages_asked() == [1, 1, 2, 2, 2]
    assert len(waits) == 3
    assert str(caught.value) == (f"{api.url}: page 2: 4 requests failed, more than the error budget of 3 "
                                 "(error_budget); the last: HTTP 503 Service Unavailable")


def test_another_4xx_fails_at_once_with_its_status_and_a_body_excerpt(api):
    # Assemble
    api.fail(page=1, status=400, body='{"errorMessage": "modifiedSince is too far back"}')

    # Act
    with pytest.raises(SourceError) as caught:
        list(http_source(api).pages(T0))

    # Assert
    assert str(caught.value) == (f'{api.url}: page 1: HTTP 400 Bad Request: '
                                 '{"errorMessage": "modifiedSince is too far back"}')
    assert len(api.requests) == 1


@pytest.mark.parametrize(("body", "says"), [
    ("<html>maintenance</html>", "page 2: the response is not JSON: <html>maintenance</html>"),
    ('{"pageNumber": 2, "lastPage": true}', "page 2: the response has no 'devices' field (rows_field); "
                                            "its fields: lastPage, pageNumber"),
    ('{"devices": [], "pageNumber": 2}', "page 2: the response has no 'lastPage' field"),
    ('{"devices": [], "pageNumber": 5, "lastPage": true}', "page 2: the response says it is page 5"),
    ('[1, 2]', "page 2: the response is not a JSON object but a list"),
])
def test_a_malformed_page_is_an_error_naming_the_page(api, body, says):
    # Assemble
    api.fail(page=2, status=200, body=body)

    # Act
    with pytest.raises(SourceError) as caught:
        list(http_source(api).pages(T0))

    # Assert
    assert says in str(caught.value)
    assert api.pages_asked() == [1, 2]


def test_a_row_that_is_not_an_object_is_kept_as_a_rejectable_row(api):
    # Assemble
    api.fail(page=1, status=200, body='{"devices": [{"ICCID": "1"}, "junk", null], "lastPage": true}')

    # Act
    (page,) = http_source(api).pages(T0)

    # Assert
    assert page.rows[0] == {"ICCID": "1"}
    assert page.rows[1:] == [RowError(2, "page 1 row 2: a string, not a JSON object"),
                             RowError(3, "page 1 row 3: null, not a JSON object")]


def test_a_missing_credential_variable_is_an_error_naming_it(api, monkeypatch):
    # Assemble
    monkeypatch.delenv(PASSWORD_ENV)

    # Act
    with pytest.raises(SourceError) as caught:
        list(http_source(api).pages(T0))

    # Assert: nothing was asked without credentials
    assert str(caught.value) == f"{api.url}: the environment variable {PASSWORD_ENV} (the password) is not set"
    assert api.requests == []


def test_credentials_never_appear_in_error_messages(api, monkeypatch):
    # Assemble: a service that echoes the key back in its error, and a URL that carries credentials
    key = api.password
    api.fail(page=1, status=400, body=f"key {key} is not allowed to ask for page 1")

    # Act
    with pytest.raises(SourceError) as echoed:
        list(http_source(api).pages(T0))
    with pytest.raises(ConfigurationError) as in_url:
        HttpSource(api.url.replace("http://", f"http://{api.username}:{key}@"))

    # Assert
    assert "key *** is not allowed" in str(echoed.value) and key not in str(echoed.value)
    assert key not in str(in_url.value) and "carries credentials" in str(in_url.value)


def test_a_bearer_token_comes_from_its_environment_variable(monkeypatch):
    # Assemble
    with CarrierApi(make_devices(2, start=T0), token="t0ken-value") as tokened:
        for name, value in tokened.env().items():
            monkeypatch.setenv(name, value)

        # Act
        pages = list(http_source(tokened).pages(None))

    # Assert: no modifiedSince without since
    assert [len(p.rows) for p in pages] == [2]
    assert [r.query for r in tokened.requests] == [{"pageNumber": "1"}]
    assert tokened.requests[0].authorized


def test_describe_names_the_url_without_its_query(api):
    # Act
    source = HttpSource(api.url + "?accountId=42", **api.source_options())
    list(source.pages(T0))

    # Assert: the URL's query is sent as fixed parameters, but not described
    assert source.describe() == api.url
    assert api.requests[0].query == {"accountId": "42", "modifiedSince": "2026-01-01T00:00:00Z", "pageNumber": "1"}


def test_the_carrier_api_serves_a_large_device_list_quickly(monkeypatch):
    # Assemble: 20,000 devices in 1,000-row pages
    with CarrierApi(make_devices(20_000, start=T0), page_size=1000) as big:
        for name, value in big.env().items():
            monkeypatch.setenv(name, value)

        # Act
        started = time.perf_counter()
        pages = list(http_source(big).pages(T0))
        elapsed = time.perf_counter() - started

    # Assert: generous for a loaded two-core machine (about 0.5 s unloaded)
    assert [p.number for p in pages] == list(range(1, 21)) and pages[-1].is_last
    assert sum(len(p.rows) for p in pages) == 20_000
    assert elapsed < 10
