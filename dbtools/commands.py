"""Library-first commands: plain functions the CLI (and tests) call.

Each function takes the target as ``env`` (a name from ``environments.toml``) or ``url``
(``url`` wins), does one thing and returns a value; printing is the CLI's job.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.pool import NullPool

from .db.engines import DEPLOYMENT_LOG, JOB_DATABASE, engine_for
from .db.environments import (Target, connect, create_engine, database_errors, job_engine, offline_target,
                              resolve_target)
from .delta import runs
from .deploy.migration_env import Outcome
from .deploy.render import write_rendered
from .deploy.repeatable import (REVISION, catalog_definitions, definitions_readable, edited, log_readable, log_table,
                                unreadable, unreadable_definition)
from .errors import ConfigurationError, DbToolsError, DeploymentError, first_line
from .paths import repo_root


def alembic_config(target: Target | None = None, stdout=None) -> Config:
    """The repository's Alembic config, optionally bound to a resolved target."""
    cfg = Config(str(repo_root() / "alembic.ini"), stdout=stdout)
    if target is not None:
        cfg.attributes["dbtools.target"] = target
    return cfg


def _run(func, target: Target, revision: str, *, sql: bool, buffer: io.StringIO | None) -> Outcome:
    cfg = alembic_config(target, stdout=buffer)
    if buffer is not None:
        cfg.output_buffer = buffer
    try:
        func(cfg, revision, sql=sql)
    except CommandError as exc:
        raise DeploymentError(f"alembic: {exc}") from exc
    except sa.exc.DBAPIError as exc:
        raise DeploymentError(f"migration failed on {target.masked}: {first_line(exc.orig)}") from exc
    return cfg.attributes["dbtools.outcome"]


@dataclass
class MigrateResult:
    outcome: Outcome
    script: str | None = None


def migrate(env: str | None = None, url: str | None = None, *, revision: str = "head",
            sql: bool = False, start: str | None = None) -> MigrateResult:
    """Upgrade the job database to ``revision`` and deploy procedures when that is head.

    With ``sql=True`` nothing is contacted: the complete script (schema changes and the
    rendered procedures) is returned instead, ``start:revision`` when ``start`` is given.
    """
    if sql:
        target = offline_target(env, url)
        if start:
            _check_order(start, revision, "--from", "--to", "upgrade")
        buffer = io.StringIO()
        spec = f"{start}:{revision}" if start else revision
        outcome = _run(command.upgrade, target, spec, sql=True, buffer=buffer)
        return MigrateResult(outcome, buffer.getvalue())
    if start:
        raise ConfigurationError("--from is only for offline scripts (--sql)")
    with resolve_target(env, url) as target:
        return MigrateResult(_run(command.upgrade, target, revision, sql=False, buffer=None))


def downgrade(env: str | None = None, url: str | None = None, *, revision: str,
              sql: bool = False, start: str | None = None) -> MigrateResult:
    """Downgrade the job database to ``revision`` (``base`` removes every object)."""
    if sql:
        if not start:
            raise ConfigurationError("an offline downgrade needs --from REV (the revision the database is at)")
        target = offline_target(env, url)
        _check_order(revision, start, "--to", "--from", "downgrade")
        buffer = io.StringIO()
        outcome = _run(command.downgrade, target, f"{start}:{revision}", sql=True, buffer=buffer)
        return MigrateResult(outcome, buffer.getvalue())
    with resolve_target(env, url) as target:
        return MigrateResult(_run(command.downgrade, target, revision, sql=False, buffer=None))


def _check_order(lower: str, upper: str, lower_option: str, upper_option: str, direction: str) -> None:
    """Refuse an offline range whose ``lower`` end is not ``upper`` or one of its ancestors
    (Alembic would write an empty script that migrates nothing)."""
    script = ScriptDirectory.from_config(alembic_config())

    def resolve(value: str, option: str) -> str | None:
        if value == "base":
            return None
        try:
            revisions = [r for r in script.get_revisions(value) if r is not None]
        except CommandError as exc:
            raise ConfigurationError(f"{option} {value}: {exc}") from exc
        if len(revisions) != 1:
            raise ConfigurationError(f"{option} {value}: expected one revision, got {len(revisions)}")
        return revisions[0].revision

    low, high = resolve(lower, lower_option), resolve(upper, upper_option)
    if low is None:
        return
    if high is None or low not in {r.revision for r in script.iterate_revisions(high, "base")}:
        way = ("from an older revision (--from) to a newer one (--to)" if direction == "upgrade"
               else "from a newer revision (--from) to an older one (--to)")
        order = ", ".join(r.revision for r in reversed(list(script.walk_revisions())))
        raise ConfigurationError(f"{lower_option} {lower} is later than {upper_option} {upper}: an offline {direction} "
                                 f"goes {way}; the revisions, oldest first: base, {order}")


