"""Benchmark the delta engine on PostgreSQL: changes, moves and first loads of real-sized files
(issue 17), on a private pgserver (nothing else is touched).

Every Hierarchical table here is FileTable-shaped (``dbtools.delta.sample.blob_table_ddl``: the path is
the key, ``parent_path_locator`` is computed from it, a parent must exist), as revision 0010
requires, with its metadata table (``ModifiedOn`` index including the id and the business unit)
and the business-unit table. Every table is configured with ``SafetyBufferMinutes`` = 0, so that
a run's window is [watermark, now) and the script positions windows by setting the watermark.
Paths and ids are generated (seeded), so every run of the script builds the same trees.

1. ``changes``: an incremental run with changes. A tree of ``--tree-roots`` roots x 10 folders x 9
   one-byte files (202,000 rows at 2,000 roots) is first loaded by the engine (untimed). Then 5 %
   of its rows change in the source, as a FileTable changes: 2 % of the rows renamed (files, and
   every 20th root's ninth folder), 2 % rewritten (new content), 1 % new files, and 1 % of the
   folders moved under another root with their subtrees (one UPDATE of the paths of each folder
   and its descendants; only the folder's metadata is stamped, its files keep theirs). Every
   changed row's metadata ModifiedOn is stamped inside the next window. Contenders, each on the
   same target reset to the state after the first load (target rows, recorded versions,
   watermark; then VACUUM ANALYZE and CHECKPOINT, untimed):
     a. the engine's incremental run, ``batch_size`` 500 and 5,000;
     b. a bare set-based apply of the same window: one UPDATE moving the moved folders' target
        subtrees by path prefix, one UPDATE ... FROM the source of every window row the target
        holds (all columns), one INSERT ... SELECT of the window rows it lacks; one transaction,
        committed. It keeps no versions, checks no business unit, and knows the window.
   Every contender must leave exactly the rows of the source (count and md5 of every column of
   every row, in stream_id order); a round that differs stops the script. Goal: bare / engine
   >= 0.5 at 5,000.
2. ``nochange``: a run with no changes on trees of ``--small-rows`` and ``--large-rows`` rows. Each
   is first loaded (untimed), then ``--stamped`` of its rows are stamped into a new window and a
   run copies them (untimed). Each timed run then has its watermark set back, so that its window
   holds those rows again, all already current: nothing is written (checked from the run's step
   rows). ``--repeat`` runs of each, alternating; goal: the large tree's median within 1.5x of the
   small one's.
3. ``files``: first loads of ``--files`` files of random (incompressible, seeded) content whose
   sizes are log-normal with median ``--median-kib`` KiB and sigma ``--sigma``, clipped to
   [1 byte, ``--max-mib`` MiB], in ``--file-roots`` roots x ``--file-folders`` folders. The engine's
   first load at the default batch size (500) against a bare ``INSERT INTO target SELECT ... FROM
   source`` into a second target, both committed. After one untimed warm-up fill of each target,
   each contender's target is emptied by DELETE and ``VACUUM (TRUNCATE false)`` (the targets also
   have ``vacuum_truncate`` off, toast included), so the table files keep their size and are not
   regrown in the timed part; the engine's recorded versions and watermark are cleared too (its
   queue keeps past runs' rows, as it does in use). Checked against the source (count, and md5 of
   stream_id, path and md5(file_stream)). Goal: bare / engine >= 0.95.
   ``onebyte``: the same contest on the tree of 1. before its changes (the engine's overhead on a
   first load of one-byte files; no goal), its 19 MiB targets emptied by TRUNCATE
   (``--onebyte-by-delete``: as the files').
   Statistics: VACUUM records an emptied table as holding no row in its full-size file (reltuples
   0); the planner then takes the target for empty however full it gets, and the engine's
   Deletions step costs rows x rows. ``empty_target`` resets that record to a new table's
   (reltuples -1), so the planner estimates the rows from the file's size (``--keep-empty-stats``
   keeps VACUUM's record). Autovacuum is off on the contest's targets while they take turns: an
   analysis early in a load would record a few rows in the full-size file, to the same effect.
   Neither is what a new target shows (its file grows with its rows), hence TRUNCATE where the
   files are small. The files run first, so that the queue holds only their own runs' rows.

Before every timed contender: CHECKPOINT. Every contender opens its own connection inside its
timing and is timed from the client. Contenders alternate their order by round; the tables show
the medians, the ratio of the medians, the median of the rounds' ratios and every round's ratio
(bare seconds / engine seconds: 1.0 means the engine is as fast as the bare statement).

Usage: python bench/delta_engine.py [--cases onebyte,changes,nochange,files] [--rounds 7]
           [--tree-roots 2000] [--small-rows 10000] [--large-rows 1000000] [--stamped 2000]
           [--files 20000] [--max-wal-size 8GB]
Prints Markdown tables (progress goes to stderr); paste them into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from embedded import connect, fresh_database, private_server

from dbtools import commands
from dbtools.db.engines import engine_for
from dbtools.delta import runner
from dbtools.delta.sample import blob_table_ddl

PG = engine_for("postgresql")
JOB = '"BlobDeltaJobs"'
#: The columns a load writes (parent_path_locator is computed); is_directory is never updated.
COLUMNS = "stream_id, file_stream, name, path_locator, is_directory, creation_time, last_write_time"
UPDATED = ("file_stream", "name", "path_locator", "creation_time", "last_write_time")
CREATED = "timestamptz '2026-01-01 00:00:00+00'"
#: Every column of every row, in stream_id order (a directory's NULL content included).
TREE_DIGEST = ("SELECT count(*), md5(string_agg(t::text, E'\\n' ORDER BY t.stream_id)) FROM "
               "(SELECT stream_id, file_stream, name, path_locator, parent_path_locator, is_directory, "
               "creation_time, last_write_time FROM {table}) AS t")
FILES_DIGEST = ("SELECT count(*), md5(string_agg(stream_id::text || ':' || path_locator || ':' "
                "|| coalesce(md5(file_stream), '-'), ',' ORDER BY stream_id)) FROM {table}")
STEP_TIMES = (f'SELECT "StepName", count(*), sum(extract(epoch FROM "BatchCompletedAt" - "BatchStartedAt"))::float8, '
              'coalesce(sum("RowsInserted"), 0), coalesce(sum("RowsUpdated"), 0), coalesce(sum("RowsMoved"), 0) '
              f'FROM {JOB}."BlobDeltaRunStep" WHERE "RunId" = %s AND "StepNumber" > 0 AND "Status" = \'Completed\' '
              'GROUP BY 1')
STEP_ORDER = ("QueuePopulation", "Roots", "MissingParentsBatch", "Children", "Deletions")
#: The real-sized files tree of measurement 3 (fill_files), as the command line's defaults.
FILES_TREE = {"files": 20_000, "file_roots": 20, "file_folders": 200, "median_kib": 64.0, "sigma": 0.9,
              "max_mib": 4.0, "seed": 17}


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- setup
def tables_ddl(name: str, bare: bool) -> list[str]:
    """Source, metadata and target (and a second target for a bare contender) of one tree."""
    statements = [blob_table_ddl(PG, "Src", name), blob_table_ddl(PG, "Dst", name)]
    if bare:
        statements.append(blob_table_ddl(PG, "Bare", name))
    statements += [
        f'CREATE TABLE "Src"."{name}Meta" (stream_id uuid PRIMARY KEY, "ModifiedOn" timestamp(3) NOT NULL, '
        '"OwningBusinessUnit" uuid NOT NULL)',
        f'CREATE INDEX "IX_{name}Meta_ModifiedOn" ON "Src"."{name}Meta" ("ModifiedOn") '
        'INCLUDE (stream_id, "OwningBusinessUnit")',
        f'INSERT INTO {JOB}."BlobDeltaTableConfig" ("TableName", "SourceDatabase", "SourceTable", "TargetDatabase", '
        '"TargetTable", "MetadataDatabase", "MetadataTable", "MetadataIdColumn", "MetadataBusinessUnitCol", "ScriptSet", '
        '"QueuePopulationScriptName", "BusinessUnitDatabase", "BusinessUnitTable", "SafetyBufferMinutes", "IsActive") '
        f"VALUES ('{name}', 'Src', '{name}', 'Dst', '{name}', 'Src', '{name}Meta', 'stream_id', 'OwningBusinessUnit', "
        "'Hierarchical', 'HierarchicalMissingParents', 'Src', 'LA_BU', 0, false)",
    ]
    return statements


def fill_tree(conn, name: str, roots: int, folders: int = 10, files: int = 9) -> int:
    """roots x folders x files one-byte files under their folders and roots, in one statement."""
    conn.execute(f"""
