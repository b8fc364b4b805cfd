"""Run a paged sync session: stage a source's pages for one scope, promote after the last page.

:func:`sync` is the library call behind ``dbtools sync`` (docs/sync.md):

1. ``usp_Sync_Begin`` takes the scope's lock (held by this database session until the sync
   ends: a second sync of the scope is refused with :class:`SyncInProgress`, naming the holder's
   session) and opens a session, or resumes the scope's open one at its first missing page.
2. Each page the source yields is loaded through the bulk path, in one transaction: the rows
   are converted as the upsert writers convert them (a row that cannot be converted is filed as a
   reject with its page, row and reason), staged under a fresh load id (binary ``COPY`` on
   PostgreSQL, ``fast_executemany`` on SQL Server), and recorded by ``usp_Sync_Page``, which
   replaces any earlier load of the same page. A transient failure retries the page under the
   retry policy; a dropped connection reconnects and resumes the same session first.
3. After the page marked last, ``usp_Sync_Promote`` applies the session in one transaction.

A sync stopped anywhere (killed, a source error, a failed promote) leaves production untouched;
running it again resumes the open session from its first missing page.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ..db.engines import EngineInfo, engine_for
from ..db.procs import call_procedure
from ..errors import DbToolsError, driver_message
from ..retry import DEFAULT_POLICY, RetryPolicy
from ..upsert import pgcopy
from ..upsert.specs import EntitySpec
from ..upsert.writers import (EXPECTED, PAUSE_EVERY, ROW_NUMBER, PreparedRow, RowError, _copy_type, _preparer,
                              _stored_reason, _yield_gil, prefetched)
from ..uuid7 import uuid7
from .source import Page, PagedSource, SourceError

#: SQL Server error number of a refused second sync of a scope; PostgreSQL raises SQLSTATE 55P03.
IN_PROGRESS_ERROR = 50013
IN_PROGRESS_SQLSTATE = "55P03"
#: Rejects listed in a result (all of them stay in the reject table).
MAX_REPORTED = 50

BEGIN_OUTPUTS = {"Scope": "nvarchar(4000)", "SyncType": "nvarchar(20)", "SessionId": "uniqueidentifier", "SinceDate": "datetime2(7)",
                 "FirstPageNumber": "int", "LastPageNumber": "int", "Resumed": "bit"}
PAGE_OUTPUTS = {"PagesReceived": "int", "LastPageNumber": "int"}
PROMOTE_OUTPUTS = {"Status": "nvarchar(20)", "RowsReceived": "bigint", "RowsInserted": "bigint",
                   "RowsUpdated": "bigint", "RowsSkipped": "bigint", "RowsRejected": "bigint", "Replayed": "bit"}


class SyncError(DbToolsError):
    """A sync stopped; the message says where the session was left and how to go on."""


class SyncInProgress(SyncError):
    """Another database session is syncing the same scope (its session id is in the message)."""


@dataclass(frozen=True)
class PageProgress:
    """One loaded page, as the progress callback sees it."""

    session_id: uuid.UUID
    number: int
    rows: int
    staged: int
    rejected: int
    is_last: bool
    seconds: float


@dataclass(frozen=True)
class SyncResult:
    """What a sync did: its session, where it started, what the promote counted."""

    session_id: uuid.UUID
    entity: str
    scope: str
    sync_type: str
    since: dt.datetime
    resumed: bool
    first_page: int
    pages_loaded: int
    status: str
    received: int = 0
    inserted: int = 0
    updated: int = 0
    skipped: int = 0
    rejected: int = 0
    rejects: list[tuple[int, int, str]] = field(default_factory=list)  # (page, row, reason), first MAX_REPORTED

    def as_dict(self) -> dict[str, Any]:
        return {"session_id": str(self.session_id), "entity": self.entity, "scope": self.scope,
                "sync_type": self.sync_type, "since": self.since.isoformat(), "resumed": self.resumed,
                "first_page": self.first_page, "pages_loaded": self.pages_loaded, "status": self.status,
                "received": self.received, "inserted": self.inserted, "updated": self.updated,
                "skipped": self.skipped, "rejected": self.rejected,
                "rejects": [{"page": p, "row": r, "reason": reason} for p, r, reason in self.rejects]}


def _bind(info: EngineInfo, value: uuid.UUID | None) -> Any:
    """A uuid as the driver takes it (pyodbc: text)."""
    if value is None:
        return None
    return str(value) if info.name == "mssql" else value


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _in_progress(exc: BaseException) -> str | None:
    """The server's message when ``exc`` is the refusal of a second sync of a scope, else None."""
    orig = getattr(exc, "orig", None) or exc
    diag = getattr(orig, "diag", None)
    if getattr(diag, "sqlstate", None) == IN_PROGRESS_SQLSTATE:
        return diag.message_primary
    text = driver_message(orig)
    if f"({IN_PROGRESS_ERROR})" in text:
        start = text.find("A sync of ")
        return text[start:text.rfind(f" ({IN_PROGRESS_ERROR})")] if start >= 0 else text
    return None


