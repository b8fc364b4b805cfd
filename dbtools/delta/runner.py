"""Run the delta engine and read back what a run did (library layer under ``dbtools run``).

The operator procedure commits after every batch, so it is always called on an autocommit
connection: on SQL Server, pyodbc would otherwise open an implicit transaction (and the
procedure refuses to run inside one); on PostgreSQL, a CALL inside a transaction block may not
COMMIT.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..db.engines import EngineInfo
from ..db.procs import ProcedureValidationError, call_procedure
from ..errors import DbToolsError, driver_message
from ..retry import DEFAULT_POLICY, RetryPolicy
from ..uuid7 import uuid7

MODES = {"all-tables": "AllTables", "single-table": "SingleTable"}
SYNC_TYPES = {"incremental": "Incremental", "full": "Full"}

#: PostgreSQL: how often a session that runs the engine checks that its client is still connected,
#: so that the work of a killed client stops that soon (DBTOOLS_CLIENT_CHECK_INTERVAL overrides it).
CLIENT_CHECK_INTERVAL = os.environ.get("DBTOOLS_CLIENT_CHECK_INTERVAL", "2s")
#: SQL Server: the error the engine raises when another session still executes the run.
STILL_EXECUTING_ERROR = 50012


class RunStillExecuting(DbToolsError):
    """Another server session still executes this run; wait for it (``--wait``) or try later."""


def _still_executing(exc: sa.exc.DBAPIError) -> str | None:
    """The engine's message when ``exc`` says another session still executes the run, else None."""
    orig = exc.orig
    diag = getattr(orig, "diag", None)
    if diag is not None and getattr(diag, "sqlstate", None) == "55P03":
        return diag.message_primary
    text = driver_message(orig)
    if f"({STILL_EXECUTING_ERROR})" in text:
        match = re.search(r".*\[SQL Server\](.*?) \(%d\)" % STILL_EXECUTING_ERROR, text, re.S)
        return match.group(1) if match else text
    return None


def _check_client(conn: sa.Connection, interval: str) -> None:
    """PostgreSQL 14+: end this session's work soon after its client is gone."""
    if conn.dialect.server_version_info >= (14,):
        conn.exec_driver_sql("SELECT pg_catalog.set_config('client_connection_check_interval', %(v)s, false)",
                             {"v": interval})


OPERATOR_OUTPUTS = {
    "RunId": "uniqueidentifier",
    "Status": "nvarchar(20)",
    "Plan": "nvarchar(max)",
    "Version": "nvarchar(20)",
    "VersionDate": "date",
}


@dataclass(frozen=True)
class PlannedStep:
    """What one step of a run would do to a table: rows inserted, updated (moves included), deleted."""

    step: int
    name: str
    inserted: int
    updated: int
    deleted: int


@dataclass(frozen=True)
class PlannedTable:
    table: str
    window_start: str | None
    window_end: str | None
    rows: int | None
    error: str | None
    skipped: str | None = None  # why a run now would skip the table (another run holds its lease)
    steps: tuple[PlannedStep, ...] = ()


@dataclass(frozen=True)
class RunResult:
    run_id: uuid.UUID | None
    status: str
    plan: list[PlannedTable] = field(default_factory=list)


def _uuid(value: Any) -> uuid.UUID | None:
    return None if value is None else uuid.UUID(str(value))


