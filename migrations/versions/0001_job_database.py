"""Job database tables for Blob Delta Loads (V3).

The eight tables of the design (requirements 002): configuration, high-watermarks with the
run lease, run headers and per-batch steps, the missing-parents queue, the stored step and
queue-population scripts, and the deletion log. Columns follow the design's monitoring
queries. The job database/schema itself is created by env.py before the version table.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from dbtools.deploy.migration_helpers import Flag, LongText, Name, Timestamp, check, current_engine, current_user, utc_now

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

RUN_STATUSES = "('Planned', 'Running', 'Succeeded', 'Failed')"
STEP_STATUSES = "('Running', 'Completed', 'Failed')"
RUN_TYPES = "('Incremental', 'Full')"


def upgrade() -> None:
    schema = current_engine().job_schema

    op.create_table(
        "BlobDeltaQueuePopulationScript",
        sa.Column("ScriptName", Name()),
        sa.Column("ScriptSet", sa.Unicode(50), nullable=False),
        sa.Column("ScriptText", LongText(), nullable=False),
        sa.Column("Description", sa.Unicode(400), nullable=True),
        sa.Column("IsActive", Flag(), nullable=False, server_default=sa.true()),
        sa.Column("ModifiedAt", Timestamp(), nullable=False, server_default=utc_now()),
        sa.PrimaryKeyConstraint("ScriptName", name="PK_BlobDeltaQueuePopulationScript"),
        schema=schema,
    )

    op.create_table(
        "BlobDeltaTableConfig",
        sa.Column("TableName", sa.Unicode(400)),
        sa.Column("SourceDatabase", Name(), nullable=False),
        sa.Column("SourceSchema", Name(), nullable=False, server_default="dbo"),
        sa.Column("SourceTable", Name(), nullable=False),
        sa.Column("TargetDatabase", Name(), nullable=False),
        sa.Column("TargetSchema", Name(), nullable=False, server_default="dbo"),
        sa.Column("TargetTable", Name(), nullable=False),
        sa.Column("MetadataDatabase", Name(), nullable=False),
        sa.Column("MetadataSchema", Name(), nullable=False, server_default="dbo"),
        sa.Column("MetadataTable", Name(), nullable=False),
        sa.Column("MetadataIdColumn", Name(), nullable=False, server_default="stream_id"),
        sa.Column("MetadataModifiedOnCol", Name(), nullable=False, server_default="ModifiedOn"),
        sa.Column("MetadataBusinessUnitCol", Name(), nullable=True),
        sa.Column("ScriptSet", sa.Unicode(50), nullable=False, server_default="Hierarchical"),
        sa.Column("QueuePopulationScriptName", Name(), nullable=True),
        sa.Column("SafetyBufferMinutes", sa.Integer(), nullable=False, server_default=sa.text("240")),
        sa.Column("InitialBaseline", Timestamp(), nullable=True),
        sa.Column("IsActive", Flag(), nullable=False, server_default=sa.true()),
        sa.Column("CreatedAt", Timestamp(), nullable=False, server_default=utc_now()),
        sa.Column("ModifiedAt", Timestamp(), nullable=False, server_default=utc_now()),
        sa.ForeignKeyConstraint(
            ["QueuePopulationScriptName"],
            [f"{schema}.BlobDeltaQueuePopulationScript.ScriptName"],
            name="FK_BlobDeltaTableConfig_QueuePopulationScript",
        ),
        check("CK_BlobDeltaTableConfig_SafetyBuffer", "{} >= 0", "SafetyBufferMinutes"),
        sa.PrimaryKeyConstraint("TableName", name="PK_BlobDeltaTableConfig"),
        schema=schema,
    )

    op.create_table(
        "BlobDeltaHighWatermark",
        sa.Column("TableName", sa.Unicode(400)),
        sa.Column("LastHighWaterModifiedOn", Timestamp(), nullable=True),
        sa.Column("LastRunId", sa.Uuid(), nullable=True),
        sa.Column("LastRunCompletedAt", Timestamp(), nullable=True),
        sa.Column("IsInitialFullLoadDone", Flag(), nullable=False, server_default=sa.false()),
        sa.Column("IsRunning", Flag(), nullable=False, server_default=sa.false()),
        sa.Column("RunLeaseExpiresAt", Timestamp(), nullable=True),
        sa.Column("LeaseRunId", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["TableName"], [f"{schema}.BlobDeltaTableConfig.TableName"],
            name="FK_BlobDeltaHighWatermark_TableConfig",
        ),
        sa.PrimaryKeyConstraint("TableName", name="PK_BlobDeltaHighWatermark"),
        schema=schema,
    )

    op.create_table(
        "BlobDeltaRun",
        sa.Column("RunId", sa.Uuid()),
        sa.Column("RunType", sa.Unicode(20), nullable=False, server_default="Incremental"),
        sa.Column("Mode", sa.Unicode(20), nullable=False),
        sa.Column("TableName", sa.Unicode(400), nullable=True),
        sa.Column("BusinessUnitId", sa.Uuid(), nullable=True),
        sa.Column("BatchSize", sa.Integer(), nullable=False),
        sa.Column("MaxDOP", sa.Integer(), nullable=False),
        sa.Column("RequestedBy", sa.Unicode(128), nullable=False, server_default=current_user()),
        sa.Column("RunStartedAt", Timestamp(), nullable=False, server_default=utc_now()),
        sa.Column("RunCompletedAt", Timestamp(), nullable=True),
        sa.Column("Status", sa.Unicode(20), nullable=False, server_default="Running"),
        sa.Column("ErrorMessage", LongText(), nullable=True),
        check("CK_BlobDeltaRun_Status", "{} IN " + RUN_STATUSES, "Status"),
        check("CK_BlobDeltaRun_RunType", "{} IN " + RUN_TYPES, "RunType"),
        check("CK_BlobDeltaRun_Mode", "{} IN ('AllTables', 'SingleTable')", "Mode"),
        sa.PrimaryKeyConstraint("RunId", name="PK_BlobDeltaRun"),
        schema=schema,
    )
    op.create_index("IX_BlobDeltaRun_RunStartedAt", "BlobDeltaRun", ["RunStartedAt"], schema=schema)

    op.create_table(
        "BlobDeltaRunStep",
        sa.Column("RunStepId", sa.BigInteger(), sa.Identity(start=1)),
        sa.Column("RunId", sa.Uuid(), nullable=False),
        sa.Column("TableName", sa.Unicode(400), nullable=False),
        sa.Column("StepNumber", sa.SmallInteger(), nullable=False),
        sa.Column("StepName", sa.Unicode(50), nullable=False),
        sa.Column("BatchNumber", sa.Integer(), nullable=False),
        sa.Column("RowsProcessed", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("TotalRowsProcessed", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("WindowStart", Timestamp(), nullable=True),
        sa.Column("WindowEnd", Timestamp(), nullable=True),
        sa.Column("BatchStartedAt", Timestamp(), nullable=False, server_default=utc_now()),
        sa.Column("BatchCompletedAt", Timestamp(), nullable=True),
        sa.Column("Status", sa.Unicode(20), nullable=False, server_default="Running"),
        sa.Column("ErrorMessage", LongText(), nullable=True),
        sa.ForeignKeyConstraint(["RunId"], [f"{schema}.BlobDeltaRun.RunId"], name="FK_BlobDeltaRunStep_Run"),
        sa.UniqueConstraint("RunId", "TableName", "StepNumber", "BatchNumber",
                            name="UQ_BlobDeltaRunStep_Batch"),
        check("CK_BlobDeltaRunStep_Status", "{} IN " + STEP_STATUSES, "Status"),
        check("CK_BlobDeltaRunStep_StepNumber", "{} BETWEEN 0 AND 3", "StepNumber"),
        sa.PrimaryKeyConstraint("RunStepId", name="PK_BlobDeltaRunStep"),
        schema=schema,
    )

    op.create_table(
        "BlobDeltaMissingParentsQueue",
        sa.Column("RunId", sa.Uuid()),
        sa.Column("TableName", sa.Unicode(400)),
        sa.Column("stream_id", sa.Uuid()),
        sa.Column("BusinessUnit", sa.Uuid(), nullable=True),
        sa.Column("Processed", Flag(), nullable=False, server_default=sa.false()),
        sa.Column("BatchNumber", sa.Integer(), nullable=True),
        sa.Column("CreatedAt", Timestamp(), nullable=False, server_default=utc_now()),
        sa.Column("ProcessedAt", Timestamp(), nullable=True),
        sa.ForeignKeyConstraint(["RunId"], [f"{schema}.BlobDeltaRun.RunId"],
                                name="FK_BlobDeltaMissingParentsQueue_Run"),
        sa.PrimaryKeyConstraint("RunId", "TableName", "stream_id", name="PK_BlobDeltaMissingParentsQueue"),
        schema=schema,
    )
    op.create_index("IX_BlobDeltaMissingParentsQueue_Pending", "BlobDeltaMissingParentsQueue",
                    ["RunId", "TableName", "Processed", "CreatedAt"], schema=schema)

    op.create_table(
        "BlobDeltaStepScript",
        sa.Column("ScriptSet", sa.Unicode(50)),
        sa.Column("StepNumber", sa.SmallInteger()),
        sa.Column("StepName", sa.Unicode(50), nullable=False),
        sa.Column("ScriptText", LongText(), nullable=False),
        sa.Column("Description", sa.Unicode(400), nullable=True),
        sa.Column("IsActive", Flag(), nullable=False, server_default=sa.true()),
        sa.Column("ModifiedAt", Timestamp(), nullable=False, server_default=utc_now()),
        check("CK_BlobDeltaStepScript_StepNumber", "{} BETWEEN 1 AND 3", "StepNumber"),
        sa.PrimaryKeyConstraint("ScriptSet", "StepNumber", name="PK_BlobDeltaStepScript"),
        schema=schema,
    )

    op.create_table(
        "BlobDeltaDeletionLog",
        sa.Column("DeletionId", sa.BigInteger(), sa.Identity(start=1)),
        sa.Column("TableName", sa.Unicode(400), nullable=False),
        sa.Column("stream_id", sa.Uuid(), nullable=False),
        sa.Column("BusinessUnit", sa.Uuid(), nullable=True),
        sa.Column("DeletedAt", Timestamp(), nullable=True),
        sa.Column("DetectedAt", Timestamp(), nullable=False, server_default=utc_now()),
        sa.Column("RunId", sa.Uuid(), nullable=True),
        sa.Column("Source", sa.Unicode(200), nullable=True),
        sa.PrimaryKeyConstraint("DeletionId", name="PK_BlobDeltaDeletionLog"),
        schema=schema,
    )
    op.create_index("IX_BlobDeltaDeletionLog_Table_Stream", "BlobDeltaDeletionLog",
                    ["TableName", "stream_id"], schema=schema)


def downgrade() -> None:
    schema = current_engine().job_schema
    for table in (
        "BlobDeltaDeletionLog",
        "BlobDeltaStepScript",
        "BlobDeltaMissingParentsQueue",
        "BlobDeltaRunStep",
        "BlobDeltaRun",
        "BlobDeltaHighWatermark",
        "BlobDeltaTableConfig",
        "BlobDeltaQueuePopulationScript",
    ):
        op.drop_table(table, schema=schema)
