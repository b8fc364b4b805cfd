"""The transient-fault retry policy (dbtools.retry)."""

from __future__ import annotations

import threading

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from dbtools.retry import (
    MSSQL_TRANSIENT_ERRORS,
    RetryPolicy,
    is_transient,
    transient_reason,
)


class FakePyodbcError(Exception):
    """Shaped like pyodbc.Error: args = (SQLSTATE, message)."""


def pyodbc_error(sqlstate: str, number: int, text: str = "boom") -> sa.exc.DBAPIError:
    orig = FakePyodbcError(sqlstate, f"[{sqlstate}] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]{text} ({number}) (SQLExecDirectW)")
    return sa.exc.OperationalError("EXEC x", (), orig)


def pg_error(sqlstate: str) -> sa.exc.DBAPIError:
    return sa.exc.OperationalError("CALL x()", {}, psycopg.errors.lookup(sqlstate)("boom"))


@pytest.mark.parametrize("number", sorted(MSSQL_TRANSIENT_ERRORS))
def test_every_sqlclient_transient_error_number_is_transient(number):
    assert transient_reason(pyodbc_error("40001", number)) == f"SQL Server error {number}"


@pytest.mark.parametrize("sqlstate", ["HYT00", "HYT01", "08S01"])
def test_odbc_timeouts_and_broken_links_are_transient(sqlstate):
    assert transient_reason(pyodbc_error(sqlstate, 0, "Query timeout expired")) == f"ODBC SQLSTATE {sqlstate}"


# psycopg's error when a connection cannot be made (or is lost): an OperationalError without SQLSTATE.
FakePsycopgConnectError = psycopg.OperationalError


@pytest.mark.parametrize("error", [
    pyodbc_error("08001", 10061, "TCP Provider: No connection could be made because the target machine actively refused it."),
    pyodbc_error("28000", 18456, "Login failed for user 'dba'."),
    pyodbc_error("42000", 4060, 'Cannot open database "Nope" requested by the login. The login failed.'),
    sa.exc.OperationalError("connect", {}, FakePsycopgConnectError(
        'connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused')),
    sa.exc.OperationalError("connect", {}, FakePsycopgConnectError(
        'connection failed: connection to server at "h", port 5432 failed: FATAL:  password authentication failed '
        'for user "dba"')),
    sa.exc.OperationalError("connect", {}, FakePsycopgConnectError(
        'connection failed: connection to server on socket "/tmp/.s.PGSQL.5432" failed: FATAL:  database "nope" '
        'does not exist')),
], ids=["mssql-refused", "mssql-login", "mssql-unknown-database", "pg-refused", "pg-password", "pg-unknown-database"])
def test_a_connection_that_cannot_be_made_is_permanent(error):
    assert transient_reason(error) is None
    # The same text from a connection that was made and then lost is transient.
    if isinstance(error.orig, FakePsycopgConnectError):
        lost = sa.exc.OperationalError("CALL x()", {}, FakePsycopgConnectError("consuming input failed: EOF"))
        assert transient_reason(lost) == "PostgreSQL connection lost"


def test_a_postgresql_server_that_is_starting_up_is_still_transient():
    error = sa.exc.OperationalError("connect", {}, FakePsycopgConnectError(
        'connection failed: connection to server at "h", port 5432 failed: FATAL:  the database system is starting up'))
    assert transient_reason(error) == "PostgreSQL connection lost"


@pytest.mark.parametrize("sqlstate", ["40001", "40P01", "57P01", "08000", "08003", "08006"])
def test_postgresql_serialization_deadlock_shutdown_and_connection_errors_are_transient(sqlstate):
    assert is_transient(pg_error(sqlstate))


@pytest.mark.parametrize("error", [
    pyodbc_error("23000", 2627, "Violation of PRIMARY KEY constraint"),
    pyodbc_error("42000", 50010, "@Mode 'x' is not allowed"),
    pg_error("23505"),
    pg_error("22023"),
    sa.exc.ProgrammingError("SELECT", {}, ValueError("not a database error")),
    ValueError("plain bug"),
], ids=["mssql-pk", "mssql-validation", "pg-unique", "pg-validation", "wrapped-value-error", "value-error"])
def test_other_errors_are_not_transient(error):
    assert not is_transient(error)


def test_an_invalidated_connection_is_transient_whatever_the_driver_said():
    error = sa.exc.OperationalError("SELECT 1", {}, Exception("gone"), connection_invalidated=True)
    assert transient_reason(error) == "connection dropped"


def recording_policy(**kwargs):
    sleeps, events = [], []
    policy = RetryPolicy(sleep=sleeps.append, on_retry=events.append, **kwargs)
    return policy, sleeps, events


