"""Alembic environment: all logic lives in :mod:`dbtools.deploy.migration_env` (library first)."""

from alembic import context

from dbtools.deploy.migration_env import run

run(context)
