"""PostgreSQL's Hierarchical Children step (step 3) rewrites copies where its probes found them,
and a first load skips the lookups a file cannot need.

Two costs of revision 0010's Children script, measured in docs/benchmarks.md ("Revision 0014"):

* **An older copy was found twice.** The batch probes the target and the recorded version of
  every window row by stream_id; the copies it found older were then rewritten through
  ``INSERT ... ON CONFLICT (stream_id) DO UPDATE``, which probes the key again, locks the row and
  updates it, and the versions through an ``UPDATE ... FROM`` joined on the versions' key. The
  probes now return the rows' addresses (``ctid``) and both updates go there directly, as the
  statement's moves already did. The lease makes the engine the target's only writer, and no other
  part of the statement writes a batch row, so an address found is the row the update finds.
* **A first load looked up every row.** On a first load (``$9``: the target held no row when the
  run opened the table) a file is in the target only if this step's earlier batches copied it, at
  or before their position. As the Flat script has done since revision 0008, a file at or past the
  position + 1 ms (``$8 + 2 ms``) is not looked up in the target nor in the versions (a One-Time
  Filter) and is inserted with a plain ``INSERT``. A late write (a copied file whose ModifiedOn
  moved past the position) then hits the target's stream_id key, or the versions' key, and the
  engine runs the batch again with ``$9`` false and clears the flag for the rest of the load
  (revision 0008's rerun, unchanged). Folders are always looked up: step 2 back-fills them.
  The statement keeps requiring the unique key on stream_id, which the plain inserts rely on: a
  data-modifying CTE that writes nothing carries the ``ON CONFLICT (stream_id)`` the planner checks.

Same rows written, same versions recorded, same result row; the plan scripts, the other steps and
SQL Server's scripts are unchanged (the revision does nothing on SQL Server). The script is frozen beside this file
(0014_scripts/postgresql/); the contract is that of the earlier READMEs, 0010_scripts/README.md
included. Downgrade restores revision 0010's text.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import op

from dbtools.deploy.migration_helpers import current_engine, utc_now

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

HERE = Path(__file__).parent
#: (ScriptSet, StepNumber, frozen file) of the step script this revision replaces.
STEP_SCRIPT = ("Hierarchical", 3, "Hierarchical_3_Children")


def set_scripts(revision_folder: str) -> None:
    engine = current_engine()
    if engine.name != "postgresql":
        return
    steps = sa.table("BlobDeltaStepScript", sa.column("ScriptSet", sa.Unicode()), sa.column("StepNumber", sa.Integer()),
                     sa.column("ScriptText", sa.Unicode()), sa.column("ModifiedAt", sa.DateTime()),
                     schema=engine.job_schema)
    script_set, number, name = STEP_SCRIPT
    text = (HERE / revision_folder / engine.name / f"{name}.sql").read_text(encoding="utf-8")
    op.execute(steps.update().where(steps.c.ScriptSet == script_set, steps.c.StepNumber == number)
               .values(ScriptText=text, ModifiedAt=utc_now()))


def upgrade() -> None:
    set_scripts("0014_scripts")


def downgrade() -> None:
    set_scripts("0010_scripts")
