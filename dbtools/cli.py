"""Command line: a thin layer over :mod:`dbtools.commands`.

Every failure dbtools expects (bad option, unknown environment, unreachable server, failed
migration) is shown as one line on stderr with a non-zero exit; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from . import __version__, commands
from .engines import SUPPORTED
from .environments import load_environments, mask
from .errors import DbToolsError

# Piped or logged output is never cut to 80 columns: names and checksums must stay whole.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 400)

target_options = [
    click.option("--env", "env", metavar="NAME",
                 help="Environment from environments.toml (see `dbtools envs`)."),
    click.option("--url", "url", metavar="URL",
                 help="SQLAlchemy URL for ad-hoc use; overrides --env. Quote it in the shell."),
]


def with_target(func):
    for option in reversed(target_options):
        func = option(func)
    return func


class DbToolsGroup(click.Group):
    """Turns expected failures into one-line messages."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (DbToolsError, sa.exc.SQLAlchemyError) as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            err.print(f"dbtools: error: {message}", markup=False)
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
                   "connecting. SQL Server scripts are GO-separated for sqlcmd -b -I or SSMS; "
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