INSERT INTO "Src"."{name}" ({COLUMNS})
SELECT md5('{name}:' || r)::uuid, NULL::bytea, 'root' || r, '/' || r || '/', true, {CREATED}, {CREATED}
FROM generate_series(1, {roots}) AS r
UNION ALL
SELECT md5('{name}:' || r || '.' || d)::uuid, NULL, 'dir' || r || '.' || d, '/' || r || '/' || d || '/', true,
       {CREATED}, {CREATED}
FROM generate_series(1, {roots}) AS r, generate_series(1, {folders}) AS d
UNION ALL
SELECT md5('{name}:' || r || '.' || d || '.' || f)::uuid, '\\x00'::bytea, 'file' || r || '.' || d || '.' || f,
       '/' || r || '/' || d || '/' || f || '/', false, {CREATED}, {CREATED}
FROM generate_series(1, {roots}) AS r, generate_series(1, {folders}) AS d, generate_series(1, {files}) AS f""")
    return fill_metadata(conn, name)


def fill_metadata(conn, name: str) -> int:
    """One metadata row per blob, three days old, 10 ms apart in an order unrelated to the paths."""
    rows = conn.execute(f"""
INSERT INTO "Src"."{name}Meta" (stream_id, "ModifiedOn", "OwningBusinessUnit")
SELECT stream_id,
       date_trunc('second', now() AT TIME ZONE 'UTC') - interval '3 days'
           + row_number() OVER (ORDER BY md5(stream_id::text)) * interval '10 milliseconds',
       md5('bu' || (1 + mod(row_number() OVER (ORDER BY stream_id), 4)))::uuid
FROM "Src"."{name}" """).rowcount
    conn.execute(f'ANALYZE "Src"."{name}"')
    conn.execute(f'ANALYZE "Src"."{name}Meta"')
    return rows


def fill_files(conn, name: str, args) -> dict:
    """Roots and folders, then the files by binary COPY: sizes log-normal (seeded), random bytes."""
    folders_per_root = max(1, args.file_folders // args.file_roots)
    conn.execute(f"""
INSERT INTO "Src"."{name}" ({COLUMNS})
SELECT md5('{name}:' || r)::uuid, NULL::bytea, 'root' || r, '/' || r || '/', true, {CREATED}, {CREATED}
FROM generate_series(1, {args.file_roots}) AS r
UNION ALL
SELECT md5('{name}:' || r || '.' || d)::uuid, NULL, 'dir' || r || '.' || d, '/' || r || '/' || d || '/', true,
       {CREATED}, {CREATED}
