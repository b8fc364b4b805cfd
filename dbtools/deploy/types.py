"""Changing a type that procedures depend on (SQL Server TVP types, PostgreSQL composites).

SQL Server has no ALTER TYPE for table types, and DROP TYPE fails (Msg 3732) while any module
references the type; PostgreSQL refuses to drop a composite type that routine signatures use.
:func:`replace_type`, called from a revision, runs in the migration's transaction, online and
in offline scripts alike:

1. It refuses, naming them, when objects dbtools does not manage reference the type
   (``sys.dm_sql_referencing_entities`` / ``pg_depend``): dropping someone else's procedure
   silently is not an option. Reading other objects' references needs VIEW DEFINITION on SQL
   Server; whatever the check cannot see still makes DROP TYPE fail, which rolls back.
2. It detaches the package's own dependents (every package object whose rendered text names the
   type): on SQL Server a procedure is altered to a stub that raises error 50030, so the object
   and its permissions survive; other modules, and every routine on PostgreSQL, are dropped.
   Each is logged as Dropped.
3. It drops and recreates the type.
4. The deploy at the end of the migration run recreates the detached objects from their
   rendered text (they are logged as Dropped, so they count as changed). That deploy happens
   only when the run ends at head, like every deploy: an old revision never gets new text. A
   run that stops below head leaves the stubs, which fail loudly until the next migrate.
"""

from __future__ import annotations

import re

from alembic.runtime.migration import MigrationContext

from ..db.engines import EngineInfo, engine_for
from .render import RenderedObject, render_objects
from .repeatable import drop_object, log_action, sql_text

__all__ = ["create_type", "replace_type", "drop_type", "dependents"]

FOREIGN_DEPENDENTS_ERROR = 50020
DETACHED_ERROR = 50030


def _engine(ctx: MigrationContext) -> EngineInfo:
    return engine_for(ctx.dialect.name)


def dependents(engine: EngineInfo, type_name: str) -> list[RenderedObject]:
    """Package objects whose rendered text names ``type_name`` (case-insensitive, as SQL Server)."""
    pattern = re.compile(rf"(?<![\w]){re.escape(type_name)}(?![\w])", re.I)
    return [obj for obj in render_objects(engine.name) if pattern.search(obj.sql)]


def _create_sql(engine: EngineInfo, type_name: str, columns: str) -> str:
    if engine.name == "mssql":
        return f"CREATE TYPE {engine.job_object(type_name)} AS TABLE (\n{columns}\n)"
    return f"CREATE TYPE {engine.job_object(type_name)} AS (\n{columns}\n)"


def create_type(ctx: MigrationContext, type_name: str, *, mssql: str, postgresql: str) -> None:
    """Create a table type (SQL Server) / composite type (PostgreSQL) from its column list."""
    engine = _engine(ctx)
    ctx.execute(sql_text(_create_sql(engine, type_name, mssql if engine.name == "mssql" else postgresql)))


def _n(value: str) -> str:
    return "N'" + value.replace("'", "''") + "'"


