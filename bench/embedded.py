"""The benchmarks' private PostgreSQL: a pgserver in a temporary directory, fresh databases in it,
and the way the scripts run a stored step script's statement with the engine's parameters.

Imported by the scripts beside it (``python bench/<script>.py`` puts this folder on sys.path).
"""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from contextlib import contextmanager

import psycopg

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from dbtools import commands


@contextmanager
def private_server_handle():
    """A new pgserver in a temporary directory (its handle, for ``admin_url`` and ``restart``),
    stopped and removed on leaving."""
    import pgserver

    data = tempfile.mkdtemp(prefix="dbtools-bench-")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = pgserver.get_server(data, cleanup_mode="stop")
        try:
            yield server
        finally:
            server.cleanup()
    finally:
        shutil.rmtree(data, ignore_errors=True)


@contextmanager
def private_server():
    """The admin URL of a new pgserver in a temporary directory, stopped and removed on leaving."""
    with private_server_handle() as server:
        yield admin_url(server)


def admin_url(server) -> sa.URL:
    """The SQLAlchemy URL of a private server's superuser."""
    return sa.make_url(server.get_uri()).set(drivername="postgresql+psycopg")


def restart(server, **settings: str) -> None:
    """Set ``settings`` (ALTER SYSTEM) on a private server and restart it, for those that need a
    restart (shared_buffers)."""
    from pgserver._commands import pg_ctl

    with connect(admin_url(server)) as conn:
        for name, value in settings.items():
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
    pg_ctl(["-w", "restart"], pgdata=server.pgdata, user=server.system_user, timeout=60)


def fresh_database(admin_url, name):
    """Drop and create database ``name``, migrate it to head, return its URL."""
    admin = sa.create_engine(admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    url = admin_url.set(database=name)
    commands.migrate(url=url.render_as_string(hide_password=False))
    return url


def connect(url) -> psycopg.Connection:
    """An autocommit psycopg connection to the SQLAlchemy ``url`` (a ``with`` block closes it)."""
    params = url.translate_connect_args(username="user", database="dbname")
    params.update(url.query)
    return psycopg.connect(autocommit=True, **params)


# The parameters the engine passes to a step script ($1 to $9), as PostgreSQL's EXECUTE ... USING does.
ENGINE_PARAMETERS = "p(int, uuid, timestamp, timestamp, uuid, uuid, text, timestamp, boolean)"


def run_prepared(cursor: psycopg.ClientCursor, sql: str, args: tuple) -> tuple[float, int]:
    """Run ``sql`` prepared with the engine's parameters ``args``: (seconds the EXECUTE took, its
    first result value, or the rows it wrote when it returns none)."""
    cursor.execute(f"PREPARE {ENGINE_PARAMETERS} AS {sql}")
    start = time.perf_counter()
    cursor.execute("EXECUTE p(%s, %s::uuid, %s, %s, %s::uuid, %s::uuid, %s, %s, %s)", args)
    elapsed = time.perf_counter() - start
    value = cursor.fetchone()[0] if cursor.description else cursor.rowcount
    cursor.execute("DEALLOCATE p")
    return elapsed, value
