"""Alembic environment: all logic lives in :mod:`dbtools.migration_env` (library first)."""

from alembic import context

from dbtools.migration_env import run

run(context)
