"""What ``migrations/env.py`` does, for ``dbtools migrate`` and plain ``alembic`` alike.

1. Find the target: ``config.attributes['dbtools.target']`` (set by :mod:`dbtools.commands`)
   or ``-x env=NAME`` / ``-x url=URL`` on the alembic command line.
2. Bootstrap the job DB before the version table can exist: on SQL Server
   ``CREATE DATABASE [BlobDeltaJobs]`` when missing (outside any transaction), then connect
   to it; on PostgreSQL ``CREATE SCHEMA "BlobDeltaJobs"`` in the connected database. The
   version table lives in the job DB.
3. Run the revisions in one transaction, then, still inside it, deploy or drop the
   repeatable objects (see :mod:`dbtools.deploy.repeatable`) and, after a deployment, renew the
   engine's signatures and grants (see :mod:`dbtools.deploy.privileges`).

Only ``upgrade`` and ``downgrade`` deploy, and only they and ``stamp`` bootstrap. The read-only
commands (``current``, ``history -i``, ``check``, ...) run against the job DB as it is, and a
server without one reads as a database at base: they create, deploy and grant nothing.

Offline (``--sql``) the same steps are written as a script. For SQL Server it is separated by
``GO`` for sqlcmd/SSMS: the transaction's first batch is closed right after
``BEGIN TRANSACTION`` so that no CREATE PROCEDURE ever shares a batch, and every procedure is
preceded by a batch that sets ``QUOTED_IDENTIFIER`` and ``ANSI_NULLS`` ON.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from logging.config import fileConfig

import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy.pool import NullPool

from ..db.engines import DEPLOYMENT_LOG, JOB_DATABASE, EngineInfo
from ..db.environments import Target, connect, create_engine, offline_target, resolve_target
from ..errors import DeploymentError
from . import ddl, mssql_script  # noqa: F401 - ddl registers compile hooks
from .privileges import apply_engine_access
from .repeatable import DeployResult, deploy_all, drop_all, log_revision, sql_text

log = logging.getLogger("dbtools.migrate")

#: The revision that creates the deployment log; below it there is nothing to deploy into.
DEPLOYMENT_LOG_REVISION = "0002"
#: Alembic commands (by the function each hands its environment) that deploy the package's
#: procedures and grants when they end at head; and those that may create the job DB.
DEPLOYING_COMMANDS = frozenset({"upgrade", "downgrade"})
WRITING_COMMANDS = DEPLOYING_COMMANDS | {"do_stamp"}


#: One migration at a time: an exclusive lock taken in the migration transaction (sp_getapplock
#: in the job database, owner Transaction; pg_advisory_xact_lock in the connected database).
MIGRATION_LOCK = "dbtools.migrate"
#: Seconds a migration waits for another one's lock before it fails naming the holder.
LOCK_TIMEOUT_VARIABLE = "DBTOOLS_MIGRATE_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 60.0
#: The longest wait sp_getapplock takes (its @LockTimeout is an int of milliseconds).
MAX_LOCK_TIMEOUT = 2_000_000.0


def lock_timeout() -> float:
    """The migration lock's wait in seconds (``DBTOOLS_MIGRATE_LOCK_TIMEOUT``, default 60)."""
    raw = os.environ.get(LOCK_TIMEOUT_VARIABLE, "")
    try:
        value = float(raw) if raw else DEFAULT_LOCK_TIMEOUT
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_LOCK_TIMEOUT:
        raise DeploymentError(f"{LOCK_TIMEOUT_VARIABLE}={raw!r}: expected a number of seconds from 0 to "
                              f"{MAX_LOCK_TIMEOUT:,.0f}")
    return value