class _Stager:
    """Stage one page's rows in the entity's staging table and file the rows that cannot be staged."""

    def __init__(self, info: EngineInfo, spec: EntitySpec, scope: str):
        self.info, self.spec = info, spec
        self.prepare = _preparer(spec)
        scope_column = spec.column(spec.sync.scope)
        self.scope_name = scope_column.name
        self.scope_value: Any = int(scope) if scope_column.type in ("int", "bigint") else scope
        q = info.quote
        self.columns = ["BatchId", ROW_NUMBER, *(c.name for c in spec.columns), EXPECTED, "SessionId", "PageNumber"]
        self.staging = spec.table_object(info, spec.staging)
        self.rejects = spec.table_object(info, spec.rejects)
        self.column_list = ", ".join(q(c) for c in self.columns)
        self.new_body = None if info.name == "mssql" else pgcopy.body_factory(
            ["uuid", "int8", *(_copy_type(c, info) for c in spec.columns), "int8", "uuid", "int4"])

    def convert(self, page: Page) -> tuple[list[PreparedRow], list[RowError]]:
        """The page's rows numbered from 1, converted; the scope column filled in where a row lacks it."""
        valid: list[PreparedRow] = []
        rejected: list[RowError] = []
        for n, row in enumerate(page.rows, start=1):
            if n % PAUSE_EVERY == 0:
                _yield_gil()  # converting runs a page ahead: let the database thread have the GIL
            if isinstance(row, RowError):  # the source could not read it (a line that is not JSON)
                rejected.append(RowError(n, row.reason))
                continue
            if not isinstance(row, Mapping):
                rejected.append(RowError(n, f"row {n} is not a JSON object"))
                continue
            if ROW_NUMBER in row or EXPECTED in row:
                rejected.append(RowError(n, f"{ROW_NUMBER} and {EXPECTED} are not sync fields; rows are numbered "
                                            "by their place in the page"))
                continue
            if row.get(self.scope_name) is None:
                row = {**row, self.scope_name: self.scope_value}
            item = self.prepare(row, n)
            if isinstance(item, RowError):
                rejected.append(RowError(n, item.reason))
            else:
                valid.append(item)
        return valid, rejected

    def stage(self, conn: sa.Connection, load_id: uuid.UUID, session_id: uuid.UUID, page_number: int,
              valid: list[PreparedRow], rejected: list[RowError]) -> None:
        """In ``conn``'s transaction: the valid rows into staging, the others into the reject table."""
        session = _bind(self.info, session_id)
        load = _bind(self.info, load_id)
        if valid:
            if self.info.name == "postgresql":
                add, finish = self.new_body()
                for r in valid:
                    add((load_id, r.row_number, *r.values, None, session_id, page_number))
                raw = conn.connection.dbapi_connection
                if raw.info.encoding != "utf-8":
                    raw.execute("SET LOCAL client_encoding TO 'UTF8'")
                with raw.cursor() as cursor:
                    with cursor.copy(f"COPY {self.staging} ({self.column_list}) FROM STDIN (FORMAT BINARY)") as copy:
                        copy.write(finish())
            else:
                cursor = conn.connection.dbapi_connection.cursor()
                try:
                    cursor.fast_executemany = True
                    marks = ", ".join("?" for _ in self.columns)
                    cursor.executemany(f"INSERT INTO {self.staging} ({self.column_list}) VALUES ({marks})",
                                       [(load, r.row_number, *r.values, None, session, page_number) for r in valid])
                finally:
                    cursor.close()
        if rejected:
            q = self.info.quote
            mark = "?" if self.info.name == "mssql" else "%s"
            conn.exec_driver_sql(
                f"INSERT INTO {self.rejects} ({q('BatchId')}, {q(ROW_NUMBER)}, {q('Reason')}, {q('SessionId')}, "
                f"{q('PageNumber')}) VALUES ({mark}, {mark}, {mark}, {mark}, {mark})",
                [(load, e.row_number, _stored_reason(e.reason), session, page_number) for e in rejected])


