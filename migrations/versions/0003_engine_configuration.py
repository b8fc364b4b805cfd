"""Delta engine configuration and seeds.

Adds to BlobDeltaTableConfig what the engine needs beyond the design's first cut: the full-sync
baseline (default one month and one day before the run), the lease length, and the business-unit
table that scopes a run (Gwent_LA_FileTable.dbo.LA_BU). Seeds the two script sets
(``Hierarchical`` for FileTable-shaped tables, ``Flat`` for any table with a key and a
ModifiedOn column), the shared queue-population script, the configuration of
Gwent_LA_FileTable.dbo.ReferralAttachment and ClientAttachment, and their watermark rows.

The seeded scripts are frozen beside this file (0003_scripts/<engine>/); see its README for the
placeholder and parameter contract.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import op

from dbtools.deploy.migration_helpers import Name, check, current_engine

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCRIPTS = Path(__file__).with_name("0003_scripts")
TABLES = ("ReferralAttachment", "ClientAttachment")
NEW_COLUMNS = (
    "FullSyncBaselineMonths", "FullSyncBaselineDays", "LeaseMinutes",
    "BusinessUnitDatabase", "BusinessUnitSchema", "BusinessUnitTable", "BusinessUnitIdColumn",
)


def script(name: str) -> str:
    return (SCRIPTS / current_engine().name / f"{name}.sql").read_text(encoding="utf-8")


def upgrade() -> None:
    schema = current_engine().job_schema
    with op.batch_alter_table("BlobDeltaTableConfig", schema=schema) as batch:
        batch.add_column(sa.Column("FullSyncBaselineMonths", sa.Integer(), nullable=False, server_default=sa.text("1")))
        batch.add_column(sa.Column("FullSyncBaselineDays", sa.Integer(), nullable=False, server_default=sa.text("1")))
        batch.add_column(sa.Column("LeaseMinutes", sa.Integer(), nullable=False, server_default=sa.text("120")))
        batch.add_column(sa.Column("BusinessUnitDatabase", Name(), nullable=True))
        batch.add_column(sa.Column("BusinessUnitSchema", Name(), nullable=True))
        batch.add_column(sa.Column("BusinessUnitTable", Name(), nullable=True))
        batch.add_column(sa.Column("BusinessUnitIdColumn", Name(), nullable=False, server_default="BusinessUnitId"))
    op.create_check_constraint(
        "CK_BlobDeltaTableConfig_Baseline", "BlobDeltaTableConfig",
        check("x", "{} >= 0 AND {} >= 0", "FullSyncBaselineMonths", "FullSyncBaselineDays").sqltext,
        schema=schema,
    )
    op.create_check_constraint(
        "CK_BlobDeltaTableConfig_Lease", "BlobDeltaTableConfig",
        check("x", "{} > 0", "LeaseMinutes").sqltext, schema=schema,
    )
    op.create_check_constraint(
        "CK_BlobDeltaTableConfig_ScriptSet", "BlobDeltaTableConfig",
        check("x", "{} IN ('Hierarchical', 'Flat')", "ScriptSet").sqltext, schema=schema,
    )

    queue_script = sa.table("BlobDeltaQueuePopulationScript", sa.column("ScriptName", sa.Unicode()), sa.column("ScriptSet", sa.Unicode()),
                            sa.column("ScriptText", sa.Unicode()), sa.column("Description", sa.Unicode()), schema=schema)
    op.bulk_insert(queue_script, [{
        "ScriptName": "HierarchicalMissingParents", "ScriptSet": "Hierarchical",
        "ScriptText": script("Hierarchical_QueuePopulation"),
        "Description": "Queues every missing ancestor of the window's children (step 2a).",
    }])
    step_script = sa.table("BlobDeltaStepScript", sa.column("ScriptSet", sa.Unicode()), sa.column("StepNumber", sa.Integer()),
                           sa.column("StepName", sa.Unicode()), sa.column("ScriptText", sa.Unicode()), sa.column("Description", sa.Unicode()), schema=schema)
    op.bulk_insert(step_script, [
        {"ScriptSet": "Hierarchical", "StepNumber": 1, "StepName": "Roots",
         "ScriptText": script("Hierarchical_1_Roots"), "Description": "Root blobs of the window."},
        {"ScriptSet": "Hierarchical", "StepNumber": 2, "StepName": "MissingParentsBatch",
         "ScriptText": script("Hierarchical_2_MissingParentsBatch"), "Description": "Back-fills queued parents."},
        {"ScriptSet": "Hierarchical", "StepNumber": 3, "StepName": "Children",
         "ScriptText": script("Hierarchical_3_Children"), "Description": "Children whose parent is in the target."},
        {"ScriptSet": "Flat", "StepNumber": 1, "StepName": "Upsert",
         "ScriptText": script("Flat_1_Upsert"), "Description": "Newest ModifiedOn wins."},
    ])

    config = sa.table("BlobDeltaTableConfig", *(sa.column(c, sa.Integer() if c == "SafetyBufferMinutes" else sa.Unicode()) for c in (
        "TableName", "SourceDatabase", "SourceSchema", "SourceTable", "TargetDatabase", "TargetSchema",
        "TargetTable", "MetadataDatabase", "MetadataSchema", "MetadataTable", "MetadataIdColumn",
        "MetadataModifiedOnCol", "MetadataBusinessUnitCol", "ScriptSet", "QueuePopulationScriptName",
        "SafetyBufferMinutes", "BusinessUnitDatabase", "BusinessUnitSchema", "BusinessUnitTable")), schema=schema)
    op.bulk_insert(config, [{
        "TableName": f"Gwent_LA_FileTable.dbo.{table}",
        "SourceDatabase": "Gwent_LA_FileTable", "SourceSchema": "dbo", "SourceTable": table,
        "TargetDatabase": "Gwent_LA_FileTable_Delta", "TargetSchema": "dbo", "TargetTable": table,
        "MetadataDatabase": "AdvancedRBS_MetaData", "MetadataSchema": "dbo", "MetadataTable": table,
        "MetadataIdColumn": "stream_id", "MetadataModifiedOnCol": "ModifiedOn",
        "MetadataBusinessUnitCol": "OwningBusinessUnit", "ScriptSet": "Hierarchical",
        "QueuePopulationScriptName": "HierarchicalMissingParents", "SafetyBufferMinutes": 240,
        "BusinessUnitDatabase": "Gwent_LA_FileTable", "BusinessUnitSchema": "dbo", "BusinessUnitTable": "LA_BU",
    } for table in TABLES])
    watermark = sa.table("BlobDeltaHighWatermark", sa.column("TableName", sa.Unicode()), schema=schema)
    op.bulk_insert(watermark, [{"TableName": f"Gwent_LA_FileTable.dbo.{table}"} for table in TABLES])


def downgrade() -> None:
    schema = current_engine().job_schema
    seeded = [f"Gwent_LA_FileTable.dbo.{table}" for table in TABLES]
    watermark = sa.table("BlobDeltaHighWatermark", sa.column("TableName", sa.Unicode()), schema=schema)
    config = sa.table("BlobDeltaTableConfig", sa.column("TableName", sa.Unicode()), schema=schema)
    op.execute(watermark.delete().where(watermark.c.TableName.in_(seeded)))
    op.execute(config.delete().where(config.c.TableName.in_(seeded)))
    step_script = sa.table("BlobDeltaStepScript", sa.column("ScriptSet", sa.Unicode()), schema=schema)
    op.execute(step_script.delete().where(step_script.c.ScriptSet.in_(["Hierarchical", "Flat"])))
    queue_script = sa.table("BlobDeltaQueuePopulationScript", sa.column("ScriptName", sa.Unicode()), schema=schema)
    op.execute(queue_script.delete().where(queue_script.c.ScriptName == "HierarchicalMissingParents"))
    for name in ("CK_BlobDeltaTableConfig_ScriptSet", "CK_BlobDeltaTableConfig_Lease", "CK_BlobDeltaTableConfig_Baseline"):
        op.drop_constraint(name, "BlobDeltaTableConfig", schema=schema, type_="check")
    with op.batch_alter_table("BlobDeltaTableConfig", schema=schema) as batch:
        for column in reversed(NEW_COLUMNS):
            batch.drop_column(column, mssql_drop_default=True)
