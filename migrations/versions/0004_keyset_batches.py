"""Keyset batches for the delta engine.

Each batch of a windowed step used to find its rows "in the window and not yet in the target"
from the start of the window, so batch k re-read the k - 1 batches before it (quadratic in the
number of batches; docs/benchmarks.md). The step scripts now also take the last metadata
ModifiedOn of the step's previous completed batch and start there, and report their own last
ModifiedOn, which the engine keeps in the new BlobDeltaRunStep.LastModifiedOn column. A resumed
run starts each step at the position its last completed batch recorded. On PostgreSQL the
missing-parents batch marks its queue rows by row address: joined on the key, the just-filled
queue (no statistics yet) was planned as a nested loop over the whole batch for every row.
Queue population walks the distinct parent paths of the window's children, not every child's.

The updated scripts are frozen beside this file (0004_scripts/<engine>/); the contract is
0003_scripts/README.md plus 0004_scripts/README.md. Downgrade restores revision 0003's texts.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import op

from dbtools.deploy.migration_helpers import Timestamp, current_engine

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

HERE = Path(__file__).parent
# (ScriptSet, StepNumber, frozen file name)
KEYSET_SCRIPTS = (
    ("Hierarchical", 1, "Hierarchical_1_Roots"),
    ("Hierarchical", 2, "Hierarchical_2_MissingParentsBatch"),
    ("Hierarchical", 3, "Hierarchical_3_Children"),
    ("Flat", 1, "Flat_1_Upsert"),
)


def script(revision_folder: str, name: str) -> str:
    return (HERE / revision_folder / current_engine().name / f"{name}.sql").read_text(encoding="utf-8")


def set_scripts(revision_folder: str) -> None:
    schema = current_engine().job_schema
    step_script = sa.table("BlobDeltaStepScript", sa.column("ScriptSet", sa.Unicode()), sa.column("StepNumber", sa.Integer()),
                           sa.column("ScriptText", sa.Unicode()), schema=schema)
    for script_set, step_number, name in KEYSET_SCRIPTS:
        op.execute(
            step_script.update()
            .where(step_script.c.ScriptSet == script_set, step_script.c.StepNumber == step_number)
            .values(ScriptText=script(revision_folder, name))
        )
    queue_script = sa.table("BlobDeltaQueuePopulationScript", sa.column("ScriptName", sa.Unicode()),
                            sa.column("ScriptText", sa.Unicode()), schema=schema)
    op.execute(
        queue_script.update()
        .where(queue_script.c.ScriptName == "HierarchicalMissingParents")
        .values(ScriptText=script(revision_folder, "Hierarchical_QueuePopulation"))
    )


def upgrade() -> None:
    schema = current_engine().job_schema
    with op.batch_alter_table("BlobDeltaRunStep", schema=schema) as batch:
        batch.add_column(sa.Column("LastModifiedOn", Timestamp(), nullable=True))
    set_scripts("0004_scripts")


def downgrade() -> None:
    schema = current_engine().job_schema
    set_scripts("0003_scripts")
    with op.batch_alter_table("BlobDeltaRunStep", schema=schema) as batch:
        batch.drop_column("LastModifiedOn")