@dataclass
class DowngradePreview:
    """What a downgrade would destroy: the revisions it undoes and the tables (with their rows)
    that live in the job database now, and the entities' tables wherever they are."""

    current: str | None
    target: str
    revisions: list[tuple[str, str]]      # (revision, the first line of its docstring), newest first
    tables: list[tuple[str, int, bool]]   # (table as the engine names it, rows, whether counted exactly)


#: PostgreSQL: a table of at most this many pages (10 MB) is counted exactly; a larger one is
#: estimated as the planner does (pg_class.reltuples per relpages, times its pages now).
EXACT_COUNT_PAGES = 1280


def _row_count(conn: sa.Connection, info, qualified: str, database: str | None = None) -> tuple[int, bool] | None:
    """(rows, exact) of a table, or None when it is not there. Nothing is scanned on SQL Server,
    nor on PostgreSQL beyond a small table: SQL Server's figure comes from sys.partitions (no scan,
    no lock; approximate while other transactions change the table), PostgreSQL's from the
    catalog unless the table is small enough to count."""
    if info.name == "mssql":
        partitions = f"{info.quote(database)}.sys.partitions" if database else "sys.partitions"
        rows = conn.exec_driver_sql(
            f"SELECT SUM(p.rows) FROM {partitions} AS p WHERE p.object_id = OBJECT_ID(?) AND p.index_id IN (0, 1)",
            (qualified,)).scalar()
        return None if rows is None else (int(rows), False)
    row = conn.exec_driver_sql(
        "SELECT c.reltuples, c.relpages, "
        "pg_catalog.pg_relation_size(c.oid) / pg_catalog.current_setting('block_size')::bigint "
        "FROM pg_catalog.pg_class AS c WHERE c.oid = pg_catalog.to_regclass(%(t)s)", {"t": qualified}).first()
    if row is None:
        return None
    tuples, analysed_pages, pages = row
    if pages <= EXACT_COUNT_PAGES or tuples < 0 or analysed_pages <= 0:
        return conn.exec_driver_sql(f"SELECT COUNT(*) FROM {qualified}").scalar(), True
    return round(tuples / analysed_pages * pages), False


def downgrade_preview(env: str | None = None, url: str | None = None, *, revision: str) -> DowngradePreview:
    """What ``downgrade --to revision`` would undo and which tables hold data now (nothing changes)."""
    from .upsert.specs import current_specs

    script = ScriptDirectory.from_config(alembic_config())
    with resolve_target(env, url) as target:
        info = target.engine
        if info.name == "mssql" and not _job_database_exists(target):
            return DowngradePreview(None, revision, [], [])
        engine = job_engine(target)
        try:
            with database_errors(target, "downgrade"), engine.connect() as conn:
                current = _current_revision(conn, info.job_schema)
                undone = []
                if current is not None:
                    stop = None if revision == "base" else revision
                    for rev in script.iterate_revisions(current, stop or "base"):
                        if rev.revision == stop:
                            continue
                        undone.append((rev.revision, (rev.doc or "").strip().splitlines()[0] if rev.doc else ""))
                inspector = sa.inspect(conn)
                names = [(info.job_schema, n) for n in sorted(inspector.get_table_names(schema=info.job_schema))]
                tables = []
                for schema, name in names:
                    qualified = f"{info.quote(schema)}.{info.quote(name)}"
                    counted = _row_count(conn, info, qualified)
                    if counted is not None:
                        tables.append((qualified, *counted))
                for spec in current_specs():
                    if spec.database is None:
                        continue  # in the job database: listed above
                    for name in spec.tables:
                        qualified = spec.table_object(info, name)
                        try:
                            with conn.begin_nested():
                                counted = _row_count(conn, info, qualified, spec.database)
                        except sa.exc.DBAPIError:
                            continue  # its database is not there (yet), or not open to this login
                        if counted is not None:
                            tables.append((qualified, *counted))
        finally:
            engine.dispose()
    return DowngradePreview(current, revision, undone, tables)


