"""Deployment log for repeatable objects (procedures).

One row per deploy or drop of a procedure, with the SHA-256 of its rendered text; see
dbtools/deploy/repeatable.py for the policy. Downgrading past this revision drops the package's
procedures first, so none outlives the log that tracks it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

from dbtools.db.engines import DEPLOYMENT_LOG
from dbtools.deploy.migration_helpers import current_engine
from dbtools.deploy.repeatable import drop_all, log_columns

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    engine = current_engine()
    op.create_table(DEPLOYMENT_LOG, *log_columns(engine), schema=engine.job_schema)
    op.create_index(
        "IX_BlobDeltaDeploymentLog_Object", DEPLOYMENT_LOG, ["ObjectName", "DeploymentId"],
        schema=engine.job_schema,
    )


def downgrade() -> None:
    engine = current_engine()
    drop_all(op.get_context(), engine)
    op.drop_table(DEPLOYMENT_LOG, schema=engine.job_schema)
