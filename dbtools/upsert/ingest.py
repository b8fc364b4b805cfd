"""``dbtools ingest``: read JSON Lines and upsert them through one of the three paths.

Each non-blank line is one JSON object whose keys are the entity's columns (plus, optionally,
``ExpectedRowVersion``). Its line number becomes the row's RowNumber, so every rejected row,
whether the reader, the writer or the database rejected it, is reported with its line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import sqlalchemy as sa

from ..db.environments import database_errors, job_engine, resolve_target
from ..errors import ConfigurationError
from .specs import spec_named
from .writers import ROW_NUMBER, Counts, RowError, writer_for

#: Rejected rows listed in the result (all of them are in the reject table).
MAX_REPORTED = 50


@dataclass
class IngestResult:
    entity: str
    path: str
    counts: Counts
    rejects: list[tuple[int, str]] = field(default_factory=list)  # (line, reason), first MAX_REPORTED
    batch_ids: list[Any] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"entity": self.entity, "path": self.path, **self.counts.as_dict(),
                "rejects": [{"line": n, "reason": r} for n, r in self.rejects]}


def read_jsonl(stream: IO[str], on_bytes: Callable[[int], None] | None = None) -> Iterator[dict | RowError]:
    """Rows of a JSON Lines stream, numbered by line; a bad line becomes a RowError."""
    for number, line in enumerate(stream, start=1):
        if on_bytes is not None:
            on_bytes(len(line))
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield RowError(number, f"not valid JSON: {exc.msg} at column {exc.colno}")
            continue
        if not isinstance(row, dict):
            yield RowError(number, "not a JSON object")
            continue
        row[ROW_NUMBER] = number
        yield row


def parse_max_rejects(text: str | None) -> tuple[str, float] | None:
    """``--max-rejects``: ``N`` rows or ``P%`` of the rows received; None: fail only when every row
    was rejected."""
    if text is None:
        return None
    raw = text.strip()
    try:
        if raw.endswith("%"):
            value = float(raw[:-1])
            if not 0 <= value <= 100:
                raise ValueError
            return ("percent", value)
        value = int(raw)
        if value < 0:
            raise ValueError
        return ("rows", float(value))
    except ValueError:
        raise ConfigurationError(f"--max-rejects {text!r}: expected a number of rows (0 or more) or a percentage "
                                 "such as 5%") from None


def rejects_exceeded(counts: Counts, limit: tuple[str, float] | None) -> str | None:
    """Why the rejects of ``counts`` fail the ingest under ``limit``, or None when they do not."""
    if limit is None:
        if counts.received and counts.rejected == counts.received:
            return f"every row was rejected ({counts.rejected:,} of {counts.received:,})"
        return None
    kind, value = limit
    if kind == "rows" and counts.rejected > value:
        return f"{counts.rejected:,} of {counts.received:,} rows were rejected: more than --max-rejects {int(value)}"
    if kind == "percent" and counts.received and counts.rejected * 100 > value * counts.received:
        share = counts.rejected * 100 / counts.received
        return (f"{counts.rejected:,} of {counts.received:,} rows were rejected ({share:.1f}%): more than "
                f"--max-rejects {value:g}%")
    return None


def ingest(env: str | None = None, url: str | None = None, *, entity: str, path: str, stream: IO[str],
           batch_size: int | None = None, on_chunk: Callable[[Counts], None] | None = None,
           on_bytes: Callable[[int], None] | None = None) -> IngestResult:
    """Upsert the JSON Lines of ``stream`` into ``entity`` through ``path`` (single, tvp, bulk)."""
    spec = spec_named(entity)
    with resolve_target(env, url) as target:
        engine = job_engine(target)
        try:
            options = {"on_chunk": on_chunk}
            if batch_size is not None:
                options["batch_size"] = batch_size
            writer = writer_for(path, engine, spec, **options)
            with database_errors(target, "ingest"):
                counts = writer.upsert(read_jsonl(stream, on_bytes))
                rejects = _rejects(engine, target.engine, spec, writer.batch_ids) if counts.rejected else []
            return IngestResult(spec.entity, path, counts, rejects, list(writer.batch_ids))
        finally:
            engine.dispose()


def _rejects(engine: sa.Engine, info, spec, batch_ids) -> list[tuple[int, str]]:
    """The first rejected rows of these batches, by line, from the reject table."""
    q = info.quote
    table = spec.table_object(info, spec.rejects)
    found: list[tuple[int, str]] = []
    with engine.connect() as conn:
        for part in range(0, len(batch_ids), 500):
            ids = batch_ids[part:part + 500]
            if info.name == "mssql":
                marks = ", ".join("?" for _ in ids)
                sql = (f"SELECT TOP ({MAX_REPORTED}) {q('RowNumber')}, {q('Reason')} FROM {table} "
                       f"WHERE {q('BatchId')} IN ({marks}) ORDER BY {q('RowNumber')}")
                rows = conn.exec_driver_sql(sql, tuple(ids))
            else:
                sql = (f"SELECT {q('RowNumber')}, {q('Reason')} FROM {table} WHERE {q('BatchId')} = ANY(%(ids)s) "
                       f"ORDER BY {q('RowNumber')} LIMIT {MAX_REPORTED}")
                rows = conn.exec_driver_sql(sql, {"ids": ids})
            found += [(int(r[0]), r[1]) for r in rows]
    return sorted(found)[:MAX_REPORTED]