def _revision_log(conn: sa.Connection, info) -> dict[str, sa.Row]:
    """The latest log row of each revision (who applied or undid it, when)."""
    if not sa.inspect(conn).has_table(DEPLOYMENT_LOG, schema=info.job_schema):
        return {}
    table = log_table(info)
    latest = (sa.select(sa.func.max(table.c.DeploymentId)).where(table.c.ObjectType == REVISION)
              .group_by(table.c.ObjectName))
    rows = conn.execute(sa.select(table).where(table.c.DeploymentId.in_(latest))).all()
    return {r.ObjectName: r for r in rows}


def history(env: str | None = None, url: str | None = None) -> dict:
    """Every revision of the package, oldest first: applied or pending, and for an applied one who
    applied it and when (from the deployment log; revisions applied before this package version
    logged them show none)."""
    script = ScriptDirectory.from_config(alembic_config())
    with resolve_target(env, url) as target:
        info = target.engine
        current = None
        logged: dict[str, sa.Row] = {}
        if info.name != "mssql" or _job_database_exists(target):
            engine = job_engine(target)
            try:
                with database_errors(target, "history"), engine.connect() as conn:
                    current = _current_revision(conn, info.job_schema)
                    logged = _revision_log(conn, info)
            finally:
                engine.dispose()
    applied = {r.revision for r in script.iterate_revisions(current, "base")} if current else set()
    revisions = []
    for rev in reversed(list(script.walk_revisions())):
        row = logged.get(rev.revision)
        known = row is not None and row.Action == "Deployed" and rev.revision in applied
        revisions.append({
            "revision": rev.revision,
            "description": (rev.doc or "").strip().splitlines()[0] if rev.doc else "",
            "state": "current" if rev.revision == current else "applied" if rev.revision in applied else "pending",
            "applied_at": runs.iso(row.DeployedAt) if known else None,
            "applied_by": row.DeployedBy if known else None,
            "package_version": row.PackageVersion if known else None,
        })
    return {"target": target.masked, "current": current, "head": script.get_current_head(), "revisions": revisions}


def check(env: str | None = None, url: str | None = None) -> dict:
    """Drift between the job database and this package: pending revisions, and each procedure
    that is missing, not deployed at this version, edited by hand since (its definition differs
    from the text it was deployed with), or not part of the package.

    What this login may not read is listed apart, with the right it needs (``unverified``), and
    never counted as drift: on SQL Server a login without VIEW DEFINITION on the job schema sees
    NULL for a module it may execute and does not see the others at all."""
    from .deploy.render import render_objects

    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    with resolve_target(env, url) as target:
        info = target.engine
        if info.name == "mssql" and not _job_database_exists(target):
            return {"target": target.masked, "current": None, "head": head, "pending": [
                r.revision for r in reversed(list(script.walk_revisions()))], "objects": [], "unverified": [],
                "drift": True}
        engine = job_engine(target)
        try:
            with database_errors(target, "check"), engine.connect() as conn:
                current = _current_revision(conn, info.job_schema)
                definitions = catalog_definitions(conn, info)
                readable = definitions_readable(conn, info)
                state: dict[str, tuple[str, str | None]] | None = {}
                if sa.inspect(conn).has_table(DEPLOYMENT_LOG, schema=info.job_schema):
                    if not log_readable(conn, info):
                        state = None
                    else:
                        table = log_table(info)
                        latest = (sa.select(sa.func.max(table.c.DeploymentId)).where(table.c.ObjectType != REVISION)
                                  .group_by(table.c.ObjectName))
                        state = {r.ObjectName: (r.Action, r.Checksum) for r in conn.execute(
                            sa.select(table.c.ObjectName, table.c.Action, table.c.Checksum)
                            .where(table.c.DeploymentId.in_(latest)))}
        finally:
            engine.dispose()
    applied = {r.revision for r in script.iterate_revisions(current, "base")} if current else set()
    pending = [r.revision for r in reversed(list(script.walk_revisions())) if r.revision not in applied]
    problems, unverified = object_drift(info, render_objects(info.name), definitions, state, readable=readable)
    return {"target": target.masked, "current": current, "head": head, "pending": pending, "objects": problems,
            "unverified": unverified, "drift": bool(pending or problems)}