FROM generate_series(1, {args.file_roots}) AS r, generate_series(1, {folders_per_root}) AS d""")
    folders = [(r, d) for r in range(1, args.file_roots + 1) for d in range(1, folders_per_root + 1)]
    rng = random.Random(args.seed)
    mu, top = math.log(args.median_kib * 1024), int(args.max_mib * 1024 * 1024)
    created = datetime(2026, 1, 1, tzinfo=timezone.utc)
    sizes: list[int] = []
    copy_sql = f'COPY "Src"."{name}" ({COLUMNS}) FROM STDIN (FORMAT BINARY)'
    chunk = 500
    for start in range(0, args.files, chunk):
        with conn.cursor().copy(copy_sql) as copy:
            copy.set_types(["uuid", "bytea", "text", "text", "bool", "timestamptz", "timestamptz"])
            for i in range(start, min(start + chunk, args.files)):
                size = min(max(int(round(rng.lognormvariate(mu, args.sigma))), 1), top)
                sizes.append(size)
                r, d = folders[i % len(folders)]
                f = i // len(folders) + 1
                copy.write_row((uuid.UUID(int=rng.getrandbits(128), version=4), rng.randbytes(size),
                                f"file{r}.{d}.{f}.bin", f"/{r}/{d}/{f}/", False, created, created))
        if start // chunk % 10 == 9:
            log(f"  {start + chunk:,} files copied")
    rows = fill_metadata(conn, name)
    sizes.sort()
    return {"rows": rows, "files": len(sizes), "bytes": sum(sizes), "median": statistics.median(sizes),
            "p90": sizes[int(0.9 * (len(sizes) - 1))], "p99": sizes[int(0.99 * (len(sizes) - 1))],
            "max": sizes[-1], "min": sizes[0], "clipped": sum(1 for s in sizes if s == top)}


# ------------------------------------------------------------------------------------- engine state
def set_max_wal_size(admin_url, size: str) -> str:
    """Set the private server's max_wal_size (a reload, no restart); returns its data directory."""
    with connect(admin_url) as conn:
        conn.execute(f"ALTER SYSTEM SET max_wal_size = '{size}'")
        conn.execute("SELECT pg_reload_conf()")
        return conn.execute("SHOW data_directory").fetchone()[0]


def bench_database(admin_url, tables) -> sa.URL:
    """A fresh database "bench" at head with the schemas Src, Dst, Bare and Snap, four business
    units (``"Src"."LA_BU"``) and the tables of ``tables_ddl`` for each ``(name, bare)`` of
    ``tables``; then deployed again, which grants the engine its rights on the configured tables.
    Returns its URL."""
    url = fresh_database(admin_url, "bench")
    with connect(url) as conn:
        for schema in ("Src", "Dst", "Bare", "Snap"):
            conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute('CREATE TABLE "Src"."LA_BU" ("BusinessUnitId" uuid PRIMARY KEY, "Name" text NOT NULL)')
        conn.execute('INSERT INTO "Src"."LA_BU" SELECT md5(\'bu\' || g)::uuid, \'BU \' || g FROM generate_series(1, 4) AS g')
        for name, bare in tables:
            for statement in tables_ddl(name, bare):
                conn.execute(statement)
    commands.migrate(url=url.render_as_string(hide_password=False))
    return url


def set_watermark(conn, name: str, value) -> None:
    """Forget the table's last run and lease; put its watermark at ``value`` (None: a first load)."""
    conn.execute(f'UPDATE {JOB}."BlobDeltaHighWatermark" SET "LastHighWaterModifiedOn" = %s, "LastRunId" = NULL, '
                 '"LastRunCompletedAt" = NULL, "IsInitialFullLoadDone" = false, "IsRunning" = false, '
                 '"RunLeaseExpiresAt" = NULL, "LeaseRunId" = NULL WHERE "TableName" = %s', (value, name))


def forget_copies(conn, name: str) -> None:
    """The engine's memory of the table: recorded versions and watermark. The queue keeps its rows
    (they belong to past runs, and the engine never deletes them either): emptied and vacuumed,
    the planner would take it for empty all through the next run's queue population, which then
    probes it by scanning it once per queued row (see docs/benchmarks.md)."""
    conn.execute(f'DELETE FROM {JOB}."BlobDeltaTargetVersion" WHERE "TableName" = %s', (name,))
    set_watermark(conn, name, None)


def empty_target(conn, table: str, engine_table: str | None, keep_empty_stats: bool = False,
                 truncate: bool = False) -> None:
    """DELETE every row and VACUUM without truncating: the files keep their size (issue 17).

    VACUUM records the table as holding no row (reltuples 0) at its full size in pages, and the
    planner scales that density by the file's size, so it would plan every statement of the next
    load for an empty target, however full it gets (the engine's Deletions step then costs rows x
    rows, docs/benchmarks.md). A new table, or one just truncated, has no such record (reltuples
    -1, relpages 0): the planner estimates its rows from the file's size. Unless
    ``keep_empty_stats``, the record is reset to that; here the file is full-size, so the planner
    takes the emptied target for full, where a new target's file grows with its rows.
    With ``truncate``, the table is truncated instead (new, empty files, as a new target has).
    """
    conn.execute(f"{'TRUNCATE' if truncate else 'DELETE FROM'} {table}")
    if engine_table:
        forget_copies(conn, engine_table)
    if not truncate:
        conn.execute(f"VACUUM (TRUNCATE false) {table}")
    if not keep_empty_stats and not truncate:
        conn.execute("UPDATE pg_catalog.pg_class SET reltuples = -1, relpages = 0, relallvisible = 0 "
                     "WHERE oid = %s::regclass", (table,))
    conn.execute(f'VACUUM {JOB}."BlobDeltaTargetVersion"')


def run_engine(url, name: str, batch_size: int) -> tuple[float, uuid.UUID]:
    """One run of the engine for table ``name``, timed from the client (its connection included)."""
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        start = time.perf_counter()
        result = runner.run_operator(engine, PG, mode="SingleTable", table=name, batch_size=batch_size)
        seconds = time.perf_counter() - start
    finally:
        engine.dispose()
    if result.status != "Succeeded":
        with connect(url) as conn:
            errors = conn.execute(f'SELECT "ErrorMessage" FROM {JOB}."BlobDeltaRun" WHERE "RunId" = %s',
                                  (result.run_id,)).fetchone()
        raise SystemExit(f"engine run of {name} ended {result.status}: {errors}")
    return seconds, result.run_id