_PG_LOCK_KEY = f"pg_catalog.hashtextextended('{MIGRATION_LOCK}', 0)"
_PG_HOLDER = f"""
SELECT a.pid, a.usename, a.application_name, host(a.client_addr), a.xact_start
FROM pg_catalog.pg_locks AS l
JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database())
  AND l.classid = (({_PG_LOCK_KEY} >> 32) & 4294967295)::oid AND l.objid = ({_PG_LOCK_KEY} & 4294967295)::oid
LIMIT 1"""
_MSSQL_HOLDER = f"""
SELECT TOP (1) l.request_session_id, s.login_name, s.program_name, s.host_name, t.transaction_begin_time
FROM sys.dm_tran_locks AS l
JOIN sys.dm_exec_sessions AS s ON s.session_id = l.request_session_id
LEFT JOIN sys.dm_tran_session_transactions AS st ON st.session_id = l.request_session_id
LEFT JOIN sys.dm_tran_active_transactions AS t ON t.transaction_id = st.transaction_id
WHERE l.resource_type = N'APPLICATION' AND l.resource_database_id = DB_ID() AND l.request_status = N'GRANT'
  AND l.resource_description LIKE N'%[[]{MIGRATION_LOCK}]%'"""


def mssql_lock(timeout: float) -> str:
    """The online lock on SQL Server, in the migration's own transaction, made one level deep.

    pyodbc's manual commit runs the session with IMPLICIT_TRANSACTIONS ON, and neither SET, DECLARE,
    EXEC nor a table-less SELECT starts a transaction: without one a Transaction-owned applock is
    refused (-999), so it is opened here. Under IMPLICIT_TRANSACTIONS ON an explicit BEGIN
    TRANSACTION opens two nested levels (SET IMPLICIT_TRANSACTIONS docs), and the driver's COMMIT or
    ROLLBACK at the end is one request: so the extra level this batch opened is committed at once
    (a COMMIT above level 1 commits nothing, it only decrements @@TRANCOUNT; the applock belongs to
    the transaction, not to a level). @@TRANCOUNT comes back with the result, and the lock is not
    requested unless it is exactly 1.

    The batch takes no parameters, so the driver sends it as a plain batch (as SQLAlchemy sends its
    own ``IF @@TRANCOUNT = 0 BEGIN TRANSACTION``), not inside sp_executesql or sp_prepexec, whose
    frame could report a changed @@TRANCOUNT (Msg 266).
    """
    return (
        "SET NOCOUNT ON;\n"
        "DECLARE @TranCountBefore int = @@TRANCOUNT, @Result int = NULL;\n"
        "IF @TranCountBefore = 0\n"
        "BEGIN\n"
        "    BEGIN TRANSACTION;\n"
        "    IF @@TRANCOUNT > 1\n"
        "        COMMIT TRANSACTION;\n"
        "END;\n"
        "IF @@TRANCOUNT = 1\n"
        f"    EXEC @Result = sys.sp_getapplock @Resource = N'{MIGRATION_LOCK}', @LockMode = N'Exclusive', "
        f"@LockOwner = N'Transaction',\n        @LockTimeout = {int(timeout * 1000)}, @DbPrincipal = N'public';\n"
        "SELECT @Result, @@TRANCOUNT;"
    )


def take_migration_lock(conn: sa.Connection, engine: EngineInfo, where: str, timeout: float) -> None:
    """Take the migration lock in ``conn``'s open transaction, waiting at most ``timeout`` seconds.

    Two ``dbtools migrate`` (or ``alembic upgrade``) runs at once would otherwise collide on the
    catalog (a raw ``pg_type_typname_nsp_index`` violation, say). The second one waits; when the
    wait is over it fails with a DeploymentError naming the session that holds the lock.
    """
    if engine.name == "mssql":
        result, trancount = conn.exec_driver_sql(mssql_lock(timeout)).one()
        if trancount != 1:
            # The driver's one COMMIT would then leave a level open, and closing the connection
            # would roll the whole migration back after reporting success.
            raise DeploymentError(f"the migration transaction on {where} is {trancount} levels deep, not one "
                                  "(@@TRANCOUNT); nothing was changed")
        if result < -1:  # -2 cancelled, -3 deadlock victim, -999 a parameter or call error
            raise DeploymentError(f"the migration lock could not be taken on {where}: sp_getapplock returned {result}")
        got = result >= 0
    else:
        deadline = time.monotonic() + timeout
        while not (got := conn.exec_driver_sql(f"SELECT pg_catalog.pg_try_advisory_xact_lock({_PG_LOCK_KEY})").scalar()):
            if time.monotonic() >= deadline:
                break
            time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
    if got:
        return
    raise DeploymentError(f"another migration holds the migration lock on {where}: {_holder(conn, engine)}; "
                          f"waited {timeout:g} s ({LOCK_TIMEOUT_VARIABLE}). Let it finish, then migrate again.")


