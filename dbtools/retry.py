"""The transient-fault retry policy shared by the delta runner and the upsert writers.

What counts as transient:

* SQL Server: the error numbers Microsoft.Data.SqlClient retries by default (deadlock victim
  1205, lock timeouts, Azure throttling and failover...), less 4060 (cannot open the database),
  plus ODBC timeouts (SQLSTATE HYT00/HYT01) and broken links (08S01). mssql-python's bulk copy
  reports these as a plain RuntimeError (or mssql_python exceptions) with the server's text: they
  are recognised by that text ("Connection is broken", the deadlock message, an error number).
* PostgreSQL: SQLSTATE 40001 (serialization failure), 40P01 (deadlock), 57P01 (admin
  shutdown) and class 08 (connection exceptions), plus a connection lost without a SQLSTATE.

A connection that cannot be made at all (a wrong password, an unknown database, role or host, a
host that refuses; ODBC 08001, login failed 18456) is permanent: retrying it only delays the
error. A server that says it is starting up or shutting down is still transient.
* Any error after which SQLAlchemy invalidated the connection (it was dropped).

Everything else (constraint violations, syntax errors, validation errors) is raised at once,
unchanged. Work that runs inside a transaction the *caller* opened is never retried: the
caller's earlier statements were rolled back with it, so only the caller can redo them.

Backoff is exponential with jitter and a cap, as SqlClient's: the n-th wait is
``min(cap, initial * 2**(n-1))`` scaled by a random factor in ``[1 - jitter, 1 + jitter]``.
Azure SQL guidance asks for at least 5 s before the first retry against Azure; pass
``initial_wait=5`` there.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import sqlalchemy as sa
import tenacity

log = logging.getLogger("dbtools.retry")

T = TypeVar("T")

MSSQL_TRANSIENT_ERRORS = frozenset({
    1204, 1205, 1222, 233, 997, 4221, 10060, 10928, 10929, 40143, 40197, 40501, 40540,
    40613, 42108, 42109, 49918, 49919, 49920,
})
# Not 4060 (cannot open the database: SqlClient retries it for Azure failovers, but on a server of
# one's own it is a database that does not exist) nor 08001 (no connection could be made): a
# connection that cannot be made at all is reported at once.
MSSQL_TRANSIENT_SQLSTATES = frozenset({"HYT00", "HYT01", "08S01"})
# psycopg's message when a connection cannot be made (a wrong password, an unknown database or
# role, a host that refuses or cannot be found): permanent, unless the server said it is starting
# or stopping (SQLSTATE 57P03, cannot_connect_now).
_PG_CONNECT_FAILED = re.compile(r"^connection failed:|^connection to server .* failed:", re.I)
_PG_CONNECT_NOW = re.compile(r"the database system is (starting up|shutting down|in recovery mode)|"
                             r"not yet accepting connections", re.I)
POSTGRESQL_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "57P01"})
# The native error number pyodbc appends to each message: "... text (1205) (SQLExecDirectW)", and for
# further messages "...; [01000] ... text (3621)". Only that position counts: "The duplicate key value
# is (1205)." is not a deadlock.
_NATIVE_ERROR = re.compile(r"\((\d+)\)(?=\s*(?:\(SQL\w+\)|;|$))")
# mssql-python's bulk copy (mssql_py_core) raises a plain RuntimeError for a server error (its text
# is the server's message) and for "Connection is broken: ..."; mssql_python's own exceptions carry
# the driver's text. Neither has a SQLSTATE attribute or a fixed place for the error number, so they
# are recognised by text: an error number written "Msg 1205", "error 1205" or "number: 1205" (not a
# bare "(1205)": "The duplicate key value is (1205)." is not a deadlock), an ODBC SQLSTATE in
# brackets, the connection-broken text, or the messages of the commonest transient errors.
_MSSQL_PYTHON_NUMBER = re.compile(r"\b(?:Msg|error|number|code)\s*(?:number)?\s*[:=#]?\s*(\d{3,5})\b", re.I)
_MSSQL_PYTHON_SQLSTATE = re.compile(r"\[(HYT00|HYT01|08S01)\]")
_MSSQL_PYTHON_TEXTS = (
    (re.compile(r"Connection is broken|connection has been closed", re.I), "connection broken"),
    (re.compile(r"was deadlocked on .*deadlock victim", re.I | re.S), "SQL Server error 1205"),
    (re.compile(r"Lock request time out period exceeded", re.I), "SQL Server error 1222"),
    (re.compile(r"is not currently available\. Please retry", re.I), "SQL Server error 40613"),
    (re.compile(r"The service has encountered an error processing your request", re.I), "SQL Server error 40197"),
    (re.compile(r"The service is currently busy", re.I), "SQL Server error 40501"),
)


def _mssql_python_reason(text: str) -> str | None:
    """Why an mssql-python / mssql_py_core error with this text is transient, or None."""
    for number in _MSSQL_PYTHON_NUMBER.findall(text):
        if int(number) in MSSQL_TRANSIENT_ERRORS:
            return f"SQL Server error {number}"
    state = _MSSQL_PYTHON_SQLSTATE.search(text)
    if state:
        return f"ODBC SQLSTATE {state.group(1)}"
    for pattern, reason in _MSSQL_PYTHON_TEXTS:
        if pattern.search(text):
            return reason
    return None


def transient_reason(exc: BaseException) -> str | None:
    """Why ``exc`` is transient (e.g. ``'SQL Server error 1205'``), or None when it is not."""
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return "connection dropped"
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate is None and getattr(orig, "diag", None) is not None:
        sqlstate = orig.diag.sqlstate
    module = type(orig).__module__ or ""
    if module.startswith("psycopg"):
        if sqlstate in POSTGRESQL_TRANSIENT_SQLSTATES:
            return f"PostgreSQL SQLSTATE {sqlstate}"
        if sqlstate and sqlstate.startswith("08"):
            return f"PostgreSQL SQLSTATE {sqlstate} (connection exception)"
        if sqlstate is None and type(orig).__name__ == "OperationalError":
            text = str(orig).strip()
            if _PG_CONNECT_FAILED.search(text) and not _PG_CONNECT_NOW.search(text):
                return None  # never connected: a wrong password, database, role or host
            return "PostgreSQL connection lost"
        return None
    args = getattr(orig, "args", ())
    if len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):  # pyodbc: (SQLSTATE, text)
        state, text = args[0], args[1]
        for number in _NATIVE_ERROR.findall(text):
            if int(number) in MSSQL_TRANSIENT_ERRORS:
                return f"SQL Server error {number}"
        if state in MSSQL_TRANSIENT_SQLSTATES:
            return f"ODBC SQLSTATE {state}"
        return None
    if isinstance(orig, (TimeoutError, ConnectionError)):
        return type(orig).__name__
    if type(orig) is RuntimeError or module.startswith(("mssql_python", "mssql_py_core")):
        # mssql-python / its bulk copy's core (a plain RuntimeError: not a subclass such as RecursionError)
        if type(orig).__name__ == "ConnectionStringParseError":
            return None
        return _mssql_python_reason(str(orig))
    return None


def is_transient(exc: BaseException) -> bool:
    return transient_reason(exc) is not None


@dataclass(frozen=True)
class RetryEvent:
    """What the logging hook is told before each wait."""

    attempt: int  # the attempt that failed, from 1
    delay: float  # seconds until the next attempt
    reason: str
    error: BaseException


def _log_event(event: RetryEvent) -> None:
    log.warning("transient failure (%s) on attempt %d; retrying in %.2fs: %s",
                event.reason, event.attempt, event.delay, str(event.error).splitlines()[0])


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, a cap and a maximum number of attempts."""

    max_attempts: int = 5
    initial_wait: float = 0.5
    max_wait: float = 30.0
    jitter: float = 0.2
    on_retry: Callable[[RetryEvent], None] = _log_event
    sleep: Callable[[float], None] = time.sleep
    random: random.Random = field(default_factory=random.Random, compare=False)

    def __post_init__(self):
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        if self.initial_wait < 0 or self.max_wait < self.initial_wait:
            raise ValueError("waits must satisfy 0 <= initial_wait <= max_wait")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (from 1)."""
        base = min(self.max_wait, self.initial_wait * (2 ** (attempt - 1)))
        return min(self.max_wait, base * self.random.uniform(1 - self.jitter, 1 + self.jitter))

    def call(self, fn: Callable[..., T], *args, in_caller_transaction: bool = False, **kwargs) -> T:
        """Call ``fn``, retrying transient failures; once only inside a caller's transaction."""
        if in_caller_transaction:
            return fn(*args, **kwargs)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception()
            self.on_retry(RetryEvent(state.attempt_number, state.upcoming_sleep,
                                     transient_reason(error) or "transient", error))

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.max_attempts),
            wait=lambda state: self.delay(state.attempt_number),
            retry=tenacity.retry_if_exception(is_transient),
            before_sleep=before_sleep,
            sleep=self.sleep,
            reraise=True,
        )
        return retrying(fn, *args, **kwargs)

    def run(self, engine: sa.Engine, work: Callable[[sa.Connection], T]) -> T:
        """Run ``work`` in a fresh connection and transaction per attempt."""

        def attempt() -> T:
            with engine.begin() as conn:
                return work(conn)

        return self.call(attempt)

    def run_on(self, conn: sa.Connection, work: Callable[[sa.Connection], T]) -> T:
        """Run ``work`` on the caller's connection: retried only when no transaction is open."""
        if conn.in_transaction():
            return work(conn)

        def attempt() -> T:
            with conn.begin():
                return work(conn)

        return self.call(attempt)


DEFAULT_POLICY = RetryPolicy()
