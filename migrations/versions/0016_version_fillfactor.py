"""PostgreSQL keeps free room in the pages of ``BlobDeltaTargetVersion`` (fillfactor 85), so that
the engine's rewrite of a recorded version stays on its page.

Every copy the engine rewrites (a changed blob: step 1, 2b or 3) rewrites its recorded version too:
the metadata ModifiedOn, business unit, run and time. None of those columns is indexed, so
PostgreSQL can write the new row version on the same page without touching the primary key (a
heap-only tuple, HOT) when the page has room. A version table filled by a first load has none: its
pages are full, so every rewrite went to another page and added an entry to the primary key.
Measured in docs/benchmarks.md ("Revision 0016"): in the changes case of bench/delta_engine.py, one
Children batch of 5,000 rows (4,012 versions rewritten) spent 30 to 38 ms rewriting versions with
full pages and 10 ms with fillfactor 85. Head to head over 9 rounds, the run's Children step fell
from 0.65 to 0.56 s (medians) and the run from 1.27 to 1.14 s.

The setting applies to pages written from now on (a first load, new versions, pages that
autovacuum frees). The migration does not rewrite the table: that would hold an ACCESS EXCLUSIVE
lock for as long as the rewrite takes. To give an existing table the room at once, run
``VACUUM FULL "BlobDeltaJobs"."BlobDeltaTargetVersion"`` at a quiet time (no run holds a lease).

SQL Server needs no counterpart and the revision does nothing there. Its table is clustered on the
key (no forwarded records), the key (``TableName``, nvarchar, and stream_id) is never updated, and
the columns rewritten are fixed length, NULL included (datetime2, uniqueidentifier): a rewrite does
not grow the row, so it stays in place. A row does grow, by a 14-byte version tag, the first time
it changes in a database with row versioning (READ_COMMITTED_SNAPSHOT, snapshot isolation,
Accelerated Database Recovery), none of which ``CREATE DATABASE`` turns on; a DBA who turns one on
can leave room the same way with ``ALTER INDEX [PK_BlobDeltaTargetVersion] ON
[dbo].[BlobDeltaTargetVersion] REBUILD WITH (FILLFACTOR = 85)``. No procedure, script or column
changes on either engine.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

from dbtools.deploy.migration_helpers import current_engine

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

#: The versions table's fillfactor on PostgreSQL (percent of each page that inserts may fill).
FILLFACTOR = 85


def upgrade() -> None:
    engine = current_engine()
    if engine.name == "postgresql":
        op.execute(f"ALTER TABLE {engine.job_object('BlobDeltaTargetVersion')} SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    engine = current_engine()
    if engine.name == "postgresql":
        op.execute(f"ALTER TABLE {engine.job_object('BlobDeltaTargetVersion')} RESET (fillfactor)")
