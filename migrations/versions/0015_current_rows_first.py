"""PostgreSQL's Hierarchical queue population (step 2a) and Children step (step 3) set a current
window row aside before they look anything else up.

A run whose window holds rows the target already has current (every incremental run does: windows
overlap by the safety buffer) paid for each such row every probe of a changed one. Measured in
docs/benchmarks.md ("Revision 0015"), statement by statement in a window of 2,000 current rows:

* **Step 2a** tested a row's recorded version and copy through the source's stream_id, so the test
  could only run once the business unit and the source had been probed. It now names the
  metadata's id (the same stream_id, by the join), and PostgreSQL applies it as a filter of the
  metadata index's walk: a current row costs the version and copy probes alone.
* **Step 3** probed the business unit, the source, the parent, the copy and the version of every
  window row before its final test rejected the current ones. Outside a first load (``$9``) the
  same test, keyed on the metadata's id, now sets a current row aside in the walk first. The final
  test is unchanged and still decides; on a first load the new test is skipped (nothing copied can
  be current but a folder step 2 back-filled, which the lookups below find as before).

Same rows, same writes, same result rows; the plan scripts, the other steps and SQL Server's
scripts are unchanged (the revision does nothing on SQL Server). The scripts are frozen beside
this file (0015_scripts/postgresql/); the contract is that of the earlier READMEs,
0010_scripts/README.md included. Downgrade restores revision 0013's queue population text and
revision 0014's Children text.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import op

from dbtools.deploy.migration_helpers import current_engine, utc_now

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

HERE = Path(__file__).parent
#: (ScriptSet, StepNumber, frozen file) of the step script this revision replaces.
STEP_SCRIPT = ("Hierarchical", 3, "Hierarchical_3_Children")
#: (ScriptName, frozen file) of the queue population script this revision replaces.
QUEUE_SCRIPT = ("HierarchicalMissingParents", "Hierarchical_QueuePopulation")


def set_scripts(step_folder: str, queue_folder: str) -> None:
    engine = current_engine()
    if engine.name != "postgresql":
        return
    steps = sa.table("BlobDeltaStepScript", sa.column("ScriptSet", sa.Unicode()), sa.column("StepNumber", sa.Integer()),
                     sa.column("ScriptText", sa.Unicode()), sa.column("ModifiedAt", sa.DateTime()),
                     schema=engine.job_schema)
    queue = sa.table("BlobDeltaQueuePopulationScript", sa.column("ScriptName", sa.Unicode()),
                     sa.column("ScriptText", sa.Unicode()), sa.column("ModifiedAt", sa.DateTime()),
                     schema=engine.job_schema)
    script_set, number, step_file = STEP_SCRIPT
    script_name, queue_file = QUEUE_SCRIPT
    step_text = (HERE / step_folder / engine.name / f"{step_file}.sql").read_text(encoding="utf-8")
    queue_text = (HERE / queue_folder / engine.name / f"{queue_file}.sql").read_text(encoding="utf-8")
    op.execute(steps.update().where(steps.c.ScriptSet == script_set, steps.c.StepNumber == number)
               .values(ScriptText=step_text, ModifiedAt=utc_now()))
    op.execute(queue.update().where(queue.c.ScriptName == script_name)
               .values(ScriptText=queue_text, ModifiedAt=utc_now()))


def upgrade() -> None:
    set_scripts("0015_scripts", "0015_scripts")


def downgrade() -> None:
    set_scripts("0014_scripts", "0013_scripts")
