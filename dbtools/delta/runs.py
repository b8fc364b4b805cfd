"""Delta runs as operators see them: one JSON schema for run, resume, status, runs and plans.

Everything here reads only ``BlobDeltaRun`` and ``BlobDeltaRunStep`` (what members of
``BlobDeltaOperator`` may read), plus the configuration's active tables when the caller may read
them, and whether a session still holds the run's lock.

**The schema.** Keys are snake_case and the same everywhere (``table``, never ``table_name``);
timestamps are ISO 8601 UTC with milliseconds and a ``Z``; durations are seconds (``duration_s``);
absent values are ``null``.

**A table's state** follows from its steps and the run: tables run one after another in the binary
order of their names, so in a run that is still ``Running`` the last table (in that order) with
step rows is the one being worked (``Running``, or ``Interrupted`` when no session holds the run's
lock any more: its client was killed, say), the ones before it are finished, and the ones after it
are ``Pending``. A table whose last step row failed is ``Failed``; in a run that ended, a table
with step rows and no failure is ``Succeeded``. A run still marked ``Running`` whose lock no
session holds is reported as ``Interrupted``; ``dbtools resume`` continues it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from ..db.engines import EngineInfo

#: A version for consumers of --json and --results-file.
SCHEMA = "dbtools.run/1"

TABLE_STATES = ("Pending", "Running", "Succeeded", "Failed", "Interrupted")


def iso(value: Any) -> str | None:
    """A stored UTC timestamp (naive, or aware) as ``2026-12-07T01:02:03.456Z``."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value.isoformat(timespec="milliseconds") + "Z"


def seconds(start: Any, end: Any) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def _naive(value: datetime) -> datetime:
    return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo is not None else value


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _mark(info: EngineInfo, name: str) -> str:
    return "?" if info.name == "mssql" else f"%({name})s"


def _params(info: EngineInfo, **values):
    if info.name == "mssql":
        return tuple(str(v) if isinstance(v, uuid.UUID) else v for v in values.values())
    return values


def session_active(conn: sa.Connection, info: EngineInfo, run_id: uuid.UUID) -> bool:
    """Whether a session holds the run's lock (it is being worked right now)."""
    if info.name == "mssql":
        resource = "dbtools.BlobDeltaRun." + str(run_id).lower()
        # APPLOCK_TEST needs no server-level right: 0 means another session holds the lock.
        free = conn.exec_driver_sql(
            "SELECT APPLOCK_TEST(N'public', ?, N'Exclusive', N'Session')", (resource,)).scalar()
        return free == 0
    key = "pg_catalog.hashtextextended('dbtools.BlobDeltaRun:' || %(r)s::text, 0)"
    return bool(conn.exec_driver_sql(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks AS l WHERE l.locktype = 'advisory' AND l.granted "
        "AND l.objsubid = 1 AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d "
        "WHERE d.datname = pg_catalog.current_database()) "
        f"AND l.classid = (({key} >> 32) & 4294967295)::oid AND l.objid = ({key} & 4294967295)::oid)",
        {"r": str(run_id)}).scalar())


def _active_tables(conn: sa.Connection, info: EngineInfo) -> list[str] | None:
    """The configured active tables, or None when the caller may not read the configuration."""
    q, t = info.quote, info.job_object
    try:
        with conn.begin_nested():
            rows = conn.exec_driver_sql(
                f"SELECT {q('TableName')} FROM {t('BlobDeltaTableConfig')} WHERE {q('IsActive')} = "
                f"{'1' if info.name == 'mssql' else 'true'}").all()
    except sa.exc.DBAPIError:
        return None
    return [r[0] for r in rows]


def _binary(name: str) -> bytes:
    """The order the engines work tables in (Latin1_General_BIN2 / COLLATE "C")."""
    return name.encode("utf-16-be")


@dataclass(frozen=True)
class _Row:
    table: str
    step: int
    name: str
    batch: int
    rows_processed: int
    total_rows: int
    inserted: int | None
    updated: int | None
    deleted: int | None
    moved: int | None
    window_start: datetime | None
    window_end: datetime | None
    last_modified_on: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    status: str
    error: str | None


_HEADER = ("RunId", "RunType", "Mode", "TableName", "BusinessUnitId", "BatchSize", "RequestedBy", "RunStartedAt",
           "RunCompletedAt", "Status", "ErrorMessage")
_STEP = ("TableName", "StepNumber", "StepName", "BatchNumber", "RowsProcessed", "TotalRowsProcessed", "RowsInserted",
         "RowsUpdated", "RowsDeleted", "RowsMoved", "WindowStart", "WindowEnd", "LastModifiedOn", "BatchStartedAt",
         "BatchCompletedAt", "Status", "ErrorMessage")


def _steps(conn: sa.Connection, info: EngineInfo, run_id: uuid.UUID) -> list[_Row]:
    q, t = info.quote, info.job_object
    rows = conn.exec_driver_sql(
        f"SELECT {', '.join(q(c) for c in _STEP)} FROM {t('BlobDeltaRunStep')} WHERE {q('RunId')} = {_mark(info, 'r')} "
        f"ORDER BY {q('RunStepId')}", _params(info, r=run_id)).all()
    return [_Row(*r) for r in rows]


