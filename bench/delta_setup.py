"""The tables and helpers of the delta benchmarks of revisions 0004 to 0009: a Flat table of
generated rows and a plain (not FileTable-shaped) tree of 2,000 roots x 10 folders x 9 files.

``bench/delta_engine.py`` used to hold them; since issue 17 it measures FileTable-shaped trees
(revision 0010), and these stay here, unchanged, for the experiments in ``bench/experiments/``
(``delta_flat_parts.py``, ``delta_tree_parts.py`` and ``delta_children.py``). Revision 0010 refuses a Hierarchical
target whose ``parent_path_locator`` is not computed, so runs of the engine on ``SETUP_TREE``'s
tree fail at head; its Flat table and the scripts' own statements still work.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from dbtools.delta import runner
from dbtools.db.engines import engine_for


SETUP_COMMON = """
CREATE SCHEMA "Src"; CREATE SCHEMA "Dst"; CREATE SCHEMA "Bare";
CREATE TABLE "Src"."LA_BU" ("BusinessUnitId" uuid PRIMARY KEY, "Name" text NOT NULL);
INSERT INTO "Src"."LA_BU" SELECT md5('bu' || g)::uuid, 'BU ' || g FROM generate_series(1, 4) AS g;
"""

SETUP_FLAT = """
CREATE TABLE "Src"."{t}" ("Id" uuid PRIMARY KEY, "Body" text NOT NULL, "ModifiedOn" timestamp(3) NOT NULL,
                          "OwningBusinessUnit" uuid NOT NULL);
INSERT INTO "Src"."{t}"
SELECT md5('{t}' || g)::uuid, repeat('x', 80), (now() AT TIME ZONE 'UTC') - interval '10 days' + mod(g, 86400) * interval '5 seconds',
       md5('bu' || (1 + mod(g, 4)))::uuid
FROM generate_series(1, {rows}) AS g;
CREATE INDEX "IX_{t}_ModifiedOn" ON "Src"."{t}" ("ModifiedOn") INCLUDE ("Id", "OwningBusinessUnit");
CREATE TABLE "Dst"."{t}" (LIKE "Src"."{t}" INCLUDING ALL);
CREATE TABLE "Bare"."{t}" (LIKE "Src"."{t}" INCLUDING ALL);
INSERT INTO "BlobDeltaJobs"."BlobDeltaTableConfig" ("TableName", "SourceDatabase", "SourceTable", "TargetDatabase",
    "TargetTable", "MetadataDatabase", "MetadataTable", "MetadataIdColumn", "MetadataBusinessUnitCol", "ScriptSet",
    "BusinessUnitDatabase", "BusinessUnitTable", "IsActive")
VALUES ('{t}', 'Src', '{t}', 'Dst', '{t}', 'Src', '{t}', 'Id', 'OwningBusinessUnit', 'Flat', 'Src', 'LA_BU', false);
ANALYZE "Src"."{t}";
"""

SETUP_TREE = """
CREATE TABLE "Src"."Tree" (stream_id uuid PRIMARY KEY, name text NOT NULL, file_stream bytea, path_locator text NOT NULL,
    parent_path_locator text, is_directory boolean NOT NULL, creation_time timestamptz NOT NULL, last_write_time timestamptz NOT NULL);
INSERT INTO "Src"."Tree"
SELECT md5('r' || r)::uuid, 'root' || r, NULL, '/' || r || '/', NULL, true, now(), now() FROM generate_series(1, {roots}) AS r;
INSERT INTO "Src"."Tree"
SELECT md5('d' || r || '.' || d)::uuid, 'dir', NULL, '/' || r || '/' || d || '/', '/' || r || '/', true, now(), now()
FROM generate_series(1, {roots}) AS r, generate_series(1, 10) AS d;
INSERT INTO "Src"."Tree"
SELECT md5('f' || r || '.' || d || '.' || f)::uuid, 'file', '\\x00', '/' || r || '/' || d || '/' || f || '/',
       '/' || r || '/' || d || '/', false, now(), now()
FROM generate_series(1, {roots}) AS r, generate_series(1, 10) AS d, generate_series(1, 9) AS f;
CREATE UNIQUE INDEX ON "Src"."Tree" (path_locator);
CREATE INDEX ON "Src"."Tree" (parent_path_locator);
CREATE TABLE "Src"."TreeMeta" (stream_id uuid PRIMARY KEY, "ModifiedOn" timestamp(3) NOT NULL, "OwningBusinessUnit" uuid NOT NULL);
INSERT INTO "Src"."TreeMeta"
SELECT stream_id, (now() AT TIME ZONE 'UTC') - interval '3 days' + mod(row_number() OVER (), 3600) * interval '1 second',
       md5('bu' || (1 + mod(row_number() OVER (), 4)))::uuid
FROM "Src"."Tree";
CREATE INDEX ON "Src"."TreeMeta" ("ModifiedOn") INCLUDE (stream_id, "OwningBusinessUnit");
CREATE TABLE "Dst"."Tree" (LIKE "Src"."Tree" INCLUDING ALL);
CREATE TABLE "Bare"."Tree" (LIKE "Src"."Tree" INCLUDING ALL);
INSERT INTO "BlobDeltaJobs"."BlobDeltaTableConfig" ("TableName", "SourceDatabase", "SourceTable", "TargetDatabase",
    "TargetTable", "MetadataDatabase", "MetadataTable", "MetadataIdColumn", "MetadataBusinessUnitCol", "ScriptSet",
    "QueuePopulationScriptName", "BusinessUnitDatabase", "BusinessUnitTable", "IsActive")
VALUES ('Tree', 'Src', 'Tree', 'Dst', 'Tree', 'Src', 'TreeMeta', 'stream_id', 'OwningBusinessUnit', 'Hierarchical',
        'HierarchicalMissingParents', 'Src', 'LA_BU', false);
ANALYZE "Src"."Tree"; ANALYZE "Src"."TreeMeta";
"""


def execute(url, sql):
    engine = sa.create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        for statement in [s for s in sql.split(";\n") if s.strip()]:
            conn.exec_driver_sql(statement)
    engine.dispose()


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def run_table(url, table, batch_size):
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        return runner.run_operator(engine, engine_for("postgresql"), mode="SingleTable", table=table,
                                   batch_size=batch_size)
    finally:
        engine.dispose()


def reset_target(url, table):
    """Empty the engine's target and forget the table's watermark: the next run is a first load."""
    execute(url, f'''TRUNCATE "Dst"."{table}";
UPDATE "BlobDeltaJobs"."BlobDeltaHighWatermark" SET "LastHighWaterModifiedOn" = NULL, "LastRunId" = NULL,
    "LastRunCompletedAt" = NULL, "IsInitialFullLoadDone" = false WHERE "TableName" = '{table}'
''')


def bare_insert(url, table, columns, where):
    engine = sa.create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'TRUNCATE "Bare"."{table}"')
    start = time.perf_counter()
    with engine.begin() as conn:
        rows = conn.exec_driver_sql(f'INSERT INTO "Bare"."{table}" SELECT {columns} FROM {where}').rowcount
    elapsed = time.perf_counter() - start
    engine.dispose()
    return elapsed, rows


def count(url, sql):
    engine = sa.create_engine(url, poolclass=NullPool)
    with engine.connect() as conn:
        value = conn.exec_driver_sql(sql).scalar()
    engine.dispose()
    return value