def object_drift(info, objects, definitions: dict[str, list[str | None]],
                 state: dict[str, tuple[str, str | None]] | None, *, readable: bool) -> tuple[list[dict], list[dict]]:
    """(drift, unverified) of the package's ``objects`` against the catalog's ``definitions`` and
    the deployment log's latest ``state`` per object (None: this login may not read the log);
    ``readable``: whether this login sees every module of the job schema and its definition."""
    problems: list[dict] = []
    unverified: list[dict] = []
    if state is None:
        unverified.append({"object": DEPLOYMENT_LOG, "kind": "TABLE", "problem": (
            f"not readable: this login needs SELECT on {info.job_object(DEPLOYMENT_LOG)}; procedures were compared "
            "with this package's text only")})
    shipped = {o.name: o for o in objects}
    for name, obj in sorted(shipped.items()):
        found = definitions.get(name)
        if (found is None and not readable) or (found is not None and unreadable(found)):
            # Not listed, or listed without its text: this login may not see it, which is not drift.
            unverified.append({"object": name, "kind": obj.kind, "problem": unreadable_definition(info)})
            continue
        if found is None:
            problems.append({"object": name, "kind": obj.kind, "problem": "missing"})
            continue
        if state is None:
            if edited(info.name, obj, found):
                problems.append({"object": name, "kind": obj.kind, "problem": "differs from this package's text"})
            continue
        action, checksum = state.get(name, (None, None))
        if action != "Deployed" or checksum != obj.checksum:
            problems.append({"object": name, "kind": obj.kind, "problem": "not deployed at this package version"})
        elif edited(info.name, obj, found):
            problems.append({"object": name, "kind": obj.kind, "problem": "edited by hand since it was deployed"})
    for name, (action, _checksum) in sorted((state or {}).items()):
        if action == "Deployed" and name not in shipped:
            problems.append({"object": name, "kind": None, "problem": "deployed, but not part of this package"})
    return problems, unverified


def stamp(env: str | None = None, url: str | None = None, *, revision: str) -> MigrateResult:
    """Record ``revision`` as the job database's revision without running anything (Flyway's
    baseline): for a job database created by hand or by an older tool. Deploys nothing."""
    with resolve_target(env, url) as target:
        return MigrateResult(_run(command.stamp, target, revision, sql=False, buffer=None))


def render(engine: str, out_dir: Path) -> list[Path]:
    """Render every procedure of ``engine`` into ``out_dir``; return the files written."""
    try:
        return write_rendered(engine_for(engine).name, out_dir)
    except OSError as exc:
        raise ConfigurationError(f"--out {out_dir}: cannot write there ({exc.strerror or exc})") from exc


@dataclass(frozen=True)
class DeployedObject:
    name: str
    kind: str
    action: str
    checksum: str | None
    package_version: str
    deployed_at: object
    deployed_by: str
    deploy_count: int


def deployed(env: str | None = None, url: str | None = None) -> tuple[Target, list[DeployedObject], str | None]:
    """What the deployment log says is deployed now, with the current revision."""
    with resolve_target(env, url) as target:
        if target.engine.name == "mssql" and not _job_database_exists(target):
            return target, [], None
        engine = job_engine(target)
        try:
            with connect(engine, target) as conn:
                schema = target.engine.job_schema
                inspector = sa.inspect(conn)
                if not inspector.has_table(DEPLOYMENT_LOG, schema=schema):
                    return target, [], _current_revision(conn, schema)
                table = log_table(target.engine)
                rows = conn.execute(sa.select(table).where(table.c.ObjectType != REVISION)
                                    .order_by(table.c.DeploymentId)).all()
                latest: dict[str, sa.Row] = {}
                deploys: dict[str, int] = {}
                for row in rows:
                    latest[row.ObjectName] = row
                    deploys[row.ObjectName] = deploys.get(row.ObjectName, 0) + (row.Action == "Deployed")
                objects = [
                    DeployedObject(r.ObjectName, r.ObjectType, r.Action, r.Checksum, r.PackageVersion,
                                   r.DeployedAt, r.DeployedBy, deploys[name])
                    for name, r in sorted(latest.items())
                ]
                return target, objects, _current_revision(conn, schema)
        finally:
            engine.dispose()


def _job_database_exists(target: Target) -> bool:
    """SQL Server: whether BlobDeltaJobs exists (connecting to it before it does fails with 4060)."""
    server = create_engine(target, poolclass=NullPool)
    try:
        with connect(server, target) as conn:
            return conn.exec_driver_sql("SELECT DB_ID(?)", (JOB_DATABASE,)).scalar() is not None
    finally:
        server.dispose()


def _current_revision(conn: sa.Connection, schema: str) -> str | None:
    if not sa.inspect(conn).has_table("alembic_version", schema=schema):
        return None
    table = sa.table("alembic_version", sa.column("version_num"), schema=schema)
    return conn.execute(sa.select(table.c.version_num)).scalar()


