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
from .engines import SUPPORTED
from .environments import load_environments, mask, parse_url, refuse_literal_password
from .errors import DbToolsError
from .procs import ProcedureValidationError

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
                # Every problem the procedure found, one per line: they were raised together.
                for line in text.splitlines():
                    err.print(f"dbtools: error: {line}", markup=False)
            else:
                err.print(f"dbtools: error: {text.splitlines()[0]}", markup=False)
            ctx.exit(1)


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
def downgrade(env, url, revision, sql, start):
    """Downgrade the job database; drops the package's procedures first.

    Procedures belong to the head revision, so any downgrade drops them; upgrading to head
    again redeploys them.
    """
    _report(commands.downgrade(env, url, revision=revision, sql=sql, start=start))


@cli.command()
@click.option("--engine", "engine", type=click.Choice(SUPPORTED), required=True,
              help="Engine whose procedures to render.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory to write one <object>.sql per procedure into; default: print to stdout.")
def render(engine, out_dir):
    """Render the procedures of one engine from their Jinja2 templates."""
    if out_dir is None:
        from .render import render_objects

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


def _print_step(step: dict) -> None:
    if step["step_number"] == 0 and step["status"] == "Completed":
        out.print(f"  {step['table_name']}: window [{step['window_start']}, {step['window_end']})")
    elif step["status"] == "Failed":
        out.print(f"  {step['table_name']}: step {step['step_number']} {step['step_name']} batch "
                  f"{step['batch_number']} FAILED: {step['error']}", markup=False)
    elif step["rows_processed"]:
        out.print(f"  {step['table_name']}: step {step['step_number']} {step['step_name']} batch "
                  f"{step['batch_number']}: {step['rows_processed']} row(s), {step['total_rows']} so far")


def _print_run(result: dict, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(result, default=str) + "\n")
        return
    table = Table("table", "window start", "window end", "rows", "status", title=f"Run {result['run_id'] or '(plan)'}")
    for entry in result["tables"]:
        table.add_row(entry["table"], str(entry["window_start"]), str(entry["window_end"]), str(entry["rows"]),
                      entry["status"] if entry["error"] is None else f"{entry['status']}: {entry['error']}")
    out.print(table)
    steps = Table("table", "step", "name", "inserted", "updated", "deleted",
                  title="Per step: what the run would do" if result["run_id"] is None else "Per step")
    for entry in result["tables"]:
        for step in entry.get("steps", ()):
            steps.add_row(entry["table"], str(step["step"]), step["name"] + (" (back-fill)" if step["step"] == 2 else ""),
                          str(step["inserted"]), str(step["updated"]), str(step["deleted"]))
    if steps.rows:
        out.print(steps)
    out.print(f"RunId: {result['run_id']}" if result["run_id"] else "Plan only: nothing was changed.")
    out.print(f"Status: {result['status']}")


def _exit_for(result: dict) -> None:
    if result["status"] not in ("Succeeded", "Planned"):
        sys.exit(1)


def _announce(run_id) -> None:
    """The RunId as soon as the run starts (stderr: stdout may be one JSON object)."""
    err.print(f"RunId: {run_id} (if it stops, continue it with: dbtools resume {run_id})", markup=False)


def _run_and_report(as_json: bool, **kwargs) -> None:
    try:
        result = commands.run(on_step=None if as_json else _print_step, on_start=_announce, **kwargs)
    except commands.RunInterrupted as exc:
        err.print(f"dbtools: {exc}", markup=False)
        sys.exit(130)
    _print_run(result, as_json)
    _exit_for(result)


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
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: run_id, status, tables.")
def run_command(env, url, mode, table, batch_size, max_dop, business_unit, sync_type, plan, as_json):
    """Run delta loads through usp_BlobDelta_RunOperator and report the RunId.

    Prints the RunId as soon as the run starts, progress per table and batch while the engine
    works, then a per-table and per-step summary; exits 0 when the run Succeeded (or the plan was
    made), 1 otherwise. A dropped connection or deadlock is retried as a resume of the same run.
    Ctrl-C cancels the batch in flight, prints the RunId and the command that resumes it, and
    exits 130.
    """
    _run_and_report(as_json, env=env, url=url, mode=mode, table=table, batch_size=batch_size, max_dop=max_dop,
                    business_unit=business_unit, sync_type=sync_type, plan=plan)


@cli.command()
@with_target
@click.argument("run_id", type=click.UUID)
@click.option("--json", "as_json", is_flag=True, help="Print the run, its tables and every step as JSON.")
def status(env, url, run_id, as_json):
    """Show a run: its status, per-table windows and rows, and its steps."""
    result = commands.status(env, url, run_id=run_id)
    if as_json:
        sys.stdout.write(json.dumps(result, default=str) + "\n")
        return
    _print_run(result, False)
    steps = Table("table", "step", "name", "batch", "rows", "total", "inserted", "updated", "deleted", "moved",
                  "status", "error", title="Batches")
    for s in result["steps"]:
        steps.add_row(s["table_name"], str(s["step_number"]), s["step_name"], str(s["batch_number"]),
                      str(s["rows_processed"]), str(s["total_rows"]),
                      *(("" if s[k] is None else str(s[k])) for k in ("rows_inserted", "rows_updated", "rows_deleted",
                                                                       "rows_moved")),
                      s["status"], s["error"] or "")
    out.print(steps)


@cli.command()
@with_target
@click.argument("run_id", type=click.UUID)
@click.option("--wait", is_flag=True,
              help="When another session still executes the run (its client was killed, say), wait for it "
                   "instead of failing; a run it finishes meanwhile is reported as it ended.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: run_id, status, tables.")
def resume(env, url, run_id, wait, as_json):
    """Continue an interrupted or failed run from its last completed batch, with its own windows.

    A run executes in one server session at a time: while another session still works it, resume
    fails with a message that says so, or waits with --wait.
    """
    _run_and_report(as_json, env=env, url=url, mode="AllTables", resume=run_id, wait=wait)


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
@click.argument("source", type=click.File("r", encoding="utf-8"), metavar="FILE.jsonl|-")
def ingest(env, url, entity, path, batch_size, as_json, source):
    """Upsert JSON Lines into an entity and print what happened to every row.

    Each line is one JSON object keyed by the entity's columns (optionally ExpectedRowVersion).
    Prints received = inserted + updated + skipped + conflicted + rejected, and the rejected
    lines with their reasons (all of them are kept in the entity's reject table). Exits 0 when
    every row was accounted for, including rejected ones.
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    from .ingest import ingest as run_ingest

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
    if as_json:
        sys.stdout.write(json.dumps(result.as_dict()) + "\n")
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