def offline_lock(engine: EngineInfo, timeout: float) -> str:
    """The migration lock as an offline script takes it, first thing in its transaction."""
    if engine.name == "mssql":
        return (
            "DECLARE @Lock int;\n"
            f"EXEC @Lock = sys.sp_getapplock @Resource = N'{MIGRATION_LOCK}', @LockMode = N'Exclusive', "
            f"@LockOwner = N'Transaction', @LockTimeout = {int(timeout * 1000)}, @DbPrincipal = N'public';\n"
            "IF @Lock < 0\n"
            f"    THROW 50021, N'dbtools: another migration holds the migration lock (sp_getapplock {MIGRATION_LOCK}); "
            f"waited {timeout:g} s. Let it finish, then run this script again in a new session.', 1"
        )
    return (
        f"-- One migration at a time: wait at most {timeout:g} s for another one's lock (else: lock timeout).\n"
        f"SET LOCAL lock_timeout = '{int(timeout * 1000)}ms';\n"
        f"SELECT pg_catalog.pg_advisory_xact_lock({_PG_LOCK_KEY});\n"
        "SET LOCAL lock_timeout TO DEFAULT"
    )


def _holder(conn: sa.Connection, engine: EngineInfo) -> str:
    """The session holding the migration lock, as far as this login may see it."""
    try:
        with conn.begin_nested():
            row = conn.exec_driver_sql(_MSSQL_HOLDER if engine.name == "mssql" else _PG_HOLDER).first()
    except sa.exc.DBAPIError:
        row = None  # no right to see other sessions (VIEW SERVER STATE / pg_read_all_stats)
    if row is None:
        return "a session this login cannot see"
    session, user, program, host, since = row
    kind = "session" if engine.name == "mssql" else "PID"
    details = ", ".join(part for part in (
        f"login {user}" if user else "", f"program {program!r}" if program else "",
        f"from {host}" if host else "", f"transaction since {since:%Y-%m-%d %H:%M:%S}" if since else "") if part)
    return f"{kind} {session}" + (f" ({details})" if details else "")


#: The oldest PostgreSQL the package runs on: its upsert validation uses IS JSON (PostgreSQL 16).
MIN_POSTGRESQL = (16, 0)


def require_server_version(engine: EngineInfo, version: tuple[int, ...] | None, where: str) -> None:
    """Refuse a PostgreSQL server older than :data:`MIN_POSTGRESQL`, before anything is written."""
    if engine.name != "postgresql" or version is None or tuple(version[:2]) >= MIN_POSTGRESQL:
        return
    shown = ".".join(str(v) for v in version[:2])
    raise DeploymentError(f"{where} runs PostgreSQL {shown}; dbtools needs PostgreSQL {MIN_POSTGRESQL[0]} or later "
                          "(its upsert validation uses IS JSON). Nothing was changed.")


