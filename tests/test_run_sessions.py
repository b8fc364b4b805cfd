"""One server session per run: a killed client's run is never worked twice at once (issue 17)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from dbtools.delta import runner

from .blocking import blocked_sessions, files_gated, in_thread, session_id, wait_until
from .delta_bed import REFERRAL, make_bed, window_of


@pytest.fixture
def bed(server):
    bed = make_bed(server)
    yield bed
    bed.close()


def start_client(bed, *args, env=None) -> tuple[subprocess.Popen, uuid.UUID]:
    """``dbtools run`` in its own process; returns it and the RunId it printed as it started."""
    process = subprocess.Popen(
        [sys.executable, "-m", "dbtools", "run", "--url", bed.server.cli_url, *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    line = process.stderr.readline()
    assert line.startswith("RunId: "), line
    return process, uuid.UUID(line.split()[1])


def engine_sessions(bed, run_id) -> int:
    """How many sessions hold the run's session lock."""
    if bed.info.name == "mssql":
        return bed.sql("SELECT COUNT(*) FROM sys.dm_tran_locks WHERE resource_type = N'APPLICATION' "
                       "AND request_owner_type = N'SESSION' AND request_status = N'GRANT'")[0][0]
    return bed.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")[0][0]


def test_a_resume_right_after_kill_9_of_the_client_says_the_run_is_still_executing_and_with_wait_finishes_it(bed):
    # Assemble: a client whose run is held at its first file, then killed with SIGKILL. The server
    # session goes on (SQL Server does not notice a dead client; PostgreSQL checks every 60 s here).
    name = REFERRAL.rsplit(".", 1)[1]
    with files_gated(bed, name) as gate:
        client, run_id = start_client(bed, "--mode", "single-table", "--table", REFERRAL, "--batch-size", "2",
                                      env={"DBTOOLS_CLIENT_CHECK_INTERVAL": "60s"})
        wait_until(lambda: blocked_sessions(bed, session_id(bed, gate)))
        client.send_signal(signal.SIGKILL)
        client.wait()

        # Act: resume at once, then again waiting for the session that still works the run.
        with pytest.raises(runner.RunStillExecuting) as refused:
            bed.run(resume=run_id)
        still_there = blocked_sessions(bed, session_id(bed, gate))
        waiting, results = in_thread(lambda: bed.run(resume=run_id, wait=True))
        time.sleep(1)
        waited = waiting.is_alive()
    waiting.join(timeout=120)

    # Assert: a clear refusal naming the run while its session was still at work; the waiting
    # resume finished the run; the target equals a clean run's, and there was one run.
    status = bed.status(run_id)
    start, end = window_of(status, REFERRAL)
    assert f"Run {run_id} is still executing in another session" in str(refused.value)
    assert still_there and waited
    assert results["value"].status == status.status == "Succeeded"
    assert bed.target_ids(REFERRAL) == bed.expected(REFERRAL, start, end)
    assert bed.orphans(REFERRAL) == []
    assert bed.sql(f"SELECT COUNT(*) FROM {bed.info.job_object('BlobDeltaRun')}") == [(1,)]
    assert engine_sessions(bed, run_id) == 0, "no session keeps the run's lock"


@pytest.mark.postgresql_only
def test_on_postgresql_the_work_of_a_killed_client_stops_within_the_check_interval(bed):
    # Assemble: a client held at its first file, with the runner's default check interval.
    name = REFERRAL.rsplit(".", 1)[1]
    with files_gated(bed, name) as gate:
        client, run_id = start_client(bed, "--mode", "single-table", "--table", REFERRAL, "--batch-size", "2")
        wait_until(lambda: blocked_sessions(bed, session_id(bed, gate)))
        engine_pid = blocked_sessions(bed, session_id(bed, gate))[0]

        # Act
        client.send_signal(signal.SIGKILL)
        client.wait()
        killed_at = time.monotonic()
        wait_until(lambda: not bed.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %(p)s", {"p": engine_pid}),
                   timeout=30)
        stopped_after = time.monotonic() - killed_at

    # Assert: the session ended (its batch rolled back, its lock released) within the interval, and
    # a plain resume finishes the run.
    resumed = bed.run(resume=run_id)
    start, end = window_of(bed.status(run_id), REFERRAL)
    assert stopped_after < 2 * 2 + 1, stopped_after
    assert resumed.status == "Succeeded"
    assert bed.target_ids(REFERRAL) == bed.expected(REFERRAL, start, end)


def test_ctrl_c_cancels_the_batch_in_flight_and_names_the_run_to_resume(bed):
    # Assemble: the CLI held at its first file.
    name = REFERRAL.rsplit(".", 1)[1]
    with files_gated(bed, name) as gate:
        client, run_id = start_client(bed, "--mode", "single-table", "--table", REFERRAL, "--batch-size", "2")
        wait_until(lambda: blocked_sessions(bed, session_id(bed, gate)))

        # Act: Ctrl-C.
        client.send_signal(signal.SIGINT)
        rest = client.stderr.read()
        code = client.wait(timeout=60)
        # The cancelled session no longer waits at the gate.
        wait_until(lambda: not blocked_sessions(bed, session_id(bed, gate)), timeout=30)

    # Assert: exit 130 with the RunId and the resume command; the run resumes to a clean end.
    resumed = bed.run(resume=run_id)
    start, end = window_of(bed.status(run_id), REFERRAL)
    assert code == 130
    assert f"dbtools resume {run_id}" in rest
    assert resumed.status == "Succeeded"
    assert bed.target_ids(REFERRAL) == bed.expected(REFERRAL, start, end)
