"""The benchmarks' private PostgreSQL: a pgserver in a temporary directory, fresh databases in it.

Imported by the scripts beside it (``python bench/<script>.py`` puts this folder on sys.path).
"""

from __future__ import annotations

import tempfile
import warnings

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from dbtools import commands


def start_server():
    """(server, data directory, admin URL) of a new pgserver; stop it with server.cleanup()."""
    import pgserver

    data = tempfile.mkdtemp(prefix="dbtools-bench-")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pgserver.get_server(data, cleanup_mode="stop")
    return server, data, sa.make_url(server.get_uri()).set(drivername="postgresql+psycopg")


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