def failing(errors, result="done"):
    """A callable that raises the given errors in turn, then returns ``result``."""
    calls = []

    def fn():
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return result

    return fn, calls


def test_transient_failures_are_retried_with_capped_exponential_backoff_and_jitter():
    policy, sleeps, events = recording_policy(max_attempts=6, initial_wait=1.0, max_wait=5.0, jitter=0.2)
    fn, calls = failing([pyodbc_error("40001", 1205)] * 5)

    assert policy.call(fn) == "done"

    assert len(calls) == 6
    bases = [1.0, 2.0, 4.0, 5.0, 5.0]
    assert len(sleeps) == 5
    for slept, base in zip(sleeps, bases):
        assert base * 0.8 <= slept <= min(5.0, base * 1.2)
    assert [(e.attempt, e.reason) for e in events] == [(n, "SQL Server error 1205") for n in range(1, 6)]
    assert [e.delay for e in events] == sleeps


def test_the_original_error_is_raised_after_the_last_attempt():
    policy, sleeps, _ = recording_policy(max_attempts=3)
    errors = [pg_error("40P01"), pg_error("40P01"), pg_error("40P01")]
    fn, calls = failing(errors)

    with pytest.raises(sa.exc.OperationalError) as raised:
        policy.call(fn)

    assert raised.value is errors[-1]
    assert len(calls) == 3 and len(sleeps) == 2


def test_a_non_transient_error_fails_at_once_with_the_original_error():
    policy, sleeps, events = recording_policy()
    error = pyodbc_error("23000", 2627, "Violation of PRIMARY KEY constraint")
    fn, calls = failing([error])

    with pytest.raises(sa.exc.OperationalError) as raised:
        policy.call(fn)

    assert raised.value is error
    assert (len(calls), sleeps, events) == (1, [], [])


def test_work_inside_the_callers_transaction_is_never_retried():
    policy, sleeps, _ = recording_policy()
    error = pyodbc_error("40001", 1205)
    fn, calls = failing([error])

    with pytest.raises(sa.exc.OperationalError):
        policy.call(fn, in_caller_transaction=True)

    assert (len(calls), sleeps) == (1, [])


@pytest.mark.parametrize("kwargs", [{"max_attempts": 0}, {"jitter": 1.0}, {"initial_wait": 5, "max_wait": 1}])
def test_a_nonsensical_policy_is_refused(kwargs):
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


# ----------------------------------------------------------------------------- real faults


def scratch_table(server, sources):
    """A two-row table (id, n) in a scratch database; returns (engine, qualified name)."""
    q = server.engine.quote
    id_type = "int NOT NULL PRIMARY KEY"
    sources.table("DbToolsRetryProbe", "Counter", f"{q('id')} {id_type}, {q('n')} int NOT NULL")
    if server.engine.name == "mssql":
        engine = sa.create_engine(server.url.set(database="DbToolsRetryProbe"), poolclass=NullPool)
        name = "[dbo].[Counter]"
    else:
        engine = sa.create_engine(server.url, poolclass=NullPool)
        name = '"DbToolsRetryProbe"."Counter"'
    with engine.begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO {name} ({q('id')}, {q('n')}) VALUES (1, 0), (2, 0)")
    return engine, name