def batches_after(conn: sa.Connection, info: EngineInfo, run_id: uuid.UUID, after: int) -> list[tuple[int, dict]]:
    """The run's batches committed after the step row ``after`` (a RunStepId), in commit order."""
    q, t = info.quote, info.job_object
    rows = conn.exec_driver_sql(
        f"SELECT {q('RunStepId')}, {', '.join(q(c) for c in _STEP)} FROM {t('BlobDeltaRunStep')} "
        f"WHERE {q('RunId')} = {_mark(info, 'r')} AND {q('RunStepId')} > {_mark(info, 'a')} ORDER BY {q('RunStepId')}",
        _params(info, r=run_id, a=after)).all()
    return [(int(r[0]), _batch_view(_Row(*r[1:]))) for r in rows]


def exists(conn: sa.Connection, info: EngineInfo, run_id: uuid.UUID) -> bool:
    q, t = info.quote, info.job_object
    return conn.exec_driver_sql(f"SELECT COUNT(*) FROM {t('BlobDeltaRun')} WHERE {q('RunId')} = {_mark(info, 'r')}",
                                _params(info, r=run_id)).scalar() > 0


def load(conn: sa.Connection, info: EngineInfo, run_id: uuid.UUID, *, with_batches: bool = True) -> dict | None:
    """The run ``run_id`` in the schema above, or None when there is no such run."""
    q, t = info.quote, info.job_object
    header = conn.exec_driver_sql(
        f"SELECT {', '.join(q(c) for c in _HEADER)} FROM {t('BlobDeltaRun')} WHERE {q('RunId')} = {_mark(info, 'r')}",
        _params(info, r=run_id)).first()
    if header is None:
        return None
    return view(conn, info, header, _steps(conn, info, run_id), with_batches=with_batches)


def view(conn: sa.Connection, info: EngineInfo, header, steps: list[_Row], *, with_batches: bool = True,
         active: bool | None = None, scope: list[str] | None = None) -> dict:
    (run_id, run_type, mode, scope_table, unit, batch_size, requested_by, started, completed, stored_status,
     error) = header
    run_id = uuid.UUID(str(run_id))
    if stored_status == "Running" and active is None:
        active = session_active(conn, info, run_id)
    status = "Interrupted" if stored_status == "Running" and not active else stored_status

    # The tables in scope, in the order the engine works them.
    if mode == "SingleTable" and scope_table:
        names = {scope_table}
    else:
        configured = scope if scope is not None else _active_tables(conn, info)
        names = set(configured or ())
    names |= {s.table for s in steps}
    order = sorted(names, key=_binary)
    by_table: dict[str, list[_Row]] = {name: [] for name in order}
    for step in steps:
        by_table[step.table].append(step)
    current = max((n for n in order if by_table[n]), key=_binary, default=None)

    tables = []
    for name in order:
        rows = by_table[name]
        tables.append(_table_view(name, rows, stored_status, active, current))
    total_rows = sum(t["rows"] for t in tables)
    end = completed if completed is not None else (utcnow() if stored_status == "Running" else None)
    result = {
        "schema": SCHEMA,
        "run_id": str(run_id),
        "status": status,
        "run_type": run_type,
        "mode": mode,
        "table": scope_table,
        "business_unit": None if unit is None else str(unit).lower(),
        "batch_size": batch_size,
        "requested_by": requested_by,
        "started_at": iso(started),
        "completed_at": iso(completed),
        "duration_s": seconds(started, end),
        "rows": total_rows,
        "error": error,
        "tables": tables,
    }
    if with_batches:
        result["batches"] = [_batch_view(s) for s in steps]
    return result


