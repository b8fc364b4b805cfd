"""Event upserts: the batch log and the CustomerActivityEvent entity.

``UpsertBatchLog`` keeps one row per batch the row-type and staging paths applied, with its
counts, so that a batch retried after an unknown commit outcome returns the same counts and
changes nothing. The entity's lookup, target, staging and reject tables and its row type come
from the copy of ``entities/customer_activity_event.toml`` frozen beside this file
(``0006_entities/``, read by dbtools.upsert.specs, created by dbtools.deploy.entities); its three
procedures are rendered from the current spec at deployment.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from dbtools.deploy.entities import create_entity, drop_entity
from dbtools.deploy.migration_helpers import Name, Timestamp, current_engine, current_user, utc_now
from dbtools.upsert.specs import frozen_spec

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SPEC = frozen_spec(__file__, "customer_activity_event")


def upgrade() -> None:
    schema = current_engine().job_schema
    op.create_table(
        "UpsertBatchLog",
        sa.Column("BatchId", sa.Uuid()),
        sa.Column("EntityName", Name(), nullable=False),
        sa.Column("RowsReceived", sa.BigInteger(), nullable=False),
        sa.Column("RowsInserted", sa.BigInteger(), nullable=False),
        sa.Column("RowsUpdated", sa.BigInteger(), nullable=False),
        sa.Column("RowsSkipped", sa.BigInteger(), nullable=False),
        sa.Column("RowsConflicted", sa.BigInteger(), nullable=False),
        sa.Column("RowsRejected", sa.BigInteger(), nullable=False),
        sa.Column("AppliedAt", Timestamp(), nullable=False, server_default=utc_now()),
        sa.Column("AppliedBy", sa.Unicode(128), nullable=False, server_default=current_user()),
        sa.PrimaryKeyConstraint("BatchId", name="PK_UpsertBatchLog"),
        schema=schema,
    )
    create_entity(op.get_context(), SPEC)


def downgrade() -> None:
    drop_entity(op.get_context(), SPEC)
    op.drop_table("UpsertBatchLog", schema=current_engine().job_schema)
