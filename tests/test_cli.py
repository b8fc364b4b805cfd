"""The command line: help for every option, one-line errors, exit codes."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import click
import pytest

from dbtools.cli import cli
from dbtools.db.environments import mask
from dbtools.deploy.render import render_objects

from .conftest import HEAD, UPGRADE_STEPS


def dbtools(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dbtools", *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120,
    )


@pytest.mark.parametrize("command", [None, "migrate", "downgrade", "render", "deployed", "envs"])
def test_help_explains_every_option(command):
    args = [command, "--help"] if command else ["--help"]
    group = cli if command is None else cli.commands[command]

    proc = dbtools(*args)

    assert proc.returncode == 0
    assert proc.stderr == ""
    for param in group.params:
        if isinstance(param, click.Option):
            assert param.help, f"{command} {param.opts} has no help text"
            assert param.opts[0] in proc.stdout
    if command is None:
        for name in cli.commands:
            assert name in proc.stdout


@pytest.mark.parametrize("args, exit_code, message", [
    (["migrate", "--bogus"], 2, "dbtools migrate: error: No such option '--bogus'"),
    (["render", "--engine", "oracle"], 2, "'oracle' is not one of 'mssql', 'postgresql'"),
    (["migrate", "--env", "nope"], 1, "--env 'nope' is not defined; allowed values: demo, dev, local, pg, prod, test"),
    (["migrate"], 1, "no target: give --env NAME or --url URL"),
    (["migrate", "--url", "oracle://u:pw@host/db"], 1, "engine 'oracle' is not supported; allowed values: mssql, postgresql"),
])
def test_a_wrong_option_gives_one_line_and_a_non_zero_exit(args, exit_code, message):
    proc = dbtools(*args)

    assert proc.returncode == exit_code
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_url_password_comes_from_a_variable_and_a_literal_one_is_refused_unless_allowed():
    template = "postgresql://dba:${DBTOOLS_T_PW}@127.0.0.1:1/jobs"

    literal = dbtools("migrate", "--url", "postgresql://dba:Sup3rSecret@127.0.0.1:1/jobs")
    unset = dbtools("migrate", "--url", template)
    filled = dbtools("migrate", "--url", template, env={"DBTOOLS_T_PW": "Sup3rSecret"})
    allowed = dbtools("migrate", "--url", "postgresql://dba:Sup3rSecret@127.0.0.1:1/jobs", "--allow-literal-password")

    assert (literal.returncode, literal.stderr) == (1, "dbtools: error: --url holds a literal password; write "
                                                       "${VARIABLE} (in single quotes) and export the secret, or pass "
                                                       "--allow-literal-password\n")
    assert (unset.returncode, unset.stderr) == (1, "dbtools: error: --url needs the environment variable DBTOOLS_T_PW, "
                                                   "which is not set\n")
    # Filled in (or allowed), the URL reaches the server: here, one that is not listening.
    for proc in (filled, allowed):
        assert proc.returncode == 1
        assert proc.stderr.startswith("dbtools: error: cannot connect to postgresql+psycopg://dba:***@127.0.0.1:1/jobs")
        assert "Sup3rSecret" not in proc.stderr


def test_an_unreachable_server_gives_one_masked_line_and_a_traceback_only_with_debug():
    url = "postgresql://dba:Sup3rSecret@127.0.0.1:1/jobs"

    plain = dbtools("migrate", "--url", url, "--allow-literal-password")
    debug = dbtools("--debug", "migrate", "--url", url, "--allow-literal-password")

    assert plain.returncode == 1
    assert len(plain.stderr.strip().splitlines()) == 1, plain.stderr
    assert "cannot connect to postgresql+psycopg://dba:***@127.0.0.1:1/jobs" in plain.stderr
    assert "Sup3rSecret" not in plain.stderr + debug.stderr
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr


@pytest.mark.parametrize("args", [
    ["migrate"], ["deployed"], ["run", "--mode", "all-tables"], ["status", "01900000-0000-7000-8000-000000000000"],
], ids=lambda a: a[0])
def test_a_sql_server_url_without_an_odbc_driver_manager_gives_one_line_naming_what_to_install(tmp_path, args):
    # Assemble: pyodbc fails to load as it does on a machine without unixODBC (also where it is there).
    (tmp_path / "pyodbc.py").write_text(
        "raise ImportError('libodbc.so.2: cannot open shared object file: No such file or directory')\n")
    url = "mssql+pyodbc://dba:Sup3rSecret@sql.invalid/master?driver=ODBC+Driver+18+for+SQL+Server"

    # Act
    proc = dbtools(*args, "--url", url, "--allow-literal-password", env={"PYTHONPATH": str(tmp_path)})

    # Assert
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "dbtools: error: --url: the SQL Server driver cannot load (libodbc.so.2: cannot open shared object file: "
        "No such file or directory). Install the ODBC driver manager unixODBC (libodbc.so.2) and Microsoft ODBC "
        "Driver 18 (msodbcsql18), then pip install -e '.[mssql]'; without Microsoft's package source, unixODBC and "
        "the mssql-python-odbc wheel (docs/deployment.md: SQL Server drivers)."]
    assert "Sup3rSecret" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("engine", ["mssql", "postgresql"])
def test_render_writes_one_file_per_procedure_that_a_dba_can_apply_by_hand(tmp_path, engine):
    from .batch_rules import split_batches, violations

    proc = dbtools("render", "--engine", engine, "--out", str(tmp_path))

    assert proc.returncode == 0, proc.stderr
    written = {p.name: p.read_text(encoding="utf-8") for p in tmp_path.iterdir()}
    objects = {f"{o.name}.sql": o for o in render_objects(engine)}
    assert written.keys() == objects.keys()
    for name, text in written.items():
        header, body = text.split("\n-- ", 2)[0], text.split("\n", 3)[3]
        assert header.startswith(f"-- dbtools 0.1.0: {objects[name].kind.lower()} {objects[name].name}, rendered for ")
        if engine == "mssql":
            # The job database, the module's SET options in their own batch, the object alone in its batch.
            # The leading comment block (header and how to apply) stands before the first batch.
            assert text.split("\nSET NOEXEC OFF;\n", 1)[0].count("\n") == 2
            assert all(line.startswith("-- ") for line in text.split("\nSET NOEXEC OFF;\n", 1)[0].splitlines())
            batches = [b.strip() for b in split_batches(body)]
            assert batches[:3] == ["SET NOEXEC OFF;", "USE [BlobDeltaJobs];",
                                   "IF DB_NAME() <> N'BlobDeltaJobs'\nBEGIN\n    RAISERROR(N'dbtools: database "
                                   "BlobDeltaJobs is missing or closed to this login; nothing was created.', 16, 1);\n"
                                   "    SET NOEXEC ON;\nEND;"]
            assert batches[3:] == ["SET ANSI_NULLS ON;\nSET QUOTED_IDENTIFIER ON;", objects[name].sql.strip(),
                                   "SET NOEXEC OFF;"]
            assert violations(text) == [], name
        else:
            assert body == objects[name].sql.strip() + "\n"


def test_the_offline_script_goes_to_stdout_without_contacting_anything():
    proc = dbtools("migrate", "--env", "prod", "--sql")

    assert proc.returncode == 0, proc.stderr
    header = proc.stdout.split("\n\n", 1)[0].splitlines()
    assert header[:4] == ["-- dbtools 0.1.0 offline migration script (upgrade)", "-- engine: SQL Server",
                          "-- from revision: base (empty database)", f"-- to revision: {HEAD}"]
    assert re.fullmatch(r"-- generated: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", header[4])
    assert header[-1] == "-- Run it with: sqlcmd -b -i FILE (or SSMS)"
    assert proc.stdout.split("\n\n", 1)[1].lstrip("\n").startswith("SET QUOTED_IDENTIFIER ON;")
    assert "CREATE OR ALTER PROCEDURE [dbo].[usp_BlobDelta_ResolveTableConfig]" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["migrate", "--sql", "--from", "0010", "--to", "0002"],
     "--from 0010 is later than --to 0002: an offline upgrade goes from an older revision (--from) to a newer "
     "one (--to); the revisions, oldest first: base, "),
    (["downgrade", "--sql", "--from", "0002", "--to", "0009"],
     "--to 0009 is later than --from 0002: an offline downgrade goes from a newer revision (--from) to an older "
     "one (--to); the revisions, oldest first: base, "),
    (["migrate", "--sql", "--from", "nosuch"], "--from nosuch: Can't locate revision identified by 'nosuch'"),
])
def test_an_offline_range_that_goes_the_wrong_way_is_refused_with_the_revisions_in_order(args, message):
    proc = dbtools(*args, "--url", "postgresql://u@h/db")

    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith(f"dbtools: error: {message}"), proc.stderr
    if "later" in message:
        assert proc.stderr.strip().endswith(", ".join(step[1] for step in UPGRADE_STEPS))


def test_envs_lists_every_environment_with_passwords_masked(tmp_path):
    path = tmp_path / "environments.toml"
    path.write_text('[a]\nurl = "postgresql://u:${PW}@h/db"\ndescription = "first"\n', encoding="utf-8")

    proc = dbtools("envs", env={"DBTOOLS_ENVIRONMENTS": str(path), "PW": "hunter2"})

    assert proc.returncode == 0, proc.stderr
    assert "postgresql://u:***@h/db" in proc.stdout
    assert "hunter2" not in proc.stdout


def test_migrate_and_deployed_print_whole_names_when_piped(tmp_path):
    env = {"DBTOOLS_HOME": str(tmp_path)}

    migrated = dbtools("migrate", "--env", "local", env=env)
    listed = dbtools("deployed", "--env", "local", env=env)

    assert migrated.returncode == 0, migrated.stderr
    assert listed.returncode == 0, listed.stderr
    for source, dest, _up in UPGRADE_STEPS:
        assert f"upgraded {source} -> {dest}" in migrated.stdout
    assert listed.stdout.splitlines()[0].endswith(f"(env local): revision {HEAD}")
    for obj in render_objects("postgresql"):
        assert f"{obj.name} " in migrated.stdout and " Deployed " in migrated.stdout
        assert obj.name in listed.stdout and obj.checksum[:12] in listed.stdout
    assert migrated.stderr == "" and listed.stderr == ""


REFUSED_URL = "postgresql://dba:${DBTOOLS_T_PW}@127.0.0.1:1/jobs"


@pytest.mark.parametrize("args", [
    ["run", "--mode", "all-tables"], ["status", "01900000-0000-7000-8000-000000000000"], ["deployed"],
    ["ingest", "--entity", "CustomerActivityEvent", "--path", "bulk", "-"],
], ids=lambda a: a[0])
def test_a_server_that_refuses_is_one_masked_line_at_once_never_a_retry(args):
    import time

    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "dbtools", *args, "--url", REFUSED_URL], input="{}\n",
                          capture_output=True, text=True, timeout=120, env={**os.environ, "DBTOOLS_T_PW": "Sup3rSecret"})
    took = time.monotonic() - started

    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        'dbtools: error: cannot connect to postgresql+psycopg://dba:***@127.0.0.1:1/jobs (--url): connection failed: '
        'connection to server at "127.0.0.1", port 1 failed: Connection refused']
    assert "transient" not in proc.stderr + proc.stdout
    assert took < 15, "no backoff before the error"


@pytest.mark.postgresql_only
@pytest.mark.parametrize("args", [
    ["run", "--mode", "all-tables"], ["run", "--mode", "all-tables", "--plan"],
    ["status", "01900000-0000-7000-8000-000000000000"],
    ["ingest", "--entity", "CustomerActivityEvent", "--path", "bulk", "-"],
], ids=lambda a: "-".join(a[:3]))
def test_a_database_that_was_never_migrated_says_to_run_migrate(pg_admin_url, args):
    from .conftest import fresh_pg_database

    with fresh_pg_database(pg_admin_url) as url:
        secret = {"DBTOOLS_T_PW": str(url.password)}
        template = url.set(password="__S__").render_as_string(hide_password=False).replace("__S__", "${DBTOOLS_T_PW}")
        proc = subprocess.run([sys.executable, "-m", "dbtools", *args, "--url", template], input=(
            '{"event_id": "019a0000-0000-7000-8000-000000000001", "customer_id": 1, "activity_type": "login", '
            '"time_stamp_utc": "2026-03-01T12:00:00Z"}\n'), capture_output=True, text=True, timeout=120,
            env={**os.environ, **secret})

    assert proc.returncode == 1, proc.stdout
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"dbtools: error: no BlobDeltaJobs job database on {mask(url)} (--url), or not at this "
                           "package's revision: run dbtools migrate first ("), line


@pytest.mark.postgresql_only
@pytest.mark.parametrize("part", ["username", "database"])
def test_an_unknown_role_or_database_is_one_line_at_once(pg_admin_url, part):
    import time

    url = pg_admin_url.set(**{part: "dbtools_no_such_" + part})
    template = url.set(password="__S__").render_as_string(hide_password=False).replace("__S__", "${DBTOOLS_T_PW}")

    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "dbtools", "run", "--mode", "all-tables", "--url", template],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DBTOOLS_T_PW": str(pg_admin_url.password)})
    took = time.monotonic() - started

    assert proc.returncode == 1
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"dbtools: error: cannot connect to {mask(url)} (--url): connection failed:"), line
    assert f'"dbtools_no_such_{part}" does not exist' in line
    assert took < 15, "no backoff before the error"


def test_render_to_a_path_that_cannot_be_written_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")

    proc = dbtools("render", "--engine", "mssql", "--out", str(blocker / "rendered"))

    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [f"dbtools: error: --out {blocker / 'rendered'}: cannot write there (Not a directory)"]