def _pg_version_check() -> str:
    """The offline PostgreSQL script's first statement: the same refusal, under psql."""
    number = MIN_POSTGRESQL[0] * 10000 + MIN_POSTGRESQL[1]
    return (
        "DO $dbtools$\n"
        "BEGIN\n"
        f"    IF pg_catalog.current_setting('server_version_num')::integer < {number} THEN\n"
        "        RAISE EXCEPTION 'dbtools: this server runs PostgreSQL %; dbtools needs PostgreSQL "
        f"{MIN_POSTGRESQL[0]} or later (its upsert validation uses IS JSON). Nothing was changed.',\n"
        "            pg_catalog.current_setting('server_version');\n"
        "    END IF;\n"
        "END\n"
        "$dbtools$"
    )


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
    script = ScriptDirectory.from_config(context.config)
    start = _revision_id(script, context.get_starting_revision_argument())
    destination_id = _revision_id(script, context.get_revision_argument())
    context.configure(
        url=target.url,
        # deprecate_large_types: without a server to ask, SQLAlchemy would write NTEXT.
        dialect_opts={"paramstyle": "named", "deprecate_large_types": True},
        literal_binds=True,
        transactional_ddl=True,
        version_table_schema=engine.job_schema,
        on_version_apply=[_tracker(outcome)],
    )
    context.get_context().impl.static_output(offline_header(engine, command_name(context), start, destination_id))
    if engine.name == "mssql":
        context.execute(sql_text(
            # ARITHABORT with the others a filtered index needs (sqlcmd leaves it OFF; ANSI_WARNINGS
            # implies it only at compatibility level 90 and above).
            "SET QUOTED_IDENTIFIER ON;\nSET ANSI_NULLS ON;\nSET ARITHABORT ON;\nSET XACT_ABORT ON;\n" + mssql_script.START
        ))
        context.execute(sql_text(mssql_script.revision_check(JOB_DATABASE, engine.job_schema, start)))
        context.execute(sql_text(mssql_script.guard(None)))  # an error reading the version stops it too
        context.execute(sql_text(
            f"IF DB_ID(N'{JOB_DATABASE}') IS NULL\n    CREATE DATABASE {engine.quote(JOB_DATABASE)}"
        ))
        context.execute(sql_text(mssql_script.guard(None)))
        context.execute(sql_text(f"USE {engine.quote(JOB_DATABASE)}"))
        context.execute(sql_text(mssql_script.guard(f"DB_NAME() <> N'{JOB_DATABASE}'")))
    else:
        context.execute(sql_text(_pg_version_check()))
        context.execute(sql_text(_pg_revision_check(engine, start)))
        context.execute(sql_text(f"CREATE SCHEMA IF NOT EXISTS {engine.quote(JOB_DATABASE)}"))
    with context.begin_transaction():
        if engine.name == "mssql":
            # Closes the BEGIN TRANSACTION batch (alembic writes no GO after it).
            context.execute(sql_text("SET XACT_ABORT ON"))
        if command_name(context) in WRITING_COMMANDS:
            context.execute(sql_text(offline_lock(engine, lock_timeout())))
            # Checked again under the lock: another migration may have run while this one waited.
            context.execute(sql_text(mssql_script.revision_recheck(engine.job_schema, start) if engine.name == "mssql"
                                     else _pg_revision_check(engine, start, recheck=True)))
        context.run_migrations()
        destination = context.get_revision_argument()
        went_down = any(not up for _f, _t, up in outcome.steps)
        heads = set(script.get_heads())
        resolved = {r.revision for r in script.get_revisions(destination) if r is not None}
        outcome.at_head = not went_down and resolved == heads
        log_exists = _offline_log_exists(script, resolved)
        if command_name(context) in DEPLOYING_COMMANDS:
            _finish(context.get_context(), engine, outcome, went_down, log_exists)
        else:
            outcome.note = f"{command_name(context) or 'this command'} deploys nothing"


def _revision_id(script: ScriptDirectory, argument: str | None) -> str | None:
    """A revision argument (``head``, ``0002``, ``base``, None) as the id alembic_version holds."""
    if argument in (None, "base"):
        return None
    revisions = [r for r in script.get_revisions(argument) if r is not None]
    return ", ".join(sorted(r.revision for r in revisions)) or None  # as the scripts' checks list them


def offline_header(engine: EngineInfo, command: str, start: str | None, destination: str | None) -> str:
    """The comment an offline script starts with: what it is, for whom, from where to where."""
    from datetime import datetime, timezone

    from .. import __version__

    verb = {"upgrade": "upgrade", "downgrade": "downgrade", "do_stamp": "stamp"}.get(command, command)
    run = ("sqlcmd -b -i FILE (or SSMS)" if engine.name == "mssql"
           else "psql -v ON_ERROR_STOP=1 -f FILE")
    return (
        f"-- dbtools {__version__} offline migration script ({verb})\n"
        f"-- engine: {'SQL Server' if engine.name == 'mssql' else 'PostgreSQL'}\n"
        f"-- from revision: {start or 'base (empty database)'}\n"
        f"-- to revision: {destination or 'base'}\n"
        f"-- generated: {datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ}\n"
        f"-- It first checks that the database is at the from revision and stops, changing nothing, otherwise.\n"
        f"-- Run it with: {run}\n"
    )


