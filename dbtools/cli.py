"""Command line: a thin layer over :mod:`dbtools.commands`.

Every failure dbtools expects (bad option, unknown environment, unreachable server, failed
migration) is shown as one line on stderr with a non-zero exit; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from . import __version__, commands
from .db.engines import SUPPORTED
from .db.environments import load_environments, mask, parse_url, refuse_literal_password
from .db.procs import ProcedureValidationError
from .delta import runs
from .errors import ConfigurationError, DbToolsError

# Piped or logged output is never cut to 80 columns: names and checksums must stay whole.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 400)

target_options = [
    click.option("--env", "env", metavar="NAME",
                 help="Environment from environments.toml (see `dbtools envs`)."),
    click.option("--url", "url", metavar="URL",
                 help="SQLAlchemy URL for ad-hoc use; overrides --env. ${VAR} references are filled from the "
                      "environment: quote it in single quotes."),
    click.option("--allow-literal-password", "allow_literal_password", is_flag=True,
                 help="Accept a --url whose password is written out (refused by default: it stays in the "
                      "shell history)."),
]


def with_target(func):
    @functools.wraps(func)
    def checked(*args, allow_literal_password: bool = False, **kwargs):
        if kwargs.get("url"):
            parse_url(kwargs["url"], context="--url")  # an unsupported engine is the first thing to say
            refuse_literal_password(kwargs["url"], allowed=allow_literal_password)
        return func(*args, **kwargs)

    for option in reversed(target_options):
        checked = option(checked)
    return checked


class DbToolsGroup(click.Group):
    """Turns expected failures into one-line messages."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (DbToolsError, sa.exc.SQLAlchemyError) as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            text = str(exc).strip() or type(exc).__name__
            if isinstance(exc, ProcedureValidationError):
                # Every problem the procedure found, one per line: they were raised together. The
                # database names its parameter; the line starts with the option that sets it.
                for line in text.splitlines():
                    err.print(f"dbtools: error: {_with_option(line)}", markup=False)
            else:
                err.print(f"dbtools: error: {text.splitlines()[0]}", markup=False)
            ctx.exit(1)


#: The operator procedure's parameters and the options of run/resume that set them.
PARAMETER_OPTIONS = {"@Mode": "--mode", "@TableName": "--table", "@BatchSize": "--batch-size", "@MaxDOP": "--max-dop",
                     "@BusinessUnitId": "--bu", "@SyncType": "--sync", "@ResumeRunId": "RUN_ID", "@Wait": "--wait",
                     "@Execute": "--plan"}


def _with_option(line: str) -> str:
    """A procedure's validation message, led by the CLI option of the first parameter it names."""
    import re

    first = re.search(r"@\w+", line)
    option = PARAMETER_OPTIONS.get(first.group(0)) if first else None
    return f"{option}: {line}" if option else line


def main(argv: list[str] | None = None) -> None:
    """Console entry point: usage errors are one line too, with exit status 2."""
    try:
        status = cli.main(args=argv, prog_name="dbtools", standalone_mode=False)
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx is not None else "dbtools"
        err.print(f"{command}: error: {exc.format_message()} (see '{command} --help')", markup=False)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        err.print(f"dbtools: error: {exc.format_message()}", markup=False)
        sys.exit(exc.exit_code)
    except click.Abort:
        err.print("dbtools: aborted", markup=False)
        sys.exit(1)
    sys.exit(status if isinstance(status, int) else 0)


