"""dbtools: migrations and stored procedures for delta loads and defensive upserts.

SQL Server is the primary target; PostgreSQL is its twin with the same object names and
behaviour. The package is library first: :mod:`dbtools.commands` holds plain functions,
:mod:`dbtools.cli` is a thin layer over them.
"""

__version__ = "0.1.0"
