"""dbtools run / status / resume / demo from the command line (PostgreSQL; the CLI is engine-neutral)."""

from __future__ import annotations

import json
import uuid

import pytest

from dbtools.sample import TABLES

from .delta_bed import CLIENT, REFERRAL, make_bed
from .test_cli import dbtools

pytestmark = pytest.mark.postgresql_only


@pytest.fixture
def bed(server):
    bed = make_bed(server, roots=4)
    yield bed
    bed.close()


def test_run_plan_prints_windows_and_counts_as_json_and_changes_nothing(bed):
    before = bed.job_state()

    proc = dbtools("run", "--url", bed.server.cli_url, "--mode", "all-tables", "--plan", "--json")

    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["run_id"] is None and result["status"] == "Planned"
    assert [(t["table"], t["rows"], t["status"]) for t in result["tables"]] == [
        (CLIENT, len(bed.data.blobs["ClientAttachment"]), "Planned"),
        (REFERRAL, len(bed.data.blobs["ReferralAttachment"]), "Planned")]
    assert bed.job_state() == before


def test_run_shows_progress_then_the_run_id_and_exits_zero_on_success(bed):
    proc = dbtools("run", "--url", bed.server.cli_url, "--mode", "single-table", "--table", REFERRAL,
                   "--batch-size", "3")

    assert proc.returncode == 0, proc.stderr
    run_id = uuid.UUID(proc.stdout.split("RunId: ")[1].split()[0])
    assert f"{REFERRAL}: step 1 Roots batch 1: 3 row(s), 3 so far" in proc.stdout
    assert "Status: Succeeded" in proc.stdout
    assert bed.status(run_id).status == "Succeeded"


def test_run_json_names_every_table_with_its_window_and_rows(bed):
    proc = dbtools("run", "--url", bed.server.cli_url, "--mode", "all-tables", "--json")

    result = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stderr
    assert result["status"] == "Succeeded"
    assert [(t["table"], t["rows"]) for t in result["tables"]] == [
        (CLIENT, len(bed.data.blobs["ClientAttachment"])), (REFERRAL, len(bed.data.blobs["ReferralAttachment"]))]
    assert all(t["window_start"] < t["window_end"] for t in result["tables"])


def test_a_failed_run_exits_non_zero_and_resume_finishes_it(bed):
    bed.configure(CLIENT, ScriptSet="Flat")
    failed = dbtools("run", "--url", bed.server.cli_url, "--mode", "all-tables", "--json")
    run_id = json.loads(failed.stdout)["run_id"]
    bed.configure(CLIENT, ScriptSet="Hierarchical")

    shown = dbtools("status", "--url", bed.server.cli_url, run_id, "--json")
    resumed = dbtools("resume", "--url", bed.server.cli_url, run_id, "--json")

    assert failed.returncode == 1
    assert json.loads(shown.stdout)["status"] == "Failed"
    assert [s["status"] for s in json.loads(shown.stdout)["steps"] if s["table_name"] == CLIENT][-1] == "Failed"
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["run_id"] == run_id
    assert json.loads(resumed.stdout)["status"] == "Succeeded"


def test_bad_parameters_are_all_reported_one_per_line_and_exit_non_zero(bed):
    proc = dbtools("run", "--url", bed.server.cli_url, "--mode", "single-table", "--batch-size", "0",
                   "--max-dop", "-2")

    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "dbtools: error: @TableName is required when @Mode = 'SingleTable'.",
        "dbtools: error: @BatchSize must be 1 or more (got 0).",
        "dbtools: error: @MaxDOP must be 0 or more (got -2).",
    ]


def test_status_of_an_unknown_run_is_a_one_line_error(bed):
    unknown = uuid.uuid4()
    proc = dbtools("status", "--url", bed.server.cli_url, str(unknown))

    assert proc.returncode == 1
    assert proc.stderr.strip() == f"dbtools: error: RUN_ID {unknown} is not a run in BlobDeltaRun"


def test_demo_runs_the_main_job_from_nothing(tmp_path):
    proc = dbtools("demo", "--json", env={"DBTOOLS_HOME": str(tmp_path)})

    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "Succeeded"
    assert uuid.UUID(result["run_id"]).version == 7
    assert [t["table"] for t in result["tables"]] == [CLIENT, REFERRAL]
    assert [t["rows"] for t in result["tables"]] == [result["source_rows"][n.rsplit(".", 1)[1]] for n in (CLIENT, REFERRAL)]
    assert set(result["source_rows"]) == set(TABLES)


def test_a_plan_lists_per_step_what_the_run_that_follows_does_and_the_run_reports_the_same(bed):
    plan = dbtools("run", "--url", bed.server.cli_url, "--mode", "all-tables", "--plan", "--json")

    run = dbtools("run", "--url", bed.server.cli_url, "--mode", "all-tables", "--json", "--batch-size", "4")

    planned, ran = json.loads(plan.stdout), json.loads(run.stdout)
    assert (plan.returncode, run.returncode) == (0, 0), (plan.stderr, run.stderr)
    for p, r in zip(planned["tables"], ran["tables"]):
        assert [(s["step"], s["name"], s["inserted"], s["updated"], s["deleted"]) for s in p["steps"]] == \
               [(s["step"], s["name"], s["inserted"], s["updated"], s["deleted"]) for s in r["steps"]]
        assert sum(s["inserted"] for s in p["steps"]) == p["rows"] == r["rows"]
    assert f"RunId: {ran['run_id']} (if it stops, continue it with: dbtools resume {ran['run_id']})" in run.stderr


def test_a_plan_says_which_table_a_held_lease_would_make_a_run_skip(bed):
    holder = uuid.uuid4()
    q = bed.info.quote
    bed.sql(f"UPDATE {bed.info.job_object('BlobDeltaHighWatermark')} SET {q('IsRunning')} = true, "
            f"{q('LeaseRunId')} = %(h)s, {q('RunLeaseExpiresAt')} = (now() AT TIME ZONE 'UTC') + interval '1 hour' "
            f"WHERE {q('TableName')} = %(t)s", {"h": holder, "t": REFERRAL})

    proc = dbtools("run", "--url", bed.server.cli_url, "--mode", "all-tables", "--plan", "--json")

    tables = {t["table"]: t for t in json.loads(proc.stdout)["tables"]}
    assert proc.returncode == 0, proc.stderr
    assert tables[REFERRAL]["status"] == "Skipped"
    assert tables[REFERRAL]["error"].startswith(f"Table '{REFERRAL}' is being processed by run {holder}")
    assert tables[REFERRAL]["steps"] == [] and tables[REFERRAL]["rows"] is None
    assert tables[CLIENT]["status"] == "Planned" and tables[CLIENT]["rows"] == len(bed.data.blobs["ClientAttachment"])