def kill_session(conn: sa.Connection, engine_name: str) -> None:
    """End ``conn``'s server session from another connection, as a failover or an admin would."""
    killer = sa.create_engine(conn.engine.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with killer.connect() as other:
        if engine_name == "mssql":
            spid = conn.exec_driver_sql("SELECT @@SPID").scalar()
            other.exec_driver_sql(f"KILL {int(spid)}")
        else:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            other.exec_driver_sql("SELECT pg_terminate_backend(%(p)s)", {"p": pid})
    killer.dispose()


def test_a_dropped_connection_is_retried_to_success(server, sources):
    engine, table = scratch_table(server, sources)
    policy, sleeps, events = recording_policy(initial_wait=0.01)
    attempts = []
    q = server.engine.quote

    def work(conn):
        attempts.append(1)
        conn.exec_driver_sql(f"UPDATE {table} SET {q('n')} = {q('n')} + 1 WHERE {q('id')} = 1")
        if len(attempts) == 1:  # the server drops this session mid-transaction
            kill_session(conn, server.engine.name)
        return conn.exec_driver_sql(f"SELECT {q('n')} FROM {table} WHERE {q('id')} = 1").scalar()

    result = policy.run(engine, work)

    assert result == 1, "the first attempt's update was rolled back with the dropped session"
    assert len(attempts) == 2 and len(events) == 1
    engine.dispose()


def test_a_deadlock_victim_is_retried_and_both_writers_finish(server, sources):
    engine, table = scratch_table(server, sources)
    q = server.engine.quote
    barrier = threading.Barrier(2, timeout=30)
    policy, _sleeps, events = recording_policy(initial_wait=0.01, max_attempts=5)
    failures = []

    def writer(first, second):
        attempts = []

        def work(conn):
            attempts.append(1)
            conn.exec_driver_sql(f"UPDATE {table} SET {q('n')} = {q('n')} + 1 WHERE {q('id')} = {first}")
            if len(attempts) == 1:
                barrier.wait()  # both hold their first row: the second updates deadlock
            conn.exec_driver_sql(f"UPDATE {table} SET {q('n')} = {q('n')} + 1 WHERE {q('id')} = {second}")

        try:
            policy.run(engine, work)
        except Exception as exc:  # reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(1, 2)), threading.Thread(target=writer, args=(2, 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    with engine.connect() as conn:
        rows = conn.exec_driver_sql(f"SELECT {q('id')}, {q('n')} FROM {table} ORDER BY {q('id')}").all()
    engine.dispose()
    assert failures == []
    assert [tuple(r) for r in rows] == [(1, 2), (2, 2)]
    assert [e.reason for e in events] in (["PostgreSQL SQLSTATE 40P01"], ["SQL Server error 1205"])


def test_a_number_in_parentheses_inside_the_message_is_not_taken_for_the_error_number():
    orig = FakePyodbcError("23000", "[23000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Violation of "
                                    "PRIMARY KEY constraint 'PK_T'. The duplicate key value is (1205). (2627) (SQLExecDirectW)")
    assert transient_reason(sa.exc.IntegrityError("INSERT", (), orig)) is None


def test_a_transient_number_in_a_further_message_still_counts():
    orig = FakePyodbcError("40001", "[40001] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Statement "
                                    "terminated. (3621) (SQLExecDirectW); [40001] [Microsoft][ODBC Driver 18 for SQL "
                                    "Server][SQL Server]Transaction was deadlocked. (1205)")
    assert transient_reason(sa.exc.OperationalError("EXEC", (), orig)) == "SQL Server error 1205"


# mssql-python's bulk copy: mssql_py_core raises a plain RuntimeError with the server's text
# (mssql-py-core src/utils.rs convert_tds_error), mssql_python its own exceptions (one string).
@pytest.mark.parametrize("text, reason", [
    ("Connection is broken: Connection reset by peer (os error 104)", "connection broken"),
    ("Transaction (Process ID 52) was deadlocked on lock resources with another process and has been chosen "
     "as the deadlock victim. Rerun the transaction.", "SQL Server error 1205"),
    ("Lock request time out period exceeded.", "SQL Server error 1222"),
    ("Msg 40613, Level 17, State 1: Database 'db' on server 'srv' is not currently available.",
     "SQL Server error 40613"),
    ("SQL Server error (number: 40197, state: 1): The service has encountered an error processing your request.",
     "SQL Server error 40197"),
    ("The service is currently busy. Retry the request after 10 seconds.", "SQL Server error 40501"),
    ("error 49918: Cannot process request. Not enough resources to process request.", "SQL Server error 49918"),
])
def test_mssql_python_bulk_copy_runtime_errors_with_transient_text_are_transient(text, reason):
    assert transient_reason(RuntimeError(text)) == reason


@pytest.mark.parametrize("error", [
    RuntimeError("Violation of PRIMARY KEY constraint 'PK_T'. The duplicate key value is (1205)."),
    RuntimeError("The INSERT permission was denied on the object 'T_Staging' (Msg 229)."),
    RuntimeError("Invalid object name 'dbo.T_Staging'."),
    RecursionError("Connection is broken"),  # not a plain RuntimeError: not the driver's
])
def test_other_runtime_errors_are_not_transient(error):
    assert transient_reason(error) is None


def test_mssql_python_exceptions_are_classified_by_their_text():
    exceptions = pytest.importorskip("mssql_python.exceptions")

    broken = exceptions.OperationalError("Communication link failure", "[08S01] [Microsoft] TCP Provider: reset")
    denied = exceptions.ProgrammingError("Permission denied", "[42000] Msg 229: The SELECT permission was denied")
    refused = exceptions.ConnectionStringParseError(["Unknown keyword 'connection timeout' is not recognized"])

    assert transient_reason(broken) == "ODBC SQLSTATE 08S01"
    assert transient_reason(denied) is None
    assert transient_reason(refused) is None
