"""SQL Server offline scripts run by the real sqlcmd (hosted CI; skipped without SQL Server)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from dbtools import commands

from .catalog import snapshot
from .test_migrations import deployment_log

pytestmark = pytest.mark.mssql_only


def sqlcmd_binary() -> str:
    for candidate in (os.environ.get("DBTOOLS_SQLCMD"), "/opt/mssql-tools18/bin/sqlcmd", shutil.which("sqlcmd")):
        if candidate and os.path.exists(candidate):
            return candidate
    pytest.skip("sqlcmd not found (set DBTOOLS_SQLCMD); the hosted CI workflow installs mssql-tools18")


def run_sqlcmd(server, script: str, tmp_path, *, stop_on_error: bool) -> subprocess.CompletedProcess:
    path = tmp_path / "script.sql"
    path.write_text(script, encoding="utf-8")
    url = server.url
    args = [sqlcmd_binary(), "-S", f"{url.host},{url.port or 1433}", "-U", url.username, "-P", url.password or "",
            "-C", "-f", "65001", "-d", "master", "-i", str(path)]
    if stop_on_error:
        args.insert(1, "-b")
    # No -I: the script itself must switch QUOTED_IDENTIFIER on.
    return subprocess.run(args, capture_output=True, text=True, timeout=300)


def job_tables(server) -> set[str]:
    engine = sa.create_engine(server.url, poolclass=NullPool)
    with engine.connect() as conn:
        exists = conn.exec_driver_sql("SELECT DB_ID(N'BlobDeltaJobs')").scalar() is not None
    engine.dispose()
    if not exists:
        return set()
    engine = server.job_engine()
    with engine.connect() as conn:
        names = set(sa.inspect(conn).get_table_names(schema="dbo"))
    engine.dispose()
    return names


def test_the_offline_script_applied_by_sqlcmd_equals_an_online_migrate(server, tmp_path):
    script = commands.migrate(url=server.url_string, sql=True).script

    proc = run_sqlcmd(server, script, tmp_path, stop_on_error=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    engine = server.job_engine()
    with engine.connect() as conn:
        offline = snapshot(conn, server.engine)
    engine.dispose()
    offline_log = deployment_log(server)
    commands.downgrade(url=server.url_string, revision="base")
    commands.migrate(url=server.url_string)
    engine = server.job_engine()
    with engine.connect() as conn:
        online = snapshot(conn, server.engine)
    engine.dispose()

    assert offline == online
    assert offline_log == deployment_log(server)[-len(offline_log):]


@pytest.mark.parametrize("breakage", [
    # A compile error: XACT_ABORT does not roll back, the step marker is what catches it.
    ("CREATE TABLE dbo.[BlobDeltaRun] (", "CREATE TABLE dbo.[BlobDeltaRun] (oops oops,"),
    # A runtime error: XACT_ABORT rolls back and aborts the batch.
    ("CREATE TABLE dbo.[BlobDeltaRun] (", "THROW 50099, N'injected failure', 1;\nCREATE TABLE dbo.[BlobDeltaRun] ("),
], ids=["compile-error", "runtime-error"])
def test_a_failing_offline_script_run_without_b_leaves_no_job_table_and_says_so(server, tmp_path, breakage):
    script = commands.migrate(url=server.url_string, sql=True).script
    broken = script.replace(*breakage, 1)
    assert broken != script

    proc = run_sqlcmd(server, broken, tmp_path, stop_on_error=False)

    assert "the migration script failed and stopped at its first error" in proc.stdout + proc.stderr
    assert job_tables(server) == set()


@pytest.mark.parametrize("stop_on_error", [True, False], ids=["sqlcmd -b", "without -b (as SSMS)"])
def test_an_offline_script_run_twice_stops_at_its_first_check_the_second_time_and_changes_nothing(
        server, tmp_path, stop_on_error):
    script = commands.migrate(url=server.url_string, sql=True).script
    assert run_sqlcmd(server, script, tmp_path, stop_on_error=True).returncode == 0
    engine = server.job_engine()
    with engine.connect() as conn:
        before = snapshot(conn, server.engine)
    engine.dispose()
    log_before = deployment_log(server)

    proc = run_sqlcmd(server, script, tmp_path, stop_on_error=stop_on_error)

    output = proc.stdout + proc.stderr
    assert ("dbtools: this script migrates from revision base (no revision), but the database is at "
            f"{commands.ScriptDirectory.from_config(commands.alembic_config()).get_current_head()}; nothing was changed."
            ) in output
    # The wrong-revision stop is raised outside the read's TRY, so no CATCH rewords it.
    assert "could not be read" not in output
    if stop_on_error:
        assert proc.returncode != 0
    engine = server.job_engine()
    with engine.connect() as conn:
        assert snapshot(conn, server.engine) == before
    engine.dispose()
    assert deployment_log(server) == log_before