@click.group(cls=DbToolsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(__version__, prog_name="dbtools")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Migrations and stored procedures for delta loads and defensive upserts.

    SQL Server is the primary target; PostgreSQL is its twin with the same objects. The
    environment `local` is an embedded PostgreSQL that needs nothing installed.
    """
    ctx.obj = {"debug": debug}


def _report(result: commands.MigrateResult) -> None:
    outcome = result.outcome
    if result.script is not None:
        sys.stdout.write(result.script)
        return
    if not outcome.steps:
        out.print(f"{outcome.target}: already at the requested revision; no schema change.")
    for source, dest, up in outcome.steps:
        out.print(f"{outcome.target}: {'upgraded' if up else 'downgraded'} {source} -> {dest}")
    if outcome.objects:
        table = Table("object", "kind", "action", "checksum", title="Repeatable objects")
        for obj in outcome.objects:
            table.add_row(obj.name, obj.kind.lower(), obj.action, (obj.checksum or "")[:12])
        out.print(table)
    if outcome.note:
        out.print(outcome.note)


@cli.command()
@with_target
@click.option("--to", "revision", default="head", show_default=True, metavar="REV",
              help="Revision to upgrade to. Procedures are deployed only at head.")
@click.option("--sql", is_flag=True,
              help="Print the offline script (schema changes and rendered procedures) instead of "
                   "connecting. SQL Server scripts are GO-separated: run them with sqlcmd -b -i FILE or in SSMS; "
                   "PostgreSQL scripts run under psql -v ON_ERROR_STOP=1.")
@click.option("--from", "start", metavar="REV",
              help="With --sql: the revision the database is at now (default: empty database).")
def migrate(env, url, revision, sql, start):
    """Upgrade the job database and deploy changed procedures.

    Creates the job database (SQL Server: database BlobDeltaJobs; PostgreSQL: schema
    BlobDeltaJobs) when missing, applies every revision up to --to, then deploys the
    procedures whose rendered text changed since the last deploy. Same as
    `alembic -x env=NAME upgrade head`.
    """
    _report(commands.migrate(env, url, revision=revision, sql=sql, start=start))


@cli.command()
@with_target
@click.option("--to", "revision", required=True, metavar="REV",
              help="Revision to downgrade to; `base` removes every object dbtools created.")
@click.option("--sql", is_flag=True, help="Print the offline script instead of connecting.")
@click.option("--from", "start", metavar="REV", help="With --sql: the revision the database is at now.")
@click.option("--yes", "yes", is_flag=True, help="Go ahead without asking (the tables listed lose their rows).")
def downgrade(env, url, revision, sql, start, yes):
    """Downgrade the job database; drops the package's procedures first.

    Procedures belong to the head revision, so any downgrade drops them; upgrading to head
    again redeploys them. It first shows the revisions it undoes and the tables that hold data
    now, and goes on only with --yes or an interactive yes (an offline script asks nothing: it is
    reviewed before it runs).
    """
    if not sql:
        preview = commands.downgrade_preview(env, url, revision=revision)
        if not preview.revisions:
            out.print(f"Nothing to undo: the job database is at {preview.current or 'base'}.")
            return
        out.print(f"Downgrade from {preview.current} to {preview.target} undoes:", markup=False)
        for rev, doc in preview.revisions:
            out.print(f"  {rev}  {doc}", markup=False)
        holding = [(name, rows, exact) for name, rows, exact in preview.tables if rows]
        out.print("Tables holding rows now (a revision that created one drops it, with its rows):"
                  if holding else "No table holds a row.", markup=False)
        for name, rows, exact in holding:
            out.print(f"  {name}: {'' if exact else 'about '}{rows:,} row(s)", markup=False)
        _confirm(yes, f"downgrade to {preview.target}")
    _report(commands.downgrade(env, url, revision=revision, sql=sql, start=start))


def _confirm(yes: bool, what: str) -> None:
    """Go on with --yes, or when a person at a terminal says so; refuse otherwise."""
    if yes:
        return
    if sys.stdin.isatty() and sys.stdout.isatty():
        if click.confirm(f"Go on with the {what}?", default=False):
            return
        raise ConfigurationError(f"{what}: nothing was changed")
    raise ConfigurationError(f"{what} destroys what is listed above: pass --yes to go ahead; nothing was changed")


@cli.command()
@with_target
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: current, head and every revision.")
def history(env, url, as_json):
    """List the package's revisions, oldest first: applied or pending, and who applied each and when
    (from the deployment log)."""
    result = commands.history(env, url)
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    listing = _names_table("revision", "state", "applied (UTC)", "by", "description",
                           title=f"Revisions on {result['target']} (head {result['head']})")
    for rev in result["revisions"]:
        listing.add_row(rev["revision"], rev["state"], rev["applied_at"] or "", rev["applied_by"] or "",
                        rev["description"])
    out.print(listing)
    pending = [r["revision"] for r in result["revisions"] if r["state"] == "pending"]
    out.print(f"Pending: {', '.join(pending)} (dbtools migrate applies them)" if pending else "Nothing pending.",
              markup=False)


@cli.command(name="check")
@with_target
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: pending revisions, objects that drifted, objects it could not read.")
def check_command(env, url, as_json):
    """Report drift and exit 1 when there is any: a pending revision, or a procedure that is missing,
    not deployed at this package version, edited by hand since it was deployed, or deployed but not
    part of this package. Exit 2 when there is none, but this login could not read everything it
    compares (SQL Server: VIEW DEFINITION on the job schema); it says which right it needs. Changes
    nothing."""
    result = commands.check(env, url)
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        if result["pending"]:
            out.print(f"Pending revisions: {', '.join(result['pending'])} (the database is at "
                      f"{result['current'] or 'base'}; head is {result['head']})", markup=False)
        for problem in result["objects"] + result["unverified"]:
            out.print(f"{problem['object']}: {problem['problem']}", markup=False)
        if result["drift"]:
            out.print("Drift: dbtools migrate puts it right (it redeploys what differs).", markup=False)
        elif result["unverified"]:
            out.print(f"Not verified: this login could not read {len(result['unverified'])} of the objects "
                      "compared (see above); run check as the deploying login, or grant what it names.", markup=False)
        else:
            out.print(f"No drift: {result['target']} is at head ({result['head']}) with every procedure as deployed.",
                      markup=False)
    if result["drift"]:
        sys.exit(1)
    if result["unverified"]:
        sys.exit(2)


@cli.command()
@with_target
@click.argument("revision", metavar="REV")
def stamp(env, url, revision):
    """Record REV as the job database's revision without running anything (Flyway's baseline): to
    adopt a job database created by hand or by another tool. Deploys nothing; a following migrate
    applies the later revisions and deploys the procedures."""
    result = commands.stamp(env, url, revision=revision)
    out.print(f"{result.outcome.target}: stamped {revision}", markup=False)


@cli.command()
@click.option("--engine", "engine", type=click.Choice(SUPPORTED), required=True,
              help="Engine whose procedures to render.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory to write one <object>.sql per procedure into; default: print to stdout.")
def render(engine, out_dir):
    """Render the procedures of one engine from their Jinja2 templates."""
    if out_dir is None:
        from .deploy.render import render_objects

        for obj in render_objects(engine):
            sys.stdout.write(f"-- {obj.name} ({obj.kind.lower()}, sha256 {obj.checksum})\n{obj.sql}\n")
        return
    for path in commands.render(engine, out_dir):
        out.print(str(path))


@cli.command()
@with_target
def deployed(env, url):
    """List the procedures the deployment log says are deployed, and the current revision."""
    target, objects, revision = commands.deployed(env, url)
    out.print(f"{target.masked} ({target.label}): revision {revision or '(none: empty database)'}")
    table = Table("object", "kind", "state", "checksum", "deploys", "package", "at (UTC)", "by",
                  title="Deployment log")
    for obj in objects:
        table.add_row(obj.name, obj.kind.lower(), obj.action, (obj.checksum or "")[:12],
                      str(obj.deploy_count), obj.package_version, str(obj.deployed_at), obj.deployed_by)
    out.print(table)


@cli.command()
def envs():
    """List the environments defined in environments.toml (passwords masked)."""
    table = Table("name", "url", "description", title="Environments")
    for env in load_environments().values():
        table.add_row(env.name, mask(env.url), env.description)
    out.print(table)


def _print_step(batch: dict) -> None:
    """One progress line per batch as the engine commits it (stdout)."""
    where = f"  {batch['table']}: step {batch['step']} {batch['name']} batch {batch['batch']}"
    if batch["step"] == 0 and batch["name"] == "Window" and batch["status"] == "Completed":
        out.print(f"  {batch['table']}: window [{batch['window_start']}, {batch['window_end']})", markup=False)
    elif batch["status"] == "Failed":
        out.print(f"{where} FAILED: {batch['error']}", markup=False)
    elif batch["rows_processed"]:
        out.print(f"{where}: {batch['rows_processed']} row(s), {batch['total_rows']} so far", markup=False)


def _duration(value) -> str:
    return "" if value is None else f"{value:,.1f} s"


def _names_table(*columns: str, title: str) -> Table:
    """A table whose cells wrap (a table name included) instead of being cut: it fits 80 columns."""
    table = Table(title=title)
    for n, column in enumerate(columns):
        table.add_column(column, overflow="fold", no_wrap=False, min_width=None if n else 12)
    return table


def _print_run(result: dict, as_json: bool, *, batches: bool = False) -> None:
    """A run (or plan) in the schema of dbtools.delta.runs: JSON, or tables and dbt-style summary lines.

    Tables keep to few columns (a table's name and its step share one; errors follow the table),
    so that they fit an 80-column terminal without cutting anything.
    """
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    planned = result["run_id"] is None
    table = _names_table("table", "status", "rows", *(() if planned else ("time",)), "window (UTC)",
                         title="Plan: nothing was changed" if planned else f"Run {result['run_id']}")
    for entry in result["tables"]:
        window = f"{entry['window_start']} to\n{entry['window_end']}" if entry["window_start"] else ""
        table.add_row(entry["table"], entry["status"], "" if entry["rows"] is None else f"{entry['rows']:,}",
                      *(() if planned else (_duration(entry.get("duration_s")),)), window)
    out.print(table)
    for entry in result["tables"]:
        if entry["error"]:
            out.print(f"  {entry['table']}: {entry['error']}", markup=False)
    steps = _names_table("table, step", "inserted", "updated", "deleted",
                         *(() if planned else ("moved", "batches", "time")),
                         title="Per step: what the run would do" if planned else "Per step")
    for entry in result["tables"]:
        for step in entry.get("steps", ()):
            name = step["name"] + (" (back-fill)" if step["step"] == 2 else "")
            steps.add_row(f"{entry['table']}\n  {step['step']} {name}",
                          f"{step['inserted']:,}", f"{step['updated']:,}", f"{step['deleted']:,}",
                          *(() if planned else (f"{step['moved']:,}", str(step["batches"]),
                                                _duration(step["duration_s"]))))
    if steps.rows:
        out.print(steps)
    if batches and result.get("batches"):
        listing = _names_table("table, step, batch", "status", "rows", "ins/upd/del/mov", "started (UTC)", "time",
                               title="Batches")
        for b in result["batches"]:
            counts = "/".join("-" if b[k] is None else f"{b[k]:,}" for k in ("inserted", "updated", "deleted", "moved"))
            listing.add_row(f"{b['table']}\n  {b['step']} {b['name']} #{b['batch']}", b["status"],
                            f"{b['rows_processed']:,}", counts, b["started_at"] or "", _duration(b["duration_s"]))
        out.print(listing)
        for b in result["batches"]:
            if b["error"]:
                out.print(f"  {b['table']}, step {b['step']} {b['name']}, batch {b['batch']}: {b['error']}",
                          markup=False)
    _print_summary(result)


def _print_summary(result: dict) -> None:
    """dbt's closing lines: one per table with its duration, then the totals."""
    tables = result["tables"]
    if result["run_id"] is None:
        counts = {s: sum(t["status"] == s for t in tables) for s in ("Planned", "Skipped", "Failed")}
        out.print(f"Plan only: nothing was changed. tables: {counts['Planned']} planned, {counts['Skipped']} skipped, "
                  f"{counts['Failed']} failed; rows: {result['rows']:,}")
        cleared = sum(s["deleted"] for t in tables for s in t["steps"] if s["step"] == 0)
        if cleared:
            out.print(f"The run would first delete {cleared:,} target row(s) in scope (full sync: step 0).")
        out.print(f"Status: {result['status']}")
        return
    for n, entry in enumerate(tables, 1):
        rows = f"{entry['rows']:,} row(s)"
        took = f" in {_duration(entry['duration_s'])}" if entry.get("duration_s") is not None else ""
        out.print(f"{n} of {len(tables)} {entry['status'].upper():<11} {entry['table']}: {rows}{took}", markup=False)
    counts = {s: sum(t["status"] == s for t in tables) for s in runs.TABLE_STATES}
    parts = [f"{counts[s]} {s.lower()}" for s in ("Succeeded", "Failed") ] + \
            [f"{counts[s]} {s.lower()}" for s in ("Running", "Interrupted", "Pending") if counts[s]]
    out.print(f"Done. tables: {', '.join(parts)}; rows: {result['rows']:,}; {_duration(result['duration_s'])}"
              if result["status"] not in ("Running", "Interrupted") else
              f"{result['status']}. tables: {', '.join(parts)}; rows so far: {result['rows']:,}; "
              f"{_duration(result['duration_s'])}", markup=False)
    out.print(f"RunId: {result['run_id']}")
    out.print(f"Status: {result['status']}")
    if result["status"] in ("Failed", "Interrupted"):
        out.print(f"Continue it with: dbtools resume {result['run_id']}", markup=False)


def _exit_for(result: dict) -> None:
    """0 for a run that succeeded and a plan with a table to run; 1 otherwise."""
    if result["run_id"] is None:
        if result["tables"] and all(t["status"] == "Failed" for t in result["tables"]):
            sys.exit(1)  # nothing in scope could be planned
        return
    if result["status"] != "Succeeded":
        sys.exit(1)


def _write_results(path: Path | None, result: dict) -> None:
    """--results-file: the same JSON as --json, written whatever the outcome."""
    if path is None:
        return
    try:
        path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"--results-file {path}: cannot write there ({exc.strerror or exc})") from exc


