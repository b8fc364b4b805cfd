"""First loads of Flat tables: no target lookups past the batch's start, no self-join.

The 0004 Flat script looks every window row up twice: in the source by key, and in the target
for the newest-wins check. On a first load neither lookup can find anything the batch needs
(docs/benchmarks.md, "Where a Flat batch's time goes"):

* The engine now records on a table's step 0 (Window) row whether the target held no row when
  the run opened the table, after a Full sync's clean slate (``BlobDeltaRunStep.TargetWasEmpty``),
  and passes it to every batch (``@TargetWasEmpty`` / ``$9``). Then every target row was written
  by this run's earlier batches, at or before the step's keyset position, and the Flat script
  looks up only the rows within 1 ms of that position. A row already copied whose ModifiedOn
  moved past the position meanwhile (a late write) makes the batch's plain insert hit the
  target's unique key; the engine then runs that batch again with the lookups. A resumed run
  drops the flag when another run has worked the table since (an index on
  ``(TableName, RunStepId)`` keeps that question a seek).
* The new ``{SourceRow}`` placeholder adds the source row to the metadata row: a lookup by key,
  or the metadata row itself when the metadata table is the source table (the usual Flat shape).

The updated Flat scripts are frozen beside this file (0008_scripts/<engine>/); the contract is
0003_scripts/README.md, 0004_scripts/README.md and 0008_scripts/README.md. Downgrade restores
revision 0004's texts and drops the column.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import op

from dbtools.deploy.migration_helpers import Flag, current_engine

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

HERE = Path(__file__).parent


def set_flat_script(revision_folder: str) -> None:
    engine = current_engine()
    text = (HERE / revision_folder / engine.name / "Flat_1_Upsert.sql").read_text(encoding="utf-8")
    step_script = sa.table("BlobDeltaStepScript", sa.column("ScriptSet", sa.Unicode()), sa.column("StepNumber", sa.Integer()),
                           sa.column("ScriptText", sa.Unicode()), schema=engine.job_schema)
    op.execute(
        step_script.update()
        .where(step_script.c.ScriptSet == "Flat", step_script.c.StepNumber == 1)
        .values(ScriptText=text)
    )


def upgrade() -> None:
    schema = current_engine().job_schema
    with op.batch_alter_table("BlobDeltaRunStep", schema=schema) as batch:
        batch.add_column(sa.Column("TargetWasEmpty", Flag(), nullable=True))
    # A resumed run asks whether another run has worked its table since: a seek, not a scan of
    # the whole run history inside the transaction that takes the lease.
    op.create_index("IX_BlobDeltaRunStep_Table", "BlobDeltaRunStep", ["TableName", "RunStepId"],
                    schema=schema, mssql_include=["RunId", "Status"], postgresql_include=["RunId", "Status"])
    set_flat_script("0008_scripts")


def downgrade() -> None:
    schema = current_engine().job_schema
    set_flat_script("0004_scripts")
    op.drop_index("IX_BlobDeltaRunStep_Table", table_name="BlobDeltaRunStep", schema=schema)
    with op.batch_alter_table("BlobDeltaRunStep", schema=schema) as batch:
        batch.drop_column("TargetWasEmpty")
