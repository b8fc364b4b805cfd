"""Entity upserts: ``dbtools ingest`` and the writers behind it.

``specs`` (entity specs in ``entities/*.toml``: parsing and checks only), ``writers`` (the single
row, row-type batch and bulk paths), ``pgcopy`` (PostgreSQL's binary COPY format) and ``ingest``
(JSON Lines in, counts and rejects out). Imports only the shared modules.
"""
