"""dbtools run / status / resume / demo from the command line (PostgreSQL; the CLI is engine-neutral)."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from dbtools.delta.sample import TABLES

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
    assert [b["status"] for b in json.loads(shown.stdout)["batches"] if b["table"] == CLIENT][-1] == "Failed"
    assert {t["table"]: t["status"] for t in json.loads(shown.stdout)["tables"]} == {CLIENT: "Failed", REFERRAL: "Succeeded"}
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["run_id"] == run_id
    assert json.loads(resumed.stdout)["status"] == "Succeeded"


def test_bad_parameters_are_all_reported_one_per_line_and_exit_non_zero(bed):
    proc = dbtools("run", "--url", bed.server.cli_url, "--mode", "single-table", "--batch-size", "0",
                   "--max-dop", "-2")

    assert proc.returncode == 1
    # The option first, then the procedure's parameter it sets.
    assert proc.stderr.splitlines() == [
        "dbtools: error: --table: @TableName is required when @Mode = 'SingleTable'.",
        "dbtools: error: --batch-size: @BatchSize must be 1 or more (got 0).",
        "dbtools: error: --max-dop: @MaxDOP must be 0 or more (got -2).",
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


ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _keys_and_times(document, path="$"):
    """Every key of a JSON document and every timestamp-like value, with where it is."""
    if isinstance(document, dict):
        for key, value in document.items():
            yield ("key", key, path)
            yield from _keys_and_times(value, f"{path}.{key}")
    elif isinstance(document, list):
        for n, value in enumerate(document):
            yield from _keys_and_times(value, f"{path}[{n}]")
    elif isinstance(document, str) and re.match(r"^\d{4}-\d\d-\d\d", document):
        yield ("time", document, path)


def test_run_status_runs_and_the_results_file_share_one_schema(bed, tmp_path):
    results = tmp_path / "results.json"
    ran = dbtools("run", "--url", bed.server.cli_url, "--mode", "all-tables", "--json", "--results-file", str(results))
    run = json.loads(ran.stdout)
    shown = json.loads(dbtools("status", "--url", bed.server.cli_url, run["run_id"], "--json").stdout)
    listed = json.loads(dbtools("runs", "--url", bed.server.cli_url, "--json").stdout)

    assert ran.returncode == 0, ran.stderr
    assert json.loads(results.read_text()) == run
    assert listed[0]["run_id"] == run["run_id"] and len(listed) == 1
    # One document: status adds the batches, runs leaves them out; the rest is the same run.
    assert {k: v for k, v in shown.items() if k not in ("batches",)} == {k: v for k, v in run.items() if k != "batches"}
    assert {k: v for k, v in listed[0].items()} == {k: v for k, v in run.items() if k != "batches"}
    for document in (run, shown, listed):
        found = list(_keys_and_times(document))
        assert not [k for kind, k, _p in found if kind == "key" and (k == "table_name" or k != k.lower())]
        assert all(ISO_Z.match(v) for kind, v, _p in found if kind == "time"), [v for kind, v, _ in found if kind == "time"]
    assert run["schema"] == "dbtools.run/1"
    assert {t["status"] for t in run["tables"]} == {"Succeeded"}
    assert all(isinstance(t["duration_s"], float) and t["duration_s"] >= 0 for t in run["tables"])
    assert run["duration_s"] >= max(t["duration_s"] for t in run["tables"])
    assert all(step["duration_s"] is not None and step["batches"] >= 1 for t in run["tables"] for step in t["steps"])
    assert run["rows"] == sum(t["rows"] for t in run["tables"])


def test_a_run_ends_with_a_line_per_table_and_a_summary(bed):
    proc = dbtools("run", "--url", bed.server.cli_url, "--mode", "all-tables")

    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stderr
    per_table = [line for line in lines if re.match(r"^\d of 2 ", line)]
    assert [line.split()[3:5] for line in per_table] == [["SUCCEEDED", CLIENT + ":"], ["SUCCEEDED", REFERRAL + ":"]]
    assert all(re.search(r": [\d,]+ row\(s\) in [\d.,]+ s$", line) for line in per_table), per_table
    done = next(line for line in lines if line.startswith("Done. "))
    assert re.fullmatch(r"Done\. tables: 2 succeeded, 0 failed; rows: [\d,]+; [\d.,]+ s", done), done


def test_status_of_an_interrupted_run_says_interrupted_and_which_tables_are_pending(bed):
    # Assemble: a run stopped after its first committed batches (its session is gone): the first
    # table is half done, the second never started.
    from .blocking import interrupted_after

    with interrupted_after(bed, 2):
        dbtools("run", "--url", bed.server.cli_url, "--mode", "all-tables", "--batch-size", "2")
    run_id = json.loads(dbtools("runs", "--url", bed.server.cli_url, "--last", "1", "--json").stdout)[0]["run_id"]
    bed.sql(f"UPDATE {bed.info.job_object('BlobDeltaRun')} SET {bed.info.quote('Status')} = 'Running', "
            f"{bed.info.quote('RunCompletedAt')} = NULL")  # as after kill -9 of the client: still Running
    # (the trigger failed the batch it stopped, and the next table's first: a killed client leaves neither)
    q = bed.info.quote
    bed.sql(f"DELETE FROM {bed.info.job_object('BlobDeltaRunStep')} WHERE {q('Status')} = 'Failed' "
            f"OR {q('TableName')} = {bed.mark('t')}", bed.params(t=REFERRAL))

    # Act
    shown = dbtools("status", "--url", bed.server.cli_url, run_id, "--json")
    interrupted = dbtools("runs", "--url", bed.server.cli_url, "--status", "Interrupted", "--json")
    running = dbtools("runs", "--url", bed.server.cli_url, "--status", "Running", "--json")
    human = dbtools("status", "--url", bed.server.cli_url, run_id)

    # Assert
    result = json.loads(shown.stdout)
    assert shown.returncode == 0, shown.stderr
    assert result["status"] == "Interrupted"
    assert [(t["table"], t["status"]) for t in result["tables"]] == [(CLIENT, "Interrupted"), (REFERRAL, "Pending")]
    assert result["tables"][1]["started_at"] is None and result["tables"][1]["duration_s"] is None
    assert [r["run_id"] for r in json.loads(interrupted.stdout)] == [run_id]
    assert json.loads(running.stdout) == []
    assert f"Continue it with: dbtools resume {run_id}" in human.stdout
    assert "Interrupted. tables: 0 succeeded, 0 failed, 1 interrupted, 1 pending" in human.stdout


def test_runs_lists_the_latest_first_and_filters_by_table_and_status(bed):
    bed.configure(CLIENT, ScriptSet="Flat")
    failed = json.loads(dbtools("run", "--url", bed.server.cli_url, "--mode", "all-tables", "--json").stdout)
    bed.configure(CLIENT, ScriptSet="Hierarchical")
    single = json.loads(dbtools("run", "--url", bed.server.cli_url, "--mode", "single-table", "--table", REFERRAL,
                                "--json").stdout)

    everything = json.loads(dbtools("runs", "--url", bed.server.cli_url, "--json").stdout)
    client_runs = json.loads(dbtools("runs", "--url", bed.server.cli_url, "--table", CLIENT, "--json").stdout)
    failures = json.loads(dbtools("runs", "--url", bed.server.cli_url, "--status", "Failed", "--json").stdout)
    one = json.loads(dbtools("runs", "--url", bed.server.cli_url, "--last", "1", "--json").stdout)
    bad = dbtools("runs", "--url", bed.server.cli_url, "--status", "Done")

    assert [r["run_id"] for r in everything] == [single["run_id"], failed["run_id"]]
    assert [r["run_id"] for r in client_runs] == [failed["run_id"]]
    assert [r["run_id"] for r in failures] == [failed["run_id"]]
    assert [r["run_id"] for r in one] == [single["run_id"]]
    assert bad.returncode == 2 and "'Done' is not one of 'Running', 'Interrupted', 'Succeeded', 'Failed'" in bad.stderr


def test_resume_reports_only_the_batches_it_runs(bed):
    from .blocking import interrupted_after

    with interrupted_after(bed, 2):
        first = dbtools("run", "--url", bed.server.cli_url, "--mode", "all-tables", "--batch-size", "2")
    run_id = first.stderr.split("RunId: ")[1].split()[0]
    before = [line for line in first.stdout.splitlines() if " batch " in line and "row(s)" in line]

    resumed = dbtools("resume", "--url", bed.server.cli_url, run_id)

    after = [line for line in resumed.stdout.splitlines() if " batch " in line and "row(s)" in line]
    assert resumed.returncode == 0, resumed.stderr
    assert before and after
    assert not set(before) & set(after), "old progress is not replayed"


def test_the_demo_names_the_environment_that_shows_its_run_again(tmp_path):
    home = {"DBTOOLS_HOME": str(tmp_path)}
    demo = dbtools("demo", env=home)
    run_id = demo.stdout.split("RunId: ")[1].split()[0]

    shown = dbtools("status", run_id, "--env", "demo", "--json", env=home)
    listed = dbtools("runs", "--env", "demo", "--json", env=home)

    assert demo.returncode == 0, demo.stderr
    assert (f"Look at it again (the demo database stays until the next demo): dbtools status {run_id} --env demo; "
            f"dbtools runs --env demo; dbtools report {run_id} --env demo --out run.html") in demo.stdout
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == "Succeeded"
    assert [r["run_id"] for r in json.loads(listed.stdout)] == [run_id]


def test_report_writes_one_self_contained_page_with_a_bar_per_batch(bed, tmp_path):
    from html.parser import HTMLParser

    # Assemble: a run with a failed table too, so the page has an error to show.
    bed.configure(CLIENT, ScriptSet="Flat")
    run = json.loads(dbtools("run", "--url", bed.server.cli_url, "--mode", "all-tables", "--json", "--batch-size", "3")
                     .stdout)
    page = tmp_path / "run.html"

    # Act
    proc = dbtools("report", run["run_id"], "--url", bed.server.cli_url, "--out", str(page))

    # Assert
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"Wrote {page}\n"
    text = page.read_text(encoding="utf-8")

    class Page(HTMLParser):
        def __init__(self):
            super().__init__()
            self.external, self.charts, self.rows, self.errors, self.document = [], [], [], [], None
            self._in = None

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            for key in ("src", "href"):
                if (attrs.get(key) or "").startswith(("http:", "https:", "//")):
                    self.external.append(attrs[key])
            if tag == "div" and attrs.get("id") in ("timeline", "rate", "windows"):
                self.charts.append(attrs["id"])
            if tag == "tr" and "data-table" in attrs:
                self.rows.append(attrs["data-table"])
            if tag == "script" and attrs.get("id") == "dbtools-run":
                self._in = "document"
            if tag == "li":
                self._in = "error"

        def handle_data(self, data):
            if self._in == "document":
                self.document = (self.document or "") + data
            elif self._in == "error":
                self.errors.append(data)

        def handle_endtag(self, tag):
            if tag in ("script", "li"):
                self._in = None

    parsed = Page()
    parsed.feed(text)
    status = json.loads(dbtools("status", run["run_id"], "--url", bed.server.cli_url, "--json").stdout)
    assert text.startswith("<!DOCTYPE html>")
    assert parsed.external == [], "no network needed"
    assert "Plotly.newPlot" in text and text.count("Plotly.newPlot") == 3
    assert parsed.charts == ["timeline", "rate", "windows"]
    assert parsed.rows == [CLIENT, REFERRAL]
    assert json.loads(parsed.document.replace("<\\/", "</"))["batches"] == status["batches"]
    from dbtools.delta.report import timeline_bars
    assert len(timeline_bars(status)) == len(status["batches"]) > 2
    assert any(e.startswith(f"{CLIENT}, step 1 Upsert, batch 1: ") for e in parsed.errors), parsed.errors


def test_a_plan_in_which_every_table_failed_exits_non_zero(bed):
    for table in (CLIENT, REFERRAL):
        bed.configure(table, SourceTable="NoSuchTable")

    proc = dbtools("run", "--url", bed.server.cli_url, "--mode", "all-tables", "--plan", "--json")

    result = json.loads(proc.stdout)
    assert proc.returncode == 1
    assert [(t["table"], t["status"]) for t in result["tables"]] == [(CLIENT, "Failed"), (REFERRAL, "Failed")]
    assert all("NoSuchTable" in t["error"] for t in result["tables"])


def test_an_unknown_business_unit_is_refused_naming_where_it_was_looked_for(bed):
    unknown = uuid.uuid4()
    known = bed.data.business_units[0]

    refused = dbtools("run", "--url", bed.server.cli_url, "--mode", "all-tables", "--plan", "--bu", str(unknown))
    planned = dbtools("run", "--url", bed.server.cli_url, "--mode", "all-tables", "--plan", "--bu", str(known), "--json")

    assert refused.returncode == 1
    assert refused.stderr.strip() == (f"dbtools: error: --bu {unknown} is not a business unit of any table in scope "
                                      f'(looked in "Gwent_LA_FileTable"."LA_BU")')
    assert planned.returncode == 0, planned.stderr
    assert json.loads(planned.stdout)["rows"] > 0


def test_a_full_sync_lists_the_rows_it_deletes_and_needs_yes(bed):
    first = dbtools("run", "--url", bed.server.cli_url, "--mode", "all-tables", "--json")
    loaded = {t["table"]: t["rows"] for t in json.loads(first.stdout)["tables"]}
    before = bed.job_state()

    refused = dbtools("run", "--url", bed.server.cli_url, "--mode", "all-tables", "--sync", "full")
    unchanged = bed.job_state()
    agreed = dbtools("run", "--url", bed.server.cli_url, "--mode", "all-tables", "--sync", "full", "--yes", "--json")

    assert refused.returncode == 1
    assert f"A full sync first deletes {sum(loaded.values()):,} target row(s) in scope:" in refused.stdout
    for table, rows in loaded.items():
        assert f"  {table}: {rows:,} row(s)" in refused.stdout
    assert refused.stderr.strip() == ("dbtools: error: full sync destroys what is listed above: pass --yes to go "
                                      "ahead; nothing was changed")
    assert unchanged == before
    assert agreed.returncode == 0, agreed.stderr
    assert json.loads(agreed.stdout)["run_type"] == "Full"


def test_downgrade_lists_the_revisions_and_tables_with_rows_and_needs_yes(bed):
    from .conftest import HEAD

    bed.run()
    refused = dbtools("downgrade", "--url", bed.server.cli_url, "--to", "base")
    still = bed.sql(f"SELECT COUNT(*) FROM {bed.info.job_object('BlobDeltaRun')}")[0][0]
    agreed = dbtools("downgrade", "--url", bed.server.cli_url, "--to", "base", "--yes")

    assert refused.returncode == 1
    assert refused.stdout.startswith(f"Downgrade from {HEAD} to base undoes:\n  {HEAD}  ")
    assert '  "BlobDeltaJobs"."BlobDeltaRun": 1 row(s)' in refused.stdout
    assert refused.stderr.strip() == ("dbtools: error: downgrade to base destroys what is listed above: pass --yes to "
                                      "go ahead; nothing was changed")
    assert still == 1
    assert agreed.returncode == 0, agreed.stderr
    assert "downgraded 0001 -> base" in agreed.stdout


def test_status_in_an_80_column_terminal_wraps_table_names_and_cuts_none(bed):
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    run_id = json.loads(dbtools("run", "--url", bed.server.cli_url, "--mode", "all-tables", "--json").stdout)["run_id"]
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 80, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "dbtools", "status", run_id, "--url", bed.server.cli_url],
                            stdin=follower, stdout=follower, stderr=follower, close_fds=True,
                            env={**os.environ, "COLUMNS": "80", "TERM": "xterm"})
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=60)
    os.close(leader)
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode("utf-8", "replace"))  # styles

    assert proc.returncode == 0, screen
    assert "…" not in screen, "nothing is cut"
    lines = screen.splitlines()
    assert [line for line in lines if len(line.rstrip()) > 80] == []
    # A table name that does not fit its column continues on the next line of the same cell.
    assert all(any(name[:12] in line for line in lines) and any(name[-10:] in line for line in lines)
               for name in (CLIENT, REFERRAL))


def test_sample_fills_a_database_of_your_own_so_that_the_next_run_works(pg_admin_url):
    from .conftest import fresh_pg_database

    with fresh_pg_database(pg_admin_url) as url:
        secret = {"DBTOOLS_T_PW": str(url.password)}
        template = url.set(password="__S__").render_as_string(hide_password=False).replace("__S__", "${DBTOOLS_T_PW}")
        made = dbtools("sample", "--url", template, "--rows", "80", "--bus", "2", "--json", env=secret)
        ran = dbtools("run", "--url", template, "--mode", "all-tables", "--json", env=secret)
        again = dbtools("sample", "--url", template, env=secret)

    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert set(created["blobs"]) == {"ReferralAttachment", "ClientAttachment"}
    assert all(80 <= n < 2 * 80 for n in created["blobs"].values()), "rounded up to whole trees"
    assert len(created["business_units"]) == 2
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["status"] == "Succeeded" and json.loads(ran.stdout)["rows"] > 0
    assert again.returncode == 1
    assert again.stderr.strip().startswith(
        "dbtools: error: the sample's schema(s) AdvancedRBS_MetaData, Gwent_LA_FileTable, Gwent_LA_FileTable_Delta "
        "exist already on ")
