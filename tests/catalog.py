"""Catalog snapshots: everything dbtools creates, as comparable plain data.

Used to prove that up -> down -> up, a second upgrade, and the offline script each leave the
same catalog. Names the server generates (SQL Server default constraints) are left out;
their definitions are kept.
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa

from dbtools.db.engines import EngineInfo

PG_SNAPSHOT = {
    "columns": """
        SELECT c.table_schema, c.table_name, c.column_name, c.ordinal_position, c.data_type,
               c.character_maximum_length, c.numeric_precision, c.datetime_precision,
               c.is_nullable, c.column_default, c.is_identity, c.identity_generation
        FROM information_schema.columns AS c
        WHERE c.table_schema = ANY(%(schemas)s)
        ORDER BY 1, 2, 4""",
    "constraints": """
        SELECT n.nspname, t.relname, k.conname, k.contype, pg_get_constraintdef(k.oid)
        FROM pg_constraint AS k JOIN pg_class AS t ON t.oid = k.conrelid
        JOIN pg_namespace AS n ON n.oid = t.relnamespace
        WHERE n.nspname = ANY(%(schemas)s) ORDER BY 1, 2, 3""",
    "indexes": """
        SELECT schemaname, tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = ANY(%(schemas)s) ORDER BY 1, 2, 3""",
    "routines": """
        SELECT n.nspname, p.proname, p.prokind, pg_get_function_identity_arguments(p.oid),
               md5(p.prosrc), p.proconfig::text, p.prosecdef
        FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
        WHERE n.nspname = ANY(%(schemas)s) ORDER BY 1, 2, 4""",
    "types": """
        SELECT n.nspname, t.typname, t.typtype,
               (SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ', ' ORDER BY a.attnum)
                FROM pg_attribute AS a WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped)
        FROM pg_type AS t JOIN pg_namespace AS n ON n.oid = t.typnamespace
        LEFT JOIN pg_class AS c ON c.oid = t.typrelid
        WHERE n.nspname = ANY(%(schemas)s) AND t.typtype IN ('c', 'd', 'e')
          AND (c.relkind IS NULL OR c.relkind = 'c')
        ORDER BY 1, 2""",
}

MSSQL_SNAPSHOT = {
    "columns": """
        SELECT s.name, t.name, c.name, c.column_id, ty.name, c.max_length, c.precision, c.scale,
               c.is_nullable, c.is_identity, dc.definition
        FROM sys.tables AS t JOIN sys.schemas AS s ON s.schema_id = t.schema_id
        JOIN sys.columns AS c ON c.object_id = t.object_id
        JOIN sys.types AS ty ON ty.user_type_id = c.user_type_id
        LEFT JOIN sys.default_constraints AS dc ON dc.object_id = c.default_object_id
        ORDER BY 1, 2, 4""",
    "keys_and_indexes": """
        SELECT s.name, t.name, i.name, i.type_desc, i.is_unique, i.is_primary_key, i.is_unique_constraint,
               (SELECT STRING_AGG(CONVERT(nvarchar(max), c.name + CASE WHEN ic.is_descending_key = 1 THEN N' DESC' ELSE N'' END), N', ')
                    WITHIN GROUP (ORDER BY ic.key_ordinal)
                FROM sys.index_columns AS ic JOIN sys.columns AS c ON c.object_id = ic.object_id AND c.column_id = ic.column_id
                WHERE ic.object_id = i.object_id AND ic.index_id = i.index_id AND ic.key_ordinal > 0)
        FROM sys.indexes AS i JOIN sys.tables AS t ON t.object_id = i.object_id
        JOIN sys.schemas AS s ON s.schema_id = t.schema_id
        WHERE i.type > 0 ORDER BY 1, 2, 3""",
    "checks": """
        SELECT OBJECT_NAME(cc.parent_object_id), cc.name, cc.definition FROM sys.check_constraints AS cc ORDER BY 1, 2""",
    "foreign_keys": """
        SELECT OBJECT_NAME(fk.parent_object_id), fk.name, OBJECT_NAME(fk.referenced_object_id)
        FROM sys.foreign_keys AS fk ORDER BY 1, 2""",
    "modules": """
        SELECT SCHEMA_NAME(o.schema_id), o.name, o.type, m.uses_quoted_identifier, m.uses_ansi_nulls,
               m.definition
        FROM sys.sql_modules AS m JOIN sys.objects AS o ON o.object_id = m.object_id ORDER BY 1, 2""",
    "types": """
        SELECT SCHEMA_NAME(t.schema_id), t.name, t.is_table_type FROM sys.types AS t WHERE t.is_user_defined = 1 ORDER BY 1, 2""",
}


def snapshot(conn: sa.Connection, engine: EngineInfo, schemas: tuple[str, ...] | None = None) -> dict:
    """Every catalog fact dbtools is responsible for, keyed by category."""
    if engine.name == "postgresql":
        schemas = schemas or (engine.job_schema,)
        return {
            key: [tuple(row) for row in conn.exec_driver_sql(sql, {"schemas": list(schemas)})]
            for key, sql in PG_SNAPSHOT.items()
        }
    snap = {key: [tuple(row) for row in conn.exec_driver_sql(sql)] for key, sql in MSSQL_SNAPSHOT.items()}
    # sys.sql_modules keeps the whole batch: sqlcmd sends the offline script's "END;" and blank
    # lines (maybe CRLF), an online deploy "END". Compare the definitions modulo that.
    snap["modules"] = [row[:-1] + (_definition_digest(row[-1]),) for row in snap["modules"]]
    return snap


def _definition_digest(definition: str | None) -> str | None:
    if definition is None:
        return None
    normalised = definition.replace("\r\n", "\n").strip().rstrip(";").rstrip()
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


def digest(snap: dict) -> str:
    return hashlib.sha256(repr(sorted(snap.items())).encode()).hexdigest()
