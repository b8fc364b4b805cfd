"""Where a hierarchical first load's time goes, against bare inserts in either order (PostgreSQL only).

Reproduces the tables under "The hierarchical goal's ceiling" in docs/benchmarks.md,
on a private pgserver with the delta benchmark's tree (bench/delta_engine.py: 2,000 roots, 20,000
folders, 180,000 files), every statement rolled back, the contenders taking turns:

1. The whole tree in one statement: the goal's bare ``INSERT ... SELECT`` (rows in the order the
   join yields them, which follows the source's heap) and the same insert in the metadata
   ``ModifiedOn`` order, the order every keyset batch of the engine follows.
2. One Children batch (step 3) in the middle of a first load (roots and folders copied by steps
   1 and 2, the first batch of files too): the deployed script, its row selection alone, and a
   bare insert of the same rows in the same order and in path order.
3. Step 3 with no batches at all: every file in one set-based statement with the step's guards
   (window, business unit, not yet in the target, parent in the target), after steps 1 and 2,
   against a bare insert of the same rows. The ceiling of any set-based Children step.

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


def substituted(sql: str) -> str:
    for key, value in PLACEHOLDERS.items():
        sql = sql.replace(key, value)
    return sql


def round_robin(conn, statements: dict[str, str], args: tuple, repeat: int) -> tuple[dict, dict]:
    """Median time and row count of each statement, run ``repeat`` times in turns, each rolled back."""
    times: dict[str, list[float]] = {name: [] for name in statements}
    rows: dict[str, int] = {}
    cursor = psycopg.ClientCursor(conn)
    for _ in range(repeat):
        for name, sql in statements.items():
            conn.execute("CHECKPOINT")
            with conn.transaction(force_rollback=True):
                cursor.execute(f"PREPARE {PARAMS} AS {sql}")
                start = time.perf_counter()
                cursor.execute("EXECUTE p(%s, %s::uuid, %s, %s, %s::uuid, %s::uuid, %s, %s, %s)", args)
                times[name].append(time.perf_counter() - start)
                rows[name] = cursor.fetchone()[0] if cursor.description else cursor.rowcount
            cursor.execute("DEALLOCATE p")
    return {name: statistics.median(t) for name, t in times.items()}, rows


def whole_tree(conn, repeat: int) -> tuple[dict, dict]:
    conn.execute('TRUNCATE "Dst"."Tree"')
    conn.execute('VACUUM ANALYZE "Dst"."Tree"')
    source = '"Src"."Tree" AS t JOIN "Src"."TreeMeta" AS m USING (stream_id)'
    statements = {
        "bare INSERT ... SELECT (the goal's reference)": f'INSERT INTO "Dst"."Tree" SELECT t.* FROM {source}',
        "the same, in ModifiedOn order (the engine's order)": (
            f'INSERT INTO "Dst"."Tree" SELECT t.* FROM {source} ORDER BY m."ModifiedOn"'),
    }
    return round_robin(conn, statements, (1, None, None, None, None, None, "Tree", None, False), repeat)


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
    # The rows the next batch takes, in its order (ties at its last ModifiedOn may differ), for the bare inserts.
    conn.execute('CREATE TABLE "Src"."NextBatch" (n serial PRIMARY KEY, stream_id uuid NOT NULL)')
    conn.execute('INSERT INTO "Src"."NextBatch" (stream_id) SELECT t.stream_id FROM "Src"."Tree" AS t '
                 'JOIN "Src"."TreeMeta" AS m USING (stream_id) WHERE NOT t.is_directory AND m."ModifiedOn" >= %s '
                 'AND NOT EXISTS (SELECT 1 FROM "Dst"."Tree" AS d WHERE d.stream_id = t.stream_id) '
                 'ORDER BY m."ModifiedOn" LIMIT %s', (position, batch_size))
    conn.execute('ANALYZE "Src"."NextBatch"')
    if BATCH_END not in script:
        raise SystemExit("the deployed Children script has no batch CTE any more: update this benchmark")
    selection = script[:script.index(BATCH_END)] + ")\nSELECT count(*)::integer FROM batch"
    same_rows = 'INSERT INTO "Dst"."Tree" SELECT t.* FROM "Src"."NextBatch" AS b JOIN "Src"."Tree" AS t USING (stream_id)'
    statements = {
        "deployed Children script": substituted(script),
        "its row selection alone": substituted(selection),
        "bare insert of the same rows, same order": same_rows + " ORDER BY b.n",
        "bare insert of the same rows, path order": same_rows + " ORDER BY t.path_locator",
    }
    result = round_robin(conn, statements, (batch_size, None, lo, hi, None, None, "Tree", position, True), repeat)
    conn.execute('DROP TABLE "Src"."NextBatch"')
    return result


SET_BASED_CHILDREN = f"""INSERT INTO "Dst"."Tree" ({COLUMNS})
SELECT s.* FROM "Src"."TreeMeta" AS m JOIN "Src"."Tree" AS s ON s.stream_id = m.stream_id
JOIN "Src"."LA_BU" AS bu ON bu."BusinessUnitId" = m."OwningBusinessUnit"
WHERE s.parent_path_locator IS NOT NULL AND m."ModifiedOn" >= $3 AND m."ModifiedOn" < $4
  AND ($5 IS NULL OR m."OwningBusinessUnit" = $5) AND ($2 IS NULL OR s.stream_id <> $2)
  AND NOT EXISTS (SELECT 1 FROM "Dst"."Tree" AS t WHERE t.stream_id = s.stream_id)
  AND EXISTS (SELECT 1 FROM "Dst"."Tree" AS p WHERE p.path_locator = s.parent_path_locator)"""


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
    times, rows = results
    if len(set(rows.values())) != 1 or 0 in rows.values():
        raise SystemExit(f"{title}: every statement should have written the same rows, not {rows} "
                         "(the tree needs more files than two batches: raise --roots or lower --batch-size)")
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

    table(f"whole tree, one statement, median of {args.repeat}", tree, "bare INSERT ... SELECT (the goal's reference)")
    table(f"one Children batch, median of {args.repeat}", batch, "bare insert of the same rows, same order")
    table(f"step 3 in one statement, median of {args.repeat}", step, "bare insert of the same rows")
    print(f"PostgreSQL {version} (pgserver)")


if __name__ == "__main__":
    main()
