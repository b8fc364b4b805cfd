"""SQL Server's DEFAULT constraints get names: DF_<Table>_<Column>.

Until now SQLAlchemy and Alembic wrote every column default without a name, and SQL Server named
each one itself (``DF__BlobDelta__Statu__3B75D760``): a different name on every server, which a
later revision cannot drop or change by name. From this package version the migrations name every
default they create (``dbtools.deploy.ddl``, also when they run from an empty database); this
revision renames the system-named ones an earlier version created: in the job database, and in
every database an entity spec puts its tables in. A constraint whose name is already taken by
another object keeps its system name (and is listed by ``dbtools`` in no way: check
``sys.default_constraints.is_system_named``).

Downgrade keeps the names: older revisions look defaults up by column, not by name.

PostgreSQL has no DEFAULT constraints: the revision does nothing there.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

from dbtools.db.engines import JOB_DATABASE
from dbtools.deploy.migration_helpers import current_engine
from dbtools.upsert.specs import current_specs

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# Runs in one database (through its own sys.sp_executesql): each system-named default of a user
# table there becomes DF_<Table>_<Column> (cut at 128 characters), unless that name is taken.
RENAME = """DECLARE @Renames nvarchar(max);
SELECT @Renames = STRING_AGG(CONVERT(nvarchar(max),
           N'EXEC sys.sp_rename @objname = N''' + REPLACE(QUOTENAME(s.name) + N'.' + QUOTENAME(dc.name), N'''', N'''''')
           + N''', @newname = N''' + REPLACE(LEFT(N'DF_' + t.name + N'_' + c.name, 128), N'''', N'''''')
           + N''', @objtype = N''OBJECT'';'), NCHAR(10))
       WITHIN GROUP (ORDER BY t.name, c.column_id)
FROM sys.default_constraints AS dc
JOIN sys.tables AS t ON t.object_id = dc.parent_object_id
JOIN sys.schemas AS s ON s.schema_id = t.schema_id
JOIN sys.columns AS c ON c.object_id = dc.parent_object_id AND c.column_id = dc.parent_column_id
WHERE dc.is_system_named = 1 AND t.is_ms_shipped = 0
  AND NOT EXISTS (SELECT 1 FROM sys.objects AS o
                  WHERE o.schema_id = s.schema_id AND o.name = LEFT(N'DF_' + t.name + N'_' + c.name, 128));
IF @Renames IS NOT NULL
    EXEC sys.sp_executesql @Renames;"""


def upgrade() -> None:
    engine = current_engine()
    if engine.name != "mssql":
        return
    databases = [JOB_DATABASE] + sorted({spec.database for spec in current_specs() if spec.database is not None})
    literal = "N'" + RENAME.replace("'", "''") + "'"
    for database in databases:
        op.execute(f"EXEC {engine.quote(database)}.sys.sp_executesql {literal}")


def downgrade() -> None:
    """Names are kept: a default named DF_<Table>_<Column> serves every older revision as well."""