def _announce(run_id) -> None:
    """The RunId as soon as the run starts (stderr: stdout may be one JSON object)."""
    err.print(f"RunId: {run_id} (if it stops, continue it with: dbtools resume {run_id})", markup=False)


def _run_and_report(as_json: bool, results_file: Path | None = None, **kwargs) -> None:
    try:
        result = commands.run(on_step=None if as_json else _print_step, on_start=_announce, **kwargs)
    except commands.RunInterrupted as exc:
        err.print(f"dbtools: {exc}", markup=False)
        sys.exit(130)
    _write_results(results_file, result)
    _print_run(result, as_json)
    _exit_for(result)


results_option = click.option(
    "--results-file", "results_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Also write the result as JSON (the schema of --json) to this file.")


@cli.command(name="run")
@with_target
@click.option("--mode", type=click.Choice(["all-tables", "single-table"]), required=True,
              help="all-tables: every active table; single-table: the one named by --table.")
@click.option("--table", "table", metavar="NAME", help="Configured TableName for --mode single-table.")
@click.option("--batch-size", type=int, default=500, show_default=True, help="Rows per batch (1 or more).")
@click.option("--max-dop", type=int, default=0, show_default=True,
              help="0 = server default; PostgreSQL: max parallel workers per gather.")
@click.option("--bu", "business_unit", type=click.UUID, metavar="GUID", help="Only this business unit (default: all).")
@click.option("--sync", "sync_type", type=click.Choice(["incremental", "full"]), default="incremental",
              show_default=True, help="incremental continues from the watermark; full starts from the baseline "
                                      "and clears the table's queue and target rows in scope.")
