"""Call the package's procedures the same way on both engines.

SQL Server: ``EXEC [dbo].[proc] @In = ?, @Out = @Out OUTPUT`` followed by a SELECT of the
OUTPUT variables. PostgreSQL: ``CALL "BlobDeltaJobs"."proc"("In" => ...)``, whose INOUT
parameters come back as one row. Either way the caller gets a dict of output values.

Validation errors raised by the procedures (SQL Server error 50010, PostgreSQL SQLSTATE
22023) become :class:`ProcedureValidationError` with the server's message text.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import sqlalchemy as sa

from ..errors import DbToolsError, driver_message
from .engines import EngineInfo

VALIDATION_ERROR_NUMBER = 50010
VALIDATION_SQLSTATE = "22023"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ProcedureValidationError(DbToolsError):
    """A procedure rejected its parameters or configuration; nothing was changed."""


def call_procedure(
    conn: sa.Connection,
    engine: EngineInfo,
    name: str,
    params: Mapping[str, Any],
    outputs: Mapping[str, str] = {},
    output_values: Mapping[str, Any] = {},
    binary: frozenset[str] = frozenset(),
    on_cancel: Callable[[Callable[[], None]], None] | None = None,
) -> dict[str, Any]:
    """Execute a job-DB procedure and return its OUTPUT/INOUT values.

    ``outputs`` maps output parameter names to their T-SQL declaration types (used on SQL
    Server only; PostgreSQL knows its INOUT types). ``output_values`` gives some of them a value
    on the way in (OUTPUT parameters are input too on SQL Server; INOUT on PostgreSQL).
    ``binary`` names PostgreSQL parameters sent in binary format (large arrays of composites,
    which psycopg's text format quotes field by field in Python). ``on_cancel`` is given a function
    that cancels the call from another thread (SQL Server: the ODBC statement; PostgreSQL: the
    connection's current query), before the call starts.
    """
    for key in (name, *params, *outputs):
        if not _NAME.match(key):
            raise ValueError(f"not a plain identifier: {key!r}")
    with _translated(conn):
        if engine.name == "mssql":
            return _call_mssql(conn, engine, name, params, outputs, output_values, on_cancel)
        if on_cancel is not None:
            on_cancel(conn.connection.driver_connection.cancel)
        return _call_postgresql(conn, engine, name, {**params, **output_values}, outputs, binary)


@contextlib.contextmanager
def _translated(conn: sa.Connection) -> Iterator[None]:
    """Turn the procedures' validation errors into ProcedureValidationError; others pass."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        translated = _translate(exc.orig)
        if translated is None:
            raise
        raise translated from exc
    except conn.dialect.loaded_dbapi.Error as exc:  # raised by the raw cursor of run_mssql_batch
        translated = _translate(exc)
        if translated is None:
            raise
        raise translated from exc


def _call_mssql(conn, engine, name, params, outputs, output_values, on_cancel=None) -> dict[str, Any]:
    lines = ["SET NOCOUNT ON;"]
    lines += [f"DECLARE @{key} {sqltype}" + (" = ?;" if key in output_values else ";")
              for key, sqltype in outputs.items()]
    values = [output_values[key] for key in outputs if key in output_values] + list(params.values())
    args = [f"@{key} = ?" for key in params] + [f"@{key} = @{key} OUTPUT" for key in outputs]
    lines.append(f"EXEC {engine.job_object(name)} " + ", ".join(args) + ";")
    if outputs:
        lines.append("SELECT " + ", ".join(f"@{key} AS {engine.quote(key)}" for key in outputs) + ";")
    # The OUTPUT values are the last result set: a procedure may return its own rows first
    # (the operator's RunId row, a plan).
    row = _run_mssql(conn, "\n".join(lines), tuple(values), on_cancel)
    return row if outputs else {}


def run_mssql_batch(conn: sa.Connection, sql: str, values: tuple) -> dict[str, Any]:
    """SQL Server: run a batch of our own; return its last result set's first row as a dict.

    Validation errors of the procedures it calls become ProcedureValidationError, as with
    :func:`call_procedure`.
    """
    with _translated(conn):
        return _run_mssql(conn, sql, values)


def _run_mssql(conn: sa.Connection, sql: str, values: tuple, on_cancel=None) -> dict[str, Any]:
    # A raw cursor: informational messages (RAISERROR ... 0, 1 WITH NOWAIT) arrive as result sets
    # without columns, and errors raised after the first result surface only through nextset().
    dbapi = conn.dialect.loaded_dbapi
    cursor = conn.connection.cursor()
    if on_cancel is not None:
        on_cancel(cursor.cancel)
    try:
        cursor.execute(sql, values)
        row, columns = None, []
        while True:
            if cursor.description is not None:
                columns = [d[0] for d in cursor.description]
                row = cursor.fetchone()
            if not cursor.nextset():
                break
    except dbapi.Error as exc:
        # A killed or dropped session: report it as SQLAlchemy would (connection_invalidated), so
        # the retry policy sees a dropped connection (error 596: "session is in the kill state").
        if conn.dialect.is_disconnect(exc, conn.connection.dbapi_connection, cursor) or "(596)" in driver_message(exc):
            conn.invalidate(exc)
            raise sa.exc.DBAPIError.instance(sql, values, exc, dbapi.Error,
                                             connection_invalidated=True, dialect=conn.dialect) from exc
        raise
    finally:
        try:
            cursor.close()
        except dbapi.Error:
            pass
    return dict(zip(columns, row)) if row is not None else {}


def _call_postgresql(conn, engine, name, params, outputs, binary=frozenset()) -> dict[str, Any]:
    args = [f"{engine.quote(key)} => %({key}){'b' if key in binary else 's'}" for key in params]
    sql = f"CALL {engine.job_object(name)}(" + ", ".join(args) + ")"
    result = conn.exec_driver_sql(sql, dict(params))
    if not result.returns_rows:
        return {}
    row = result.mappings().one()
    return {key: row[key] for key in outputs} if outputs else dict(row)


def _translate(orig: BaseException | None) -> Exception | None:
    """A ProcedureValidationError for the procedures' validation errors, else None."""
    diag = getattr(orig, "diag", None)
    sqlstate = getattr(diag, "sqlstate", None) or getattr(orig, "sqlstate", None)
    if sqlstate == VALIDATION_SQLSTATE:
        return ProcedureValidationError(getattr(diag, "message_primary", None) or driver_message(orig))
    text = driver_message(orig)
    if f"({VALIDATION_ERROR_NUMBER})" in text:
        # pyodbc: "[42000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]<message> (50010) (SQLExecDirectW)"
        match = re.search(r".*\[SQL Server\](.*?) \(50010\)", text, re.S)
        return ProcedureValidationError(match.group(1) if match else text)
    return None
