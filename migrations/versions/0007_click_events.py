"""The ClickEvent entity: clicks, idempotent on ingestion_id.

A second entity added the way every entity is: its spec (``entities/click_event.toml``, frozen
beside this file in ``0007_entities/``) and this revision, with no hand-written SQL. The
tables and row type come from dbtools.deploy.entities; the three procedures are rendered from the
spec at deployment.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

from dbtools.deploy.entities import create_entity, drop_entity
from dbtools.upsert.specs import frozen_spec

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

SPEC = frozen_spec(__file__, "click_event")


def upgrade() -> None:
    create_entity(op.get_context(), SPEC)


def downgrade() -> None:
    drop_entity(op.get_context(), SPEC)