def step_times(conn, run_id) -> dict[str, tuple[int, float, int, int, int]]:
    """Per step of a run: batches, seconds inside them, rows inserted, updated, moved along."""
    return {r[0]: tuple(r[1:]) for r in conn.execute(STEP_TIMES, (run_id,))}


def digest(conn, sql: str, table: str) -> tuple[int, str]:
    return tuple(conn.execute(sql.format(table=table)).fetchone())


def timed_bare(url, statements: list[tuple[str, dict | None]]) -> float:
    """The statements in one transaction on a new connection, committed; timed from the client."""
    params = url.translate_connect_args(username="user", database="dbname")
    params.update(url.query)
    start = time.perf_counter()
    with psycopg.connect(**params) as conn:  # commits on leaving the block
        for sql, values in statements:
            conn.execute(sql, values)
    return time.perf_counter() - start


def in_turns(names: list[str], rounds: int):
    """(round, contender) in turns, the order reversed every other round."""
    for r in range(rounds):
        for name in (names if r % 2 == 0 else list(reversed(names))):
            yield r, name


# ------------------------------------------------------------------------------------- measurements
def hold_targets(conn, tables, autovacuum: bool = False) -> None:
    """Targets that take turns: their files keep their size when emptied (no vacuum truncation), and
    autovacuum stays off unless ``autovacuum`` (see first_loads)."""
    for table in tables:
        conn.execute(f"ALTER TABLE {table} SET (vacuum_truncate = false, toast.vacuum_truncate = false, "
                     f"autovacuum_enabled = {autovacuum}, toast.autovacuum_enabled = {autovacuum})")


def first_loads(url, name: str, digest_sql: str, rounds: int, label: str, keep_empty_stats: bool,
                truncate: bool = False, autovacuum: bool = False) -> dict:
    """Engine first load (batch 500) against a bare INSERT ... SELECT, the targets emptied between
    (DELETE + VACUUM, or TRUNCATE). Autovacuum is off on both targets while they take turns: an
    analysis of a target emptied by DELETE, taken early in a load, tells the planner the full-size
    file holds a few rows, and the engine's Deletions step then costs rows x rows (one round of
    170 s in 20,220 rows, see docs/benchmarks.md); a new target's file grows with its rows."""
    source = f'"Src"."{name}"'
    targets = {"bare": f'"Bare"."{name}"', "engine": f'"Dst"."{name}"'}
    with connect(url) as conn:
        expected = digest(conn, digest_sql, source)
        hold_targets(conn, targets.values(), autovacuum)
        sizes = {k: [conn.execute("SELECT pg_table_size(%s::regclass)", (t,)).fetchone()[0]] for k, t in targets.items()}
    bare_sql = f"INSERT INTO {targets['bare']} ({COLUMNS}) SELECT {COLUMNS} FROM {source}"

    def contender(which: str) -> tuple[float, uuid.UUID | None]:
        if which == "bare":
            return timed_bare(url, [(bare_sql, None)]), None
        return run_engine(url, name, 500)

    log(f"{label}: warm-up fills (untimed)")
    for which in ("bare", "engine"):
        contender(which)
    with connect(url) as conn:
        for k, t in targets.items():
            sizes[k].append(conn.execute("SELECT pg_table_size(%s::regclass)", (t,)).fetchone()[0])
    times: dict[str, list[float]] = {"bare": [], "engine": []}
    steps: list[dict] = []
    for r, which in in_turns(["bare", "engine"], rounds):
        with connect(url) as conn:
            empty_target(conn, targets[which], name if which == "engine" else None, keep_empty_stats, truncate)
            conn.execute("CHECKPOINT")
        seconds, run_id = contender(which)
        with connect(url) as conn:
            got = digest(conn, digest_sql, targets[which])
            if got != expected:
                raise SystemExit(f"{label}, round {r + 1}: the {which} target holds {got}, the source {expected}")
            if run_id:
                steps.append(step_times(conn, run_id) | {"": seconds})
            sizes[which].append(conn.execute("SELECT pg_table_size(%s::regclass)", (targets[which],)).fetchone()[0])
        times[which].append(seconds)
        log(f"  round {r + 1} {which}: {seconds:.2f} s")
    with connect(url) as conn:
        for table in targets.values():
            conn.execute(f"ALTER TABLE {table} RESET (autovacuum_enabled, toast.autovacuum_enabled)")
    return {"rows": expected[0], "bare": times["bare"], "engine": times["engine"], "steps": steps, "sizes": sizes,
            "emptied": ("TRUNCATE" if truncate else "DELETE + VACUUM (TRUNCATE false)")
                       + (", autovacuum on" if autovacuum else ", autovacuum off on the targets")}


