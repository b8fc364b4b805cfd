"""PostgreSQL's binary COPY format, written without a connection.

The bulk writer encodes each chunk here, in the thread that reads ahead, so that the thread
holding the connection only sends bytes (``Copy.write``) instead of formatting every row while
holding the GIL. The format is PostgreSQL's documented ``COPY ... (FORMAT BINARY)`` layout: a
signature and two zero words, then per row a field count and per field a length (-1 for NULL)
and the value in the type's binary send format, then a -1 trailer.

Supported types are the staging tables' (dbtools.entities ``loose_type``): ``uuid``, ``int4``,
``int8``, ``text`` and ``timestamp`` (without time zone, naive datetimes).
"""

from __future__ import annotations

import datetime as dt
import struct
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

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


def encoder(types: Sequence[str], pause: Callable[[], None] | None = None,
            every: int = 256) -> Callable[[Iterable[Sequence[Any]]], bytes]:
    """A function turning rows (sequences of values in ``types`` order) into one COPY body.

    The body is complete: signature, rows, trailer. Values must already have the column's
    Python type (int, str, uuid.UUID, naive datetime) or be None; ints must fit the type.
    ``pause`` is called every ``every`` rows (a thread working beside another: dbtools.upsert).
    """
    unknown = [t for t in types if t not in ENCODERS]
    if unknown:
        raise ValueError(f"no binary COPY encoder for {', '.join(unknown)}; supported: {', '.join(ENCODERS)}")
    fields = tuple(ENCODERS[t] for t in types)
    width = len(fields)
    count = struct.pack("!h", width)

    def encode(rows: Iterable[Sequence[Any]]) -> bytes:
        parts = [SIGNATURE]
        append = parts.append
        for number, row in enumerate(rows, start=1):
            if pause is not None and number % every == 0:
                pause()
            if len(row) != width:
                raise ValueError(f"a row of {len(row)} values for {width} columns: {row!r}")
            append(count)
            for value, field in zip(row, fields):
                append(NULL if value is None else field(value))
        append(TRAILER)
        return b"".join(parts)

    return encode
