"""Writers for entity upserts: one interface, three paths.

``writer_for(path, engine, spec).upsert(rows) -> Counts`` writes any iterable of rows (mappings
from column name to value) through one of:

``single``
    one call of the entity's single-row procedure per row, each in its own transaction;
``tvp``
    chunks of ``batch_size`` rows passed as one row-type parameter (a SQL Server table-valued
    parameter; a PostgreSQL array of the composite type) to the batch procedure;
``bulk``
    chunks bulk-loaded into the staging table under a new batch id, then reconciled by the
    reconcile procedure in one transaction per chunk. PostgreSQL: binary ``COPY`` on a second
    connection, committed, a chunk ahead of the reconcile; SQL Server: mssql-python's bulk copy
    the same way when it is installed, else pyodbc ``fast_executemany`` in the reconcile's
    transaction.

All three apply the same rules (``entities/README.md``) and return the same counts:
received = inserted + updated + skipped + conflicted + rejected, for every chunk.

Input is consumed lazily. The batch paths read and convert the next chunk in a thread while
the database applies the current one (``prefetch``), so at most three chunks are held: the one
applied (which is also what a retry replays), the next one ready, and the one being read. The
bulk path's staging stage takes two more (one staged, one being staged); a staged chunk keeps
only its rows' rejects and counts, so at most three chunk bodies are in memory.

Every unit of work (one row, one chunk) runs under the transient-fault retry policy
(:mod:`dbtools.retry`); a chunk retried after an unknown commit outcome is recognised by its
batch id (``UpsertBatchLog``) and reports the counts of its first application.

A row may carry ``ExpectedRowVersion`` (an int; the version the caller read) and ``RowNumber``
(where a rejected row is filed; default: its position in the input, from 1). Values that do not
convert to the column's type are rejected by the writer itself and filed in the reject table
with the same batch id, so nothing is dropped silently.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

import sqlalchemy as sa

from ..db.engines import EngineInfo, engine_for
from ..db.procs import call_procedure, run_mssql_batch
from ..errors import DbToolsError
from ..retry import DEFAULT_POLICY, RetryPolicy, transient_reason
from ..uuid7 import uuid7
from . import pgcopy
from .specs import BATCH_LOG, Column, EntitySpec

log = logging.getLogger("dbtools.upsert")

PATHS = ("single", "tvp", "bulk")
DEFAULT_BATCH_SIZE = {"single": 1, "tvp": 1000, "bulk": 50_000}
#: Paths that prepare the next chunk while the database works on the current one (a thread
#: hand-off per row would cost the single-row path more than it saves).
PREFETCH = {"single": False, "tvp": True, "bulk": True}
#: SQL Server: rows per fast_executemany call (pyodbc builds the whole parameter array in memory).
MSSQL_EXECUTEMANY_CHUNK = 10_000
EXPECTED = "ExpectedRowVersion"
#: The batch log's primary key: violated when two sessions apply one batch id at once.
BATCH_LOG_KEY = "PK_" + BATCH_LOG
ROW_NUMBER = "RowNumber"


class UpsertError(DbToolsError):
    """The upsert could not be carried out (bad arguments, or the database refused the batch)."""


@dataclass
class Counts:
    """What happened to the rows sent; ``received`` always equals the sum of the others."""

    received: int = 0
    inserted: int = 0
    updated: int = 0
    skipped: int = 0
    conflicted: int = 0
    rejected: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def accounted(self) -> int:
        return self.inserted + self.updated + self.skipped + self.conflicted + self.rejected

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def check(self) -> Counts:
        if self.accounted != self.received:
            raise UpsertError(f"counts do not add up: {self.as_dict()} (sum {self.accounted})")
        return self


@dataclass(frozen=True)
class RowError:
    """A row the writer could not convert; filed in the reject table."""

    row_number: int
    reason: str


# ----------------------------------------------------------------------------- conversion
class _Invalid(Exception):
    pass


def _to_uuid(value: Any) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            raise _Invalid("is not a UUID") from None
    raise _Invalid("is not a UUID")


def _to_int(bits: int) -> Callable[[Any], int]:
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid("is not an integer")
        if not low <= value <= high:
            raise _Invalid(f"is out of range for a {bits}-bit integer")
        return value
    return convert


def _to_timestamp(value: Any) -> dt.datetime:
    if isinstance(value, str):
        if value.endswith("Z"):
            # The common case: UTC written with Z. Read without it, it is the naive UTC value at
            # once (a third of the cost of reading an aware value and converting it).
            try:
                naive = dt.datetime.fromisoformat(value[:-1])
            except ValueError:
                naive = None
            if naive is not None and naive.tzinfo is None:
                return naive
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise _Invalid("is not an ISO 8601 timestamp") from None
    if not isinstance(value, dt.datetime):
        raise _Invalid("is not a timestamp")
    if value.tzinfo is not None:  # stored as naive UTC
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def _to_text(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid("is not a string")
    return value


#: One encoder for every row: json.dumps with options builds a new encoder per call (twice the cost).
_encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _to_json(value: Any) -> str:
    if isinstance(value, str):
        return value  # validated by the database, so every path rejects the same texts
    if isinstance(value, (dict, list)):
        try:
            return _encode_json(value)
        except (TypeError, ValueError) as exc:  # a value JSON has no form for; a circular reference
            raise _Invalid(f"cannot be written as JSON: {exc}") from None
    raise _Invalid("is not JSON text, an object or an array")


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "uuid": _to_uuid, "int": _to_int(32), "bigint": _to_int(64), "string": _to_text,
    "timestamp": _to_timestamp, "json": _to_json,
}


class PreparedRow(NamedTuple):
    """One input row as the database receives it: RowNumber, column values, ExpectedRowVersion."""

    row_number: int
    values: tuple[Any, ...]
    expected: int | None


def prepare(spec: EntitySpec, row: Mapping[str, Any], default_number: int) -> PreparedRow | RowError:
    """Convert one input row, or say why it cannot be sent."""
    return _preparer(spec)(row, default_number)


def _preparer(spec: EntitySpec, fast: bool = True) -> Callable[[Mapping[str, Any], int], PreparedRow | RowError]:
    """The row converter of one spec; a writer builds it once (it runs for every row).

    ``fast``: with the generated fast path for rows that need no conversion (_fast_preparer);
    False: the generic converter alone (the tests compare the two).
    """
    # (name, converter, the class that needs no conversion, bounds for ints): an int in range,
    # a naive datetime, a UUID or a str is taken as it is, with one or two checks (this runs for
    # every row: a converter call per value was a third of the bulk writer's client CPU).
    columns = [(c.name, _CONVERTERS[c.type], _IDENTITY.get(c.type), *_BOUNDS.get(c.type, (None, None)))
               for c in spec.columns]
    allowed = frozenset(c.name for c in spec.columns) | {EXPECTED, ROW_NUMBER}
    to_version = _to_int(64)

    def convert(row: Mapping[str, Any], default_number: int) -> PreparedRow | RowError:
        number = row.get(ROW_NUMBER, default_number)
        if number.__class__ is not int or not -(1 << 63) <= number < (1 << 63):
            try:
                number = to_version(number)  # a bigint, like ExpectedRowVersion
            except _Invalid as exc:
                return RowError(default_number, f"{ROW_NUMBER} {_short(number)} {exc}")
        if not allowed.issuperset(row):
            unknown = set(row) - allowed
            return RowError(number, f"unknown fields {', '.join(sorted(map(_escaped_text, unknown)))}; allowed: "
                                    f"{', '.join(c.name for c in spec.columns)}, {EXPECTED}")
        values = []
        for name, converter, exact, low, high in columns:
            value = row.get(name)
            if value is not None and (value.__class__ is not exact  # the common case costs one check
                                      or (low is not None and not low <= value <= high)
                                      or (exact is _DATETIME and value.tzinfo is not None)):
                try:
                    value = converter(value)
                except _Invalid as exc:
                    return RowError(number, f"{name} {_short(value)} {exc}")
            if value.__class__ is str and not (value.isascii() and "\x00" not in value):
                problem = _text_problem(value)
                if problem is not None:
                    return RowError(number, f"{name} {_short(value)} {problem}")
            values.append(value)
        expected = row.get(EXPECTED)
        if expected is not None:
            try:
                expected = to_version(expected)
            except _Invalid as exc:
                return RowError(number, f"{EXPECTED} {_short(expected)} {exc}")
        return PreparedRow(number, tuple(values), expected)

    return _fast_preparer(spec, convert, allowed) if fast else convert


def _fast_preparer(spec: EntitySpec, convert: Callable[[Mapping[str, Any], int], PreparedRow | RowError],
                   allowed: frozenset[str]) -> Callable[[Mapping[str, Any], int], PreparedRow | RowError]:
    """``convert`` with a fast path for a row that needs no conversion: one function per spec,
    generated with the columns unrolled (the loop over columns cost more than the checks).

    It takes a row only when every value passes the same checks ``convert`` makes without
    converting it (an int in range, a UUID, a naive datetime, a str that can be stored; JSON: a
    dict or list it encodes, or a str) and returns what ``convert`` would; any other row goes to
    ``convert`` whole, so the reasons and the order they are found in stay ``convert``'s.
    """
    low, high = _BOUNDS["bigint"]
    lines = ["def fast(row, default_number):",
             "    number = row.get(ROW_NUMBER, default_number)",
             "    if number.__class__ is not int or not LOW <= number <= HIGH or not issuperset(row):",
             "        return convert(row, default_number)"]
    storable = "({v}.isascii() and '\\x00' not in {v} or text_problem({v}) is None)"  # as _text_problem
    names = []
    for i, c in enumerate(spec.columns):
        v = f"v{i}"
        names.append(v)
        lines.append(f"    {v} = row.get({c.name!r})")
        if c.type == "json":
            lines += [f"    if {v} is not None:",
                      f"        if {v}.__class__ is dict or {v}.__class__ is list:",
                      "            try:",
                      f"                {v} = encode_json({v})",
                      "            except (TypeError, ValueError):",
                      "                return convert(row, default_number)",
                      f"        elif {v}.__class__ is not str:",
                      "            return convert(row, default_number)",
                      f"        if not {storable.format(v=v)}:",
                      "            return convert(row, default_number)"]
            continue
        if c.type == "string":
            test = f"{v}.__class__ is not str or not {storable.format(v=v)}"
        elif c.type in _BOUNDS:
            b_low, b_high = _BOUNDS[c.type]
            test = f"{v}.__class__ is not int or not {b_low} <= {v} <= {b_high}"
        elif c.type == "timestamp":
            test = f"{v}.__class__ is not DATETIME or {v}.tzinfo is not None"
        elif c.type == "uuid":
            test = f"{v}.__class__ is not UUID"
        else:  # a type without a fast path
            return convert
        lines += [f"    if {v} is not None and ({test}):",
                  "        return convert(row, default_number)"]
    lines += ["    expected = row.get(EXPECTED)",
              "    if expected is not None and (expected.__class__ is not int or not LOW <= expected <= HIGH):",
              "        return convert(row, default_number)",
              f"    return PreparedRow(number, ({', '.join(names)},), expected)"]
    namespace = {"ROW_NUMBER": ROW_NUMBER, "EXPECTED": EXPECTED, "LOW": low, "HIGH": high,
                 "issuperset": allowed.issuperset, "convert": convert, "encode_json": _encode_json,
                 "text_problem": _text_problem, "DATETIME": _DATETIME, "UUID": uuid.UUID, "PreparedRow": PreparedRow}
    exec("\n".join(lines), namespace)  # noqa: S102 (source built above from column names as literals)
    return namespace["fast"]


def _text_problem(value: str) -> str | None:
    """Why a text cannot be stored the same on both engines, if it cannot (else None).

    PostgreSQL's text cannot hold NUL, and a lone surrogate (e.g. from ``json.loads('"\\ud800"')``)
    is not Unicode at all: either would otherwise fail the whole chunk, not this row.
    """
    if "\x00" in value:
        return "contains a NUL character, which PostgreSQL text cannot hold"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate, which is not Unicode text"
    return None


#: Values of exactly these classes need no conversion (ints within _BOUNDS, naive datetimes only).
_DATETIME = dt.datetime
_IDENTITY: dict[str, type] = {"uuid": uuid.UUID, "string": str, "int": int, "bigint": int, "timestamp": _DATETIME}
_BOUNDS: dict[str, tuple[int, int]] = {"int": (-(1 << 31), (1 << 31) - 1), "bigint": (-(1 << 63), (1 << 63) - 1)}


def _stored_reason(reason: str) -> str:
    """``reason`` as the reject table's Reason column holds it on both engines: NUL characters and
    lone surrogates escaped (a reason a reader made may hold them), then cut to 400 UTF-16 code
    units (SQL Server's nvarchar(400) counts those, PostgreSQL's varchar(400) characters)."""
    reason = _escaped_text(reason)
    if len(reason) <= 200 or len(reason.encode("utf-16-le", "surrogatepass")) <= 800:
        return reason
    return reason.encode("utf-16-le", "surrogatepass")[:800].decode("utf-16-le", "ignore")


def _escaped_text(name: Any) -> str:
    """A text as a reason shows it: NUL and lone surrogates escaped, as no engine stores them."""
    text = str(name)
    if _text_problem(text) is None:
        return text
    return "".join(f"\\x{ord(c):02x}" if c == "\x00" else f"\\u{ord(c):04x}" if "\ud800" <= c <= "\udfff" else c
                   for c in text)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _version_bytes(version: int | None) -> bytes | None:
    return None if version is None else version.to_bytes(8, "big", signed=True)


def row_fields(spec: EntitySpec) -> list[str]:
    """The fields of the row type, in order: RowNumber, the columns, ExpectedRowVersion (PreparedRow's order)."""
    return [ROW_NUMBER, *(c.name for c in spec.columns), EXPECTED]


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


_DONE = object()
#: Rows between two pauses of the reading thread (see _yield_gil).
PAUSE_EVERY = 256


def _yield_gil() -> None:
    """Let the connection's thread run now if it waits for the GIL.

    The reading thread is pure Python; the connection's thread needs the GIL back after every
    wait on the server (many per COPY), and would otherwise wait for the interpreter's switch
    interval (5 ms) each time: measured, that tripled the COPY and cost a fifth of the bulk
    path's time. ``time.sleep(0)`` releases the GIL at once; with nobody waiting it costs a
    system call every PAUSE_EVERY rows.
    """
    time.sleep(0)


def prefetched(items: Iterator[Any]) -> Iterator[Any]:
    """Yield ``items`` while a thread produces the next one (one ready, one in the making).

    For producing that is CPU work while consuming waits on the database (which releases the
    GIL). The producer's exception is raised here after the items before it. When this
    generator is closed early (the consumer failed), the producer stops at its next item and
    closes ``items``; nobody waits for it, since it may be blocked reading its input.
    """
    ready: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(entry: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    break
            else:
                put((_DONE, None))
        except BaseException as exc:  # raised in the consumer
            put((_DONE, exc))
        finally:
            if stop.is_set() and hasattr(items, "close"):
                items.close()

    worker = threading.Thread(target=produce, name="dbtools-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, error = ready.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()


# ----------------------------------------------------------------------------- writers
@dataclass
class Chunk:
    """One chunk of the input, ready to write: made by the reading (ahead) side."""

    rows: list[PreparedRow] | None  # the valid rows (None: the path sends only its payload)
    valid: int  # how many valid rows
    rejected: list[RowError]  # rows the writer (or the reader) rejected
    sent: int  # rows taken from the input
    batch_id: uuid.UUID
    payload: Any = None  # the path's encoding of the valid rows (bulk on PostgreSQL: the COPY body)


class _RowArray(NamedTuple):
    """PostgreSQL tvp path: ``dump(rows)`` makes a chunk's parameter, which ``dumper`` (registered
    for ``cls`` on the connection) sends as it is."""

    dump: Callable[[list[PreparedRow]], Any]
    cls: type
    dumper: type


class ChunkBuilder(NamedTuple):
    """How a path collects a chunk's valid rows: ``add(row)`` each, then ``finish() -> (rows, payload)``."""

    add: Callable[[PreparedRow], None]
    finish: Callable[[], tuple[list[PreparedRow] | None, Any]]


@dataclass
class Writer:
    """Base writer: converts rows, chunks them and runs each chunk under the retry policy."""

    engine: sa.Engine
    spec: EntitySpec
    batch_size: int | None = None  # None: the path's default (DEFAULT_BATCH_SIZE)
    policy: RetryPolicy = DEFAULT_POLICY
    on_chunk: Callable[[Counts], None] | None = None  # progress: the counts of each chunk
    errors: list[RowError] = field(default_factory=list)  # rows rejected by the writer, last call
    batch_ids: list[uuid.UUID] = field(default_factory=list)  # batches of the last call (reject table)
    #: Read and convert the next chunk in a thread while the database applies this one (None:
    #: the path's default, PREFETCH). At most three chunks are held: applied, ready, being read.
    prefetch: bool | None = None
    path = ""

    def __post_init__(self):
        self.info: EngineInfo = engine_for(self.engine.url)
        self._mark = "?" if self.info.name == "mssql" else "%s"  # the driver's parameter marker
        self._prepare = _preparer(self.spec)
        if self.batch_size is None:
            self.batch_size = DEFAULT_BATCH_SIZE[self.path]
        if self.prefetch is None:
            self.prefetch = PREFETCH[self.path]
        self._pause = _yield_gil if self.prefetch else None
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise UpsertError(f"batch_size must be an integer of 1 or more, got {self.batch_size!r}")

    def upsert(self, rows: Iterable[Mapping[str, Any] | RowError]) -> Counts:
        """Write ``rows``; return what happened to them (every row is accounted for).

        An item may also be a :class:`RowError` (a row its reader could not parse): it is filed
        in the reject table and counted as rejected like any invalid row.
        """
        self.errors = []
        self.batch_ids = []
        total = Counts()
        prepared_chunks = self._prepared_chunks(rows)
        if self.prefetch:
            prepared_chunks = self._ahead(prefetched(prepared_chunks))
        try:
            for chunk in prepared_chunks:
                counts = self._write_chunk(chunk)
                counts.check()
                if counts.received != chunk.sent:
                    raise UpsertError(f"{chunk.sent} rows sent but {counts.received} accounted for: {counts.as_dict()}")
                self.errors.extend(chunk.rejected)
                total += counts
                if self.on_chunk is not None:
                    self.on_chunk(counts)
        except BaseException:
            self._abandon()
            raise
        finally:
            prepared_chunks.close()  # stops the prefetching thread when a chunk failed
        return total

    def _ahead(self, prepared: Iterator[Chunk]) -> Iterator[Chunk]:
        """Work a path does on the next chunks while the current one is applied (default: none)."""
        return prepared

    def _abandon(self) -> None:
        """Undo what :meth:`_ahead` did for chunks that will not be applied (the upsert failed)."""

    def _prepared_chunks(self, rows: Iterable[Mapping[str, Any] | RowError]) -> Iterator[Chunk]:
        """The input read, converted and (where the path does) encoded, chunk by chunk.

        Rows are streamed into the path's builder: an input row is not kept once converted.
        """
        numbered = enumerate(rows, start=1)
        prepare, pause, size = self._prepare, self._pause, self.batch_size
        for first in numbered:  # a chunk (and its batch id and builder) only once a row is there for it
            batch_id = uuid7(self.info.name)
            add, finish = self._chunk_builder(batch_id)
            rejected: list[RowError] = []
            sent = valid = 0
            for n, row in itertools.chain((first,), itertools.islice(numbered, size - 1)):
                sent += 1
                if pause is not None and n % PAUSE_EVERY == 0:
                    pause()
                if row.__class__ is dict:  # the common case first: an ABC check costs more than the conversion of a value
                    item = prepare(row, n)
                elif isinstance(row, RowError):  # rejected by the reader (e.g. a line that is not JSON)
                    item = row
                elif isinstance(row, Mapping):
                    item = prepare(row, n)
                else:
                    item = RowError(n, f"row {n} is not a mapping")
                if item.__class__ is RowError:
                    rejected.append(item)
                else:
                    add(item)
                    valid += 1
            prepared, payload = finish()
            yield Chunk(prepared, valid, rejected, sent, batch_id, payload if valid else None)

    def _chunk_builder(self, batch_id: uuid.UUID) -> ChunkBuilder:
        """Collect the valid rows of one chunk (the default: a list of them, no payload)."""
        prepared: list[PreparedRow] = []
        return ChunkBuilder(prepared.append, lambda: (prepared, None))

    def _write_chunk(self, chunk: Chunk) -> Counts:
        rejected, batch_id = chunk.rejected, chunk.batch_id
        self.batch_ids.append(batch_id)

        def work(conn: sa.Connection) -> Counts:
            counts = Counts(received=len(rejected), rejected=len(rejected))
            # A retry of a chunk that did commit replays it: its rejects are filed already.
            if rejected and not self._applied(conn, batch_id):
                self._file_rejects(conn, batch_id, rejected)
                if not chunk.valid:  # no procedure logs this batch: the writer does, under the same key
                    self._log_rejects_only(conn, batch_id, len(rejected))
            if chunk.valid:
                counts += self._apply(conn, batch_id, chunk.rows, chunk.payload)
            return counts

        try:
            return self.policy.run(self.engine, work)
        except (sa.exc.IntegrityError, self.engine.dialect.loaded_dbapi.IntegrityError) as exc:
            # The same batch id applied by another session that committed first: a retry that
            # overtook an attempt the server was still running. Applied once more, it replays.
            if BATCH_LOG_KEY not in str(getattr(exc, "orig", None) or exc):
                raise
            return self.policy.run(self.engine, work)

    def _applied(self, conn: sa.Connection, batch_id: uuid.UUID) -> bool:
        """Whether UpsertBatchLog holds this batch (committed by an earlier attempt)."""
        q, mark = self.info.quote, self._mark
        sql = (f"SELECT CASE WHEN EXISTS (SELECT 1 FROM {self.info.job_object(BATCH_LOG)} "
               f"WHERE {q('BatchId')} = {mark}) THEN 1 ELSE 0 END")
        return conn.exec_driver_sql(sql, (batch_id,)).scalar() == 1

    def _log_rejects_only(self, conn: sa.Connection, batch_id: uuid.UUID, rejected: int) -> None:
        """Log a chunk the writer rejected whole, so that a retry knows it by its batch id.

        Its primary key also stops a retry that overtook a still-running first attempt (the
        replay in :meth:`_write_chunk`), whatever the isolation level.
        """
        q, mark = self.info.quote, self._mark
        columns = ["BatchId", "EntityName", "RowsReceived", "RowsInserted", "RowsUpdated", "RowsSkipped",
                   "RowsConflicted", "RowsRejected"]
        sql = (f"INSERT INTO {self.info.job_object(BATCH_LOG)} ({', '.join(q(c) for c in columns)}) "
               f"VALUES ({', '.join(mark for _ in columns)})")
        conn.exec_driver_sql(sql, (batch_id, self.spec.entity, rejected, 0, 0, 0, 0, rejected))

    def _apply(self, conn: sa.Connection, batch_id: uuid.UUID, rows: list[PreparedRow] | None, payload: Any = None
               ) -> Counts:
        """Send one chunk's valid rows (as the chunk builder left them: ``rows``, ``payload``) and apply them."""
        raise NotImplementedError

    def _file_rejects(self, conn: sa.Connection, batch_id: uuid.UUID, rejected: list[RowError],
                      skip_filed: bool = False) -> None:
        """File rows the writer rejected (reason, no values) under ``batch_id``.

        ``skip_filed``: skip a reject already filed under the same BatchId, RowNumber and reason,
        for a path that logs no batch (single rows): a retry after an unknown commit outcome then
        files nothing twice, as the single-row procedure does.
        """
        table = self.spec.table_object(self.info, self.spec.rejects)
        q, mark = self.info.quote, self._mark
        cols = f"{q('BatchId')}, {q('RowNumber')}, {q('Reason')}"
        if not skip_filed:
            sql = f"INSERT INTO {table} ({cols}) VALUES ({mark}, {mark}, {mark})"
        else:
            same_reason = f"r.{q('Reason')} = v.{q('Reason')}"
            hints = ""
            if self.info.name == "mssql":
                # Seek the (BatchId, RowNumber) index, read without range locks at any isolation
                # level, and compare reasons (which quote values) binary, as PostgreSQL does.
                hints = " WITH (FORCESEEK, READCOMMITTED)"
                same_reason = (f"r.{q('Reason')} COLLATE Latin1_General_100_BIN2 = v.{q('Reason')} "
                               f"AND DATALENGTH(r.{q('Reason')}) = DATALENGTH(v.{q('Reason')})")
            sql = (f"INSERT INTO {table} ({cols}) "
                   f"SELECT v.{q('BatchId')}, v.{q('RowNumber')}, v.{q('Reason')} "
                   f"FROM (VALUES ({mark}, {mark}, {mark})) AS v ({cols}) "
                   f"WHERE NOT EXISTS (SELECT 1 FROM {table} AS r{hints} "
                   f"WHERE r.{q('BatchId')} = v.{q('BatchId')} AND r.{q('RowNumber')} = v.{q('RowNumber')} "
                   f"AND {same_reason})")
        conn.exec_driver_sql(sql, [(batch_id, e.row_number, _stored_reason(e.reason)) for e in rejected])

    def _counts(self, out: Mapping[str, Any]) -> Counts:
        return Counts(*(int(out[k]) for k in ("RowsReceived", "RowsInserted", "RowsUpdated", "RowsSkipped",
                                               "RowsConflicted", "RowsRejected")))


COUNT_OUTPUTS = {k: "bigint" for k in ("RowsReceived", "RowsInserted", "RowsUpdated", "RowsSkipped",
                                       "RowsConflicted", "RowsRejected")}
#: The single-row procedure's OUTPUT parameters (their T-SQL types).
ONE_OUTPUTS = {"Outcome": "nvarchar(10)", "Reason": "nvarchar(400)", "RowVersion": "binary(8)"}


class SingleRowWriter(Writer):
    """One procedure call per row, each in its own transaction (retried on its own)."""

    path = "single"

    def _write_chunk(self, chunk: Chunk) -> Counts:
        counts = Counts()
        if chunk.rejected:
            counts += self.policy.run(self.engine, lambda conn: self._reject_only(conn, chunk.rejected))
        for row in chunk.rows:
            counts += self.policy.run(self.engine, lambda conn, row=row: self.write_one(conn, row, self.batch_id))
        return counts

    def upsert(self, rows: Iterable[Mapping[str, Any] | RowError]) -> Counts:
        self.batch_id = uuid7(self.info.name)  # where this call's rejected rows are filed
        counts = super().upsert(rows)
        self.batch_ids = [self.batch_id]
        return counts

    def _reject_only(self, conn: sa.Connection, rejected: list[RowError]) -> Counts:
        self._file_rejects(conn, self.batch_id, rejected, skip_filed=True)  # this path logs no batch
        return Counts(received=len(rejected), rejected=len(rejected))

    def write_one(self, conn: sa.Connection, row: PreparedRow, batch_id: uuid.UUID) -> Counts:
        params = {c.name: v for c, v in zip(self.spec.columns, row.values)}
        expected = row.expected
        if self.info.name == "mssql":
            import pyodbc

            # A typed NULL: an untyped one binds as varchar, which does not convert to binary(8).
            expected = pyodbc.BinaryNull if row.expected is None else _version_bytes(row.expected)
        params.update(ExpectedRowVersion=expected, BatchId=batch_id, RowNumber=row.row_number)
        out = call_procedure(conn, self.info, self.spec.upsert_one, params, outputs=ONE_OUTPUTS)
        outcome = out["Outcome"]
        counts = Counts(received=1)
        key = {"Inserted": "inserted", "Updated": "updated", "Skipped": "skipped",
               "Conflicted": "conflicted", "Rejected": "rejected"}.get(outcome)
        if key is None:
            raise UpsertError(f"{self.spec.upsert_one} returned an unknown outcome {outcome!r}")
        setattr(counts, key, 1)
        return counts


class TvpWriter(Writer):
    """Chunks passed as one row-type parameter to the batch procedure."""

    path = "tvp"

    def upsert(self, rows: Iterable[Mapping[str, Any] | RowError]) -> Counts:
        if self.info.name != "mssql" and getattr(self, "_array", None) is None:
            self._array = self.policy.run(self.engine, self._row_array)
        return super().upsert(rows)

    def _row_array(self, conn: sa.Connection) -> _RowArray:
        """PostgreSQL: how to dump a chunk as the binary array of the row type, without a connection."""
        from psycopg import adapters, sql
        from psycopg.adapt import AdaptersMap, Dumper, PyFormat, Transformer
        from psycopg.pq import Format
        from psycopg.types.composite import CompositeInfo, register_composite

        raw = conn.connection.dbapi_connection
        info = CompositeInfo.fetch(raw, sql.Identifier(self.info.job_schema, self.spec.row_type))
        if info is None:
            raise UpsertError(f"row type {self.info.job_object(self.spec.row_type)} is missing; run dbtools migrate")
        context = AdaptersMap(adapters)
        register_composite(info, context)
        make = info.python_type

        class Dumped:  # a chunk's array, already in binary form
            __slots__ = ("data",)

            def __init__(self, data: Any):
                self.data = data

        dumper = type("RowArrayDumper", (Dumper,), {"format": Format.BINARY, "oid": info.array_oid,
                                                     "dump": lambda self, obj: obj.data})

        def psycopg_dump(rows: list[PreparedRow]) -> Dumped:
            payload = [make(r.row_number, *r.values, r.expected) for r in rows]
            transformer = Transformer(context)
            return Dumped(transformer.get_dumper(payload, PyFormat.BINARY).dump(payload))

        # Our own encoder (dbtools.upsert.pgcopy) when it knows every field type and writes what
        # psycopg's composite dumper writes for a sample row: that dumper ran in Python per field
        # and was the larger part of the reading thread's time on this path.
        encode = _record_array_encoder(info)
        if encode is None:
            return _RowArray(psycopg_dump, Dumped, dumper)

        def dump(rows: list[PreparedRow]) -> Dumped:
            return Dumped(encode([(r.row_number, *r.values, r.expected) for r in rows]))
        return _RowArray(dump, Dumped, dumper)

    def _chunk_builder(self, batch_id: uuid.UUID) -> ChunkBuilder:
        """PostgreSQL: the chunk's array is dumped to its binary form by the reading (ahead) side,
        so that the connection's thread only sends it (dumping held the GIL for a third of a call)."""
        array = getattr(self, "_array", None)
        if array is None:
            return super()._chunk_builder(batch_id)
        prepared: list[PreparedRow] = []
        return ChunkBuilder(prepared.append, lambda: (None, array.dump(prepared) if prepared else None))

    def _apply(self, conn: sa.Connection, batch_id: uuid.UUID, rows: list[PreparedRow] | None, payload: Any = None
               ) -> Counts:
        if self.info.name == "mssql":
            return self._apply_mssql(conn, batch_id, rows)
        if getattr(self, "_array", None) is None:  # called without upsert() (tests): dump here
            self._array = self._row_array(conn)
        if payload is None:
            payload = self._array.dump(rows)
        raw = conn.connection.dbapi_connection
        if raw.info.encoding != "utf-8":  # the array's text was dumped in UTF-8; back to the session's at commit
            raw.execute("SET LOCAL client_encoding TO 'UTF8'")
        raw.adapters.register_dumper(self._array.cls, self._array.dumper)
        # The array goes in binary format: psycopg's text format quotes every field in Python and
        # cost 56 ms per 1,000 rows against 4 ms (docs/benchmarks.md).
        out = call_procedure(conn, self.info, self.spec.upsert_many, {"Rows": payload, "BatchId": batch_id},
                             outputs=COUNT_OUTPUTS, binary=frozenset({"Rows"}))
        return self._counts(out)

    def _apply_mssql(self, conn: sa.Connection, batch_id: uuid.UUID, rows: list[PreparedRow]) -> Counts:
        # pyodbc types each TVP column from the first row, and a None there (ExpectedRowVersion and
        # optional columns are None in most rows) cannot be bound (pyodbc #862, #1452; a varchar
        # NULL does not convert to binary). So the chunk travels as one JSON parameter and the
        # batch fills a table variable of the row type with OPENJSON, then passes it as the TVP:
        # the procedure, the type and the semantics are the TVP path's own.
        names = row_fields(self.spec)
        document = json.dumps([
            dict(zip(names, (r.row_number, *(_json_value(v) for v in r.values), r.expected))) for r in rows
        ], separators=(",", ":"), ensure_ascii=False)
        sql = mssql_tvp_batch(self.info, self.spec)
        out = run_mssql_batch(conn, sql, (document, batch_id))
        if not out:
            raise UpsertError("the batch returned no counts")
        return self._counts(out)


#: A value of each type pgcopy encodes, for the record array encoder's check against psycopg.
_SAMPLE_VALUES = {"uuid": uuid.UUID("01234567-89ab-7def-8123-456789abcdef"), "int4": -(2**31), "int8": 2**63 - 1,
                  "text": "naïve 😀", "timestamp": dt.datetime(2026, 12, 3, 8, 9, 10, 123456)}


def _record_array_encoder(info: Any) -> Callable[[list[tuple]], bytes] | None:
    """pgcopy's binary array encoder for the composite ``info`` (psycopg CompositeInfo), or None when
    a field type is one it does not encode or it does not write what psycopg's dumper writes."""
    from psycopg import adapters
    from psycopg.adapt import AdaptersMap, PyFormat, Transformer
    from psycopg.postgres import types
    from psycopg.types.composite import register_composite

    names = [getattr(types.get(oid), "name", None) for oid in info.field_types]
    if not all(n in _SAMPLE_VALUES for n in names):
        return None
    try:
        encode = pgcopy.record_array_encoder(names, info.field_types, info.oid)
        context = AdaptersMap(adapters)
        register_composite(info, context)
        samples = [tuple(_SAMPLE_VALUES[n] for n in names), tuple(None for _ in names)]
        objects = [info.python_type(*values) for values in samples]
        expected = Transformer(context).get_dumper(objects, PyFormat.BINARY).dump(objects)
        if bytes(expected) != encode(samples):
            log.warning("the tvp path dumps its row arrays with psycopg: pgcopy's encoder disagrees with it")
            return None
    except Exception:  # a psycopg that changed its API: its own dumper then
        log.warning("the tvp path dumps its row arrays with psycopg", exc_info=True)
        return None
    return encode


def mssql_tvp_batch(info: EngineInfo, spec: EntitySpec) -> str:
    """The SQL Server batch of the TVP path: JSON (parameter 1) -> table variable -> procedure.

    Parameter 2 is the batch id; the last result set is the count outputs.
    """
    q, job = info.quote, info.job_object
    names = row_fields(spec)
    types = ["bigint", *(c.loose_type(info) for c in spec.columns), "bigint"]
    selected = [f"j.{q(n)}" for n in names[:-1]] + [f"CONVERT(binary(8), j.{q('ExpectedRowVersion')})"]
    outputs = list(COUNT_OUTPUTS)
    return "\n".join([
        "SET NOCOUNT ON;",
        "SET XACT_ABORT ON;",  # a failed fill of @Rows must not go on to apply an empty batch
        f"DECLARE @Rows {job(spec.row_type)};",
        f"INSERT INTO @Rows ({', '.join(q(n) for n in names)})",
        f"SELECT {', '.join(selected)}",
        "FROM OPENJSON(?) WITH (" + ", ".join(f"{q(n)} {t} '$.{n}'" for n, t in zip(names, types)) + ") AS j;",
        "DECLARE @BatchId uniqueidentifier = ?;",
        *(f"DECLARE @{k} bigint;" for k in outputs),
        f"EXEC {job(spec.upsert_many)} @Rows = @Rows, @BatchId = @BatchId OUTPUT, "
        + ", ".join(f"@{k} = @{k} OUTPUT" for k in outputs) + ";",
        "SELECT " + ", ".join(f"@{k} AS {q(k)}" for k in outputs) + ";",
        "SET NOCOUNT OFF;",
    ])


def _json_value(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value


#: The connection-string keywords (lower case) that both ``mssql_python.connect`` accepts (its
#: ``constants._ALLOWED_CONNECTION_STRING_PARAMS``; anything else raises ConnectionStringParseError)
#: and its bulk copy forwards to its own TDS session (``helpers._PYCORE_CONNECTION_KEY_MAP``), as
#: of mssql-python 1.16. DRIVER is removed first. A URL with any other keyword (``Connection
#: Timeout``, ``MARS_Connection``, ``LongAsMax``, ``AutoTranslate``, ``ColumnEncryption``,
#: ``Failover_Partner``, ``DSN``...) stages through pyodbc instead.
MSSQL_PYTHON_KEYWORDS = frozenset({
    "server", "addr", "address", "database", "uid", "pwd", "authentication", "trusted_connection",
    "encrypt", "trustservercertificate", "trust_server_certificate", "hostnameincertificate",
    "servercertificate", "serverspn", "multisubnetfailover", "applicationintent", "connectretrycount",
    "connectretryinterval", "keepalive", "keepaliveinterval", "ipaddresspreference", "packetsize",
    "packet size",
})


def mssql_bulkcopy_available() -> bool:
    """Whether Microsoft's mssql-python driver with its bulk copy (``Cursor.bulkcopy``, 1.4+) and the
    bulk copy's native core (``mssql_py_core``, a separate wheel) are installed and load here."""
    try:
        from mssql_python.cursor import Cursor
        import mssql_py_core  # noqa: F401  (what Cursor.bulkcopy imports at its first call)
    except Exception:  # not installed, or its native part cannot load here
        return False
    return hasattr(Cursor, "bulkcopy")


def _odbc_parts(url: sa.URL) -> list[str]:
    """The ``Key=Value`` parts of the ODBC connection string pyodbc would get for ``url``, without DRIVER."""
    from sqlalchemy.dialects.mssql.pyodbc import dialect

    args, _ = dialect().create_connect_args(url.set(drivername="mssql+pyodbc"))
    text = args[0] if args else ""
    return [p for p in re.split(r";(?![^{]*})", text)
            if p.strip() and not p.strip().lower().startswith("driver=")]


def mssql_python_refused_keywords(url: sa.URL) -> list[str]:
    """The keywords of ``url``'s ODBC connection string that mssql-python's bulk copy cannot take
    (see MSSQL_PYTHON_KEYWORDS); empty when it can take them all."""
    keys = [p.split("=", 1)[0].strip() for p in _odbc_parts(url)]
    return [k for k in keys if k.lower() not in MSSQL_PYTHON_KEYWORDS]


def mssql_python_connection_string(url: sa.URL) -> str | None:
    """The ODBC connection string of a SQLAlchemy SQL Server URL for mssql-python: the one pyodbc
    would get, without its DRIVER (mssql-python brings its own). None when it carries a keyword
    mssql-python refuses or would not pass to its bulk copy: stage through pyodbc then."""
    if mssql_python_refused_keywords(url):
        return None
    return ";".join(_odbc_parts(url))


@dataclass
class BulkStagingWriter(Writer):
    """Chunks bulk-loaded into the staging table, then reconciled.

    PostgreSQL: binary ``COPY`` on a second connection, a chunk ahead of the reconcile. SQL Server:
    the TDS bulk copy of Microsoft's mssql-python driver (``cursor.bulkcopy``) when it is installed
    and the URL carries only keywords it accepts, also a chunk ahead (it runs in a session of its
    own); otherwise pyodbc ``fast_executemany`` inside the reconcile's transaction. A chunk whose
    bulk copy fails is staged through pyodbc instead (its own committed transaction, still a chunk
    ahead); after an error that is not transient, the rest of the upsert stages through pyodbc.
    """

    path = "bulk"
    #: SQL Server: load staging with mssql-python's bulk copy (None: when it is installed and
    #: the URL's connection string suits it).
    mssql_bulkcopy: bool | None = None

    def __post_init__(self):
        super().__post_init__()
        self._mssql_python_connstr = None
        if self.info.name == "mssql" and self.mssql_bulkcopy is not False:
            self._mssql_python_connstr = mssql_python_connection_string(self.engine.url)
            if self.mssql_bulkcopy is None:
                available = mssql_bulkcopy_available()
                self.mssql_bulkcopy = available and self._mssql_python_connstr is not None
                if available and self._mssql_python_connstr is None:
                    log.info("bulk upserts stage through pyodbc: mssql-python does not accept the URL's %s",
                             ", ".join(mssql_python_refused_keywords(self.engine.url)))
        self._new_copy_body = None if self.info.name == "mssql" else pgcopy.body_factory(
            ["uuid", "int8", *(_copy_type(c, self.info) for c in self.spec.columns), "int8"],
            piece_size=pgcopy.PIECE_SIZE)

    def _chunk_builder(self, batch_id: uuid.UUID) -> ChunkBuilder:
        """PostgreSQL: the chunk's binary COPY body, written as rows are read (none is kept), so
        that the connection's thread only sends bytes. SQL Server: the rows."""
        if self._new_copy_body is None:
            return super()._chunk_builder(batch_id)
        add_row, finish = self._new_copy_body()

        def add(row: PreparedRow) -> None:
            add_row((batch_id, row.row_number, *row.values, row.expected))
        return ChunkBuilder(add, lambda: (None, finish()))

    def _ahead(self, prepared: Iterator[Chunk]) -> Iterator[Chunk]:
        """PostgreSQL: COPY the next chunk into staging on a second connection (its own
        transaction, committed) while this one's reconcile runs, so that the server loads and
        reconciles at the same time. The staged rows wait under their batch id, which nothing
        else reads; the reconcile applies and removes them in one transaction, as before, and
        the batch log still makes a retried reconcile safe. SQL Server keeps loading in the
        reconcile's transaction (one connection at a time)."""
        if self.info.name == "mssql" and not self.mssql_bulkcopy:
            return prepared
        self._staged_lock = threading.Lock()
        self._staged_ids: set[uuid.UUID] = set()
        self._abandoned = False
        return prefetched(self._staging(prepared))

    def _staging(self, prepared: Iterator[Chunk]) -> Iterator[Chunk]:
        try:
            for chunk in prepared:
                if chunk.valid:
                    if self.info.name == "mssql":
                        self.policy.call(lambda chunk=chunk: self._stage_mssql(chunk.batch_id, chunk.rows))
                    else:
                        self.policy.run(self.engine, lambda conn, chunk=chunk: self._copy(conn, chunk.batch_id,
                                                                                         chunk.payload, replace=True))
                    with self._staged_lock:
                        if self._abandoned:  # the upsert failed meanwhile: this chunk will not be applied
                            self._unstage({chunk.batch_id})
                            return
                        self._staged_ids.add(chunk.batch_id)
                    chunk.payload = chunk.rows = None  # staged: a retry of the reconcile finds the rows there
                yield chunk
        finally:
            prepared.close()

    def _abandon(self) -> None:
        if getattr(self, "_staged_lock", None) is None:
            return
        with self._staged_lock:
            self._abandoned = True
            left = set(self._staged_ids)
        if left:
            self._unstage(left)

    def _unstage(self, batch_ids: set[uuid.UUID]) -> None:
        """Best effort: remove staged rows that will never be reconciled (the upsert failed)."""
        table = self.spec.table_object(self.info, self.spec.staging)
        try:
            with self.engine.begin() as conn:
                conn.exec_driver_sql(f"DELETE FROM {table} WHERE {self.info.quote('BatchId')} = {self._mark}",
                                     [(b,) for b in batch_ids])
        except Exception:  # the original error matters more; the rows are only ever read by their batch id
            pass

    def _write_chunk(self, chunk: Chunk) -> Counts:
        counts = super()._write_chunk(chunk)
        if getattr(self, "_staged_lock", None) is not None:
            with self._staged_lock:
                self._staged_ids.discard(chunk.batch_id)
        return counts

    def _stage_mssql(self, batch_id: uuid.UUID, rows: list[PreparedRow]) -> None:
        """SQL Server, a chunk ahead: stage one chunk, committed, with mssql-python's bulk copy, or
        through pyodbc when that is not usable (a connection string it refuses, its native core
        missing) or fails for this chunk. Either way the chunk's earlier rows are deleted first, so
        a chunk is never staged twice."""
        if self.mssql_bulkcopy:
            if self._mssql_python_connstr is None:  # forced on for a URL mssql-python refuses
                self._stop_bulkcopy("mssql-python does not accept the URL's "
                                    + ", ".join(mssql_python_refused_keywords(self.engine.url)))
            else:
                self._delete_staged(batch_id)  # pyodbc: its errors are the retry policy's
                try:
                    self._bulkcopy_mssql(batch_id, rows)
                    return
                except Exception as exc:  # anything mssql-python or its core raised for this chunk
                    reason = transient_reason(exc)
                    if reason is None:
                        self._stop_bulkcopy(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                    else:
                        log.warning("mssql-python bulk copy of batch %s failed (%s); staging it through pyodbc",
                                    batch_id, reason)
        with self.engine.begin() as conn:  # DELETE and INSERT in one committed transaction
            conn.exec_driver_sql(f"DELETE FROM {self._staging_table()} WHERE {self.info.quote('BatchId')} = ?",
                                 (batch_id,))
            self._insert_mssql(conn, batch_id, rows)

    def _stop_bulkcopy(self, why: str) -> None:
        if self.mssql_bulkcopy:
            log.warning("bulk upserts stage through pyodbc from here on: %s", why)
        self.mssql_bulkcopy = False

    def _staging_table(self) -> str:
        return self.spec.table_object(self.info, self.spec.staging)

    def _delete_staged(self, batch_id: uuid.UUID) -> None:
        """Remove rows an earlier attempt of this chunk may have committed, and commit that before a
        bulk copy starts (the copy's session would wait for this one's locks)."""
        with self.engine.begin() as conn:
            conn.exec_driver_sql(f"DELETE FROM {self._staging_table()} WHERE {self.info.quote('BatchId')} = ?",
                                 (batch_id,))

    def _bulkcopy_mssql(self, batch_id: uuid.UUID, rows: list[PreparedRow]) -> None:
        """SQL Server: stage one chunk with mssql-python's TDS bulk copy, in a session of its own.

        The copy is one batch (``batch_size`` = the chunk): it commits whole or not at all. It has
        no operation timeout (``timeout=0``, as pyodbc's default): mssql-python's default, 30 s for
        the whole copy, lock waits included, is reachable by a large chunk on a slow link.
        """
        import mssql_python

        columns = ["BatchId", *row_fields(self.spec)]
        data = [(batch_id, r.row_number, *r.values, _version_bytes(r.expected)) for r in rows]
        connection = mssql_python.connect(self._mssql_python_connstr)
        try:
            cursor = connection.cursor()
            # Its own session (mssql_py_core opens one from this connection's settings): it commits
            # apart from any transaction here, which is why it stages a chunk ahead, like COPY on PostgreSQL.
            cursor.bulkcopy(self._staging_table(), data, batch_size=len(data), timeout=0, keep_nulls=True,
                            column_mappings=list(enumerate(columns)))
            connection.commit()
        finally:
            try:
                connection.close()
            except Exception:  # the copy's outcome is what matters
                pass

    def _insert_mssql(self, conn: sa.Connection, batch_id: uuid.UUID, rows: list[PreparedRow]) -> None:
        """SQL Server: INSERT one chunk into staging with pyodbc ``fast_executemany``, in ``conn``'s transaction."""
        q = self.info.quote
        columns = ["BatchId", *row_fields(self.spec)]
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            cursor.fast_executemany = True
            # No TABLOCK: on an INSERT target it is TABLOCKX, held to commit, and would make
            # concurrent writers of one entity queue; a parameter array is never minimally logged.
            sql = (f"INSERT INTO {self._staging_table()} ({', '.join(q(c) for c in columns)}) "
                   f"VALUES ({', '.join('?' for _ in columns)})")
            for part in chunks(rows, MSSQL_EXECUTEMANY_CHUNK):
                cursor.executemany(sql, [(batch_id, r.row_number, *r.values, _version_bytes(r.expected))
                                         for r in part])
        finally:
            cursor.close()

    def _copy(self, conn: sa.Connection, batch_id: uuid.UUID, payload: Any, replace: bool = False) -> None:
        """PostgreSQL: COPY one chunk's binary body into staging (``replace``: first remove rows an
        earlier attempt of this chunk may have committed)."""
        q = self.info.quote
        columns = ["BatchId", *row_fields(self.spec)]
        table = self.spec.table_object(self.info, self.spec.staging)
        raw = conn.connection.dbapi_connection
        if raw.info.encoding != "utf-8":  # the body's text is UTF-8; back to the session's at commit
            raw.execute("SET LOCAL client_encoding TO 'UTF8'")
        cursor = raw.cursor()
        if replace:
            cursor.execute(f"DELETE FROM {table} WHERE {q('BatchId')} = %s", (batch_id,))
        # Binary format, encoded ahead (dbtools.upsert.pgcopy): formatting rows here, with psycopg's
        # dumpers, held the GIL against the reading thread for a third of the chunk's time.
        with cursor.copy(f"COPY {table} ({', '.join(q(c) for c in columns)}) FROM STDIN (FORMAT BINARY)") as copy:
            for piece in payload:  # the chunk's body in pieces (pgcopy.PIECE_SIZE)
                copy.write(piece)

    def _apply(self, conn: sa.Connection, batch_id: uuid.UUID, rows: list[PreparedRow] | None, payload: Any = None
               ) -> Counts:
        if self.info.name == "mssql" and rows is not None:  # not staged ahead: pyodbc, in this transaction
            self._insert_mssql(conn, batch_id, rows)
        elif payload is not None:  # not staged ahead (prefetch=False): COPY in the reconcile's transaction
            self._copy(conn, batch_id, payload)
        out = call_procedure(conn, self.info, self.spec.reconcile, {"BatchId": batch_id}, outputs=COUNT_OUTPUTS)
        return self._counts(out)


def _copy_type(column: Column, info: EngineInfo) -> str:
    """psycopg's name of the column's PostgreSQL staging type (Column.loose_type), for the binary COPY."""
    from psycopg.postgres import types

    return types[re.sub(r"\(\d+\)", "", column.loose_type(info))].name  # timestamp(6) ... -> timestamp


WRITERS: dict[str, type[Writer]] = {"single": SingleRowWriter, "tvp": TvpWriter, "bulk": BulkStagingWriter}


def writer_for(path: str, engine: sa.Engine, spec: EntitySpec, **options: Any) -> Writer:
    """The writer for ``path`` (single, tvp or bulk)."""
    if path not in WRITERS:
        raise UpsertError(f"--path {path!r} is not a known path; allowed values: {', '.join(PATHS)}")
    return WRITERS[path](engine, spec, **options)


__all__ = ["Counts", "RowError", "Writer", "SingleRowWriter", "TvpWriter", "BulkStagingWriter",
           "writer_for", "prepare", "PATHS", "UpsertError"]