# ----------------------------------------------------------------------------- delta runs


def _watch(engine: sa.Engine, info, run_id, on_step, on_start, stop: threading.Event, after: int = 0) -> None:
    """Report the run's start (its header is committed) and every batch of ``run_id`` committed
    after the step row ``after`` (a resume passes the run's last one: old progress is not
    replayed), as the engine commits them, until ``stop`` is set."""
    seen = after
    started = on_start is None
    while True:
        finished = stop.wait(0.25 if not started else 0.5)
        try:
            with engine.connect() as conn:
                if not started and runs.exists(conn, info, run_id):
                    on_start(run_id)
                    started = True
                batches = runs.batches_after(conn, info, run_id, seen) if on_step is not None else []
        except sa.exc.DBAPIError:
            batches = []
        for step_id, batch in batches:
            on_step(batch)
            seen = step_id
        if finished:
            return


def _check_business_unit(engine: sa.Engine, target: Target, unit, mode: str, table: str | None) -> None:
    """Refuse a --bu that no business-unit table of the tables in scope lists (a typo would
    otherwise plan and run 0 rows). Where the caller may not read the configuration or those
    tables (a member of BlobDeltaOperator), nothing is checked: the engine finds no row."""
    info = target.engine
    q, t = info.quote, info.job_object
    mark = "?" if info.name == "mssql" else "%(v)s"
    bind = (lambda v: (v,)) if info.name == "mssql" else (lambda v: {"v": v})
    value = str(unit) if info.name == "mssql" else unit
    looked: list[str] = []
    with engine.connect() as conn:
        try:
            scope = (f"{q('TableName')} = {mark}", bind(table)) if mode == "SingleTable" else \
                (f"{q('IsActive')} = {'1' if info.name == 'mssql' else 'true'}", None)
            rows = conn.exec_driver_sql(
                f"SELECT {q('BusinessUnitDatabase')}, {q('BusinessUnitSchema')}, {q('BusinessUnitTable')}, "
                f"{q('BusinessUnitIdColumn')} FROM {t('BlobDeltaTableConfig')} WHERE {scope[0]}", scope[1]).all()
            for database, schema, name, column in rows:
                if database is None or name is None:
                    continue
                where = info.mapped_object(database, schema or "dbo", name)
                top, limit = ("TOP (1) ", "") if info.name == "mssql" else ("", " LIMIT 1")
                if conn.exec_driver_sql(f"SELECT {top}1 FROM {where} WHERE {q(column)} = {mark}{limit}",
                                        bind(value)).first() is not None:
                    return
                looked.append(where)
        except sa.exc.DBAPIError:
            return  # not ours to read: the engine checks what it can
    if looked:
        raise ConfigurationError(f"--bu {unit} is not a business unit of any table in scope "
                                 f"(looked in {', '.join(sorted(set(looked)))})")


class RunInterrupted(DbToolsError):
    """The user interrupted a run (Ctrl-C); the statement in flight was cancelled and rolled back."""

    def __init__(self, run_id):
        self.run_id = run_id
        super().__init__(f"interrupted: the batch in flight was cancelled and rolled back; RunId {run_id}; "
                         f"continue it with: dbtools resume {run_id}")


