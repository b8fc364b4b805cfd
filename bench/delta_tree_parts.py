"""The ceiling of a hierarchical first load against the goal's bare insert (PostgreSQL only).

Reproduces the tables under "The hierarchical goal's ceiling" in docs/benchmarks.md, on a
private pgserver with the delta benchmark's tree (bench/delta_engine.py: 2,000 roots, 20,000
folders, 180,000 files). The contenders take turns, each in a transaction that is rolled back,
with the target vacuumed and checkpointed before each; a table whose contenders did not write the
same rows (count and checksum of the ids) is refused:

1. The whole tree into an empty target: the goal's bare ``INSERT ... SELECT``; the same in the
   metadata ``ModifiedOn`` order (step 3's keyset order); a set-based first load (each step one
   statement with the stored scripts' guards, no batches, no queue: the ceiling of a set-based
   engine); and the least a first load can do (the window's rows and missing ancestors in one
   statement, no probes, no order).
2. One Children batch (step 3) in the middle of a first load (roots and folders copied by steps
   1 and 2, the first batch of files too): the deployed script, its row selection alone, and a
   bare insert of the rows the script takes, in its order and in path order.
3. Step 3 with no batches: every file in one set-based statement with the step's guards, after
   steps 1 and 2, against a bare insert of the same rows.

Usage: python bench/delta_tree_parts.py [--roots 2000] [--batch-size 50000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time

import psycopg

from delta_engine import SETUP_COMMON, SETUP_TREE, execute
from embedded import fresh_database, start_server

COLUMNS = "stream_id, name, file_stream, path_locator, parent_path_locator, is_directory, creation_time, last_write_time"
PLACEHOLDERS = {
    "{SourceObject}": '"Src"."Tree"', "{TargetObject}": '"Dst"."Tree"', "{MetadataObject}": '"Src"."TreeMeta"',
    "{BusinessUnitObject}": '"Src"."LA_BU"', "{MetadataIdColumn}": "stream_id", "{MetadataModifiedOnCol}": '"ModifiedOn"',
    "{MetadataBusinessUnitCol}": '"OwningBusinessUnit"', "{BusinessUnitIdColumn}": '"BusinessUnitId"',
}
PARAMS = "p(int, uuid, timestamp, timestamp, uuid, uuid, text, timestamp, boolean)"
BATCH_END = "), inserted AS ("
SELECTION = "its row selection alone (writes nothing)"


def substituted(sql: str) -> str:
    for key, value in PLACEHOLDERS.items():
        sql = sql.replace(key, value)
    return sql


def round_robin(conn, contenders: dict[str, str | list[str]], args: tuple, repeat: int) -> tuple[dict, dict]:
    """Median time, rows written and target checksum of each contender, run ``repeat`` times in turns.

    A contender is one statement or several run in order in one transaction; each is rolled
    back, and the target vacuumed and checkpointed before the next, whose turn alternates.
    """
    times: dict[str, list[float]] = {name: [] for name in contenders}
    rows: dict[str, int] = {}
    sums: dict[str, str] = {}
    cursor = psycopg.ClientCursor(conn)
    for round_number in range(repeat):
        order = list(contenders.items())
        for name, statements in order if round_number % 2 == 0 else reversed(order):
            conn.execute('VACUUM "Dst"."Tree"')  # the rolled-back rows of the one before are gone
            conn.execute("CHECKPOINT")
            written = 0
            elapsed = 0.0
            with conn.transaction(force_rollback=True):
                for sql in [statements] if isinstance(statements, str) else statements:
                    cursor.execute(f"PREPARE {PARAMS} AS {sql}")
                    start = time.perf_counter()
                    cursor.execute("EXECUTE p(%s, %s::uuid, %s, %s, %s::uuid, %s::uuid, %s, %s, %s)", args)
                    elapsed += time.perf_counter() - start
                    written += cursor.fetchone()[0] if cursor.description else cursor.rowcount
                    cursor.execute("DEALLOCATE p")
                sums[name] = cursor.execute(CHECKSUM).fetchone()[0]
            times[name].append(elapsed)
            rows[name] = written
    return {name: statistics.median(t) for name, t in times.items()}, (rows, sums)


CHECKSUM = 'SELECT md5(string_agg(stream_id::text, \',\' ORDER BY stream_id)) FROM "Dst"."Tree"'
GUARDS = """m."ModifiedOn" >= $3 AND m."ModifiedOn" < $4
  AND ($5 IS NULL OR m."OwningBusinessUnit" = $5) AND ($2 IS NULL OR s.stream_id <> $2)
  AND NOT EXISTS (SELECT 1 FROM "Dst"."Tree" AS t WHERE t.stream_id = s.stream_id)"""
WINDOW_ROWS = """FROM "Src"."TreeMeta" AS m JOIN "Src"."Tree" AS s ON s.stream_id = m.stream_id
JOIN "Src"."LA_BU" AS bu ON bu."BusinessUnitId" = m."OwningBusinessUnit"
"""
# Step 3 with no batches: every child of the window not yet in the target whose parent is.
SET_BASED_CHILDREN = f"""INSERT INTO "Dst"."Tree" ({COLUMNS})
SELECT s.* {WINDOW_ROWS}
WHERE s.parent_path_locator IS NOT NULL AND {GUARDS}
  AND EXISTS (SELECT 1 FROM "Dst"."Tree" AS p WHERE p.path_locator = s.parent_path_locator)"""
# A whole first load with no batches and no queue: the window's roots, then every missing
# ancestor of its children (the queue population's read), shallowest first, then step 3.
SET_BASED_FIRST_LOAD = [
    f"""INSERT INTO "Dst"."Tree" ({COLUMNS})
