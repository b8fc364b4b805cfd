"""PostgreSQL's binary COPY format, written without a connection.

The bulk writer encodes each chunk here, row by row as the thread that reads ahead converts
them, so that the thread holding the connection only sends bytes (``Copy.write``) instead of
formatting every row while holding the GIL. The format is PostgreSQL's documented
``COPY ... (FORMAT BINARY)`` layout: a signature and two zero words, then per row a field count
and per field a length (-1 for NULL) and the value in the type's binary send format, then a -1
trailer.

Supported types are the staging tables' (dbtools.upsert.specs ``loose_type``): ``uuid``, ``int4``,
``int8``, ``text`` and ``timestamp`` (without time zone, naive datetimes).

Rows are formatted by psycopg's own row formatter when psycopg runs its C implementation
(``psycopg[binary]`` or ``psycopg[c]``): about 0.8 us a row against 4.3 us for the Python one
here. That formatter lives in a private psycopg module; when it is missing, fails a self-check
(native_formatter) or psycopg runs its pure-Python implementation, the Python encoder below is
used. Both write the same bytes for the values the writers send (tests/test_pgcopy.py compares
them); the C formatter does not range-check ints, which the writers check before.

Text is written in UTF-8: the bulk writer makes its connection's client encoding UTF8 for the
COPY when it is not.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib
import struct
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
TRAILER = struct.pack("!h", -1)
NULL = struct.pack("!i", -1)
_POSTGRES_EPOCH = dt.datetime(2000, 1, 1)
_US_PER_DAY = 86_400_000_000

_int4 = struct.Struct("!ii").pack  # length 4, value
_int8 = struct.Struct("!iq").pack  # length 8, value
_length = struct.Struct("!i").pack


def _uuid(value: uuid.UUID) -> bytes:
    return b"\x00\x00\x00\x10" + value.bytes


def _text(value: str) -> bytes:
    data = value.encode("utf-8")
    return _length(len(data)) + data


def _timestamp(value: dt.datetime) -> bytes:
    delta = value - _POSTGRES_EPOCH
    return _int8(8, delta.days * _US_PER_DAY + delta.seconds * 1_000_000 + delta.microseconds)


ENCODERS: dict[str, Callable[[Any], bytes]] = {
    "uuid": _uuid,
    "int4": lambda value: _int4(4, value),
    "int8": lambda value: _int8(8, value),
    "text": _text,
    "timestamp": _timestamp,
}


@functools.cache
def native_formatter() -> Callable[[Sequence[Any], Any, bytearray], None] | None:
    """psycopg's C row formatter (``format_row_binary(row, transformer, out)``), or None.

    A private psycopg function (``psycopg._copy_base`` since 3.2, ``psycopg.copy`` before), so it
    is only used after it wrote a sample row of every supported type and NULL exactly as the
    Python encoder does: a future psycopg that changes it falls back instead of corrupting data.
    """
    try:
        import psycopg
    except ImportError:
        return None
    if psycopg.pq.__impl__ == "python":
        return None  # its formatter is pure Python too, and slower than ours
    for module in ("psycopg._copy_base", "psycopg.copy"):
        try:
            format_row = getattr(importlib.import_module(module), "format_row_binary", None)
        except ImportError:
            continue
        if format_row is not None and _formats_like_python(format_row):
            return format_row
    return None


_SAMPLE_TYPES = ("uuid", "int4", "int8", "text", "timestamp", "text")
_SAMPLE_ROW = (uuid.UUID("01234567-89ab-7def-8123-456789abcdef"), -(2**31), 2**63 - 1, "naïve 😀",
               dt.datetime(2026, 12, 3, 8, 9, 10, 123456), None)


def _formats_like_python(format_row: Callable[[Sequence[Any], Any, bytearray], None]) -> bool:
    try:
        out = bytearray()
        format_row(_SAMPLE_ROW, _binary_transformer(_SAMPLE_TYPES), out)
    except Exception:  # a changed signature or module: not usable
        return False
    body = encoder(_SAMPLE_TYPES, native=False)([_SAMPLE_ROW])
    return bytes(out) == body[len(SIGNATURE):-len(TRAILER)]


def _binary_transformer(types: Sequence[str]) -> Any:
    """A connection-less psycopg Transformer dumping ``types`` in binary (UTF-8 text, the global adapters)."""
    from psycopg.adapt import Transformer
    from psycopg.postgres import types as pg_types
    from psycopg.pq import Format

    transformer = Transformer()
    transformer.set_dumper_types([pg_types[t].oid for t in types], Format.BINARY)
    return transformer


class Body(NamedTuple):
    """One COPY body in the making: ``add(row)`` for every row, then ``finish()`` once for the bytes
    (with ``piece_size``: for the list of its pieces, to be written in order)."""

    add: Callable[[Sequence[Any]], None]
    finish: Callable[[], Any]


#: The bulk writer's piece size. Below glibc's initial mmap threshold (128 KiB), so pieces come from
#: the heap and are reused chunk after chunk. One buffer per chunk (about 7 MiB for 50,000 events)
#: was mmapped, and freeing it raised glibc's dynamic threshold, after which each chunk's buffer
#: was carved from the heap again at a new size: the writer's peak RSS over 3,000,000 events
#: then depended on the order of those frees (84 or 99 MiB against 81 MiB over 300,000;
#: docs/benchmarks.md).
PIECE_SIZE = 64 * 1024


def body_factory(types: Sequence[str], native: bool | None = None,
                 piece_size: int | None = None) -> Callable[[], Body]:
    """A function making empty COPY bodies for rows of ``types``: build one row by row.

    Values must already have the column's Python type (int, str, uuid.UUID, naive datetime) or
    be None; ints must fit the type. A finished body is complete: signature, rows, trailer.
    ``native``: use psycopg's C row formatter (None: when available; False: the Python encoder).
    ``piece_size``: ``finish()`` returns the body as a list of pieces of about that many bytes
    (a row is never split; a piece holds whole rows, the signature and the trailer included)
    instead of one buffer.
    """
    unknown = [t for t in types if t not in ENCODERS]
    if unknown:
        raise ValueError(f"no binary COPY encoder for {', '.join(unknown)}; supported: {', '.join(ENCODERS)}")
    format_row = native_formatter() if native is not False else None
    if native and format_row is None:
        raise ValueError("psycopg's C row formatter is not available (psycopg runs its Python implementation)")
    width = len(types)

    def wrong_width(row: Sequence[Any]) -> ValueError:
        return ValueError(f"a row of {len(row)} values for {width} columns: {row!r}")

    if format_row is not None:
        def native_body() -> Body:
            transformer = _binary_transformer(types)
            pieces: list[bytearray] = []
            out = bytearray(SIGNATURE)

            def add(row: Sequence[Any]) -> None:
                nonlocal out
                if len(row) != width:  # some psycopg versions index their dumpers unchecked
                    raise wrong_width(row)
                if piece_size is not None and len(out) >= piece_size:
                    pieces.append(out)
                    out = bytearray()
                format_row(row, transformer, out)

            def finish() -> bytearray | list[bytearray]:
                out.extend(TRAILER)
                if piece_size is None:
                    return out
                pieces.append(out)
                return pieces
            return Body(add, finish)
        return native_body

    fields = tuple(ENCODERS[t] for t in types)
    count = struct.pack("!h", width)

    def python_body() -> Body:
        pieces: list[bytes] = []
        parts = [SIGNATURE]

        def add(row: Sequence[Any]) -> None:
            if len(row) != width:
                raise wrong_width(row)
            append = parts.append
            append(count)
            for value, field in zip(row, fields):
                append(NULL if value is None else field(value))

        size = len(SIGNATURE)

        def add_in_pieces(row: Sequence[Any]) -> None:
            nonlocal parts, size
            if size >= piece_size:
                pieces.append(b"".join(parts))
                parts, size = [], 0
            start = len(parts)
            add(row)
            size += sum(len(part) for part in parts[start:])

        def finish() -> bytes | list[bytes]:
            parts.append(TRAILER)
            if piece_size is None:
                return b"".join(parts)
            pieces.append(b"".join(parts))
            return pieces
        return Body(add if piece_size is None else add_in_pieces, finish)
    return python_body


def encoder(types: Sequence[str], native: bool | None = None) -> Callable[[Iterable[Sequence[Any]]], bytes | bytearray]:
    """A function turning rows (sequences of values in ``types`` order) into one COPY body (see body_factory)."""
    new_body = body_factory(types, native)

    def encode(rows: Iterable[Sequence[Any]]) -> bytes | bytearray:
        body = new_body()
        for row in rows:
            body.add(row)
        return body.finish()

    return encode


# ----------------------------------------------------------------------------- arrays of a row type
def record_array_encoder(field_types: Sequence[str], field_oids: Sequence[int], element_oid: int
                         ) -> Callable[[Iterable[Sequence[Any]]], bytes]:
    """A function turning rows into one binary array of a composite type (the tvp path's parameter).

    The layout is PostgreSQL's ``array_send`` of ``record_send`` elements: a header (one
    dimension, no NULL element, the element type's oid, the length, lower bound 1), then per row
    its length and the record: the field count, and per field its type's oid, a length (-1 for
    NULL) and the value in the type's binary send format (the encoders above). ``field_oids``
    must be the composite's own field types (record_recv refuses another oid), ``field_types``
    their names in ENCODERS. Values as for body_factory. About a third of psycopg's composite
    dumper's time, which runs in Python per field (tests/test_pgcopy.py compares the bytes).
    """
    unknown = [t for t in field_types if t not in ENCODERS]
    if unknown:
        raise ValueError(f"no binary encoder for {', '.join(unknown)}; supported: {', '.join(ENCODERS)}")
    if len(field_oids) != len(field_types):
        raise ValueError(f"{len(field_oids)} field oids for {len(field_types)} field types")
    width = len(field_types)
    count = _length(width)
    oids = [struct.pack("!I", oid) for oid in field_oids]
    encoders = [ENCODERS[t] for t in field_types]
    fields = tuple(zip(oids, encoders))
    header = struct.Struct("!iiIii").pack
    empty = struct.pack("!iiI", 0, 0, element_oid)

    def encode(rows: Iterable[Sequence[Any]]) -> bytes:
        parts: list[bytes] = []
        append = parts.append
        join = b"".join
        n = 0
        for row in rows:
            if len(row) != width:
                raise ValueError(f"a row of {len(row)} values for {width} fields: {row!r}")
            record = [count]
            add = record.append
            for value, (oid, field) in zip(row, fields):
                add(oid)
                add(NULL if value is None else field(value))
            body = join(record)
            append(_length(len(body)))
            append(body)
            n += 1
        if not n:
            return empty
        return header(1, 0, element_oid, n, 1) + join(parts)

    return encode