@click.option("--plan", is_flag=True,
              help="Show each table's window and, per step, the rows a run would insert, update and delete; "
                   "change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the run (or plan) as one JSON object.")
@results_option
@click.option("--yes", "yes", is_flag=True,
              help="With --sync full: go ahead without asking (the target rows in scope are deleted first).")
def run_command(env, url, mode, table, batch_size, max_dop, business_unit, sync_type, plan, as_json, results_file,
                yes):
    """Run delta loads through usp_BlobDelta_RunOperator and report the RunId.

    Prints the RunId as soon as the run starts, progress per table and batch while the engine
    works, then a per-table and per-step summary; exits 0 when the run Succeeded (or the plan was
    made), 1 otherwise. A dropped connection or deadlock is retried as a resume of the same run.
    Ctrl-C cancels the batch in flight, prints the RunId and the command that resumes it, and
    exits 130.
    """
    if sync_type == "full" and not plan:
        # A Full sync first deletes the target's rows in scope: say how many (the plan's step 0), then ask.
        preview = commands.run(env=env, url=url, mode=mode, table=table, batch_size=batch_size, max_dop=max_dop,
                               business_unit=business_unit, sync_type=sync_type, plan=True)
        deleting = [(t["table"], sum(s["deleted"] for s in t["steps"] if s["step"] == 0)) for t in preview["tables"]]
        total = sum(n for _t, n in deleting)
        printer = err if as_json else out
        printer.print(f"A full sync first deletes {total:,} target row(s) in scope"
                      + (f" (business unit {business_unit})" if business_unit else "") + ":", markup=False)
        for name, rows in deleting:
            printer.print(f"  {name}: {rows:,} row(s)", markup=False)
        _confirm(yes, "full sync")
    _run_and_report(as_json, results_file, env=env, url=url, mode=mode, table=table, batch_size=batch_size,
                    max_dop=max_dop, business_unit=business_unit, sync_type=sync_type, plan=plan)