SELECT s.* {WINDOW_ROWS}
WHERE s.parent_path_locator IS NULL AND {GUARDS}""",
    f"""INSERT INTO "Dst"."Tree" ({COLUMNS})
WITH children AS (
    SELECT DISTINCT s.parent_path_locator {WINDOW_ROWS}
    WHERE s.parent_path_locator IS NOT NULL AND {GUARDS}
), ancestor_paths AS (
    SELECT DISTINCT left(c.parent_path_locator, g.i) AS path_locator
    FROM children AS c CROSS JOIN LATERAL generate_series(2, length(c.parent_path_locator)) AS g (i)
    WHERE substr(c.parent_path_locator, g.i, 1) = '/'
)
SELECT s.* FROM ancestor_paths AS a JOIN "Src"."Tree" AS s ON s.path_locator = a.path_locator
WHERE NOT EXISTS (SELECT 1 FROM "Dst"."Tree" AS t WHERE t.stream_id = s.stream_id)
ORDER BY length(s.path_locator) - length(replace(s.path_locator, '/', ''))""",
    SET_BASED_CHILDREN,
]


# The least a first load can do: one statement, the window's rows and their ancestors missing from
# the window, no target probes (the target is empty) and no order (one commit, so no reader sees
# a child before its parent). No batches, no queue, nothing for a resumed run to find again.
LEAST_FIRST_LOAD = f"""INSERT INTO "Dst"."Tree" ({COLUMNS})
WITH window_rows AS (
    SELECT s.stream_id, s.parent_path_locator {WINDOW_ROWS}
    WHERE m."ModifiedOn" >= $3 AND m."ModifiedOn" < $4
      AND ($5 IS NULL OR m."OwningBusinessUnit" = $5) AND ($2 IS NULL OR s.stream_id <> $2)
), ancestor_paths AS (
    SELECT DISTINCT left(c.parent_path_locator, g.i) AS path_locator
    FROM (SELECT DISTINCT w.parent_path_locator FROM window_rows AS w WHERE w.parent_path_locator IS NOT NULL) AS c
    CROSS JOIN LATERAL generate_series(2, length(c.parent_path_locator)) AS g (i)
    WHERE substr(c.parent_path_locator, g.i, 1) = '/'
)
SELECT s.* FROM "Src"."Tree" AS s
WHERE s.stream_id IN (SELECT w.stream_id FROM window_rows AS w
                      UNION SELECT a.stream_id FROM ancestor_paths AS p JOIN "Src"."Tree" AS a ON a.path_locator = p.path_locator)"""


def whole_tree(conn, repeat: int) -> tuple[dict, dict]:
    lo, hi = conn.execute('SELECT min("ModifiedOn"), max("ModifiedOn") + interval \'1 s\' FROM "Src"."TreeMeta"').fetchone()
    conn.execute('TRUNCATE "Dst"."Tree"')
    conn.execute('VACUUM ANALYZE "Dst"."Tree"')
    source = '"Src"."Tree" AS t JOIN "Src"."TreeMeta" AS m USING (stream_id)'
    contenders = {
        "bare INSERT ... SELECT (the goal's reference)": f'INSERT INTO "Dst"."Tree" SELECT t.* FROM {source}',
        "the same, in ModifiedOn order (step 3's order)": (
            f'INSERT INTO "Dst"."Tree" SELECT t.* FROM {source} ORDER BY m."ModifiedOn"'),
        "set-based first load: roots, missing ancestors, children; no batches, no queue": SET_BASED_FIRST_LOAD,
        "least first load: one statement, no probes, no order, no batches, no queue": LEAST_FIRST_LOAD,
    }
    return round_robin(conn, contenders, (1, None, lo, hi, None, None, "Tree", None, True), repeat)


def children_batch(conn, script: str, batch_size: int, repeat: int) -> tuple[dict, dict]:
    lo, hi = conn.execute('SELECT min("ModifiedOn"), max("ModifiedOn") + interval \'1 s\' FROM "Src"."TreeMeta"').fetchone()
    conn.execute('TRUNCATE "Dst"."Tree"')
    conn.execute('INSERT INTO "Dst"."Tree" SELECT * FROM "Src"."Tree" WHERE is_directory')  # steps 1 and 2
    conn.execute('INSERT INTO "Dst"."Tree" SELECT t.* FROM "Src"."Tree" AS t JOIN "Src"."TreeMeta" AS m USING (stream_id) '
                 'WHERE NOT t.is_directory ORDER BY m."ModifiedOn" LIMIT %s', (batch_size,))
    # Where the engine starts the next batch: 1 ms before the last ModifiedOn copied.
    position = conn.execute('SELECT max(m."ModifiedOn") - interval \'1 millisecond\' FROM "Dst"."Tree" AS t '
                            'JOIN "Src"."TreeMeta" AS m USING (stream_id) WHERE NOT t.is_directory').fetchone()[0]
    conn.execute('VACUUM ANALYZE "Dst"."Tree"')
    if BATCH_END not in script:
        raise SystemExit("the deployed Children script has no batch CTE any more: update this benchmark")
    args = (batch_size, None, lo, hi, None, None, "Tree", position, True)
    # The rows the script's batch takes, in its order, for the bare inserts (the checksums check
    # that the script takes the same rows again when it is timed).
    conn.execute('CREATE TABLE "Src"."NextBatch" (n serial PRIMARY KEY, stream_id uuid NOT NULL)')
    cursor = psycopg.ClientCursor(conn)
    batch_rows = script[:script.index(BATCH_END)] + ")\nSELECT b.stream_id FROM batch AS b ORDER BY b.modified_on"
    cursor.execute(f'PREPARE {PARAMS} AS INSERT INTO "Src"."NextBatch" (stream_id) {substituted(batch_rows)}')
    cursor.execute("EXECUTE p(%s, %s::uuid, %s, %s, %s::uuid, %s::uuid, %s, %s, %s)", args)
    cursor.execute("DEALLOCATE p")
    conn.execute('ANALYZE "Src"."NextBatch"')
    selection = script[:script.index(BATCH_END)] + ")\nSELECT count(*)::integer FROM batch"
    same_rows = 'INSERT INTO "Dst"."Tree" SELECT t.* FROM "Src"."NextBatch" AS b JOIN "Src"."Tree" AS t USING (stream_id)'
    statements = {
        "deployed Children script": substituted(script),
        SELECTION: substituted(selection),
        "bare insert of the same rows, same order": same_rows + " ORDER BY b.n",
        "bare insert of the same rows, path order": same_rows + " ORDER BY t.path_locator",
    }
    result = round_robin(conn, statements, args, repeat)
    conn.execute('DROP TABLE "Src"."NextBatch"')
    return result


def whole_step(conn, repeat: int) -> tuple[dict, dict]:
    lo, hi = conn.execute('SELECT min("ModifiedOn"), max("ModifiedOn") + interval \'1 s\' FROM "Src"."TreeMeta"').fetchone()
    conn.execute('TRUNCATE "Dst"."Tree"')
    conn.execute('INSERT INTO "Dst"."Tree" SELECT * FROM "Src"."Tree" WHERE is_directory')  # steps 1 and 2
    conn.execute('VACUUM ANALYZE "Dst"."Tree"')
    statements = {
        # joined to the metadata as the goal's reference is
        "bare insert of the same rows": ('INSERT INTO "Dst"."Tree" SELECT t.* FROM "Src"."Tree" AS t JOIN "Src"."TreeMeta" AS m '
                                         'USING (stream_id) WHERE NOT t.is_directory'),
        "every file in one set-based statement with the step's guards": SET_BASED_CHILDREN,
    }
    return round_robin(conn, statements, (1, None, lo, hi, None, None, "Tree", None, True), repeat)


def table(title: str, results: tuple[dict, dict], base: str) -> None:
    times, (rows, sums) = results
    written = {name: digest for name, digest in sums.items() if name != SELECTION}
    if 0 in rows.values():
        raise SystemExit(f"{title}: no rows to write ({rows}); the tree needs more files than two batches: "
                         "raise --roots or lower --batch-size")
    if len(set(rows.values())) != 1 or len(set(written.values())) != 1:
        raise SystemExit(f"{title}: every contender should have written the same rows, not {rows}, {sums}")
    print(f"| {title} | rows | time (s) | {base.split(' (')[0]} / this |")
    print("| --- | ---: | ---: | ---: |")
    for name, seconds in times.items():
        print(f"| {name} | {rows[name]:,} | {seconds:.3f} | {times[base] / seconds:.2f} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roots", type=int, default=2000, help="each root has 10 folders of 9 files")
    parser.add_argument("--batch-size", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    server, data_dir, admin_url = start_server()
    try:
        url = fresh_database(admin_url, "bench_tree_parts")
        execute(url, SETUP_COMMON)
        execute(url, SETUP_TREE.format(roots=args.roots))
        params = url.translate_connect_args(username="user", database="dbname")
        params.update(url.query)
        with psycopg.connect(autocommit=True, **params) as conn:
            conn.execute('VACUUM ANALYZE "Src"."Tree"')
            conn.execute('VACUUM ANALYZE "Src"."TreeMeta"')
            script = conn.execute('SELECT "ScriptText" FROM "BlobDeltaJobs"."BlobDeltaStepScript" '
                                  'WHERE "ScriptSet" = \'Hierarchical\' AND "StepName" = \'Children\'').fetchone()[0]
            version = conn.execute("SHOW server_version").fetchone()[0]
            tree = whole_tree(conn, args.repeat)
            batch = children_batch(conn, script, args.batch_size, args.repeat)
            step = whole_step(conn, args.repeat)
    finally:
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)

    table(f"whole tree into an empty target, median of {args.repeat}", tree, "bare INSERT ... SELECT (the goal's reference)")
    table(f"one Children batch, median of {args.repeat}", batch, "bare insert of the same rows, same order")
    table(f"step 3 in one statement, median of {args.repeat}", step, "bare insert of the same rows")
    print(f"PostgreSQL {version} (pgserver)")


if __name__ == "__main__":
    main()