def _table_view(name: str, rows: list[_Row], stored_status: str, active: bool | None, current: str | None) -> dict:
    if not rows:
        state = "Pending"
    elif rows[-1].status == "Failed":
        state = "Failed"
    elif stored_status != "Running":
        state = "Succeeded"
    elif name == current:
        state = "Running" if active else "Interrupted"
    else:
        state = "Succeeded"
    window = next((r for r in reversed(rows) if r.step == 0 and r.status == "Completed"), None)
    started = min((r.started_at for r in rows if r.started_at is not None), default=None)
    ended = max((r.completed_at for r in rows if r.completed_at is not None), default=None)
    steps: dict[int, dict] = {}
    total = 0
    for r in rows:
        # Step 0 (the window, and a Full sync's clean slate: its deletes) is a step as a plan lists it.
        entry = steps.setdefault(r.step, {
            "step": r.step, "name": r.name, "status": "Completed", "batches": 0, "rows_processed": 0,
            "inserted": 0, "updated": 0, "deleted": 0, "moved": 0, "started_at": None, "completed_at": None,
            "duration_s": None, "_start": None, "_end": None})
        if r.name != "QueuePopulation":
            entry["name"] = r.name
        entry["batches"] += 1
        entry["status"] = r.status  # its last batch's: a failed batch resumed to completion is Completed
        entry["_start"] = min(filter(None, (entry["_start"], r.started_at)), default=None)
        entry["_end"] = max(filter(None, (entry["_end"], r.completed_at)), default=None)
        if r.status != "Completed":
            continue
        entry["rows_processed"] += r.rows_processed or 0
        counts = (r.inserted, r.updated, r.deleted)
        for key, value in zip(("inserted", "updated", "deleted", "moved"), (*counts, r.moved)):
            entry[key] += value or 0
        if r.step > 0 and r.name != "QueuePopulation":
            total += sum(c or 0 for c in counts) if any(c is not None for c in counts) else (r.rows_processed or 0)
    step_views = []
    for number in sorted(steps):
        entry = steps[number]
        start, end = entry.pop("_start"), entry.pop("_end")
        entry.update(started_at=iso(start), completed_at=iso(end), duration_s=seconds(start, end))
        step_views.append(entry)
    failure = next((r.error for r in reversed(rows) if r.status == "Failed"), None) if state == "Failed" else None
    return {
        "table": name,
        "status": state,
        "window_start": iso(window.window_start) if window else None,
        "window_end": iso(window.window_end) if window else None,
        "started_at": iso(started),
        "completed_at": iso(ended) if state in ("Succeeded", "Failed") else None,
        "duration_s": seconds(started, ended) if state in ("Succeeded", "Failed") else
        seconds(started, utcnow()) if state == "Running" and started is not None else None,
        "rows": total,
        "error": failure,
        "steps": step_views,
    }


def _batch_view(r: _Row) -> dict:
    return {
        "table": r.table, "step": r.step, "name": r.name, "batch": r.batch, "status": r.status,
        "rows_processed": r.rows_processed, "total_rows": r.total_rows, "inserted": r.inserted, "updated": r.updated,
        "deleted": r.deleted, "moved": r.moved, "window_start": iso(r.window_start), "window_end": iso(r.window_end),
        "last_modified_on": iso(r.last_modified_on), "started_at": iso(r.started_at),
        "completed_at": iso(r.completed_at), "duration_s": seconds(r.started_at, r.completed_at), "error": r.error,
    }


def plan_view(plan, mode: str, table: str | None) -> dict:
    """A plan (runner.RunResult.plan) in the same schema: no run, one entry per table."""
    return {
        "schema": SCHEMA,
        "run_id": None,
        "status": "Planned",
        "mode": mode,
        "table": table,
        "rows": sum(p.rows or 0 for p in plan if p.error is None and not p.skipped),
        "tables": [{
            "table": p.table,
            "status": "Skipped" if p.skipped else "Planned" if p.error is None else "Failed",
            "window_start": iso(p.window_start) if p.window_start else None,
            "window_end": iso(p.window_end) if p.window_end else None,
            "rows": p.rows,
            "error": p.error or p.skipped,
            "steps": [{"step": s.step, "name": s.name, "inserted": s.inserted, "updated": s.updated,
                       "deleted": s.deleted} for s in p.steps],
        } for p in plan],
    }


def recent(conn: sa.Connection, info: EngineInfo, *, last: int = 20, table: str | None = None,
           status: str | None = None) -> list[dict]:
    """The latest runs, newest first (without their batches): ``last`` of them, those that worked
    ``table`` (or were limited to it), those whose status (as reported) is ``status``."""
    q, t = info.quote, info.job_object
    where, params = [], {}
    if table is not None:
        where.append(f"(r.{q('TableName')} = {_mark(info, 't')} OR EXISTS (SELECT 1 FROM {t('BlobDeltaRunStep')} AS s "
                     f"WHERE s.{q('RunId')} = r.{q('RunId')} AND s.{q('TableName')} = {_mark(info, 't2')}))")
        params.update(t=table, t2=table)
    stored = {"Interrupted": "Running"}.get(status, status)
    if stored is not None:
        where.append(f"r.{q('Status')} = {_mark(info, 's')}")
        params["s"] = stored
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    # Filtering on the reported status (Running vs Interrupted) needs the lock: fetch more, then cut.
    fetch = last * 4 if status in ("Running", "Interrupted") else last
    top, limit = (f"TOP ({int(fetch)}) ", "") if info.name == "mssql" else ("", f" LIMIT {int(fetch)}")
    headers = conn.exec_driver_sql(
        f"SELECT {top}{', '.join('r.' + q(c) for c in _HEADER)} FROM {t('BlobDeltaRun')} AS r{clause} "
        f"ORDER BY r.{q('RunStartedAt')} DESC, r.{q('RunId')} DESC{limit}",
        _params(info, **params)).all()
    scope = _active_tables(conn, info)
    found = []
    for header in headers:
        run_id = uuid.UUID(str(header[0]))
        entry = view(conn, info, header, _steps(conn, info, run_id), with_batches=False, scope=scope)
        if status is not None and entry["status"] != status:
            continue
        found.append(entry)
        if len(found) == last:
            break
    return found
