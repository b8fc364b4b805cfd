"""dbtools: migrations and stored procedures for delta loads and defensive upserts.

SQL Server is the primary target; PostgreSQL is its twin with the same object names and
behaviour. The package is library first: :mod:`dbtools.commands` holds plain functions,
:mod:`dbtools.cli` is a thin layer over them.

Below them, one subpackage per concern: :mod:`dbtools.deploy` (migrations, repeatable objects,
types, offline scripts, privileges), :mod:`dbtools.delta` (the delta runner, runs, reports, sample
data) and :mod:`dbtools.upsert` (entity specs, writers, COPY encoding, ingest). They build on the
shared modules (:mod:`dbtools.db`, ``errors``, ``retry``, ``uuid7``, ``paths``), which import none
of them. Imports go down only and never in a cycle (``tests/test_package_layout.py``;
docs/conventions.md, "The package's layout").
"""

__version__ = "0.1.0"
