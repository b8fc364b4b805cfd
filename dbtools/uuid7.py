"""Time-ordered ids (UUIDv7, RFC 9562) that sort by time in each engine's own order.

PostgreSQL compares ``uuid`` values byte by byte, so the standard UUIDv7 layout (48-bit
millisecond timestamp first) sorts by time there.

SQL Server does not: ``uniqueidentifier`` compares the bytes of .NET's ``Guid.ToByteArray()``
(first three fields little-endian) in the order 10-15, 8-9, 6-7, 4-5, 0-3 (``SqlGuid``). A
standard UUIDv7 therefore sorts by its random tail there. :func:`uuid7` with ``engine="mssql"``
keeps the same fields but lays them out where SQL Server looks first: the timestamp in the last
six bytes (the node group), the in-millisecond counter in the fourth group, random bits in the
first three groups, and the version (7) and variant bits in their usual places so tools still
read it as version 7.

Ids from one generator are strictly increasing in the engine's order, also within one
millisecond (a 12-bit counter, RFC 9562 method 1) and when the clock steps back (the last
timestamp is reused).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable

#: SqlGuid's comparison order over Guid.ToByteArray() (= uuid.UUID.bytes_le), most significant first.
SQLSERVER_BYTE_ORDER = (10, 11, 12, 13, 14, 15, 8, 9, 6, 7, 4, 5, 0, 1, 2, 3)

ENGINES = ("postgresql", "mssql")


def sqlserver_sort_key(value: uuid.UUID) -> bytes:
    """The bytes SQL Server compares, in the order it compares them."""
    raw = value.bytes_le
    return bytes(raw[i] for i in SQLSERVER_BYTE_ORDER)


def sort_key(value: uuid.UUID, engine: str) -> bytes:
    """How ``engine`` orders uuid values."""
    return sqlserver_sort_key(value) if engine == "mssql" else value.bytes


def timestamp_ms(value: uuid.UUID, engine: str) -> int:
    """The millisecond Unix timestamp an id was made at."""
    if engine == "mssql":
        return value.int & ((1 << 48) - 1)
    return value.int >> 80


class UUID7Generator:
    """Thread-safe generator; one per process is enough (see :func:`uuid7`)."""

    def __init__(self, clock: Callable[[], int] | None = None, randbytes: Callable[[int], bytes] = os.urandom):
        self._clock = clock or (lambda: time.time_ns() // 1_000_000)
        self._random = randbytes
        self._lock = threading.Lock()
        self._last_ms = -1
        self._counter = 0

    def _next_fields(self) -> tuple[int, int, int]:
        with self._lock:
            now = self._clock()
            if now > self._last_ms:
                self._last_ms = now
                # Start low in the counter space so a burst has room to count up.
                self._counter = int.from_bytes(self._random(2), "big") & 0x1FF
            else:
                self._counter += 1
                if self._counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                    self._last_ms += 1
                    self._counter = 0
            rand = int.from_bytes(self._random(8), "big") & ((1 << 62) - 1)
            return self._last_ms, self._counter, rand

    def __call__(self, engine: str = "postgresql") -> uuid.UUID:
        if engine not in ENGINES:
            raise ValueError(f"engine {engine!r} is not supported; allowed values: {', '.join(ENGINES)}")
        ms, counter, rand = self._next_fields()
        if engine == "postgresql":
            # unix_ts_ms(48) | ver(4)=7 | counter(12) | var(2)=0b10 | rand(62)
            return uuid.UUID(int=(ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand)
        # Same fields, SQL Server's order: group 5 (compared first) = timestamp; group 4 (next)
        # = variant + counter; group 3 = version + random; groups 1-2 = random.
        g1 = rand & 0xFFFFFFFF
        g2 = (rand >> 32) & 0xFFFF
        g3 = (0x7 << 12) | ((rand >> 48) & 0xFFF)
        g4 = (0b10 << 14) | (counter << 2) | ((rand >> 60) & 0b11)
        return uuid.UUID(int=(g1 << 96) | (g2 << 80) | (g3 << 64) | (g4 << 48) | ms)


_default = UUID7Generator()


def uuid7(engine: str = "postgresql") -> uuid.UUID:
    """A new time-ordered id laid out for ``engine`` (``postgresql`` or ``mssql``)."""
    return _default(engine)