def changes(url, args) -> dict:
    """Measurement 1: the engine's incremental run with changes and moves against a bare apply."""
    name = "Tree"
    roots, folders, files = args.tree_roots, 10, 9
    moves = max(1, round(roots * folders / 100))
    step = max(1, roots // moves)
    with connect(url) as conn:
        log("changes: the first load to start from (untimed)")
        empty_target(conn, f'"Dst"."{name}"', name, truncate=True)
    run_engine(url, name, 500)
    with connect(url) as conn:
        conn.execute(f'VACUUM (ANALYZE) "Dst"."{name}"')
        conn.execute(f'CREATE TABLE "Snap"."{name}" AS SELECT {COLUMNS} FROM "Dst"."{name}"')
        conn.execute(f'CREATE TABLE "Snap"."{name}Version" AS SELECT * FROM {JOB}."BlobDeltaTargetVersion" '
                     'WHERE "TableName" = %s', (name,))
        first = digest(conn, TREE_DIGEST, f'"Dst"."{name}"')
        if first != digest(conn, TREE_DIGEST, f'"Src"."{name}"'):
            raise SystemExit("changes: the first load does not match the source")
        # The changes, chosen by the original paths '/r/d/f/'.
        log("changes: changing the source (untimed)")
        conn.execute(f"""
CREATE TABLE "Snap"."Changes" AS
SELECT stream_id, path_locator AS old_path,
       CASE WHEN f IS NOT NULL AND f = 1 AND d IN (1, 2) THEN 'rename'
            WHEN f IS NULL AND d = 9 AND r % 20 = 0 THEN 'rename'
            WHEN f IS NOT NULL AND f = 2 AND d IN (1, {folders}) THEN 'content'
            WHEN f IS NULL AND d = {folders} AND r % {step} = 0 THEN 'move' END AS kind,
       CASE WHEN f IS NULL AND d = {folders} AND r % {step} = 0
            THEN '/' || ((r - 1 + {roots} / 2) % {roots} + 1) || '/' || {folders + 1} || '/' END AS new_path
FROM (SELECT stream_id, path_locator, split_part(path_locator, '/', 2)::int AS r,
             nullif(split_part(path_locator, '/', 3), '')::int AS d, nullif(split_part(path_locator, '/', 4), '')::int AS f
      FROM "Src"."{name}") AS x
WHERE (f = 1 AND d IN (1, 2)) OR (f IS NULL AND d = 9 AND r % 20 = 0) OR (f = 2 AND d IN (1, {folders}))
   OR (f IS NULL AND d = {folders} AND r % {step} = 0)""")
        t1 = conn.execute("SELECT date_trunc('second', now() AT TIME ZONE 'UTC') - interval '10 minutes'").fetchone()[0]
        conn.execute(f"""UPDATE "Src"."{name}" AS s SET file_stream = decode(md5(s.stream_id::text || ':v2'), 'hex'),
                         last_write_time = %s AT TIME ZONE 'UTC'
                         FROM "Snap"."Changes" AS c WHERE c.stream_id = s.stream_id AND c.kind = 'content'""", (t1,))
        conn.execute(f"""UPDATE "Src"."{name}" AS s SET name = s.name || '.renamed'
                         FROM "Snap"."Changes" AS c WHERE c.stream_id = s.stream_id AND c.kind = 'rename'""")
        # Each moved folder's subtree by path prefix, as a FileTable move rewrites it (all in one statement).
        conn.execute(f"""UPDATE "Src"."{name}" AS s SET path_locator = c.new_path || substr(s.path_locator, length(c.old_path) + 1)
                         FROM "Snap"."Changes" AS c
                         WHERE c.kind = 'move' AND s.path_locator >= c.old_path AND s.path_locator < left(c.old_path, -1) || '0'""")
        conn.execute(f"""INSERT INTO "Snap"."Changes" (stream_id, kind)
                         SELECT md5('{name}:new:' || r)::uuid, 'new' FROM generate_series(1, {roots}) AS r""")
        conn.execute(f"""INSERT INTO "Src"."{name}" ({COLUMNS})
                         SELECT md5('{name}:new:' || r)::uuid, decode(md5('new' || r), 'hex'), 'file' || r || '.1.new',
                                '/' || r || '/1/{files + 1}/', false, %s AT TIME ZONE 'UTC', %s AT TIME ZONE 'UTC'
                         FROM generate_series(1, {roots}) AS r""", (t1, t1))
        conn.execute(f"""INSERT INTO "Src"."{name}Meta" (stream_id, "ModifiedOn", "OwningBusinessUnit")
                         SELECT c.stream_id, %s, md5('bu' || (1 + mod(row_number() OVER (ORDER BY c.stream_id), 4)))::uuid
                         FROM "Snap"."Changes" AS c WHERE c.kind = 'new'""", (t1,))
        conn.execute(f"""UPDATE "Src"."{name}Meta" AS m SET "ModifiedOn" = %s + x.n * interval '1 millisecond'
                         FROM (SELECT stream_id, row_number() OVER (ORDER BY md5(stream_id::text)) AS n
                               FROM "Snap"."Changes") AS x
                         WHERE x.stream_id = m.stream_id""", (t1,))
        conn.execute(f'VACUUM (ANALYZE) "Src"."{name}", "Src"."{name}Meta"')
        kinds = dict(conn.execute('SELECT kind, count(*) FROM "Snap"."Changes" GROUP BY 1').fetchall())
        along = conn.execute(f"""SELECT count(*) FROM "Snap"."{name}" AS t JOIN "Snap"."Changes" AS c
                                 ON c.kind = 'move' AND t.path_locator > c.old_path
                                AND t.path_locator < left(c.old_path, -1) || '0'""").fetchone()[0]
        expected = digest(conn, TREE_DIGEST, f'"Src"."{name}"')
    watermark = t1 - timedelta(seconds=1)

    def reset(conn) -> None:
        conn.execute(f'TRUNCATE "Dst"."{name}"')
        conn.execute(f'INSERT INTO "Dst"."{name}" ({COLUMNS}) SELECT {COLUMNS} FROM "Snap"."{name}"')
        conn.execute(f'DELETE FROM {JOB}."BlobDeltaTargetVersion" WHERE "TableName" = %s', (name,))
        conn.execute(f'INSERT INTO {JOB}."BlobDeltaTargetVersion" SELECT * FROM "Snap"."{name}Version"')
        set_watermark(conn, name, watermark)
        conn.execute(f'VACUUM (ANALYZE) "Dst"."{name}", {JOB}."BlobDeltaTargetVersion"')
        if digest(conn, TREE_DIGEST, f'"Dst"."{name}"') != first:
            raise SystemExit("changes: the reset target differs from the first load")
        conn.execute("CHECKPOINT")

    window = 'm."ModifiedOn" >= %(ws)s AND m."ModifiedOn" < %(we)s'
    bare = [
        # 1. Moved folders: the target subtree under the copy's old path takes the new prefix.
        (f"""UPDATE "Dst"."{name}" AS d SET path_locator = mv.new_path || substr(d.path_locator, length(mv.old_path) + 1)
             FROM (SELECT t.path_locator AS old_path, s.path_locator AS new_path
                   FROM "Src"."{name}Meta" AS m
                   JOIN "Src"."{name}" AS s ON s.stream_id = m.stream_id
                   JOIN "Dst"."{name}" AS t ON t.stream_id = m.stream_id
                   WHERE {window} AND s.is_directory AND t.path_locator <> s.path_locator) AS mv
             WHERE d.path_locator >= mv.old_path AND d.path_locator < left(mv.old_path, -1) || '0'""", None),
        # 2. Every window row the target holds, rewritten whole from the source.
        (f"""UPDATE "Dst"."{name}" AS t SET {', '.join(f'{c} = s.{c}' for c in UPDATED)}
             FROM "Src"."{name}Meta" AS m JOIN "Src"."{name}" AS s ON s.stream_id = m.stream_id
             WHERE {window} AND t.stream_id = s.stream_id""", None),
        # 3. The window rows it lacks.
        (f"""INSERT INTO "Dst"."{name}" ({COLUMNS})
             SELECT {', '.join('s.' + c for c in COLUMNS.split(', '))}
             FROM "Src"."{name}Meta" AS m JOIN "Src"."{name}" AS s ON s.stream_id = m.stream_id
             WHERE {window} AND NOT EXISTS (SELECT 1 FROM "Dst"."{name}" AS t WHERE t.stream_id = s.stream_id)""", None),
    ]
    contenders = ["bare", "engine 500", "engine 5000"]
    times: dict[str, list[float]] = {c: [] for c in contenders}
    steps: dict[str, list[dict]] = {c: [] for c in contenders[1:]}
    for r, which in in_turns(contenders, args.rounds):
        with connect(url) as conn:
            reset(conn)
        if which == "bare":
            ends = datetime.now(timezone.utc).replace(tzinfo=None)
            values = {"ws": watermark, "we": ends}
            seconds, run_id = timed_bare(url, [(sql, values) for sql, _ in bare]), None
        else:
            seconds, run_id = run_engine(url, name, int(which.split()[1]))
        with connect(url) as conn:
            got = digest(conn, TREE_DIGEST, f'"Dst"."{name}"')
            if got != expected:
                raise SystemExit(f"changes, round {r + 1}: {which} left {got}, the source holds {expected}")
            if run_id:
                steps[which].append(step_times(conn, run_id) | {"": seconds})
        times[which].append(seconds)
        log(f"  round {r + 1} {which}: {seconds:.2f} s")
    if args.explain_bare:
        with connect(url) as conn:
            reset(conn)
            values = {"ws": watermark, "we": datetime.now(timezone.utc).replace(tzinfo=None)}
            conn.execute("BEGIN")
            for sql, _ in bare:
                plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, values).fetchall()
                log("bare apply statement:\n" + "\n".join(r[0] for r in plan))
            conn.execute("ROLLBACK")
    return {"rows": first[0], "after": expected[0], "kinds": kinds, "along": along, "moves": kinds.get("move", 0),
            "times": times, "steps": steps}