@cli.command()
@with_target
@click.argument("run_id", type=click.UUID)
@click.option("--json", "as_json", is_flag=True, help="Print the run, its tables, steps and batches as JSON.")
def status(env, url, run_id, as_json):
    """Show a run: each table's state (Pending, Running, Succeeded, Failed, Interrupted), window,
    rows and duration, per step and per batch with their times.

    A run whose session is gone (its client was killed) shows as Interrupted: resume it.
    """
    result = commands.status(env, url, run_id=run_id)
    _print_run(result, as_json, batches=True)


@cli.command(name="runs")
@with_target
@click.option("--last", "last", type=click.IntRange(min=1), default=20, show_default=True,
              help="How many runs to list, newest first.")
@click.option("--table", "table", metavar="NAME", help="Only runs that worked this configured table.")
@click.option("--status", "status_filter", type=click.Choice(commands.RUN_STATES), default=None,
              help="Only runs with this status (Interrupted: marked Running, but no session works it).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of runs (the schema of status, without batches).")
def runs_command(env, url, last, table, status_filter, as_json):
    """List recent runs with their status, duration, tables and rows: no RunId needed to find one."""
    found = commands.list_runs(env, url, last=last, table=table, status=status_filter)
    if as_json:
        sys.stdout.write(json.dumps(found) + "\n")
        return
    listing = _names_table("run id", "status", "started (UTC)", "duration", "type", "scope", "tables", "rows",
                           title=f"Runs (newest first, at most {last})")
    for run in found:
        states = {}
        for entry in run["tables"]:
            states[entry["status"]] = states.get(entry["status"], 0) + 1
        listing.add_row(run["run_id"], run["status"], run["started_at"], _duration(run["duration_s"]), run["run_type"],
                        run["table"] or run["mode"], ", ".join(f"{n} {s.lower()}" for s, n in states.items()),
                        f"{run['rows']:,}")
    out.print(listing)
    if not found:
        out.print("No run matches.")


