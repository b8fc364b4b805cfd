"""PostgreSQL: step 2a records the run's candidates, and the later steps test a window row against
that list instead of probing the target and the recorded versions again.

A Hierarchical run walks its window's metadata rows four times on PostgreSQL: step 2a (queue
population), step 1 (Roots), step 3 (Children) and the table's end check (changed children left
unplaced). Before this revision each walk looked every row up again to learn that a row already
copied (its copy in the target and its recorded version at least as new) needs nothing: seven
probes of the target, the source and ``BlobDeltaTargetVersion`` per current row, each a descent of
an index the size of the tree. A run with no changes therefore cost more on a large tree than on a
small one (bench/delta_engine.py, measurement 2: 1.4 to 1.9 times on 1,000,000 rows against
10,000, with the same 2,000 window rows), although it did the same work.

Now step 2a, which makes that test anyway, records its result in the new table
``BlobDeltaRunCandidate`` (run, stream_id, table): every window row whose copy is missing or older,
and one row without a stream_id that marks the list recorded. Steps 1 and 3 set aside a window row
that is not on the list with one probe of it (a small table: it holds the lists of runs in progress
or failed only), and so does the end check. A current row now costs step 2a's two probes and
nothing else.

The list costs a write and a probe of its own per candidate, so step 2a records it only when at
least half the window's rows (counted on the metadata index) are current: a run over the overlap
of its windows, or with few changes. A window of changes goes without it, as before (with the list
always recorded, the changes case of bench/delta_engine.py took 1.19 s against 1.06 s).

* **When there is no list**, everything works as before: a window of changes records none (above),
  nor does a first load whose target is still empty (every row is a candidate, and Children's
  first-load shortcut applies); a table without a queue population script has no step 2a; and a
  run that resumes after another run has worked the table finds its list cleared
  (``fn_BlobDelta_TableBegin`` removes other runs' lists, as they may be stale).
* **The table is UNLOGGED.** A list lost in a crash takes its marker with it, and the steps then
  test every row again, as without one. So nothing it holds needs the WAL.
* **Its rows live as long as the table's run**: ``fn_BlobDelta_TableEnd`` deletes them when the
  table ends well; a failed table keeps them for its resume.
* **Same rows written, same counts, same plans.** A candidate is exactly a row the steps' own test
  would take when step 2a runs; the test still decides for each candidate. What changes after step
  2a is left to the next run: a row stamped again inside the window while the run runs (a late
  write; the next window overlaps this one by the safety buffer, so a stamp within the buffer of
  this window's end is taken then), and, for a run that resumes later, a row whose business unit or
  source row appeared since, or whose copy or recorded version was changed by other means between
  the failure and the resume. Before, steps 1 and 3 looked such rows up again.

The scripts are frozen in 0017_scripts/postgresql/ with a README. SQL Server's scripts and job
database are unchanged: the revision does nothing there but record itself. Downgrade restores the
scripts of 0016 (queue population), 0010 (Roots) and 0015 (Children) and drops the table.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import op

from dbtools.deploy.migration_helpers import current_engine, utc_now

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

HERE = Path(__file__).parent
#: (ScriptSet, StepNumber, frozen file, the revision whose text a downgrade restores) of the steps replaced.
STEPS = (
    ("Hierarchical", 1, "Hierarchical_1_Roots", "0010_scripts"),
    ("Hierarchical", 3, "Hierarchical_3_Children", "0015_scripts"),
)
#: (ScriptName, frozen file, the revision whose text a downgrade restores) of the queue population script.
QUEUE_SCRIPT = ("HierarchicalMissingParents", "Hierarchical_QueuePopulation", "0016_scripts")


def frozen(folder: str, name: str) -> str:
    return (HERE / folder / current_engine().name / f"{name}.sql").read_text(encoding="utf-8")


def set_scripts(upgrading: bool) -> None:
    engine = current_engine()
    steps = sa.table("BlobDeltaStepScript", sa.column("ScriptSet", sa.Unicode()), sa.column("StepNumber", sa.Integer()),
                     sa.column("ScriptText", sa.Unicode()), sa.column("ModifiedAt", sa.DateTime()),
                     schema=engine.job_schema)
    for script_set, number, name, before in STEPS:
        op.execute(steps.update().where(steps.c.ScriptSet == script_set, steps.c.StepNumber == number)
                   .values(ScriptText=frozen("0017_scripts" if upgrading else before, name), ModifiedAt=utc_now()))
    queue = sa.table("BlobDeltaQueuePopulationScript", sa.column("ScriptName", sa.Unicode()),
                     sa.column("ScriptText", sa.Unicode()), sa.column("ModifiedAt", sa.DateTime()),
                     schema=engine.job_schema)
    script_name, name, before = QUEUE_SCRIPT
    op.execute(queue.update().where(queue.c.ScriptName == script_name)
               .values(ScriptText=frozen("0017_scripts" if upgrading else before, name), ModifiedAt=utc_now()))


def upgrade() -> None:
    engine = current_engine()
    if engine.name != "postgresql":
        return
    op.create_table(
        "BlobDeltaRunCandidate",
        sa.Column("TableName", sa.Unicode(400), nullable=False),
        sa.Column("RunId", sa.Uuid(), nullable=False),
        sa.Column("stream_id", sa.Uuid(), nullable=True),  # none: the row that marks the list recorded
        # The table's name last: the steps' probes and step 2a's inserts compare uuids first, and a
        # name (in the database's collation) only between rows of one run and blob: the inserts took
        # 17 ms for 10,300 rows against 45 ms with the name first (and ON CONFLICT, dropped since).
        # A table's start deletes other runs' lists by the table's name, so it reads the whole table:
        # that holds the lists of runs in progress or failed only, at most one other run's per table.
        sa.UniqueConstraint("RunId", "stream_id", "TableName", name="UQ_BlobDeltaRunCandidate",
                            postgresql_nulls_not_distinct=True),
        schema=engine.job_schema,
        prefixes=["UNLOGGED"],
    )
    set_scripts(upgrading=True)


def downgrade() -> None:
    engine = current_engine()
    if engine.name != "postgresql":
        return
    set_scripts(upgrading=False)
    op.drop_table("BlobDeltaRunCandidate", schema=engine.job_schema)