def no_change(url, args) -> dict:
    """Measurement 2: runs whose window holds only rows already copied, on a small and a large tree.
    Per tree: its rows, the watermark that puts those rows in a run's window ("mark"), and with
    ``args.repeat`` > 0 the timed runs."""
    trees = {"Small": args.small_rows, "Large": args.large_rows}
    out = {}
    marks = {}
    for name, rows in trees.items():
        with connect(url) as conn:
            log(f"nochange: building {name} ({rows:,} rows)")
            out[name] = {"rows": fill_tree(conn, name, max(1, rows // 101))}
        log(f"nochange: first load of {name} (untimed, batch {args.load_batch:,})")
        run_engine(url, name, args.load_batch)
        with connect(url) as conn:
            t2 = conn.execute("SELECT date_trunc('second', now() AT TIME ZONE 'UTC') - interval '10 minutes'").fetchone()[0]
            conn.execute(f"""UPDATE "Src"."{name}Meta" AS m SET "ModifiedOn" = %s + x.n * interval '1 millisecond'
                             FROM (SELECT stream_id, row_number() OVER (ORDER BY md5(stream_id::text || 'stamp')) AS n
                                   FROM "Src"."{name}Meta" ORDER BY md5(stream_id::text || 'stamp') LIMIT %s) AS x
                             WHERE x.stream_id = m.stream_id""", (t2, args.stamped))
            conn.execute(f'VACUUM (ANALYZE) "Src"."{name}Meta"')
            marks[name] = out[name]["mark"] = t2 - timedelta(seconds=1)
            set_watermark(conn, name, marks[name])
        _, run_id = run_engine(url, name, 500)  # copies the stamped rows (untimed)
        with connect(url) as conn:
            copied = step_times(conn, run_id)
            out[name]["copied"] = sum(v[3] for v in copied.values())  # rows updated
            conn.execute(f'VACUUM (ANALYZE) "Dst"."{name}", {JOB}."BlobDeltaTargetVersion"')
            if digest(conn, TREE_DIGEST, f'"Dst"."{name}"') != digest(conn, TREE_DIGEST, f'"Src"."{name}"'):
                raise SystemExit(f"nochange: {name}'s target does not match its source")
        out[name]["times"] = []
        out[name]["steps"] = []
    for r, name in in_turns(list(trees), args.repeat):
        with connect(url) as conn:
            set_watermark(conn, name, marks[name])
            conn.execute("CHECKPOINT")
        seconds, run_id = run_engine(url, name, 500)
        with connect(url) as conn:
            done = step_times(conn, run_id)
        written = sum(v[2] + v[3] + v[4] for v in done.values())
        if written:
            raise SystemExit(f"nochange: a run of {name} wrote {written} rows; nothing should have changed")
        out[name]["times"].append(seconds)
        out[name]["steps"].append(done | {"": seconds})
        log(f"  run {r + 1} {name}: {seconds:.3f} s")
    return out


# -------------------------------------------------------------------------------------------- report
def ratios(bares: list[float], engines: list[float]) -> list[float]:
    return [b / e for b, e in zip(bares, engines)]


def contest_row(case: str, rows: int, bares: list[float], engines: list[float], goal: str) -> str:
    bare, engine = statistics.median(bares), statistics.median(engines)
    each = ratios(bares, engines)
    return (f"| {case} | {rows:,} | {bare:.2f} | {engine:.2f} | {bare / engine:.2f} | {statistics.median(each):.2f} | "
            f"{' / '.join(f'{x:.2f}' for x in each)} | {goal} |")


CONTEST_HEAD = ("| case | rows | bare median (s) | engine median (s) | bare / engine, medians | "
                "median of the rounds' ratios | each round's ratio, in order | goal |\n"
                "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |")


def step_table(title: str, runs: dict[str, list[dict]]) -> None:
    """Per engine contender, medians: seconds inside each step's batches (from the run's step
    rows), the client's seconds, and the rest (the procedure's own work between the batches and
    the table's end, commits, the call)."""
    names = [s for s in STEP_ORDER if any(s in run for rs in runs.values() for run in rs)]
    print(f"\n{title}\n")
    print("| contender | " + " | ".join(names) + " | whole run (client) | outside the batches | batches "
          "| rows inserted / updated / moved along |")
    print("| --- | " + " | ".join("---:" for _ in names) + " | ---: | ---: | ---: | ---: |")
    for label, rs in runs.items():
        steps = [{k: v for k, v in run.items() if k} for run in rs]
        cells = [f"{statistics.median(run.get(s, (0, 0.0))[1] for run in steps):.2f}" for s in names]
        total = statistics.median(run[""] for run in rs)
        outside = statistics.median(run[""] - sum(v[1] for v in step.values()) for run, step in zip(rs, steps))
        batches = statistics.median(sum(v[0] for v in run.values()) for run in steps)
        counts = "/".join(str(sum(v[i] for v in steps[-1].values())) for i in (2, 3, 4))
        print(f"| {label} | " + " | ".join(cells) + f" | {total:.2f} | {outside:.2f} | {batches:g} | {counts} |")


def machine(url, args) -> str:
    with connect(url) as conn:
        settings = {k: conn.execute(f"SHOW {k}").fetchone()[0] for k in (
            "server_version", "shared_buffers", "work_mem", "max_wal_size", "checkpoint_timeout",
            "synchronous_commit", "autovacuum", "default_toast_compression")}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "procedures", "migrations", "templates",
                                "dbtools"], capture_output=True, text=True, check=True).stdout.strip()
        commit += " (engine files changed since)" if dirty else ""
    except (OSError, subprocess.CalledProcessError):  # not a checkout: an exported tree (git archive) names it
        commit = os.environ.get("DBTOOLS_COMMIT", "unknown") + " (exported tree)"
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"Commit {commit}; PostgreSQL {settings['server_version']} (pgserver), shared_buffers {settings['shared_buffers']}, "
            f"work_mem {settings['work_mem']}, max_wal_size {settings['max_wal_size']}, checkpoint_timeout "
            f"{settings['checkpoint_timeout']}, synchronous_commit {settings['synchronous_commit']}, autovacuum "
            f"{settings['autovacuum']}, toast compression {settings['default_toast_compression']}; "
            f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB RAM, Linux {platform.release()}, "
            f"Python {platform.python_version()}; {args.rounds} rounds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="onebyte,changes,nochange,files",
                        help="any of onebyte, changes, nochange, files (changes needs onebyte's tree: it builds it)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of the contests (contenders alternate)")
    parser.add_argument("--tree-roots", type=int, default=2000, help="1.: roots of 10 folders of 9 files each")
    parser.add_argument("--small-rows", type=int, default=10_000, help="2.: the small tree (101 rows a root)")
    parser.add_argument("--large-rows", type=int, default=1_000_000, help="2.: the large tree")
    parser.add_argument("--stamped", type=int, default=2000, help="2.: rows already copied in each window")
    parser.add_argument("--repeat", type=int, default=7, help="2.: timed runs of each tree")
    parser.add_argument("--load-batch", type=int, default=50_000, help="2.: batch size of the untimed first loads")
    parser.add_argument("--files", type=int, default=FILES_TREE["files"], help="3.: files")
    parser.add_argument("--file-roots", type=int, default=FILES_TREE["file_roots"])
    parser.add_argument("--file-folders", type=int, default=FILES_TREE["file_folders"],
                        help="3.: folders in all, spread over the roots")
    parser.add_argument("--median-kib", type=float, default=FILES_TREE["median_kib"])
    parser.add_argument("--sigma", type=float, default=FILES_TREE["sigma"],
                        help="3.: of the log-normal sizes (0.9: about 1.8 GiB)")
    parser.add_argument("--max-mib", type=float, default=FILES_TREE["max_mib"])
    parser.add_argument("--seed", type=int, default=FILES_TREE["seed"])
    parser.add_argument("--max-wal-size", default="8GB", help="set on the private server before anything runs")
    parser.add_argument("--explain-bare", action="store_true", help="1.: log the bare apply's plans (rolled back)")
    parser.add_argument("--onebyte-by-delete", action="store_true",
                        help="3.: empty the one-byte targets by DELETE + VACUUM as the files' (default: TRUNCATE, "
                             "a new table's statistics; their files are 19 MiB)")
    parser.add_argument("--autovacuum-on-targets", action="store_true",
                        help="3.: leave autovacuum on for the first-load targets (see the docstring)")
    parser.add_argument("--keep-empty-stats", action="store_true",
                        help="3.: leave the emptied targets' statistics as VACUUM records them (reltuples 0); "
                             "the engine's Deletions step then costs rows x rows (small sizes only)")
    args = parser.parse_args()
    cases = set(args.cases.split(","))
    if "changes" in cases:
        cases.add("onebyte")

    with private_server() as admin_url:
        data_directory = set_max_wal_size(admin_url, args.max_wal_size)
        log(f"server data directory {data_directory}")
        url = bench_database(admin_url, [(name, bare) for name, wanted, bare in (
            ("Tree", "onebyte", True), ("Small", "nochange", False), ("Large", "nochange", False),
            ("Files", "files", True)) if wanted in cases])
        notes = machine(url, args)

        results = {}
        # The files first: the queue then holds only their own runs' rows (see forget_copies).
        if "files" in cases:
            with connect(url) as conn:
                log(f"files: building {args.files:,} files (untimed)")
                results["sizes"] = fill_files(conn, "Files", args)
                source_size = conn.execute('SELECT pg_table_size(\'"Src"."Files"\'::regclass)').fetchone()[0]
            log(f"files: source {source_size / 2**30:.2f} GiB on disk; "
                f"{os.statvfs(data_directory).f_bavail * os.statvfs(data_directory).f_frsize / 2**30:.0f} GiB free")
            results["files"] = first_loads(url, "Files", FILES_DIGEST, args.rounds, "files", args.keep_empty_stats,
                                           autovacuum=args.autovacuum_on_targets)
        if "onebyte" in cases:
            with connect(url) as conn:
                log(f"onebyte: building the tree ({args.tree_roots:,} roots)")
                fill_tree(conn, "Tree", args.tree_roots)
            results["onebyte"] = first_loads(url, "Tree", TREE_DIGEST, args.rounds, "onebyte", args.keep_empty_stats,
                                             not args.onebyte_by_delete, args.autovacuum_on_targets)
        if "changes" in cases:
            results["changes"] = changes(url, args)
        if "nochange" in cases:
            results["nochange"] = no_change(url, args)

    print(f"\n{notes}")
    if "changes" in results:
        c = results["changes"]
        k = c["kinds"]
        print(f"\n### 1. Incremental run with changes ({c['rows']:,} rows first loaded; "
              f"{sum(k.values()):,} changed in the window: {k.get('rename', 0):,} renamed, {k.get('content', 0):,} "
              f"rewritten, {k.get('new', 0):,} new, {c['moves']:,} folders moved with {c['along']:,} rows below them; "
              f"{c['after']:,} rows after)\n")
        print(CONTEST_HEAD)
        t = c["times"]
        print(contest_row("changes, engine batch 500", c["rows"], t["bare"], t["engine 500"], "none"))
        print(contest_row("changes, engine batch 5,000", c["rows"], t["bare"], t["engine 5000"], ">= 0.50"))
        step_table("Engine steps, median seconds inside the batches (1.):",
                   {"batch 500": c["steps"]["engine 500"], "batch 5,000": c["steps"]["engine 5000"]})
    if "nochange" in results:
        n = results["nochange"]
        small, large = statistics.median(n["Small"]["times"]), statistics.median(n["Large"]["times"])
        print(f"\n### 2. Runs with no changes ({args.stamped:,} rows already copied in each window, batch 500)\n")
        print("| tree | rows | median (s) | each run (s), in order | goal |")
        print("| --- | ---: | ---: | --- | --- |")
        for name in ("Small", "Large"):
            print(f"| {name.lower()} | {n[name]['rows']:,} | {statistics.median(n[name]['times']):.3f} | "
                  f"{' / '.join(f'{x:.3f}' for x in n[name]['times'])} | |")
        print(f"| large / small | | **{large / small:.2f}** | "
              f"{' / '.join(f'{b / a:.2f}' for a, b in zip(n['Small']['times'], n['Large']['times']))} | <= 1.5 |")
        step_table("Engine steps, median seconds inside the batches (2.):",
                   {"small": n["Small"]["steps"], "large": n["Large"]["steps"]})
    if "onebyte" in results or "files" in results:
        print("\n### 3. First loads\n")
        if "files" in results:
            s = results["sizes"]
            print(f"Files: {s['files']:,} in {args.file_folders} folders under {args.file_roots} roots "
                  f"({s['rows']:,} rows); sizes log-normal, median {args.median_kib:g} KiB, sigma {args.sigma:g}, "
                  f"clipped to [1 B, {args.max_mib:g} MiB], seed {args.seed}: {s['bytes'] / 2**30:.2f} GiB in all, "
                  f"median {s['median'] / 1024:.1f} KiB, p90 {s['p90'] / 1024:.0f} KiB, p99 {s['p99'] / 1024:.0f} KiB, "
                  f"largest {s['max'] / 2**20:.2f} MiB, smallest {s['min']:,} B, {s['clipped']} clipped at the top.\n")
        print(CONTEST_HEAD)
        if "onebyte" in results:
            o = results["onebyte"]
            print(contest_row("first load, one-byte files, batch 500", o["rows"], o["bare"], o["engine"], "none"))
        if "files" in results:
            f = results["files"]
            print(contest_row("first load, real-sized files, batch 500", f["rows"], f["bare"], f["engine"], ">= 0.95"))
        runs = {}
        if "onebyte" in results:
            runs["one-byte files"] = results["onebyte"]["steps"]
        if "files" in results:
            runs["real-sized files"] = results["files"]["steps"]
        step_table("Engine steps, median seconds inside the batches (3.):", runs)
        print("\nTargets emptied before each contender by: "
              + "; ".join(f"{label}, {results[label]['emptied']}" for label in ("onebyte", "files") if label in results)
              + ". Target sizes (pg_table_size, MiB: before the warm-up, after it, after every contender):\n")
        for label in ("onebyte", "files"):
            if label in results:
                for which, sizes in results[label]["sizes"].items():
                    print(f"* {label}, {which}: " + ", ".join(f"{x / 2**20:.0f}" for x in sizes))


if __name__ == "__main__":
    main()
