"""Deploying the job database: what ``dbtools migrate`` and ``migrations/env.py`` run.

``migration_env`` (the Alembic environment), ``migration_helpers`` (for revision files),
``render`` and ``repeatable`` (procedures rendered from Jinja templates, deployed by checksum),
``types`` (changing a type procedures depend on), ``entities`` (an entity's tables and row type),
``privileges`` (the operator role, module signing and grants), ``mssql_script`` and ``ddl``
(offline scripts and DDL compile hooks) and ``conventions`` (the static rules every rendered
procedure follows).

It installs what the other concerns need, so it reads the entity specs of :mod:`dbtools.upsert.specs`;
nothing else outside the shared modules.
"""