@cli.command()
@with_target
@click.argument("run_id", type=click.UUID)
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The HTML file to write (default: run-RUN_ID.html in the current directory).")
def report(env, url, run_id, out):
    """Write one self-contained HTML page about a run: a timeline with a bar per batch, rows per
    second over the run, each table's window, and any errors. It needs no network to open."""
    path = commands.report(env, url, run_id=run_id, out=out or Path(f"run-{run_id}.html"))
    sys.stdout.write(f"Wrote {path}\n")


@cli.command()
@with_target
@click.argument("run_id", type=click.UUID)
@click.option("--wait", is_flag=True,
              help="When another session still executes the run (its client was killed, say), wait for it "
                   "instead of failing; a run it finishes meanwhile is reported as it ended.")
@click.option("--json", "as_json", is_flag=True, help="Print the run as one JSON object.")
@results_option
def resume(env, url, run_id, wait, as_json, results_file):
    """Continue an interrupted or failed run from its last completed batch, with its own windows.

    A run executes in one server session at a time: while another session still works it, resume
    fails with a message that says so, or waits with --wait.
    """
    _run_and_report(as_json, results_file, env=env, url=url, mode="AllTables", resume=run_id, wait=wait)


@cli.command(name="sample")
@with_target
@click.option("--rows", type=click.IntRange(min=1), default=400, show_default=True,
              help="At least this many blobs (folders and files) per sample table, rounded up to whole trees.")
@click.option("--bus", "business_units", type=click.IntRange(min=1), default=3, show_default=True,
              help="Business units to spread them over.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: what was created.")
def sample_command(env, url, rows, business_units, as_json):
    """Create the sample source, metadata, business-unit and target tables in your own database,
    then migrate (which grants the engine its rights on them), so that the next run works.

    The tables are the ones the seeded configuration names (Gwent_LA_FileTable, its metadata in
    AdvancedRBS_MetaData, the targets in Gwent_LA_FileTable_Delta): databases on SQL Server,
    schemas on PostgreSQL. Existing ones are refused, never reused.
    """
    result = commands.sample(env, url, rows=rows, business_units=business_units)
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    out.print("Created: " + ", ".join(result["databases"]), markup=False)
    out.print("Blobs: " + ", ".join(f"{k} {v:,}" for k, v in result["blobs"].items())
              + f"; business units: {len(result['business_units'])}", markup=False)
    out.print("Migrated: " + (", ".join(result["migrated"]) or "already at head; engine access renewed"), markup=False)
    out.print("Next: dbtools run --mode all-tables --plan (with the same --env/--url)", markup=False)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: run_id, status, tables.")
def demo(as_json):
    """The main job on the embedded PostgreSQL: migrate, load sample blobs, run a delta.

    Recreates the database dbtools_demo in the embedded server under .dbtools/ each time, so it
    needs nothing installed and leaves `--env local` alone.
    """
    result = commands.demo(on_step=None if as_json else _print_step)
    if not as_json:
        out.print("Migrated: " + ", ".join(result["migrated"]))
        out.print("Sample blobs: " + ", ".join(f"{k} {v}" for k, v in result["source_rows"].items()))
    _print_run(result, as_json)
    if not as_json:
        run_id = result["run_id"]
        out.print(f"Look at it again (the demo database stays until the next demo): dbtools status {run_id} --env demo; "
                  f"dbtools runs --env demo; dbtools report {run_id} --env demo --out run.html", markup=False)
    _exit_for(result)


@cli.command()
@with_target
@click.option("--entity", required=True, metavar="NAME",
              help="Entity spec name from entities/, e.g. CustomerActivityEvent.")
@click.option("--path", "path", type=click.Choice(["single", "tvp", "bulk"]), required=True,
              help="single: one procedure call per row; tvp: row-type batches; bulk: staging + reconcile.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Rows per batch (tvp default 1000, bulk default 50000; single: rows per progress step).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the counts and rejected lines.")
@click.option("--max-rejects", "max_rejects", metavar="N|P%", default=None,
              help="Exit 1 when more than N rows (or P% of the rows received) are rejected. Default: exit 1 "
                   "only when every row is rejected.")
