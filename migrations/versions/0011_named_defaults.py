"""SQL Server's DEFAULT constraints get names: DF_<Table>_<Column>.

Until now SQLAlchemy and Alembic wrote every column default without a name, and SQL Server named
each one itself (``DF__BlobDelta__Statu__3B75D760``): a different name on every server, which a
later revision cannot drop or change by name. From this package version the migrations name every
default they create (``dbtools.deploy.ddl``, also when they run from an empty database); this
revision renames the system-named ones an earlier version created, on the package's own tables
only, each named in the batch as a literal:

* in the job database, the job tables (``JOB_TABLES``) and the tables of every entity kept there;
* in a database an entity spec puts its tables in (``database = "Sales"``), exactly that spec's
  tables (target, staging, rejects, lookups). Other applications' tables there are not touched.

A constraint keeps its system name when its new name is already taken by another object of its
schema, and so does every one but the first (by table object_id, then column) of defaults whose
new names coincide (``DF_A_B_C`` from table ``A_B`` column ``C`` and from table ``A`` column
``B_C``, or two names cut at 128 characters). ``dbtools`` lists such a constraint nowhere: check
``sys.default_constraints.is_system_named``.

Downgrade keeps the names: older revisions look defaults up by column, not by name.

PostgreSQL has no DEFAULT constraints: the revision does nothing there.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

from dbtools.db.engines import JOB_DATABASE, EngineInfo
from dbtools.deploy.migration_helpers import current_engine
from dbtools.upsert.specs import current_specs, frozen_spec

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

#: The job database's own tables as revisions 0001-0010 create them, the entities' tables aside.
JOB_TABLES = (
    "BlobDeltaTableConfig", "BlobDeltaHighWatermark", "BlobDeltaRun", "BlobDeltaRunStep",
    "BlobDeltaMissingParentsQueue", "BlobDeltaStepScript", "BlobDeltaPlanScript", "BlobDeltaTargetVersion",
    "BlobDeltaQueuePopulationScript", "BlobDeltaDeletionLog", "BlobDeltaDeploymentLog", "UpsertBatchLog",
)
#: The entities that revisions 0006 and 0007 created, as they froze them (the current specs are read too).
FROZEN_ENTITIES = (("0006_event_upserts.py", "customer_activity_event"), ("0007_click_events.py", "click_event"))

# Runs in one database (through that database's sys.sp_executesql): each system-named default of
# one of the listed tables becomes DF_<Table>_<Column> (cut at 128 characters), unless an object
# of the schema has that name already or an earlier rename of the same batch takes it (the
# NOT EXISTS guard sees only the names that exist before the batch: ROW_NUMBER keeps one default
# per new name). {tables} is a list of OBJECT_ID(N'...') literals.
RENAME = """DECLARE @Renames nvarchar(max);
SELECT @Renames = STRING_AGG(CONVERT(nvarchar(max),
           N'EXEC sys.sp_rename @objname = N''' + REPLACE(QUOTENAME(r.SchemaName) + N'.' + QUOTENAME(r.ConstraintName), N'''', N'''''')
           + N''', @newname = N''' + REPLACE(r.NewName, N'''', N'''''')
           + N''', @objtype = N''OBJECT'';'), NCHAR(10))
       WITHIN GROUP (ORDER BY r.TableName, r.ColumnId)
FROM (
    SELECT s.name AS SchemaName, dc.name AS ConstraintName, t.name AS TableName, c.column_id AS ColumnId,
           n.NewName,
           ROW_NUMBER() OVER (PARTITION BY s.schema_id, n.NewName ORDER BY t.object_id, c.column_id) AS Candidate
    FROM sys.default_constraints AS dc
    JOIN sys.tables AS t ON t.object_id = dc.parent_object_id
    JOIN sys.schemas AS s ON s.schema_id = t.schema_id
    JOIN sys.columns AS c ON c.object_id = dc.parent_object_id AND c.column_id = dc.parent_column_id
    CROSS APPLY (SELECT LEFT(N'DF_' + t.name + N'_' + c.name, 128) AS NewName) AS n
    WHERE dc.is_system_named = 1
      AND t.object_id IN ({tables})
      AND NOT EXISTS (SELECT 1 FROM sys.objects AS o WHERE o.schema_id = s.schema_id AND o.name = n.NewName)
) AS r
WHERE r.Candidate = 1;
IF @Renames IS NOT NULL
    EXEC sys.sp_executesql @Renames;"""


def owned_tables() -> dict[str, set[str]]:
    """The package's tables by database, the job database first: the job tables, and each
    entity's tables in the database its spec names (None: the job database)."""
    here = Path(__file__)
    specs = [frozen_spec(str(here.with_name(file)), name) for file, name in FROZEN_ENTITIES] + current_specs()
    owned: dict[str, set[str]] = {JOB_DATABASE: set(JOB_TABLES)}
    for spec in specs:
        owned.setdefault(spec.database or JOB_DATABASE, set()).update(spec.tables)
    return owned


def rename_batch(engine: EngineInfo, tables: set[str]) -> str:
    """RENAME limited to ``tables`` (in the job schema, dbo, of the database it runs in)."""
    listed = ",\n                         ".join(
        "OBJECT_ID(N'" + engine.job_object(name).replace("'", "''") + "', N'U')" for name in sorted(tables))
    return RENAME.replace("{tables}", listed)


def upgrade() -> None:
    engine = current_engine()
    if engine.name != "mssql":
        return
    for database, tables in owned_tables().items():
        literal = "N'" + rename_batch(engine, tables).replace("'", "''") + "'"
        op.execute(f"EXEC {engine.quote(database)}.sys.sp_executesql {literal}")


def downgrade() -> None:
    """Names are kept: a default named DF_<Table>_<Column> serves every older revision as well."""
