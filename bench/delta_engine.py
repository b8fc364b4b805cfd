"""Benchmark the delta engine on PostgreSQL (a private pgserver; nothing else is touched).

1. Throughput for one window: 1M Flat rows and ~200k hierarchical rows through
   usp_BlobDelta_RunOperator, against a bare INSERT ... SELECT of the same rows into an empty
   copy of the target on the same server (goal: engine >= 0.8 of the bare insert's rate). Each
   engine run is a first load: its target is emptied and its watermark cleared before it. The
   four contenders take turns for --rounds rounds (the machine's speed changes within minutes)
   and the medians are printed, with every round's ratios.
2. The cost of a run with no changes on a 10k-row and a 1M-row Flat source (goal: within 1.5x
   of each other: the windowed scripts must seek on the metadata (ModifiedOn) index, not scan).

Usage: python bench/delta_engine.py [--flat-rows 1000000] [--tree-roots 2000] [--batch-size 50000] [--rounds 3]
Prints a table; paste it into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import time

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from embedded import fresh_database, private_server

from dbtools import commands, runner
from dbtools.engines import engine_for


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flat-rows", type=int, default=1_000_000)
    parser.add_argument("--tree-roots", type=int, default=2000, help="each root has 10 folders of 9 files")
    parser.add_argument("--batch-size", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5, help="no-change runs per size")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (contenders take turns)")
    args = parser.parse_args()

    rows_out = []
    with private_server() as admin_url:
        url = fresh_database(admin_url, "bench")
        version = count(url, "SHOW server_version")
        execute(url, SETUP_COMMON)
        execute(url, SETUP_FLAT.format(t="Flat", rows=args.flat_rows))
        execute(url, SETUP_FLAT.format(t="Flat10k", rows=10_000))
        execute(url, SETUP_TREE.format(roots=args.tree_roots))
        # Deploy again now that the tables are configured: it grants the engine its rights on them.
        commands.migrate(url=url.render_as_string(hide_password=False))

        # 1. Throughput, one window each, the contenders taking turns.
        cases = (("Flat, one window", "Flat", "*", '"Src"."Flat"'),
                 ("Hierarchical, one window", "Tree", "t.*", '"Src"."Tree" AS t JOIN "Src"."TreeMeta" AS m USING (stream_id)'))
        times = {name: ([], []) for name, *_ in cases}
        sizes = {}
        for _ in range(args.rounds):
            for name, table, columns, source in cases:
                execute(url, "CHECKPOINT")  # every contender starts with no dirty pages and WAL to flush
                bare, sizes[name] = bare_insert(url, table, columns, source)
                reset_target(url, table)
                execute(url, "CHECKPOINT")
                engine, result = timed(lambda: run_table(url, table, args.batch_size))
                assert result.status == "Succeeded", result
                assert count(url, f'SELECT count(*) FROM "Dst"."{table}"') == sizes[name]
                times[name][0].append(bare)
                times[name][1].append(engine)
        for name, (bares, engines) in times.items():
            rows_out.append((name, sizes[name], bares, engines))

        # 2. No changes: the watermark is now past every row.
        run_table(url, "Flat10k", args.batch_size)
        empty = {}
        for table, size in (("Flat10k", 10_000), ("Flat", args.flat_rows)):
            times = [timed(lambda: run_table(url, table, args.batch_size))[0] for _ in range(args.repeat)]
            empty[size] = statistics.median(times)

    print(f"| case | rows | bare INSERT ... SELECT, median (s) | engine, median (s) | engine / bare rate | each round | goal |")
    print("| --- | ---: | ---: | ---: | ---: | --- | --- |")
    for name, n, bares, engines in rows_out:
        bare, engine = statistics.median(bares), statistics.median(engines)
        each = " / ".join(f"{b / e:.2f}" for b, e in zip(bares, engines))
        print(f"| {name} | {n:,} | {bare:.2f} | {engine:.2f} | {bare / engine:.2f} | {each} | >= 0.80 |")
    small, large = empty[10_000], empty[args.flat_rows]
    print()
    print("| no-change run | median of {} (s) |".format(args.repeat))
    print("| --- | ---: |")
    print(f"| 10,000-row source | {small:.3f} |")
    print(f"| {args.flat_rows:,}-row source | {large:.3f} |")
    print(f"| ratio (large / small), goal <= 1.5 | {large / small:.2f} |")
    print(f"\nbatch size {args.batch_size:,}; {args.rounds} rounds; PostgreSQL {version} (pgserver), 2 cores")


if __name__ == "__main__":
    main()