@click.argument("source", type=click.File("r", encoding="utf-8"), metavar="FILE.jsonl|-")
def ingest(env, url, entity, path, batch_size, as_json, max_rejects, source):
    """Upsert JSON Lines into an entity and print what happened to every row.

    Each line is one JSON object keyed by the entity's columns (optionally ExpectedRowVersion).
    Prints received = inserted + updated + skipped + conflicted + rejected, and the rejected
    lines with their reasons (all of them are kept in the entity's reject table). Exits 0 when
    every row was accounted for and the rejects stay within --max-rejects; 1 otherwise (the rows
    that were not rejected are written either way).
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    from .upsert.ingest import ingest as run_ingest, parse_max_rejects, rejects_exceeded

    limit = parse_max_rejects(max_rejects)

    size = None
    try:
        if source.name not in ("<stdin>", "-") and os.path.isfile(source.name):
            size = os.path.getsize(source.name)
    except (OSError, TypeError):
        size = None
    show = not as_json and err.is_terminal
    with Progress(TextColumn("ingesting"), BarColumn(), DownloadColumn(), TextColumn("{task.fields[rows]} rows"),
                  console=err, transient=True, disable=not show) as progress:
        task = progress.add_task("ingest", total=size, rows=0)
        rows = [0]

        def on_chunk(counts):
            rows[0] += counts.received
            progress.update(task, rows=rows[0])

        result = run_ingest(env, url, entity=entity, path=path, stream=source, batch_size=batch_size,
                            on_chunk=on_chunk, on_bytes=lambda n: progress.advance(task, n))
    exceeded = rejects_exceeded(result.counts, limit)
    if as_json:
        sys.stdout.write(json.dumps(result.as_dict()) + "\n")
        if exceeded:
            err.print(f"dbtools: error: {exceeded}", markup=False)
            sys.exit(1)
        return
    table = Table("received", "inserted", "updated", "skipped", "conflicted", "rejected",
                  title=f"{result.entity} via {result.path}")
    c = result.counts
    table.add_row(*(str(v) for v in (c.received, c.inserted, c.updated, c.skipped, c.conflicted, c.rejected)))
    out.print(table)
    for line, reason in result.rejects:
        out.print(f"line {line}: {reason}", markup=False)
    if c.rejected > len(result.rejects):
        out.print(f"... and {c.rejected - len(result.rejects)} more rejected rows in the reject table", markup=False)
    if exceeded:
        err.print(f"dbtools: error: {exceeded}", markup=False)
        sys.exit(1)


@cli.command(name="sync")
@with_target
@click.option("--entity", required=True, metavar="NAME", help="A sync entity (its spec has [sync]), e.g. JasperDevice.")
@click.option("--scope", required=True, metavar="ID", help="The scope to sync: the value of the entity's scope "
                                                           "column, e.g. a service provider id.")
@click.option("--full", is_flag=True, help="Start a full sync (clears the scope's staging); default: resume the "
                                           "scope's open session, else incremental (full until one completed).")
@click.option("--source", required=True, metavar="DIR|URL",
              help="A folder of JSON Lines page files (page-0001.jsonl, ...), or the http(s) URL of a paged API.")
@click.option("--username-env", metavar="VAR", default=None,
              help="HTTP: the environment variable holding the user name (basic authentication).")
@click.option("--password-env", metavar="VAR", default=None,
              help="HTTP: the environment variable holding the password or API key (basic authentication).")
@click.option("--token-env", metavar="VAR", default=None, help="HTTP: the environment variable holding a bearer token.")
@click.option("--page-limit", type=click.IntRange(min=1), default=None,
              help="HTTP: the highest page fetched; a source that goes past it is stopped (default 1000).")
@click.option("--error-budget", type=click.IntRange(min=0), default=None,
              help="HTTP: failed requests retried before the sync stops (default 5).")
@click.option("--since-param", default=None, metavar="NAME", help="HTTP: the since query parameter (modifiedSince).")
@click.option("--page-param", default=None, metavar="NAME", help="HTTP: the page query parameter (pageNumber).")
@click.option("--rows-field", default=None, metavar="NAME", help="HTTP: the response field holding the rows (devices).")
@click.option("--last-page-field", default=None, metavar="NAME",
              help="HTTP: the response field that is true on the last page (lastPage).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the session and its counts.")
def sync_command(env, url, entity, scope, full, source, username_env, password_env, token_env, page_limit,
                 error_budget, since_param, page_param, rows_field, last_page_field, as_json):
    """Sync one scope of an entity from a paged source: stage each page, promote after the last.

    Resumes the scope's open session at its first missing page (a killed sync goes on where it
    stopped), else opens one: full with --full or until the scope completed a full sync (since =
    now - 1 month - 1 day), incremental otherwise (since = the last sync point - the entity's
    buffer). Production changes only when the last page has arrived, in one transaction, newest
    wins. Credentials come from environment variables named by --username-env/--password-env or
    --token-env, never from the command line. Prints the session id, each page and the counts:
    received = inserted + updated + skipped + rejected. Exits 0 when the session was promoted.
    """
    source_object = commands.sync_source(
        source, username_env=username_env, password_env=password_env, token_env=token_env, page_limit=page_limit,
        error_budget=error_budget, since_param=since_param, page_param=page_param, rows_field=rows_field,
        last_page_field=last_page_field)
    announced = []

    def on_page(progress) -> None:
        if not announced:
            announced.append(progress.session_id)
            err.print(f"session {progress.session_id}", markup=False)
        err.print(f"page {progress.number}: {progress.rows} rows, {progress.staged} staged, {progress.rejected} "
                  f"rejected{' (last page)' if progress.is_last else ''} in {progress.seconds:.2f}s", markup=False)

    result = commands.sync(env, url, entity=entity, scope=scope, source=source_object, full=full, on_page=on_page)
    if as_json:
        sys.stdout.write(json.dumps(result.as_dict()) + "\n")
        return
    out.print(f"session {result.session_id}: {result.sync_type} sync of {result.entity} scope {result.scope} since "
              f"{result.since:%Y-%m-%d %H:%M:%S}" + (f", resumed at page {result.first_page}" if result.resumed else "")
              + f": {result.status}", markup=False)
    table = Table("pages loaded", "received", "inserted", "updated", "skipped", "rejected",
                  title=f"{result.entity} scope {result.scope}")
    table.add_row(*(str(v) for v in (result.pages_loaded, result.received, result.inserted, result.updated,
                                     result.skipped, result.rejected)))
    out.print(table)
    for page, row, reason in result.rejects:
        out.print(f"page {page} row {row}: {reason}", markup=False)
    if result.rejected > len(result.rejects):
        out.print(f"... and {result.rejected - len(result.rejects)} more rejected rows in the reject table", markup=False)


@cli.command(name="sync-status")
@with_target
@click.argument("session_id", required=False, metavar="[SESSION_ID]")
@click.option("--entity", default=None, metavar="NAME", help="Only sessions of this entity.")
@click.option("--scope", default=None, metavar="ID", help="Only sessions of this scope.")
@click.option("--last", type=click.IntRange(min=1), default=20, help="How many sessions to list (default 20).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def sync_status_command(env, url, session_id, entity, scope, last, as_json):
    """Report on sync sessions: the latest ones, or one SESSION_ID with its pages and rejects."""
    sessions = commands.sync_status(env, url, session_id=session_id, entity=entity, scope=scope, last=last)
    if as_json:
        sys.stdout.write(json.dumps(sessions if session_id is None else sessions[0], default=str) + "\n")
        return
    def when(value) -> str:
        return "" if value is None else f"{value:%Y-%m-%d %H:%M:%S}"

    table = Table("session", "entity", "scope", "type", "status", "pages", "received", "inserted", "updated",
                  "skipped", "rejected", "since", "started")
    table.columns[0].no_wrap = True
    for s in sessions:
        table.add_row(*(("" if v is None else str(v)) for v in (
            s["SessionId"], s["EntityName"], s["Scope"], s["SyncType"], s["Status"],
            f"{s['PagesReceived']}/{s['LastPageNumber'] or '?'}", s["RowsReceived"], s["RowsInserted"],
            s["RowsUpdated"], s["RowsSkipped"], s["RowsRejected"], when(s["SinceDate"]), when(s["StartedAt"]))))
    out.print(table)
    if session_id is not None:
        s = sessions[0]
        if s["ErrorMessage"]:
            out.print(f"error: {s['ErrorMessage']}", markup=False)
        if s["SupersededBy"]:
            out.print(f"superseded by {s['SupersededBy']}", markup=False)
        pages = Table("page", "received", "staged", "rejected", "last", "received at", title="pages")
        for p in s["Pages"]:
            pages.add_row(str(p["PageNumber"]), str(p["RowsReceived"]), str(p["RowsStaged"]), str(p["RowsRejected"]),
                          "yes" if p["IsLastPage"] else "", str(p["ReceivedAt"]))
        out.print(pages)
        for r in s["Rejects"]:
            out.print(f"page {r['PageNumber']} row {r['RowNumber']}: {r['Reason']}", markup=False)