def run(env: str | None = None, url: str | None = None, *, mode: str, table: str | None = None,
        batch_size: int = 500, max_dop: int = 0, business_unit=None, sync_type: str = "incremental",
        plan: bool = False, resume=None, wait: bool = False, on_step=None, on_start=None) -> dict:
    """Run the delta engine (or plan it) and return ``{run_id, status, tables}``.

    ``on_start`` is called with the RunId of a new run as soon as the engine has started it (the
    runner chooses the RunId, so a retry resumes the same run); ``on_step`` with each
    BlobDeltaRunStep row as the engine commits it. ``wait``: a run that another session still executes is waited for instead of refused.
    Ctrl-C (KeyboardInterrupt) cancels the statement in flight and raises :class:`RunInterrupted`,
    which names the RunId to resume.
    """
    from .delta import runner
    from .uuid7 import uuid7

    with resolve_target(env, url) as target:
        engine = job_engine(target)
        try:
            if business_unit is not None and resume is None:
                _check_business_unit(engine, target, business_unit, runner.MODES.get(mode, mode), table)
            run_id = None if plan or resume else uuid7(target.engine.name)
            stop = threading.Event()
            watcher = None
            announce = on_start if run_id else None  # a resume's RunId is the caller's own
            if (on_step is not None or announce is not None) and (run_id or resume):
                after = 0
                if resume:
                    with database_errors(target, "resume"), engine.connect() as conn:
                        after = max((i for i, _b in runs.batches_after(conn, target.engine, resume, 0)), default=0)
                watcher = threading.Thread(target=_watch, daemon=True,
                                           args=(engine, target.engine, run_id or resume, on_step, announce, stop),
                                           kwargs={"after": after})
                watcher.start()
            cancels: list = []
            outcome: dict = {}

            def work() -> None:
                try:
                    outcome["result"] = runner.run_operator(
                        engine, target.engine, mode=mode, table=table, batch_size=batch_size, max_dop=max_dop,
                        business_unit=business_unit, sync_type=sync_type, execute=not plan, resume=resume,
                        run_id=run_id, wait=wait, on_cancel=cancels.append)
                except BaseException as exc:  # handed to the main thread
                    outcome["error"] = exc

            # The engine works in a thread, so that Ctrl-C reaches this one at once (a driver call
            # does not return to Python until the server answers) and can cancel the call.
            worker = threading.Thread(target=work, daemon=True)
            worker.start()
            try:
                while worker.is_alive():
                    worker.join(0.2)
            except KeyboardInterrupt:
                for cancel in cancels[-1:]:
                    try:
                        cancel()
                    except Exception:  # the connection may be gone already
                        pass
                worker.join(10)
                raise RunInterrupted(run_id or resume) from None
            finally:
                stop.set()
                if watcher is not None:
                    watcher.join(timeout=10)
            if "error" in outcome:
                with database_errors(target, "plan" if plan else "resume" if resume else "run"):
                    raise outcome["error"]
            result = outcome["result"]
            if plan:
                return runs.plan_view(result.plan, runner.MODES.get(mode, mode), table)
            with database_errors(target, "status"), engine.connect() as conn:
                return runs.load(conn, target.engine, result.run_id)
        finally:
            engine.dispose()


def status(env: str | None = None, url: str | None = None, *, run_id) -> dict:
    """A run in the schema of :mod:`dbtools.delta.runs`: its header, each table's state, window, times and
    steps, and every batch."""
    with resolve_target(env, url) as target:
        engine = job_engine(target)
        try:
            with database_errors(target, "status"), engine.connect() as conn:
                found = runs.load(conn, target.engine, run_id)
        finally:
            engine.dispose()
    if found is None:
        raise ConfigurationError(f"RUN_ID {run_id} is not a run in BlobDeltaRun")
    return found


def list_runs(env: str | None = None, url: str | None = None, *, last: int = 20, table: str | None = None,
              status: str | None = None) -> list[dict]:
    """The latest runs, newest first, in the schema of :mod:`dbtools.delta.runs` (without batches)."""
    if status is not None and status not in RUN_STATES:
        raise ConfigurationError(f"--status {status!r} is not a run status; allowed values: {', '.join(RUN_STATES)}")
    with resolve_target(env, url) as target:
        engine = job_engine(target)
        try:
            with database_errors(target, "runs"), engine.connect() as conn:
                return runs.recent(conn, target.engine, last=last, table=table, status=status)
        finally:
            engine.dispose()


def report(env: str | None = None, url: str | None = None, *, run_id, out: Path) -> Path:
    """Write the HTML picture of a run (:mod:`dbtools.delta.report`) to ``out``; return the path."""
    from .delta import report as pages

    page = pages.render(status(env, url, run_id=run_id))
    try:
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"--out {out}: cannot write there ({exc.strerror or exc})") from exc
    return out


#: A run's status as reported (Interrupted: Running in BlobDeltaRun, but no session works it).
RUN_STATES = ("Running", "Interrupted", "Succeeded", "Failed")


