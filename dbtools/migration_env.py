"""What ``migrations/env.py`` does, for ``dbtools migrate`` and plain ``alembic`` alike.

1. Find the target: ``config.attributes['dbtools.target']`` (set by :mod:`dbtools.commands`)
   or ``-x env=NAME`` / ``-x url=URL`` on the alembic command line.
2. Bootstrap the job DB before the version table can exist: on SQL Server
   ``CREATE DATABASE [BlobDeltaJobs]`` when missing (outside any transaction), then connect
   to it; on PostgreSQL ``CREATE SCHEMA "BlobDeltaJobs"`` in the connected database. The
   version table lives in the job DB.
3. Run the revisions in one transaction, then, still inside it, deploy or drop the
   repeatable objects (see :mod:`dbtools.repeatable`) and, after a deployment, renew the
   engine's signatures and grants (see :mod:`dbtools.privileges`).

Only ``upgrade`` and ``downgrade`` deploy, and only they and ``stamp`` bootstrap. The read-only
commands (``current``, ``history -i``, ``check``, ...) run against the job DB as it is, and a
server without one reads as a database at base: they create, deploy and grant nothing.

Offline (``--sql``) the same steps are written as a script. For SQL Server it is separated by
``GO`` for sqlcmd/SSMS: the transaction's first batch is closed right after
``BEGIN TRANSACTION`` so that no CREATE PROCEDURE ever shares a batch, and every procedure is
preceded by a batch that sets ``QUOTED_IDENTIFIER`` and ``ANSI_NULLS`` ON.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from logging.config import fileConfig

import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy.pool import NullPool

from . import mssql_script
from .engines import DEPLOYMENT_LOG, JOB_DATABASE, EngineInfo
from .environments import Target, connect, create_engine, offline_target, resolve_target
from .privileges import apply_engine_access
from .repeatable import DeployResult, deploy_all, drop_all, sql_text

log = logging.getLogger("dbtools.migrate")

#: The revision that creates the deployment log; below it there is nothing to deploy into.
DEPLOYMENT_LOG_REVISION = "0002"
#: Alembic commands (by the function each hands its environment) that deploy the package's
#: procedures and grants when they end at head; and those that may create the job DB.
DEPLOYING_COMMANDS = frozenset({"upgrade", "downgrade"})
WRITING_COMMANDS = DEPLOYING_COMMANDS | {"do_stamp"}


def command_name(context) -> str:
    """The alembic command running this environment: the name of the function it passed in
    (``upgrade``, ``downgrade``, ``display_version`` for ``current``, ``do_stamp``...)."""
    environment = getattr(context, "_proxy", None) or context  # alembic.context proxies the instance
    fn = getattr(environment, "context_opts", {}).get("fn")
    return getattr(fn, "__name__", "")


@dataclass
class Outcome:
    """What one migration run did; left in ``config.attributes['dbtools.outcome']``."""

    target: str
    engine: str
    offline: bool
    steps: list[tuple[str, str, bool]] = field(default_factory=list)  # (from, to, is_upgrade)
    at_head: bool = False
    objects: list[DeployResult] = field(default_factory=list)
    note: str = ""


def run(context) -> None:
    config = context.config
    if config.config_file_name is not None and "dbtools.target" not in config.attributes:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    x = context.get_x_argument(as_dictionary=True)
    target: Target | None = config.attributes.get("dbtools.target")
    if context.is_offline_mode():
        _run_offline(context, target or offline_target(x.get("env"), x.get("url")))
    elif target is not None:
        _run_online(context, target)
    else:
        with resolve_target(x.get("env"), x.get("url")) as resolved:
            _run_online(context, resolved)


def _tracker(outcome: Outcome):
    def on_apply(*, ctx, step, heads, run_args) -> None:
        outcome.steps.append((
            ",".join(step.source_revision_ids) or "base",
            ",".join(step.destination_revision_ids) or "base",
            step.is_upgrade,
        ))
    return on_apply


def _run_offline(context, target: Target) -> None:
    engine = target.engine
    outcome = Outcome(target.masked, engine.name, offline=True)
    context.config.attributes["dbtools.outcome"] = outcome
    context.configure(
        url=target.url,
        # deprecate_large_types: without a server to ask, SQLAlchemy would write NTEXT.
        dialect_opts={"paramstyle": "named", "deprecate_large_types": True},
        literal_binds=True,
        transactional_ddl=True,
        version_table_schema=engine.job_schema,
        on_version_apply=[_tracker(outcome)],
    )
    if engine.name == "mssql":
        context.execute(sql_text(
            "SET QUOTED_IDENTIFIER ON;\nSET ANSI_NULLS ON;\nSET XACT_ABORT ON;\n" + mssql_script.START
        ))
        context.execute(sql_text(
            f"IF DB_ID(N'{JOB_DATABASE}') IS NULL\n    CREATE DATABASE {engine.quote(JOB_DATABASE)}"
        ))
        context.execute(sql_text(mssql_script.guard(None)))
        context.execute(sql_text(f"USE {engine.quote(JOB_DATABASE)}"))
        context.execute(sql_text(mssql_script.guard(f"DB_NAME() <> N'{JOB_DATABASE}'")))
    else:
        context.execute(sql_text(f"CREATE SCHEMA IF NOT EXISTS {engine.quote(JOB_DATABASE)}"))
    with context.begin_transaction():
        if engine.name == "mssql":
            # Closes the BEGIN TRANSACTION batch (alembic writes no GO after it).
            context.execute(sql_text("SET XACT_ABORT ON"))
        context.run_migrations()
        destination = context.get_revision_argument()
        script = ScriptDirectory.from_config(context.config)
        went_down = any(not up for _f, _t, up in outcome.steps)
        heads = set(script.get_heads())
        resolved = {r.revision for r in script.get_revisions(destination) if r is not None}
        outcome.at_head = not went_down and resolved == heads
        log_exists = _offline_log_exists(script, resolved)
        if command_name(context) in DEPLOYING_COMMANDS:
            _finish(context.get_context(), engine, outcome, went_down, log_exists)
        else:
            outcome.note = f"{command_name(context) or 'this command'} deploys nothing"


def _offline_log_exists(script: ScriptDirectory, destination: set[str]) -> bool:
    for rev in destination:
        for ancestor in script.iterate_revisions(rev, "base"):
            if ancestor.revision == DEPLOYMENT_LOG_REVISION:
                return True
    return False


def _run_online(context, target: Target) -> None:
    engine = target.engine
    outcome = Outcome(target.masked, engine.name, offline=False)
    context.config.attributes["dbtools.outcome"] = outcome
    command = command_name(context)
    url = _bootstrap(target) if command in WRITING_COMMANDS else _existing_job_db(target)
    job_engine = create_engine(target, url, poolclass=NullPool)
    try:
        with connect(job_engine, target) as connection:
            context.configure(
                connection=connection,
                transactional_ddl=True,
                version_table_schema=engine.job_schema,
                on_version_apply=[_tracker(outcome)],
            )
            with context.begin_transaction():
                context.run_migrations()
                mc = context.get_context()
                script = ScriptDirectory.from_config(context.config)
                went_down = any(not up for _f, _t, up in outcome.steps)
                outcome.at_head = set(mc.get_current_heads()) == set(script.get_heads())
                log_exists = sa.inspect(connection).has_table(DEPLOYMENT_LOG, schema=engine.job_schema)
                if command in DEPLOYING_COMMANDS:
                    _finish(mc, engine, outcome, went_down, log_exists)
                else:
                    outcome.note = f"{command or 'this command'} is read-only: nothing was deployed"
    finally:
        job_engine.dispose()


def _finish(mc, engine: EngineInfo, outcome: Outcome, went_down: bool, log_exists: bool) -> None:
    # deploy_all and drop_all record what they did in the outcome themselves.
    if went_down:
        if log_exists:
            drop_all(mc, engine)
        outcome.note = "downgraded: the package's procedures belong to its head revision and were dropped"
    elif outcome.at_head and log_exists:
        deploy_all(mc, engine)
        # Signatures and EXECUTE grants follow the procedures (dbtools.privileges).
        apply_engine_access(mc, engine)
    else:
        outcome.note = "below head: procedures are deployed only at the package's head revision"
    for obj in outcome.objects:
        log.info("%s %s %s", obj.action.lower(), obj.kind.lower(), obj.name)
    if outcome.note:
        log.info("%s", outcome.note)


def _existing_job_db(target: Target) -> sa.URL:
    """The URL a read-only command reads: the job DB when it exists, else the server's own
    database (where no version table is found: the job DB reads as being at base)."""
    if target.engine.name != "mssql":
        return target.url  # the job schema lives in the connected database; a missing one is empty
    server = create_engine(target, poolclass=NullPool)
    try:
        with connect(server, target) as conn:
            exists = conn.exec_driver_sql("SELECT DB_ID(?)", (JOB_DATABASE,)).scalar() is not None
    finally:
        server.dispose()
    return target.url.set(database=JOB_DATABASE) if exists else target.url


def _bootstrap(target: Target) -> sa.URL:
    """Create the job DB (SQL Server) or schema (PostgreSQL); return the URL to migrate on."""
    engine = target.engine
    server = create_engine(target, poolclass=NullPool)
    try:
        if engine.name == "mssql":
            with connect(server.execution_options(isolation_level="AUTOCOMMIT"), target) as conn:
                if conn.exec_driver_sql("SELECT DB_ID(?)", (JOB_DATABASE,)).scalar() is None:
                    log.info("creating database %s", JOB_DATABASE)
                    conn.exec_driver_sql(f"CREATE DATABASE {engine.quote(JOB_DATABASE)}")
            return target.url.set(database=JOB_DATABASE)
        with connect(server, target) as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {engine.quote(JOB_DATABASE)}")
            conn.commit()
        return target.url
    finally:
        server.dispose()