@dataclass
class _Session:
    """The open session and the connection that holds its scope's lock."""

    engine: sa.Engine
    info: EngineInfo
    spec: EntitySpec
    scope: str
    check_interval: str
    conn: sa.Connection | None = None
    out: dict[str, Any] = field(default_factory=dict)

    def connect(self) -> sa.Connection:
        if self.conn is None or self.conn.invalidated or self.conn.closed:
            self.close()
            self.conn = self.engine.connect()
            if self.info.name == "postgresql" and self.conn.dialect.server_version_info >= (14,):
                # A killed client's work stops soon instead of running on to the end.
                self.conn.exec_driver_sql("SELECT pg_catalog.set_config('client_connection_check_interval', %(v)s, "
                                          "false)", {"v": self.check_interval})
                self.conn.commit()
        return self.conn

    def begin(self, sync_type: str | None, resume: bool, as_of: dt.datetime | None) -> dict[str, Any]:
        conn = self.connect()
        try:
            with conn.begin():
                out = call_procedure(conn, self.info, "usp_Sync_Begin",
                                     {"Entity": self.spec.entity, "Resume": resume, "AsOf": as_of},
                                     BEGIN_OUTPUTS, {"Scope": self.scope, "SyncType": sync_type})
        except sa.exc.DBAPIError as exc:
            message = _in_progress(exc)
            self.close()  # a failed call may leave the lock taken on this connection
            if message is not None:
                raise SyncInProgress(message) from exc
            raise
        except BaseException:
            self.close()
            raise
        self.out = out
        return out

    def close(self) -> None:
        """End the database session: that releases the scope's lock, on both engines."""
        if self.conn is not None:
            try:
                self.conn.invalidate()
                self.conn.close()
            except Exception:  # the lock goes with the session either way
                pass
            self.conn = None


def sync(engine: sa.Engine, spec: EntitySpec, scope: str | int, source: PagedSource, *, full: bool = False,
         policy: RetryPolicy = DEFAULT_POLICY, on_page: Callable[[PageProgress], None] | None = None,
         as_of: dt.datetime | None = None, check_interval: str = "5s") -> SyncResult:
    """Sync one scope of ``spec`` from ``source``; resume the scope's open session unless ``full``.

    ``full`` starts a new full session (superseding an open one). ``as_of`` replaces the clock
    (UTC, naive) for the since-date and the session's start. ``on_page`` is called after each
    page is committed. Raises :class:`SyncInProgress` when another session holds the scope,
    :class:`SyncError` when the sync stops before its promote (the session stays open and
    resumable), and the promote's error when the promote fails (the session is Failed and
    resumable; production is untouched).
    """
    if spec.sync is None:
        raise SyncError(f"--entity {spec.entity} is not loaded by sync sessions (its spec has no [sync] section)")
    info = engine_for(engine.url)
    scope_text = str(scope).strip()
    session = _Session(engine, info, spec, scope_text, check_interval)
    try:
        return _run(session, source, full, policy, on_page, as_of)
    finally:
        session.close()