def sample(env: str | None = None, url: str | None = None, *, rows: int = 400, business_units: int = 3) -> dict:
    """Create the sample source, metadata, business-unit and target tables the seeded configuration
    names (``rows`` blobs per table, rounded up to whole trees, over ``business_units`` units), then migrate, which
    grants the engine its rights on them: the next run works. Refuses databases (SQL Server) or
    schemas (PostgreSQL) that exist already: the sample uses the names of production databases."""
    from datetime import datetime, timedelta

    from .delta import sample as samples

    if rows < 1 or business_units < 1:
        raise ConfigurationError("--rows and --bus must be 1 or more")
    with resolve_target(env, url) as target:
        info = target.engine
        names = (samples.SOURCE_DB, samples.TARGET_DB, samples.METADATA_DB)
        server = create_engine(target, target.url.set(database="master") if info.name == "mssql" else None,
                               poolclass=NullPool)
        try:
            with database_errors(target, "sample"), connect(server, target) as conn:
                if info.name == "mssql":
                    existing = [n for n in names if conn.exec_driver_sql("SELECT DB_ID(?)", (n,)).scalar() is not None]
                else:
                    existing = [r[0] for r in conn.exec_driver_sql(
                        "SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname = ANY(%(n)s)", {"n": list(names)})]
        finally:
            server.dispose()
        if existing:
            kind = "database(s)" if info.name == "mssql" else "schema(s)"
            raise ConfigurationError(f"the sample's {kind} {', '.join(sorted(existing))} exist already on {target.masked}; "
                                     "the sample creates its own: drop them first, or use another server")
        now = datetime.utcnow().replace(microsecond=0)
        window = {"start": now - timedelta(days=20), "end": now - timedelta(hours=5)}
        per_root = len(samples.generate(roots=1, business_units=1, **window).blobs[samples.TABLES[0]])
        data = samples.generate(roots=-(-rows // per_root), business_units=business_units, **window)
        with database_errors(target, "sample"):
            created = samples.create_sample(target.url, info, data)
        migrated = migrate(url=target.url.render_as_string(hide_password=False))
    return {"databases": list(names), "created_databases": created,
            "business_units": [str(u) for u in data.business_units],
            "blobs": {name: len(blobs) for name, blobs in data.blobs.items()},
            "migrated": [f"{a} -> {b}" for a, b, _up in migrated.outcome.steps]}


DEMO_DATABASE = "dbtools_demo"


def demo(on_step=None, *, roots: int = 40, fanout: int = 3, depth: int = 3) -> dict:
    """The main job end to end on the embedded PostgreSQL, from nothing.

    Recreates the database ``dbtools_demo`` in the embedded server, creates the sample sources,
    migrates it (job schema,
    seeded configuration, procedures), creates FileTable-shaped sample sources with metadata
    spread over several business units, and runs an all-tables incremental delta.
    """
    from datetime import datetime, timedelta

    from .delta import sample
    from .db.environments import embedded_postgresql

    with embedded_postgresql() as server_url:
        admin = sa.create_engine(server_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{DEMO_DATABASE}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{DEMO_DATABASE}"')
        admin.dispose()
        url = server_url.set(database=DEMO_DATABASE).render_as_string(hide_password=False)
        now = datetime.utcnow().replace(microsecond=0)
        data = sample.generate(roots=roots, fanout=fanout, depth=depth, business_units=4,
                               start=now - timedelta(days=20), end=now - timedelta(hours=5))
        target = Target("demo", sa.make_url(url))
        # Sources first: the deployment grants the engine its rights on the configured tables.
        sample.create_sample(target.url, target.engine, data)
        migrated = migrate(url=url)
        result = run(url=url, mode="all-tables", on_step=on_step)
        result["source_rows"] = {name: len(blobs) for name, blobs in data.blobs.items()}
        result["migrated"] = [f"{a} -> {b}" for a, b, _up in migrated.outcome.steps]
        return result


# -- paged sync sessions (dbtools.sync; docs/sync.md) ---------------------------------------------

#: How ``--source`` is read: a folder of JSON Lines page files, or an http(s) URL of a paged API.
SYNC_SESSION_STATES = ("Open", "Promoting", "Promoted", "Failed", "Superseded")


def sync_source(source: str, **http_options):
    """The paged source ``--source`` names: an ``http://``/``https://`` URL (dbtools.sync.http,
    ``http_options`` passed on), else a folder of JSON Lines page files (dbtools.sync.jsonl)."""
    if source.lower().startswith(("http://", "https://")):
        from .sync.http import HttpSource

        return HttpSource(source, **{k: v for k, v in http_options.items() if v is not None})
    unused = sorted("--" + k.replace("_", "-") for k, v in http_options.items() if v is not None)
    if unused:
        raise ConfigurationError(f"--source {source!r} is a folder; {', '.join(unused)} apply only to an http(s) URL")
    folder = Path(source)
    if not folder.is_dir():
        raise ConfigurationError(f"--source {source!r} is neither an http(s) URL nor a folder of JSON Lines page files")
    from .sync.jsonl import JsonLinesSource

    return JsonLinesSource(folder)


def sync(env: str | None = None, url: str | None = None, *, entity: str, scope: str, source, full: bool = False,
         on_page=None, as_of=None):
    """Run a paged sync session of one scope of ``entity`` from ``source`` (a PagedSource): resume
    the scope's open session, or open one (full when ``full``, or when the scope never completed
    one), stage every page, promote after the last. Returns a dbtools.sync.session.SyncResult."""
    from .sync.session import sync as run_sync
    from .upsert.specs import current_specs, spec_named

    spec = spec_named(entity)
    if spec.sync is None:
        names = ", ".join(s.entity for s in current_specs() if s.sync) or "(none)"
        raise ConfigurationError(f"--entity {spec.entity} is not loaded by sync sessions; allowed values: {names}")
    with resolve_target(env, url) as target:
        engine = job_engine(target)
        try:
            with database_errors(target, "sync"):
                return run_sync(engine, spec, scope, source, full=full, on_page=on_page, as_of=as_of)
        finally:
            engine.dispose()


def sync_status(env: str | None = None, url: str | None = None, *, session_id=None, entity: str | None = None,
                scope: str | None = None, last: int = 20) -> list[dict]:
    """Sync sessions, newest first (the last ``last``, optionally of one entity and scope), or the
    one ``session_id`` names with its pages and first rejects."""
    import uuid as _uuid

    if session_id is not None:
        try:
            session_id = _uuid.UUID(str(session_id))
        except ValueError as exc:
            raise ConfigurationError(f"SESSION_ID {session_id!r} is not a UUID") from exc
    with resolve_target(env, url) as target:
        engine = job_engine(target)
        info = target.engine
        q, mark = info.quote, "?" if info.name == "mssql" else "%s"
        columns = ("SessionId", "EntityName", "Scope", "SyncType", "SinceDate", "Status", "PagesReceived",
                   "LastPageNumber", "RowsReceived", "RowsInserted", "RowsUpdated", "RowsSkipped", "RowsRejected",
                   "StartedAt", "LastPageAt", "EndedAt", "SupersededBy", "ErrorMessage")
        where, params = [], []
        if session_id is not None:
            where.append(f"{q('SessionId')} = {mark}")
            params.append(str(session_id) if info.name == "mssql" else session_id)
        if entity is not None:
            where.append(f"{q('EntityName')} = {mark}")
            params.append(entity)
        if scope is not None:
            where.append(f"{q('Scope')} = {mark}")
            params.append(str(scope))
        top, tail = (f"TOP ({int(last)}) ", "") if info.name == "mssql" else ("", f" LIMIT {int(last)}")
        sql = (f"SELECT {top}{', '.join(q(c) for c in columns)} FROM {info.job_object('SyncSession')}"
               + (" WHERE " + " AND ".join(where) if where else "")
               + f" ORDER BY {q('StartedAt')} DESC, {q('SessionId')} DESC{tail}")
        try:
            with database_errors(target, "sync-status"), engine.connect() as conn:
                sessions = [dict(zip(columns, row)) for row in conn.exec_driver_sql(sql, tuple(params)).all()]
                if session_id is not None and sessions:
                    pages = conn.exec_driver_sql(
                        f"SELECT {q('PageNumber')}, {q('RowsReceived')}, {q('RowsStaged')}, {q('RowsRejected')}, "
                        f"{q('IsLastPage')}, {q('ReceivedAt')} FROM {info.job_object('SyncSessionPage')} "
                        f"WHERE {q('SessionId')} = {mark} ORDER BY {q('PageNumber')}", (params[0],)).all()
                    sessions[0]["Pages"] = [{"PageNumber": p, "RowsReceived": r, "RowsStaged": s, "RowsRejected": j,
                                             "IsLastPage": bool(last_page), "ReceivedAt": at}
                                            for p, r, s, j, last_page, at in pages]
        finally:
            engine.dispose()
    if session_id is not None and not sessions:
        raise ConfigurationError(f"SESSION_ID {session_id} is not a session in SyncSession")
    if session_id is not None:
        from .sync.session import session_rejects
        from .upsert.specs import spec_named

        spec = spec_named(sessions[0]["EntityName"])
        with resolve_target(env, url) as target:
            engine = job_engine(target)
            try:
                with database_errors(target, "sync-status"):
                    sessions[0]["Rejects"] = [{"PageNumber": p, "RowNumber": r, "Reason": reason}
                                              for p, r, reason in session_rejects(engine, spec, session_id)]
            finally:
                engine.dispose()
    for s in sessions:
        for key in ("SessionId", "SupersededBy"):
            if s[key] is not None:
                s[key] = str(s[key]).lower()
    return sessions
