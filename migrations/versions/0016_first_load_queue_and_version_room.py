"""PostgreSQL: step 2a does less on a first load, and ``BlobDeltaTargetVersion`` keeps room in its
pages (fillfactor 85) so that a rewritten version stays on its page.

Measured in docs/benchmarks.md ("Revision 0016"):

* **Room in the versions' pages.** Every copy the engine rewrites (a changed blob: step 1, 2b or 3)
  rewrites its recorded version too: the metadata ModifiedOn, business unit, run and time. None of
  those columns is indexed, so PostgreSQL can write the new row version on the same page without
  touching the primary key (a heap-only tuple, HOT) when the page has room. A version table filled
  by a first load has none: its pages are full, so every rewrite went to another page and added an
  entry to the primary key. In the changes case of bench/delta_engine.py, one Children batch of
  5,000 rows (4,012 versions rewritten) spent 30 to 38 ms rewriting versions with full pages and
  10 ms with fillfactor 85. Head to head over 9 rounds, the run's Children step fell from 0.65 to
  0.56 s (medians) and the run from 1.27 to 1.14 s.

  The setting applies to pages written from now on (a first load, new versions, pages that
  autovacuum frees). The migration does not rewrite the table: that would hold an ACCESS EXCLUSIVE
  lock for as long as the rewrite takes. To give an existing table the room at once, run
  ``VACUUM FULL "BlobDeltaJobs"."BlobDeltaTargetVersion"`` at a quiet time (no run holds a lease).
* **A first load's step 2a** (the queue population script, frozen in 0016_scripts/postgresql/ with a
  README) skips the current-row test and the probes that free a taken name when ``$9`` is true and
  the target's first row (``LIMIT 1``) does not exist: in an empty target no row is current and no
  name is taken. Same rows queued, same result. Its statement for a first load of 202,000 one-byte
  files: 1.90 s -> 1.45 s.

SQL Server needs no counterpart and the revision does nothing there. Its table is clustered on the
key (no forwarded records), the key (``TableName``, nvarchar, and stream_id) is never updated, and
the columns rewritten are fixed length, NULL included (datetime2, uniqueidentifier): a rewrite does
not grow the row, so it stays in place. A row does grow, by a 14-byte version tag, the first time
it changes in a database with row versioning (READ_COMMITTED_SNAPSHOT, snapshot isolation,
Accelerated Database Recovery), none of which ``CREATE DATABASE`` turns on; a DBA who turns one on
can leave room the same way with ``ALTER INDEX [PK_BlobDeltaTargetVersion] ON
[dbo].[BlobDeltaTargetVersion] REBUILD WITH (FILLFACTOR = 85)``. SQL Server's queue population
script is unchanged. No procedure or column changes on either engine. Downgrade restores revision
0015's queue population text and PostgreSQL's default fillfactor.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import op

from dbtools.deploy.migration_helpers import current_engine, utc_now

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

HERE = Path(__file__).parent
#: The versions table's fillfactor on PostgreSQL (percent of each page that inserts may fill).
FILLFACTOR = 85
#: (ScriptName, frozen file) of the queue population script this revision replaces.
QUEUE_SCRIPT = ("HierarchicalMissingParents", "Hierarchical_QueuePopulation")


def set_queue_script(folder: str) -> None:
    engine = current_engine()
    queue = sa.table("BlobDeltaQueuePopulationScript", sa.column("ScriptName", sa.Unicode()),
                     sa.column("ScriptText", sa.Unicode()), sa.column("ModifiedAt", sa.DateTime()),
                     schema=engine.job_schema)
    script_name, queue_file = QUEUE_SCRIPT
    text = (HERE / folder / engine.name / f"{queue_file}.sql").read_text(encoding="utf-8")
    op.execute(queue.update().where(queue.c.ScriptName == script_name).values(ScriptText=text, ModifiedAt=utc_now()))


def upgrade() -> None:
    engine = current_engine()
    if engine.name != "postgresql":
        return
    op.execute(f"ALTER TABLE {engine.job_object('BlobDeltaTargetVersion')} SET (fillfactor = {FILLFACTOR})")
    set_queue_script("0016_scripts")


def downgrade() -> None:
    engine = current_engine()
    if engine.name != "postgresql":
        return
    op.execute(f"ALTER TABLE {engine.job_object('BlobDeltaTargetVersion')} RESET (fillfactor)")
    set_queue_script("0015_scripts")