def run_operator(
    engine: sa.Engine,
    info: EngineInfo,
    *,
    mode: str,
    table: str | None = None,
    batch_size: int = 500,
    max_dop: int = 0,
    business_unit: uuid.UUID | None = None,
    sync_type: str = "Incremental",
    execute: bool = True,
    resume: uuid.UUID | None = None,
    run_id: uuid.UUID | None = None,
    wait: bool = False,
    policy: RetryPolicy = DEFAULT_POLICY,
    check_interval: str = CLIENT_CHECK_INTERVAL,
    on_cancel: Callable[[Callable[[], None]], None] | None = None,
) -> RunResult:
    """Call ``usp_BlobDelta_RunOperator`` and return the RunId, status and plan.

    ``mode`` and ``sync_type`` take the procedure's values (``AllTables``, ``Full``...) or the
    CLI's spelling (``all-tables``, ``full``).

    The call is idempotent under retries: a new run gets its RunId here (UUIDv7 in the engine's
    order) and passes it in, so when a transient failure (a dropped connection, a deadlock)
    interrupts it, the retry resumes that same run -- same windows, no second run -- instead of
    starting another one.

    A run executes in one server session at a time. A resume (or a new run with a given RunId) that
    another session still executes fails with :class:`RunStillExecuting`, unless ``wait`` is true:
    then it waits for that session first. A retry always waits: the session of the attempt that
    lost its connection may still be working the run. On PostgreSQL every session the runner opens
    checks every ``check_interval`` whether its client is still there
    (``client_connection_check_interval``), so the work of a killed client stops soon; SQL Server
    notices a dead client only when it next sends something. ``on_cancel`` receives, before each
    attempt, a function that cancels that attempt from another thread (what Ctrl-C calls).
    """
    base = {
        "Mode": MODES.get(mode, mode),
        "TableName": table,
        "BatchSize": batch_size,
        "MaxDOP": max_dop,
        "BusinessUnitId": _bind(info, business_unit),
        "SyncType": SYNC_TYPES.get(sync_type, sync_type),
        "Execute": execute,
    }
    new_run = uuid7(info.name) if execute and resume is None else None
    new_run = run_id or new_run
    auto = engine.execution_options(isolation_level="AUTOCOMMIT")
    attempts = 0

    def call() -> dict[str, Any]:
        nonlocal attempts
        attempts += 1
        with auto.connect() as conn:
            try:
                if info.name == "postgresql":
                    _check_client(conn, check_interval)
                params = dict(base)
                params["Wait"] = wait or attempts > 1
                seeded = {}
                if resume is not None:
                    params["ResumeRunId"] = _bind(info, resume)
                elif new_run is not None and (state := _run_state(conn, info, new_run)) is not None:
                    if state not in ("Running", "Failed"):
                        # The first attempt finished before its connection dropped: report it.
                        return {"RunId": new_run, "Status": state, "Plan": None}
                    params["ResumeRunId"] = _bind(info, new_run)  # a retry: continue what the first attempt began
                else:
                    params["ResumeRunId"] = None
                    if new_run is not None:
                        seeded["RunId"] = _bind(info, new_run)
                return call_procedure(conn, info, "usp_BlobDelta_RunOperator", params, OPERATOR_OUTPUTS, seeded,
                                      on_cancel=on_cancel)
            except BaseException:
                # A failed CALL may leave the run's session lock (PostgreSQL) or a half-read result on
                # this connection: never hand it back to a pool.
                conn.invalidate()
                raise

    try:
        out = policy.call(call)
    except ProcedureValidationError:
        raise
    except sa.exc.DBAPIError as exc:
        still = _still_executing(exc)
        if still is not None:
            raise RunStillExecuting(still) from exc
        raise
    plan = [PlannedTable(p["table"], p["window_start"], p["window_end"], p["rows"], p["error"], p.get("skipped"),
                         tuple(PlannedStep(x["step"], x["name"], x["inserted"], x["updated"], x["deleted"])
                               for x in p.get("steps") or ()))
            for p in json.loads(out["Plan"])] if out.get("Plan") else []
    return RunResult(_uuid(out.get("RunId")), out["Status"], plan)


def _bind(info: EngineInfo, value: uuid.UUID | None):
    return None if value is None else (str(value) if info.name == "mssql" else value)


def _run_key(info: EngineInfo, run_id: uuid.UUID) -> tuple[str, tuple | dict]:
    """The driver placeholder and parameter for a RunId on this engine."""
    if info.name == "mssql":
        return "?", (str(run_id),)
    return "%(run)s", {"run": run_id}


def _run_state(conn: sa.Connection, info: EngineInfo, run_id: uuid.UUID) -> str | None:
    """The stored status of a run, or None when there is no such run."""
    q = info.quote
    mark, value = _run_key(info, run_id)
    return conn.exec_driver_sql(
        f"SELECT {q('Status')} FROM {info.job_object('BlobDeltaRun')} WHERE {q('RunId')} = {mark}", value).scalar()


@dataclass(frozen=True)
class RunStatus:
    run_id: uuid.UUID
    run_type: str
    mode: str
    table: str | None
    status: str
    started_at: datetime
    completed_at: datetime | None
    error: str | None
    steps: list[dict[str, Any]]


def run_status(engine: sa.Engine, info: EngineInfo, run_id: uuid.UUID) -> RunStatus | None:
    """The run header and its steps, in (table, step, batch) order; None for an unknown RunId."""
    q, t = info.quote, info.job_object
    mark, value = _run_key(info, run_id)
    with engine.connect() as conn:
        header = conn.exec_driver_sql(
            f"SELECT {q('RunId')}, {q('RunType')}, {q('Mode')}, {q('TableName')}, {q('Status')}, {q('RunStartedAt')}, "
            f"{q('RunCompletedAt')}, {q('ErrorMessage')} FROM {t('BlobDeltaRun')} WHERE {q('RunId')} = {mark}", value,
        ).first()
        if header is None:
            return None
        steps = [dict(r) for r in conn.exec_driver_sql(
            f"SELECT {q('TableName')} AS table_name, {q('StepNumber')} AS step_number, {q('StepName')} AS step_name, "
            f"{q('BatchNumber')} AS batch_number, {q('RowsProcessed')} AS rows_processed, "
            f"{q('TotalRowsProcessed')} AS total_rows, {q('RowsInserted')} AS rows_inserted, "
            f"{q('RowsUpdated')} AS rows_updated, {q('RowsDeleted')} AS rows_deleted, {q('RowsMoved')} AS rows_moved, "
            f"{q('WindowStart')} AS window_start, {q('WindowEnd')} AS window_end, "
            f"{q('LastModifiedOn')} AS last_modified_on, "
            f"{q('Status')} AS status, {q('ErrorMessage')} AS error "
            f"FROM {t('BlobDeltaRunStep')} WHERE {q('RunId')} = {mark} "
            f"ORDER BY {q('TableName')}, {q('StepNumber')}, {q('BatchNumber')}", value,
        ).mappings()]
    return RunStatus(_uuid(header[0]), header[1], header[2], header[3], header[4], header[5], header[6], header[7], steps)