def _run(session: _Session, source: PagedSource, full: bool, policy: RetryPolicy,
         on_page: Callable[[PageProgress], None] | None, as_of: dt.datetime | None) -> SyncResult:
    info, spec = session.info, session.spec
    out = policy.call(session.begin, "Full" if full else None, not full, as_of)
    session_id = _uuid(out["SessionId"])
    sync_type, since = out["SyncType"], out["SinceDate"]
    first_page, last_page = int(out["FirstPageNumber"]), out["LastPageNumber"]
    resumed = bool(out["Resumed"])
    scope = session.scope = str(out["Scope"])  # an integer scope comes back in its canonical text
    stager = _Stager(info, spec, scope)
    loaded = 0

    def reconnected() -> sa.Connection:
        """The session's connection; after a dropped one, a new one that resumed the same session."""
        if session.conn is not None and not session.conn.invalidated and not session.conn.closed:
            return session.conn
        again = session.begin(sync_type, True, as_of)
        if _uuid(again["SessionId"]) != session_id:
            raise SyncError(f"session {session_id} was superseded by {again['SessionId']} while reconnecting; "
                            "its pages were not promoted")
        return session.conn

    def load(page: Page, valid: list[PreparedRow], rejected: list[RowError]) -> None:
        conn = reconnected()
        load_id = uuid7(info.name)
        try:
            with conn.begin():
                stager.stage(conn, load_id, session_id, page.number, valid, rejected)
                call_procedure(conn, info, "usp_Sync_Page",
                               {"SessionId": _bind(info, session_id), "PageNumber": page.number,
                                "LoadId": _bind(info, load_id), "RowsReceived": len(page.rows),
                                "IsLastPage": bool(page.is_last)}, PAGE_OUTPUTS)
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated or session.conn.invalidated:
                session.close()
            raise

    if last_page is None or first_page <= int(last_page):
        expected = first_page
        pages = _converted(source.pages(since, first_page), stager)
        try:
            for page, valid, rejected in pages:
                if page.number != expected:
                    raise SyncError(f"{source.describe()} sent page {page.number} where page {expected} was due; "
                                    f"session {session_id} stays open at page {expected}")
                started = time.perf_counter()
                policy.call(load, page, valid, rejected)
                loaded += 1
                if on_page is not None:
                    on_page(PageProgress(session_id, page.number, len(page.rows), len(valid), len(rejected),
                                         bool(page.is_last), time.perf_counter() - started))
                if page.is_last:
                    break
                expected += 1
            else:
                raise SyncError(f"{source.describe()} ended after page {expected - 1} without a last page; session "
                                f"{session_id} stays open: run the sync again to resume it at page {expected}")
        except SourceError as exc:
            raise SyncError(f"{exc} (session {session_id} stays open at page {expected}: production is untouched; "
                            "run the sync again to resume it)") from exc
        finally:
            pages.close()

    def promote() -> dict[str, Any]:
        # After a dropped connection, a plain new one: the promote takes the scope's lock itself,
        # and replays a session that an attempt whose answer was lost did promote (usp_Sync_Begin
        # would find no live session there and open a new one).
        conn = session.connect()
        auto = conn.execution_options(isolation_level="AUTOCOMMIT")
        try:
            return call_procedure(auto, info, "usp_Sync_Promote", {"SessionId": _bind(info, session_id)},
                                  PROMOTE_OUTPUTS)
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated or conn.invalidated:
                session.close()
            raise

    done = policy.call(promote)
    return SyncResult(session_id, spec.entity, scope, sync_type, since, resumed, first_page, loaded, done["Status"],
                      *(int(done[k]) for k in ("RowsReceived", "RowsInserted", "RowsUpdated", "RowsSkipped",
                                               "RowsRejected")),
                      rejects=session_rejects(session.engine, spec, session_id))


def _converted(pages: Iterator[Page], stager: _Stager) -> Iterator[tuple[Page, list[PreparedRow], list[RowError]]]:
    """Pages fetched and converted in a thread, a page ahead of the database."""
    def work() -> Iterator[tuple[Page, list[PreparedRow], list[RowError]]]:
        try:
            for page in pages:
                yield (page, *stager.convert(page))
        finally:
            close = getattr(pages, "close", None)  # a generator: end its HTTP client now
            if close is not None:
                close()

    return prefetched(work())


def session_rejects(engine: sa.Engine, spec: EntitySpec, session_id: uuid.UUID,
                    limit: int = MAX_REPORTED) -> list[tuple[int, int, str]]:
    """(page, row, reason) of a session's rejects, in page and row order (the first ``limit``)."""
    info = engine_for(engine.url)
    q = info.quote
    top, tail = (f"TOP ({int(limit)}) ", "") if info.name == "mssql" else ("", f" LIMIT {int(limit)}")
    mark = "?" if info.name == "mssql" else "%s"
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT {top}{q('PageNumber')}, {q(ROW_NUMBER)}, {q('Reason')} "
            f"FROM {spec.table_object(info, spec.rejects)} WHERE {q('SessionId')} = {mark} "
            f"ORDER BY {q('PageNumber')}, {q(ROW_NUMBER)}{tail}", (_bind(info, session_id),)).all()
    return [(int(p), int(r), reason) for p, r, reason in rows]


__all__ = ["sync", "SyncResult", "PageProgress", "SyncError", "SyncInProgress", "session_rejects"]
