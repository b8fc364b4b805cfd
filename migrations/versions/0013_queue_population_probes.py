"""PostgreSQL's Hierarchical queue population (step 2a) probes less per row.

Revision 0010's step 2a walks the window once and, per written blob, probes the tables again to
free the names the run will write. In the incremental run with changes of docs/benchmarks.md
(10,300 changed rows, batch 5,000) it took as long as the bare set-based apply of the whole change
(0.55 s against 0.78 s), and the run as a whole stayed at 0.41 of the bare apply (goal 0.5,
issue 17). Its probes, per changed window row: the source, the target and the recorded version
(each behind a Memoize node that never hit); per ancestor path: the source by path and the target;
per written blob: the source by its parent's path, the target by that parent's stream_id and the
target's (parent, name) key. The script now:

* finds a window row current with one probe where 0010 made two: the recorded version first,
  and the target only when that version is current (``NOT EXISTS`` with ``OFFSET 0``: per row, by
  index, never an anti-join over the whole versions table). A changed row costs the version probe
  alone;
* probes each ancestor path's source blob and its copy once, into a materialized set, and finds
  a written blob's folder in that set (a hash or merge join on the path) instead of probing the
  source and the target again for every written blob. Every written blob's parent path is one of
  the ancestor paths (a changed child's parent path is the leaf itself, a queued ancestor's
  parent path a shorter prefix of the same leaf), so the folder found is the same.

Same rows queued, same rows renamed aside, same result row; the other steps, the plan scripts and
SQL Server's scripts are unchanged (the revision does nothing on SQL Server). In alternating
rounds of the changes case (6 rounds, batch 5,000, a loaded machine) step 2a went from 0.39 s to
0.27 s and the run from 1.40 s to 1.21 s (medians): 0.43 -> 0.50 of the bare apply's 0.61 s.
Measured in docs/benchmarks.md ("Revision 0013").

The script is frozen beside this file (0013_scripts/postgresql/); the contract is that of the
earlier READMEs, 0010_scripts/README.md included. Downgrade restores revision 0010's text.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import op

from dbtools.deploy.migration_helpers import current_engine, utc_now

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

HERE = Path(__file__).parent
#: (ScriptName, frozen file) of the queue population script this revision replaces.
QUEUE_SCRIPT = ("HierarchicalMissingParents", "Hierarchical_QueuePopulation")


def set_scripts(revision_folder: str) -> None:
    engine = current_engine()
    if engine.name != "postgresql":
        return
    queue = sa.table("BlobDeltaQueuePopulationScript", sa.column("ScriptName", sa.Unicode()),
                     sa.column("ScriptText", sa.Unicode()), sa.column("ModifiedAt", sa.DateTime()),
                     schema=engine.job_schema)
    script_name, name = QUEUE_SCRIPT
    text = (HERE / revision_folder / engine.name / f"{name}.sql").read_text(encoding="utf-8")
    op.execute(queue.update().where(queue.c.ScriptName == script_name).values(ScriptText=text, ModifiedAt=utc_now()))


def upgrade() -> None:
    set_scripts("0013_scripts")


def downgrade() -> None:
    set_scripts("0010_scripts")