def _refuse_foreign_dependents(ctx: MigrationContext, engine: EngineInfo, type_name: str,
                               managed: list[str]) -> None:
    qualified = engine.job_object(type_name)
    if engine.name == "mssql":
        exclude = ""
        if managed:  # never `IN ()`/`IN (NULL)`: NOT (... IN (NULL)) would hide every dbo object
            exclude = (
                f"\nWHERE NOT (r.referencing_class = 1 AND r.referencing_schema_name = {_n(engine.job_schema)}"
                f" AND r.referencing_entity_name IN ({', '.join(_n(m) for m in managed)}))"
            )
        ctx.execute(sql_text(
            # SET, not SELECT @x = ...: no row count reaches the client ahead of the THROW, which
            # pyodbc would otherwise only surface on nextset().
            "DECLARE @Message nvarchar(2048);\n"
            "DECLARE @Foreign nvarchar(max) = (\n"
            "    SELECT STRING_AGG(CONVERT(nvarchar(max),\n"
            "        ISNULL(QUOTENAME(r.referencing_schema_name) + N'.', N'') + QUOTENAME(r.referencing_entity_name)\n"
            "        + CASE r.referencing_class WHEN 12 THEN N' (database DDL trigger)' ELSE N'' END), N', ')\n"
            "        WITHIN GROUP (ORDER BY r.referencing_schema_name, r.referencing_entity_name)\n"
            f"    FROM sys.dm_sql_referencing_entities({_n(qualified)}, N'TYPE') AS r{exclude});\n"
            "IF @Foreign IS NOT NULL\n"
            "BEGIN\n"
            f"    SET @Message = LEFT(N'type ' + {_n(qualified)} + N' is used by objects dbtools does not manage: '"
            " + @Foreign + N'. Drop or change them first; nothing was changed.', 1000);\n"
            "    SET @Message = REPLACE(@Message, N'%', N'%%');\n"
            f"    THROW {FOREIGN_DEPENDENTS_ERROR}, @Message, 1;\n"
            "END"
        ))
        return
    schema = engine.job_schema.replace("'", "''")
    name = type_name.replace("'", "''")
    managed_array = "ARRAY[" + ", ".join("'" + m.replace("'", "''") + "'" for m in managed) + "]::text[]"
    ctx.execute(sql_text(
        "DO $dbtools$\n"
        "DECLARE v_foreign text;\n"
        "BEGIN\n"
        "  SELECT string_agg(DISTINCT d.objid::regprocedure::text, ', ') INTO v_foreign\n"
        "  FROM pg_catalog.pg_depend AS d\n"
        "  JOIN pg_catalog.pg_type AS t ON t.oid = d.refobjid\n"
        "  JOIN pg_catalog.pg_namespace AS n ON n.oid = t.typnamespace\n"
        "  JOIN pg_catalog.pg_proc AS p ON p.oid = d.objid AND d.classid = 'pg_catalog.pg_proc'::regclass\n"
        "  JOIN pg_catalog.pg_namespace AS pn ON pn.oid = p.pronamespace\n"
        f"  WHERE n.nspname = '{schema}' AND (t.typname = '{name}' OR t.typelem = (\n"
        f"      SELECT t2.oid FROM pg_catalog.pg_type AS t2 WHERE t2.typnamespace = n.oid AND t2.typname = '{name}'))\n"
        f"    AND NOT (pn.nspname = '{schema}' AND p.proname = ANY({managed_array}));\n"
        "  IF v_foreign IS NOT NULL THEN\n"
        "    RAISE EXCEPTION USING ERRCODE = '2BP01', MESSAGE = format(\n"
        "      'type %s is used by objects dbtools does not manage: %s. Drop or change them first; nothing was changed.',\n"
        f"      '{qualified.replace(chr(39), chr(39) * 2)}', v_foreign);\n"
        "  END IF;\n"
        "END\n"
        "$dbtools$"
    ))


def _detach(ctx: MigrationContext, engine: EngineInfo, obj: RenderedObject) -> None:
    if engine.name == "mssql" and obj.kind == "PROCEDURE":
        message = (f"dbtools: {engine.job_object(obj.name)} is detached for a type change; "
                   "run dbtools migrate to head to redeploy it.").replace("%", "%%")
        ctx.execute(sql_text(
            f"ALTER PROCEDURE {engine.job_object(obj.name)}\nAS\n    THROW {DETACHED_ERROR}, {_n(message)}, 1"
        ))
    else:
        drop_object(ctx, engine, obj.name, obj.kind)


def replace_type(ctx: MigrationContext, type_name: str, *, mssql: str, postgresql: str) -> list[str]:
    """Recreate ``type_name`` with a new column list; detach its package dependents for redeploy.

    Returns the names of the package objects that were detached (and will be redeployed by the
    deploy at head).
    """
    engine = _engine(ctx)
    objects = dependents(engine, type_name)
    _refuse_foreign_dependents(ctx, engine, type_name, [o.name for o in render_objects(engine.name)])
    for obj in objects:
        _detach(ctx, engine, obj)
        log_action(ctx, engine, obj.name, obj.kind, "Dropped", None)
    ctx.execute(sql_text(f"DROP TYPE IF EXISTS {engine.job_object(type_name)}"))
    create_type(ctx, type_name, mssql=mssql, postgresql=postgresql)
    return [obj.name for obj in objects]


def drop_type(ctx: MigrationContext, type_name: str) -> None:
    """Drop a type (for downgrades); the package's dependents must already be gone."""
    ctx.execute(sql_text(f"DROP TYPE IF EXISTS {_engine(ctx).job_object(type_name)}"))
