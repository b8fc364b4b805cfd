"""Hierarchical tables take changes, moves and deletions; plans count what a run will do.

Until now the Hierarchical steps inserted only blobs missing from the target, so a renamed,
rewritten or moved blob never reached it, and a deleted one stayed there. From this revision:

* **Changes.** Steps 1 (Roots) and 3 (Children) upsert with the Flat rule: a blob whose metadata
  ModifiedOn is newer than the one recorded for its copy replaces the copy whole (name, content,
  attributes, path); an older or equal one changes nothing. A FileTable's schema is fixed, so what
  the rule compares is kept beside the target, in the job database: ``BlobDeltaTargetVersion``
  (one row per copied blob: table, stream_id, the metadata ModifiedOn copied, its business unit,
  the run that wrote it). A copy without a recorded version counts as older.
* **Moves.** A copy whose path changed takes its whole target subtree along, in the statement that
  rewrites it, so no row is ever without its parent. Step 2a now queues every blob that must be
  placed before step 3 can run: the ancestors of the changed children that the target does not
  hold *at their source path* (missing, or misplaced because they moved), and blobs still in the
  source that lie under a deleted folder in the target. It runs first, before step 1, so that what
  it queues follows from the target as the run found it; step 2b writes every queued blob.
* **Deletions.** A new step 4 applies the pending rows of ``BlobDeltaDeletionLog`` (new columns
  ``AppliedAt``; ``RunId`` is the run that applied or deferred the row): a deleted blob gone from
  the source leaves the target with the rows of its target subtree that are gone too.
* **Plans.** ``BlobDeltaPlanScript`` holds one plan script per script set: a single statement that
  computes, with the steps' own predicates, the rows each step of a run would insert, update and
  delete. ``BlobDeltaRunStep`` records the same counts per batch (``RowsInserted``,
  ``RowsUpdated``, ``RowsDeleted``; ``RowsMoved`` for rows that followed a moved folder).

The scripts are frozen beside this file (0010_scripts/<engine>/); their contract is
0010_scripts/README.md on top of the earlier ones. Downgrade restores revision 0009's scripts
(0008's Flat script, 0004's Hierarchical ones and 0009's PostgreSQL Children) and drops what this
revision added, the recorded versions and the applied marks of the deletion log included.

Deploy this revision when no lease is held: a run in flight keeps the old procedure, which does
not fill the new placeholders, and fails (resumably) on its next batch.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mssql, postgresql

from dbtools.deploy.migration_helpers import Flag, LongText, Timestamp, check, current_engine, utc_now
from dbtools.deploy.repeatable import drop_object

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

HERE = Path(__file__).parent

#: (ScriptSet, StepNumber, frozen file) of every step script this revision replaces, with the
#: revision folder that held each one before it.
REPLACED_STEPS = (
    ("Flat", 1, "Flat_1_Upsert", "0008_scripts"),
    ("Hierarchical", 1, "Hierarchical_1_Roots", "0004_scripts"),
    ("Hierarchical", 2, "Hierarchical_2_MissingParentsBatch", "0004_scripts"),
    ("Hierarchical", 3, "Hierarchical_3_Children", "0009_scripts"),
)
QUEUE_SCRIPT = ("HierarchicalMissingParents", "Hierarchical_QueuePopulation", "0004_scripts")
#: PostgreSQL routines whose parameter list changes here: CREATE OR REPLACE would add an overload
#: beside the old one, so the revision drops them and the deployment at head creates them again.
RESIGNED_ROUTINES = ("usp_BlobDelta_RunOperator", "usp_BlobDelta_Run", "fn_BlobDelta_RunBegin")
PLAN_SCRIPTS = (
    ("Hierarchical", "Hierarchical_Plan", "Rows each step of a Hierarchical run would insert, update and delete."),
    ("Flat", "Flat_Plan", "Rows a Flat run would insert, update and delete."),
)


def precise_timestamp() -> sa.types.TypeEngine:
    """A metadata ModifiedOn at full precision: DATETIME2(7) / TIMESTAMP(6), in UTC."""
    return sa.DateTime().with_variant(mssql.DATETIME2(7), "mssql").with_variant(
        postgresql.TIMESTAMP(precision=6), "postgresql")


def frozen(folder: str, name: str) -> str:
    engine = current_engine()
    path = HERE / folder / engine.name / f"{name}.sql"
    if not path.exists() and folder == "0009_scripts":  # 0009 changed PostgreSQL's Children only
        path = HERE / "0004_scripts" / engine.name / f"{name}.sql"
    return path.read_text(encoding="utf-8")


def step_scripts():
    return sa.table("BlobDeltaStepScript", sa.column("ScriptSet", sa.Unicode()), sa.column("StepNumber", sa.Integer()),
                    sa.column("StepName", sa.Unicode()), sa.column("ScriptText", sa.Unicode()),
                    sa.column("Description", sa.Unicode()), sa.column("ModifiedAt", sa.DateTime()),
                    schema=current_engine().job_schema)


def set_scripts(upgrading: bool) -> None:
    steps = step_scripts()
    for script_set, number, name, before in REPLACED_STEPS:
        op.execute(steps.update()
                   .where(steps.c.ScriptSet == script_set, steps.c.StepNumber == number)
                   .values(ScriptText=frozen("0010_scripts" if upgrading else before, name), ModifiedAt=utc_now()))
    queue = sa.table("BlobDeltaQueuePopulationScript", sa.column("ScriptName", sa.Unicode()),
                     sa.column("ScriptText", sa.Unicode()), sa.column("ModifiedAt", sa.DateTime()),
                     schema=current_engine().job_schema)
    script_name, name, before = QUEUE_SCRIPT
    op.execute(queue.update().where(queue.c.ScriptName == script_name)
               .values(ScriptText=frozen("0010_scripts" if upgrading else before, name), ModifiedAt=utc_now()))


def upgrade() -> None:
    engine = current_engine()
    schema = engine.job_schema
    if engine.name == "postgresql":
        for name in RESIGNED_ROUTINES:
            drop_object(op.get_context(), engine, name, "FUNCTION")

    op.create_table(
        "BlobDeltaTargetVersion",
        sa.Column("TableName", sa.Unicode(400), nullable=False),
        sa.Column("stream_id", sa.Uuid(), nullable=False),
        sa.Column("ModifiedOn", precise_timestamp(), nullable=True),
        sa.Column("BusinessUnit", sa.Uuid(), nullable=True),
        sa.Column("RunId", sa.Uuid(), nullable=True),
        sa.Column("CopiedAt", Timestamp(), nullable=False, server_default=utc_now()),
        sa.PrimaryKeyConstraint("TableName", "stream_id", name="PK_BlobDeltaTargetVersion"),
        schema=schema,
    )

    op.create_table(
        "BlobDeltaPlanScript",
        sa.Column("ScriptSet", sa.Unicode(50)),
        sa.Column("ScriptText", LongText(), nullable=False),
        sa.Column("Description", sa.Unicode(400), nullable=True),
        sa.Column("IsActive", Flag(), nullable=False, server_default=sa.true()),
        sa.Column("ModifiedAt", Timestamp(), nullable=False, server_default=utc_now()),
        sa.PrimaryKeyConstraint("ScriptSet", name="PK_BlobDeltaPlanScript"),
        schema=schema,
    )
    plans = sa.table("BlobDeltaPlanScript", sa.column("ScriptSet", sa.Unicode()), sa.column("ScriptText", sa.Unicode()),
                     sa.column("Description", sa.Unicode()), schema=schema)
    for script_set, name, description in PLAN_SCRIPTS:
        # One INSERT each, not op.bulk_insert: offline, Alembic wraps a bulk insert on SQL Server in
        # SET IDENTITY_INSERT, which fails (Msg 8106) on a table without an identity column.
        op.execute(plans.insert().values(ScriptSet=script_set, ScriptText=frozen("0010_scripts", name),
                                         Description=description))

    with op.batch_alter_table("BlobDeltaRunStep", schema=schema) as batch:
        for column in ("RowsInserted", "RowsUpdated", "RowsDeleted", "RowsMoved"):
            batch.add_column(sa.Column(column, sa.Integer(), nullable=True))
    for table, low in (("BlobDeltaRunStep", 0), ("BlobDeltaStepScript", 1)):
        name = f"CK_{table}_StepNumber"
        op.drop_constraint(name, table, schema=schema, type_="check")
        op.create_check_constraint(name, table, check("x", f"{{}} BETWEEN {low} AND 4", "StepNumber").sqltext,
                                   schema=schema)

    with op.batch_alter_table("BlobDeltaDeletionLog", schema=schema) as batch:
        batch.add_column(sa.Column("AppliedAt", Timestamp(), nullable=True))
    # What step 4 and step 2a read of a pending row, so that rows they skip cost no lookup.
    pending_include = ["RunId", "DeletedAt", "DetectedAt", "BusinessUnit", "stream_id"]
    op.create_index("IX_BlobDeltaDeletionLog_Pending", "BlobDeltaDeletionLog", ["TableName", "AppliedAt", "DeletionId"],
                    schema=schema, mssql_include=pending_include, postgresql_include=pending_include)

    set_scripts(upgrading=True)
    op.execute(step_scripts().insert().values(
        ScriptSet="Hierarchical", StepNumber=4, StepName="Deletions",
        ScriptText=frozen("0010_scripts", "Hierarchical_4_Deletions"),
        Description="Applies the pending deletions of BlobDeltaDeletionLog."))


def downgrade() -> None:
    schema = current_engine().job_schema
    steps = step_scripts()
    op.execute(steps.delete().where(steps.c.ScriptSet == "Hierarchical", steps.c.StepNumber == 4))
    set_scripts(upgrading=False)

    op.drop_index("IX_BlobDeltaDeletionLog_Pending", table_name="BlobDeltaDeletionLog", schema=schema)
    with op.batch_alter_table("BlobDeltaDeletionLog", schema=schema) as batch:
        batch.drop_column("AppliedAt")

    run_step = sa.table("BlobDeltaRunStep", sa.column("StepNumber", sa.Integer()), schema=schema)
    op.execute(run_step.delete().where(run_step.c.StepNumber == 4))
    for table, low in (("BlobDeltaRunStep", 0), ("BlobDeltaStepScript", 1)):
        name = f"CK_{table}_StepNumber"
        op.drop_constraint(name, table, schema=schema, type_="check")
        op.create_check_constraint(name, table, check("x", f"{{}} BETWEEN {low} AND 3", "StepNumber").sqltext,
                                   schema=schema)
    with op.batch_alter_table("BlobDeltaRunStep", schema=schema) as batch:
        for column in ("RowsMoved", "RowsDeleted", "RowsUpdated", "RowsInserted"):
            batch.drop_column(column)

    op.drop_table("BlobDeltaPlanScript", schema=schema)
    op.drop_table("BlobDeltaTargetVersion", schema=schema)
