"""Hierarchical Children batches on PostgreSQL walk the ModifiedOn index and probe per row.

The 0004 Children script (step 3) for PostgreSQL joined the metadata, source, business-unit and
target tables with plain joins, ``NOT EXISTS`` and ``EXISTS``. Once autovacuum has analysed a
target that is filling up, the planner expects almost every window row to be in the target
already. It then drops the batch's row goal and plans hash joins over the whole source and the
whole target, for every batch (183 ms instead of 4 ms for a batch of 500 late in a 202,000-row
first load). The insert also read the source a second time, hashing all of it for each batch of
5,000 rows.

The script now walks the metadata ``ModifiedOn`` index in order and probes per row: the
business-unit table and the source through ``LATERAL ... LIMIT 1`` (as the Flat script does since
revision 0004), the target through ``[NOT] EXISTS ... OFFSET 0``. None of them can be turned into
a join. The batch carries the source row to the insert. It takes the same rows in the same order.
Measured in docs/benchmarks.md ("Revision 0009").

SQL Server's scripts are unchanged, and so are the other Hierarchical steps: the revision does
nothing on SQL Server. Its Children twin fills a ``#dbtools_Batch`` table under
``OPTION (RECOMPILE)``; its plans are unmeasured.

The updated script is frozen beside this file (0009_scripts/postgresql/); the contract is that of
0003_scripts/README.md, 0004_scripts/README.md and 0008_scripts/README.md. Downgrade restores
revision 0004's text.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import op

from dbtools.deploy.migration_helpers import current_engine

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

HERE = Path(__file__).parent
# (StepNumber, frozen file name) of the Hierarchical script this revision replaces.
PROBING_SCRIPTS = ((3, "Hierarchical_3_Children"),)


def set_scripts(revision_folder: str) -> None:
    engine = current_engine()
    if engine.name != "postgresql":
        return
    step_script = sa.table("BlobDeltaStepScript", sa.column("ScriptSet", sa.Unicode()), sa.column("StepNumber", sa.Integer()),
                           sa.column("ScriptText", sa.Unicode()), schema=engine.job_schema)
    for step_number, name in PROBING_SCRIPTS:
        text = (HERE / revision_folder / engine.name / f"{name}.sql").read_text(encoding="utf-8")
        op.execute(
            step_script.update()
            .where(step_script.c.ScriptSet == "Hierarchical", step_script.c.StepNumber == step_number)
            .values(ScriptText=text)
        )


def upgrade() -> None:
    set_scripts("0009_scripts")


def downgrade() -> None:
    set_scripts("0004_scripts")
