"""Changing a type that procedures depend on (SQL Server TVP types, PostgreSQL composites).

SQL Server has no ALTER TYPE for table types, and DROP TYPE fails (Msg 3732) while any
module references the type; PostgreSQL refuses to drop a composite type that routine
signatures use. :func:`replace_type`, called from a revision, does the whole dance in the
migration's transaction, online and in offline scripts alike:

1. Refuse, with the objects named, when anything dbtools does not manage references the type
   (``sys.dm_sql_referencing_entities`` / ``pg_depend``): dropping someone else's procedure
   silently is not an option.
2. Drop the package's own objects whose rendered text names the type (logged as Dropped).
3. Drop and recreate the type with the new definition.
4. Redeploy those objects from their rendered text (logged as Deployed). They are package
   objects that were deployed already, so this is the text the package ships now.
"""

from __future__ import annotations

import re

from alembic.runtime.migration import MigrationContext

from .engines import EngineInfo, engine_for
from .render import RenderedObject, render_objects
from .repeatable import drop_object, execute_object, log_action, sql_text

__all__ = ["create_type", "replace_type", "drop_type", "dependents"]

FOREIGN_DEPENDENTS_ERROR = 50020


def _engine(ctx: MigrationContext) -> EngineInfo:
    return engine_for(ctx.dialect.name)


def dependents(engine: EngineInfo, type_name: str) -> list[RenderedObject]:
    """Package objects whose rendered text names ``type_name``."""
    pattern = re.compile(rf"(?<![\w]){re.escape(type_name)}(?![\w])")
    return [obj for obj in render_objects(engine.name) if pattern.search(obj.sql)]


def _create_sql(engine: EngineInfo, type_name: str, columns: str) -> str:
    if engine.name == "mssql":
        return f"CREATE TYPE {engine.job_object(type_name)} AS TABLE (\n{columns}\n)"
    return f"CREATE TYPE {engine.job_object(type_name)} AS (\n{columns}\n)"


def create_type(ctx: MigrationContext, type_name: str, *, mssql: str, postgresql: str) -> None:
    """Create a table type (SQL Server) / composite type (PostgreSQL) from its column list."""
    engine = _engine(ctx)
    ctx.execute(sql_text(_create_sql(engine, type_name, mssql if engine.name == "mssql" else postgresql)))


def _refuse_foreign_dependents(ctx: MigrationContext, engine: EngineInfo, type_name: str,
                               managed: list[str]) -> None:
    if engine.name == "mssql":
        literal = engine.job_object(type_name).replace("'", "''")
        managed_list = ", ".join("N'" + name.replace("'", "''") + "'" for name in managed) or "NULL"
        ctx.execute(sql_text(
            "DECLARE @Foreign nvarchar(max);\n"
            "DECLARE @Message nvarchar(2048);\n"
            "SELECT @Foreign = STRING_AGG(CONVERT(nvarchar(max), QUOTENAME(r.referencing_schema_name) + N'.'"
            " + QUOTENAME(r.referencing_entity_name)), N', ')\n"
            f"FROM sys.dm_sql_referencing_entities(N'{literal}', N'TYPE') AS r\n"
            f"WHERE NOT (r.referencing_schema_name = N'{engine.job_schema}'"
            f" AND r.referencing_entity_name IN ({managed_list}));\n"
            "IF @Foreign IS NOT NULL\n"
            "BEGIN\n"
            f"    SET @Message = LEFT(N'type {literal} is used by objects dbtools does not manage: ' + @Foreign"
            " + N'. Drop or change them first; nothing was changed.', 1000);\n"
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
        f"      'type %s is used by objects dbtools does not manage: %s. Drop or change them first; nothing was changed.',\n"
        f"      '{engine.job_object(type_name).replace(chr(39), chr(39) * 2)}', v_foreign);\n"
        "  END IF;\n"
        "END\n"
        "$dbtools$"
    ))


def replace_type(ctx: MigrationContext, type_name: str, *, mssql: str, postgresql: str) -> list[str]:
    """Recreate ``type_name`` with a new column list, dropping and redeploying its dependents.

    Returns the names of the package objects that were redeployed.
    """
    engine = _engine(ctx)
    objects = dependents(engine, type_name)
    _refuse_foreign_dependents(ctx, engine, type_name, [o.name for o in objects])
    for obj in objects:
        drop_object(ctx, engine, obj.name, obj.kind)
        log_action(ctx, engine, obj.name, obj.kind, "Dropped", None)
    ctx.execute(sql_text(f"DROP TYPE IF EXISTS {engine.job_object(type_name)}"))
    create_type(ctx, type_name, mssql=mssql, postgresql=postgresql)
    for obj in objects:
        execute_object(ctx, engine, obj)
        log_action(ctx, engine, obj.name, obj.kind, "Deployed", obj.checksum)
    return [obj.name for obj in objects]


def drop_type(ctx: MigrationContext, type_name: str) -> None:
    """Drop a type (for downgrades); the package's dependents must already be gone."""
    ctx.execute(sql_text(f"DROP TYPE IF EXISTS {_engine(ctx).job_object(type_name)}"))