def _pg_revision_check(engine: EngineInfo, start: str | None, *, recheck: bool = False) -> str:
    """A DO block that stops a psql script unless the job schema is at ``start`` (None: no revision);
    ``recheck``: the same under the migration lock, inside the transaction."""
    version = f"{engine.quote(engine.job_schema)}.alembic_version"
    expected = "NULL" if start is None else "'" + start.replace("'", "''") + "'"
    shown = "'base (no revision)'" if start is None else expected
    return (
        "DO $dbtools$\n"
        "DECLARE v text;\n"
        "BEGIN\n"
        f"    IF pg_catalog.to_regclass('{version}') IS NOT NULL THEN\n"
        f"        SELECT string_agg(version_num, ', ' ORDER BY version_num) INTO v FROM {version};\n"
        "    END IF;\n"
        f"    IF v IS DISTINCT FROM {expected} THEN\n"
        + ("        RAISE EXCEPTION 'dbtools: the database is no longer at revision % (it is at %: another migration '\n"
           "            'ran while this script waited for the migration lock); nothing was changed.',\n"
           if recheck else
           "        RAISE EXCEPTION 'dbtools: this script migrates from revision %, but the database is at %; nothing was '\n"
           "            'changed. Generate the script with --from set to the database''s revision.',\n")
        + f"            {shown}, coalesce(v, 'base (no revision)');\n"
        "    END IF;\n"
        "END\n"
        "$dbtools$"
    )


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
    if command in WRITING_COMMANDS:
        _check_server(target)
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
                if command in WRITING_COMMANDS:
                    take_migration_lock(connection, engine, target.masked, lock_timeout())
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
    if log_exists:
        # Who applied or undid which revision, and when (dbtools history); a revision applied
        # before the log existed (0001, in the run that creates it) is recorded with the rest.
        script = ScriptDirectory.from_config(mc.config)
        for source, destination, up in outcome.steps:
            revision = destination if up else source
            if revision == "base" or (not up and revision <= DEPLOYMENT_LOG_REVISION):
                continue  # undoing 0002 or below removes the log itself
            path = script.get_revision(revision).path
            digest = hashlib.sha256(Path(path).read_bytes().replace(b"\r\n", b"\n")).hexdigest()
            log_revision(mc, engine, revision, "Deployed" if up else "Dropped", digest)
    # deploy_all and drop_all record what they did in the outcome themselves.
    if went_down:
        if log_exists:
            drop_all(mc, engine)
        outcome.note = "downgraded: the package's procedures belong to its head revision and were dropped"
    elif outcome.at_head and log_exists:
        deploy_all(mc, engine)
        # Signatures and EXECUTE grants follow the procedures (dbtools.deploy.privileges).
        apply_engine_access(mc, engine)
    else:
        outcome.note = "below head: procedures are deployed only at the package's head revision"
    for obj in outcome.objects:
        log.info("%s %s %s", obj.action.lower(), obj.kind.lower(), obj.name)
    if outcome.note:
        log.info("%s", outcome.note)


def _check_server(target: Target) -> None:
    """What the package needs of the server, checked before the bootstrap writes anything."""
    if target.engine.name != "postgresql":
        return
    server = create_engine(target, poolclass=NullPool)
    try:
        with connect(server, target) as conn:
            require_server_version(target.engine, conn.dialect.server_version_info, target.masked)
    finally:
        server.dispose()


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
                    try:
                        conn.exec_driver_sql(f"CREATE DATABASE {engine.quote(JOB_DATABASE)}")
                    except sa.exc.DBAPIError:
                        # Msg 1801: a migration started at the same time created it first; the
                        # migration lock (in the job DB, taken next) puts the two in a row.
                        if conn.exec_driver_sql("SELECT DB_ID(?)", (JOB_DATABASE,)).scalar() is None:
                            raise
            return target.url.set(database=JOB_DATABASE)
        with connect(server, target) as conn:
            # Under the migration lock: two CREATE SCHEMA IF NOT EXISTS at once can both miss the
            # schema, and the second then fails on pg_namespace's unique index.
            take_migration_lock(conn, engine, target.masked, lock_timeout())
            conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {engine.quote(JOB_DATABASE)}")
            conn.commit()
        return target.url
    finally:
        server.dispose()
