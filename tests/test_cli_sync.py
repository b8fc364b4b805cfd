"""dbtools sync and dbtools sync-status from the command line (PostgreSQL; the CLI is engine-neutral).

The procedures behind them have their own module on both engines (tests/test_sync_sessions.py);
here the command line: its output, its exit codes, and a client killed with SIGKILL mid-sync.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from dbtools.upsert.specs import spec_named

from .carrier_api import CarrierApi, make_devices
from .upsert_bed import by_key, make_bed

pytestmark = pytest.mark.postgresql_only

JASPER = spec_named("JasperDevice")


@pytest.fixture
def bed(server):
    bed = make_bed(server)
    yield bed
    bed.engine.dispose()


def dbtools(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dbtools", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def recent_devices(count: int) -> list[dict]:
    """Devices modified within a full sync's window of the real clock (the CLI has no clock option)."""
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    return make_devices(count, start=now - dt.timedelta(days=3), step=dt.timedelta(seconds=1))


def production(bed) -> list[tuple]:
    return sorted(bed.table(JASPER), key=by_key(JASPER))


def http_args(api: CarrierApi) -> list[str]:
    return ["--source", api.url, "--username-env", "CARRIER_API_USERNAME", "--password-env", "CARRIER_API_KEY"]


def test_sync_prints_the_session_each_page_and_counts_that_add_up_and_sync_status_reports_it(bed):
    with CarrierApi(recent_devices(25), page_size=10) as api:
        done = dbtools("sync", "--url", bed.server.cli_url, "--entity", "JasperDevice", "--scope", "7",
                       *http_args(api), "--json", env=api.env())
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["sync_type"], result["status"], result["pages_loaded"]) == ("Full", "Promoted", 3)
    assert (result["received"], result["inserted"], result["updated"], result["skipped"], result["rejected"]) == \
        (25, 25, 0, 0, 0)
    assert f"session {result['session_id']}" in done.stderr
    assert "page 3: 5 rows, 5 staged, 0 rejected (last page)" in done.stderr
    assert len(production(bed)) == 25

    status = dbtools("sync-status", "--url", bed.server.cli_url, result["session_id"], "--json")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert (shown["SessionId"], shown["Status"], shown["PagesReceived"], shown["LastPageNumber"]) == \
        (result["session_id"], "Promoted", 3, 3)
    assert [p["RowsReceived"] for p in shown["Pages"]] == [10, 10, 5]
    listed = dbtools("sync-status", "--url", bed.server.cli_url)
    assert listed.returncode == 0 and result["session_id"] in listed.stdout


def test_sync_from_json_lines_pages_lists_the_rejected_rows_with_page_and_row(bed, tmp_path):
    good = {"ICCID": "1", "Status": "A", "RatePlan": "Unlimited", "CommunicationPlan": "Data Only",
            "ModifiedDate": "2026-12-01T00:00:00Z"}
    (tmp_path / "page-0001.jsonl").write_text(json.dumps(good) + "\n" + json.dumps({**good, "ICCID": "2",
                                                                                   "RatePlan": "Gold"}) + "\n")
    (tmp_path / "page-0002.jsonl").write_text("{not json\n")
    done = dbtools("sync", "--url", bed.server.cli_url, "--entity", "JasperDevice", "--scope", "3",
                   "--source", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "page 1 row 2: RatePlan is not in JasperRatePlans" in done.stdout
    assert "page 2 row 1: page-0002.jsonl line 1: not valid JSON" in done.stdout


def test_sync_refuses_bad_options_with_the_allowed_values_and_changes_nothing(bed, tmp_path):
    not_sync = dbtools("sync", "--url", bed.server.cli_url, "--entity", "ClickEvent", "--scope", "1",
                       "--source", str(tmp_path))
    assert not_sync.returncode != 0
    assert "--entity ClickEvent is not loaded by sync sessions; allowed values: JasperDevice" in not_sync.stderr
    nowhere = dbtools("sync", "--url", bed.server.cli_url, "--entity", "JasperDevice", "--scope", "1",
                      "--source", str(tmp_path / "missing"))
    assert nowhere.returncode != 0 and "neither an http(s) URL nor a folder" in nowhere.stderr
    folder_with_http_option = dbtools("sync", "--url", bed.server.cli_url, "--entity", "JasperDevice",
                                      "--scope", "1", "--source", str(tmp_path), "--page-limit", "3")
    assert folder_with_http_option.returncode != 0 and "--page-limit apply only to an http(s) URL" in folder_with_http_option.stderr
    unknown = dbtools("sync-status", "--url", bed.server.cli_url, "01a24f04-0000-7000-8000-000000000000")
    assert unknown.returncode != 0 and "is not a session in SyncSession" in unknown.stderr
    with bed.engine.connect() as conn:
        assert conn.exec_driver_sql('SELECT count(*) FROM "BlobDeltaJobs"."SyncSession"').scalar_one() == 0


def test_a_sync_killed_with_sigkill_while_it_waits_for_a_page_resumes_there_to_the_full_table(bed):
    # Assemble: a sync held on a slow page 3, its client killed with SIGKILL there.
    with CarrierApi(recent_devices(50), page_size=10) as api:
        api.slow(3, 5.0, times=1)
        client = subprocess.Popen(
            [sys.executable, "-m", "dbtools", "sync", "--url", bed.server.cli_url, "--entity", "JasperDevice",
             "--scope", "9", *http_args(api)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, **api.env()})
        deadline = time.monotonic() + 60
        while 3 not in api.pages_asked() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 3 in api.pages_asked()
        client.send_signal(signal.SIGKILL)
        client.wait(30)
        api.clear_requests()

        # Act: sync again at once; the killed client's database session is gone with its socket,
        # so the scope is free and the session resumes where the client stopped.
        again = dbtools("sync", "--url", bed.server.cli_url, "--entity", "JasperDevice", "--scope", "9",
                        *http_args(api), "--json", env=api.env())

    # Assert
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    assert (result["resumed"], result["first_page"], result["status"]) == (True, 3, "Promoted")
    assert api.pages_asked()[0] == 3
    assert (result["received"], result["inserted"]) == (50, 50)
    assert len(production(bed)) == 50
