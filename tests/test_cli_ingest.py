"""dbtools ingest from the command line (PostgreSQL; the CLI is engine-neutral)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .upsert_bed import ACTIVITY, T0, expected_row, make_bed

pytestmark = pytest.mark.postgresql_only

IDS = ["019a0000-0000-7000-8000-00000000000%d" % i for i in range(1, 5)]


def ingest(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dbtools", "ingest", *args], input=stdin,
                          capture_output=True, text=True, env=dict(os.environ), timeout=120)


def lines() -> str:
    good = lambda i, minute, kind="login": json.dumps({  # noqa: E731
        "event_id": IDS[i], "customer_id": i + 1, "activity_type": kind,
        "time_stamp_utc": f"2026-03-01T12:{minute:02d}:00Z", "details_json": {"n": i}})
    return "\n".join([
        good(0, 1),
        "{not json",
        "",
        good(1, 1, kind="teleport"),
        "[1, 2]",
        good(2, 1),
        good(0, 5),  # a newer version of line 1 in the same batch
    ]) + "\n"


@pytest.fixture
def bed(server):
    bed = make_bed(server)
    yield bed
    bed.engine.dispose()


@pytest.mark.parametrize("path", ["single", "tvp", "bulk"])
def test_ingest_prints_counts_that_add_up_and_every_rejected_line_with_its_reason(bed, path, tmp_path):
    source = tmp_path / "events.jsonl"
    source.write_text(lines())

    proc = ingest("--url", bed.server.cli_url, "--entity", "CustomerActivityEvent", "--path", path, str(source))

    assert proc.returncode == 0, proc.stderr
    assert "line 2: not valid JSON: Expecting property name enclosed in double quotes at column 2" in proc.stdout
    assert "line 4: activity_type is not in CustomerActivityTypes" in proc.stdout
    assert "line 5: not a JSON object" in proc.stdout
    row = lambda i, minute: expected_row({"event_id": IDS[i], "customer_id": i + 1, "activity_type": "login",  # noqa: E731
                                          "time_stamp_utc": T0.replace(minute=minute), "details_json": {"n": i}})
    assert bed.table(ACTIVITY) == [row(0, 5), row(2, 1)]


def test_ingest_reads_stdin_and_prints_one_json_object(bed):
    proc = ingest("--url", bed.server.cli_url, "--entity", "customeractivityevent", "--path", "bulk",
                  "--batch-size", "2", "--json", "-", stdin=lines())

    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    # Batches of 2 rows: lines 1+2, 4+5, 6+7; line 7 updates line 1's event in a later batch.
    assert {k: result[k] for k in ("received", "inserted", "updated", "skipped", "conflicted", "rejected")} == {
        "received": 6, "inserted": 2, "updated": 1, "skipped": 0, "conflicted": 0, "rejected": 3}
    assert result["rejects"] == [
        {"line": 2, "reason": "not valid JSON: Expecting property name enclosed in double quotes at column 2"},
        {"line": 4, "reason": "activity_type is not in CustomerActivityTypes"},
        {"line": 5, "reason": "not a JSON object"}]


@pytest.mark.parametrize("args, message", [
    (["--entity", "Orders", "--path", "bulk"], "--entity 'Orders' is not a known entity; allowed values: ClickEvent, CustomerActivityEvent"),
    (["--entity", "ClickEvent", "--path", "fast"], "Invalid value for '--path'"),
    (["--entity", "ClickEvent", "--path", "tvp", "--batch-size", "0"], "Invalid value for '--batch-size'"),
])
def test_ingest_refuses_bad_options_naming_the_allowed_values_and_changes_nothing(bed, args, message):
    proc = ingest("--url", bed.server.cli_url, *args, "-", stdin=lines())

    assert proc.returncode != 0
    assert message in proc.stderr
    assert bed.table(ACTIVITY) == [] and bed.rejects(ACTIVITY) == []


@pytest.mark.parametrize("limit, code, message", [
    (None, 0, None),
    ("3", 0, None),
    ("2", 1, "dbtools: error: 3 of 6 rows were rejected: more than --max-rejects 2"),
    ("50%", 0, None),
    ("40%", 1, "dbtools: error: 3 of 6 rows were rejected (50.0%): more than --max-rejects 40%"),
    ("0", 1, "dbtools: error: 3 of 6 rows were rejected: more than --max-rejects 0"),
], ids=["default", "3-rows", "2-rows", "50pc", "40pc", "none"])
def test_ingest_exits_non_zero_when_rejects_pass_max_rejects_and_still_writes_the_good_rows(bed, limit, code, message):
    args = [] if limit is None else ["--max-rejects", limit]

    proc = ingest("--url", bed.server.cli_url, "--entity", "CustomerActivityEvent", "--path", "tvp", *args, "-",
                  stdin=lines())

    assert proc.returncode == code, proc.stderr
    assert (proc.stderr.strip() or None) == message
    assert len(bed.table(ACTIVITY)) == 2


def test_ingest_of_lines_that_are_all_rejected_exits_non_zero_by_default(bed):
    proc = ingest("--url", bed.server.cli_url, "--entity", "CustomerActivityEvent", "--path", "bulk", "--json", "-",
                  stdin="{not json\n[1]\n")

    assert proc.returncode == 1
    assert json.loads(proc.stdout)["rejected"] == 2
    assert proc.stderr.strip() == "dbtools: error: every row was rejected (2 of 2)"


@pytest.mark.parametrize("limit", ["-1", "x", "150%", "5.5"])
def test_a_bad_max_rejects_is_refused_before_anything_is_read(bed, limit):
    proc = ingest("--url", bed.server.cli_url, "--entity", "CustomerActivityEvent", "--path", "bulk",
                  "--max-rejects", limit, "-", stdin=lines())

    assert proc.returncode == 1
    assert proc.stderr.strip() == (f"dbtools: error: --max-rejects {limit!r}: expected a number of rows (0 or more) "
                                   "or a percentage such as 5%")
    assert bed.table(ACTIVITY) == [] and bed.rejects(ACTIVITY) == []
