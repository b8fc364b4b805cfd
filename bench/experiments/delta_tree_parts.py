"""Candidates for a set-based hierarchical first load against the goal's bare insert (PostgreSQL only).

Settled (2026-12-03): no design measured meets the hierarchical first-load goal (0.8 of a bare
insert) at ordinary batch sizes; a first load in path order reaches it only with batches about as
large as the window (0.80 in batches of 100,000), so none was built. An experiment, not rerun since.

Reproduces the tables under "Where a set-based hierarchical first load could land" and "A batched
first load in path order" in docs/benchmarks.md, on a private pgserver with the delta benchmark's
tree (bench/delta_setup.py: 2,000 roots, 20,000 folders, 180,000 files). The contenders take
turns, the order alternating by round, after the target's starting state has been rebuilt from
scratch; in tables 1 to 3 each runs in a transaction that is rolled back, in table 4 each commits
as the engine does. A table whose contenders did not write the same rows in every round (count
and checksum of the ids) is refused:

1. The whole tree into an empty target: the goal's bare ``INSERT ... SELECT``; the same in the
   metadata ``ModifiedOn`` order (step 3's keyset order); a set-based version of the three steps
   (each one statement with the stored scripts' guards, no batches, no queue); a first load
   without target checks (the window's rows, then their ancestors outside it, in one statement),
   once holding the window's rows and walking above every parent path, once holding only its
   keys and walking only above the parents outside the window; and the window's rows alone.
2. One Children batch (step 3) in the middle of a first load (roots and folders copied by steps
   1 and 2, the first batch of files too): the deployed script, its row selection alone, and a
   bare insert of the rows the script takes, in its order and in path order.
3. Step 3 with no batches: every file in one set-based statement with the step's guards, after
   steps 1 and 2, against a bare insert of the same rows.
4. A batched first load in path order (a parent's path sorts before its children's, so batches
   can commit in turn and no reader sees a child without its parent), run as the engine runs a
   step: each batch in its own transaction with a progress row, until a batch finds nothing. Each
   batch takes the next window rows after the target's highest path and back-fills the ancestors
   they need that neither the target nor the batch holds. Once with a batch as large as the
   window, and in batches of --batch-size and twice that, against the goal's bare insert
   (committed too); with every round's ratio. Then, not timed, one business unit's first load in
   small batches, whose rows need ancestors of the other units: the same rows as the unbatched
   first loads without target checks, and no child without its parent after any batch.

Usage: python bench/experiments/delta_tree_parts.py [--roots 2000] [--batch-size 50000] [--repeat 15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: delta_setup, embedded

from delta_setup import SETUP_COMMON, SETUP_TREE, execute
from embedded import connect, fresh_database, run_prepared, private_server

COLUMNS = "stream_id, name, file_stream, path_locator, parent_path_locator, is_directory, creation_time, last_write_time"
PLACEHOLDERS = {
    "{SourceObject}": '"Src"."Tree"', "{TargetObject}": '"Dst"."Tree"', "{MetadataObject}": '"Src"."TreeMeta"',
    "{BusinessUnitObject}": '"Src"."LA_BU"', "{MetadataIdColumn}": "stream_id", "{MetadataModifiedOnCol}": '"ModifiedOn"',
    "{MetadataBusinessUnitCol}": '"OwningBusinessUnit"', "{BusinessUnitIdColumn}": '"BusinessUnitId"',
}
BATCH_END = "), inserted AS ("
BARE_NAME = "bare INSERT ... SELECT (the goal's reference)"
SELECTION = "its row selection alone (writes nothing)"


def substituted(sql: str) -> str:
    for key, value in PLACEHOLDERS.items():
        sql = sql.replace(key, value)
    return sql


def in_turns(conn, names: list[str], repeat: int, reset, run) -> tuple[dict, dict, dict]:
    """Run every contender ``repeat`` times in turns, the order alternating by round. Before each,
    ``reset(conn)`` rebuilds the target's starting state (a fresh table and indexes) and a
    CHECKPOINT flushes it; ``run(name)`` returns (seconds, rows written, target checksum). Returns
    every round's times, and the rows and checksums each contender gave (sets, so a contender that
    wrote other rows in one round is caught)."""
    times: dict[str, list[float]] = {name: [] for name in names}
    rows: dict[str, set] = {name: set() for name in names}
    sums: dict[str, set] = {name: set() for name in names}
    for round_number in range(repeat):
        for name in names if round_number % 2 == 0 else reversed(names):
            reset(conn)
            conn.execute("CHECKPOINT")
            seconds, written, digest = run(name)
            times[name].append(seconds)
            rows[name].add(written)
            sums[name].add(digest)
    return times, rows, sums


def round_robin(conn, contenders: dict[str, str | list[str]], args: tuple, repeat: int, reset) -> tuple[dict, dict]:
    """Median time, rows written and target checksum of each contender, run ``repeat`` times in turns
    (``in_turns``). A contender is one statement or several run in order in one transaction, rolled
    back; its time is that of its EXECUTEs."""
    cursor = psycopg.ClientCursor(conn)

    def run(name: str) -> tuple[float, int, str]:
        statements = contenders[name]
        written = 0
        elapsed = 0.0
        with conn.transaction(force_rollback=True):
            for sql in [statements] if isinstance(statements, str) else statements:
                seconds, count = run_prepared(cursor, sql, args)
                elapsed += seconds
                written += count
            return elapsed, written, cursor.execute(CHECKSUM).fetchone()[0]

    times, rows, sums = in_turns(conn, list(contenders), repeat, reset, run)
    return {name: statistics.median(t) for name, t in times.items()}, (rows, sums)


def seeded(*statements: str):
    """A reset: empty the target (TRUNCATE gives it fresh files and indexes), run ``statements``, analyse."""
    def reset(conn) -> None:
        conn.execute('TRUNCATE "Dst"."Tree"')
        for sql in statements:
            conn.execute(sql)
        conn.execute('VACUUM ANALYZE "Dst"."Tree"')
    return reset


STEPS_1_AND_2 = 'INSERT INTO "Dst"."Tree" SELECT * FROM "Src"."Tree" WHERE is_directory'


CHECKSUM = 'SELECT md5(string_agg(stream_id::text, \',\' ORDER BY stream_id)) FROM "Dst"."Tree"'
WINDOW_ROWS = """FROM "Src"."TreeMeta" AS m JOIN "Src"."Tree" AS s ON s.stream_id = m.stream_id
JOIN "Src"."LA_BU" AS bu ON bu."BusinessUnitId" = m."OwningBusinessUnit"
"""
WINDOW_FILTER = """m."ModifiedOn" >= $3 AND m."ModifiedOn" < $4
  AND ($5 IS NULL OR m."OwningBusinessUnit" = $5) AND ($2 IS NULL OR s.stream_id <> $2)"""
GUARDS = f"""{WINDOW_FILTER}
  AND NOT EXISTS (SELECT 1 FROM "Dst"."Tree" AS t WHERE t.stream_id = s.stream_id)"""
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


# First loads with no target checks, one statement each: the window's rows, then the ancestors they
# need that are not window rows. No probe of the empty target and no order (one commit, so no
# reader sees a child before its parent). No batches, no queue, nothing for a resumed run to find.
ANCESTORS = """ancestor_paths AS (
    SELECT DISTINCT left(c.parent_path_locator, g.i) AS path_locator
    FROM parents AS c CROSS JOIN LATERAL generate_series(2, length(c.parent_path_locator)) AS g (i)
    WHERE substr(c.parent_path_locator, g.i, 1) = '/'
)"""
# Whole window rows held in a CTE; ancestors walked above every parent path, as queue population does.
UNCHECKED_FIRST_LOAD = f"""INSERT INTO "Dst"."Tree" ({COLUMNS})
WITH window_rows AS (
    SELECT s.* {WINDOW_ROWS}
    WHERE {WINDOW_FILTER}
), parents AS (
    SELECT DISTINCT w.parent_path_locator FROM window_rows AS w WHERE w.parent_path_locator IS NOT NULL
), {ANCESTORS}
SELECT w.* FROM window_rows AS w
UNION ALL
SELECT a.* FROM ancestor_paths AS p JOIN "Src"."Tree" AS a ON a.path_locator = p.path_locator
WHERE NOT EXISTS (SELECT 1 FROM window_rows AS w WHERE w.stream_id = a.stream_id)"""
# Only the window's keys held (its rows are read again to write them); ancestors walked only above
# the parent paths that no window row has (a hash anti-join).
SLIM_FIRST_LOAD = f"""INSERT INTO "Dst"."Tree" ({COLUMNS})
WITH window_keys AS (
    SELECT s.stream_id, s.path_locator, s.parent_path_locator {WINDOW_ROWS}
    WHERE {WINDOW_FILTER}
), parents AS (
    SELECT DISTINCT w.parent_path_locator FROM window_keys AS w
    WHERE w.parent_path_locator IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM window_keys AS x WHERE x.path_locator = w.parent_path_locator)
), {ANCESTORS}
SELECT s.* {WINDOW_ROWS}
WHERE {WINDOW_FILTER}
UNION ALL
SELECT a.* FROM ancestor_paths AS p JOIN "Src"."Tree" AS a ON a.path_locator = p.path_locator
WHERE NOT EXISTS (SELECT 1 FROM window_keys AS w WHERE w.stream_id = a.stream_id)"""
# Only the window's rows: the same rows here, where every ancestor is in the window.
WINDOW_ONLY = f"""INSERT INTO "Dst"."Tree" ({COLUMNS})
SELECT s.* {WINDOW_ROWS}
WHERE {WINDOW_FILTER}"""


# A first-load batch in path order: the next $1 window rows after the target's highest path (the
# engine would keep that position in its progress row; in an empty target filled in path order it
# is the same: back-filled ancestors sort before the batch's rows), and the ancestors they need
# that neither the target nor the batch holds, walked above those parents only. One statement, so a
# batch lands with its ancestors. It reads the target three times (the highest path and two
# anti-joins by path) and returns the window rows it took: 0 ends the loop, as in the engine.
PATH_ORDER_BATCH = f"""WITH batch AS (
    SELECT s.* {WINDOW_ROWS}
    WHERE {WINDOW_FILTER}
      AND s.path_locator > coalesce((SELECT max(t.path_locator) FROM "Dst"."Tree" AS t), '')
    ORDER BY s.path_locator
    LIMIT $1
), parents AS (
    SELECT DISTINCT b.parent_path_locator AS parent_path_locator FROM batch AS b
    WHERE b.parent_path_locator IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM batch AS x WHERE x.path_locator = b.parent_path_locator)
      AND NOT EXISTS (SELECT 1 FROM "Dst"."Tree" AS t WHERE t.path_locator = b.parent_path_locator)
), {ANCESTORS}, inserted AS (
    INSERT INTO "Dst"."Tree" ({COLUMNS})
    SELECT b.* FROM batch AS b
    UNION ALL
    SELECT a.* FROM ancestor_paths AS p JOIN "Src"."Tree" AS a ON a.path_locator = p.path_locator
    WHERE NOT EXISTS (SELECT 1 FROM "Dst"."Tree" AS t WHERE t.path_locator = a.path_locator)
      AND NOT EXISTS (SELECT 1 FROM batch AS x WHERE x.path_locator = a.path_locator)
    RETURNING 1
)
SELECT count(*)::integer FROM batch"""
# The goal's reference: the whole tree, joined to its metadata as the engine's window is.
BARE_INSERT = 'INSERT INTO "Dst"."Tree" SELECT t.* FROM "Src"."Tree" AS t JOIN "Src"."TreeMeta" AS m USING (stream_id)'
# The progress row each path-order batch writes with its commit, as the engine's steps do.
PROGRESS_TABLE = ('CREATE TABLE "Src"."Progress" (n serial PRIMARY KEY, batch_rows integer NOT NULL, '
                  'at timestamp NOT NULL DEFAULT clock_timestamp())')
PROGRESS = 'INSERT INTO "Src"."Progress" (batch_rows) VALUES (%s)'


def whole_tree(conn, window: tuple, repeat: int) -> tuple[dict, dict]:
    contenders = {
        BARE_NAME: BARE_INSERT,
        "the same, in ModifiedOn order (step 3's order)": f'{BARE_INSERT} ORDER BY m."ModifiedOn"',
        "set-based first load: roots, missing ancestors, children; no batches, no queue": SET_BASED_FIRST_LOAD,
        "first load without target checks: window rows held, ancestors above every parent": UNCHECKED_FIRST_LOAD,
        "the same, only keys held, ancestors above parents outside the window": SLIM_FIRST_LOAD,
        "window rows only, scope filters kept (the same rows here)": WINDOW_ONLY,
    }
    return round_robin(conn, contenders, (1, None, *window, None, None, "Tree", None, True), repeat, seeded())


def children_batch(conn, window: tuple, script: str, batch_size: int, repeat: int) -> tuple[dict, dict]:
    first_batch = ('INSERT INTO "Dst"."Tree" SELECT t.* FROM "Src"."Tree" AS t JOIN "Src"."TreeMeta" AS m USING (stream_id) '
                   f'WHERE NOT t.is_directory ORDER BY m."ModifiedOn", t.stream_id LIMIT {int(batch_size)}')
    reset = seeded(STEPS_1_AND_2, first_batch)
    reset(conn)
    # Where the engine starts the next batch: 1 ms before the last ModifiedOn copied.
    position = conn.execute('SELECT max(m."ModifiedOn") - interval \'1 millisecond\' FROM "Dst"."Tree" AS t '
                            'JOIN "Src"."TreeMeta" AS m USING (stream_id) WHERE NOT t.is_directory').fetchone()[0]
    if BATCH_END not in script:
        raise SystemExit("the deployed Children script has no batch CTE any more: update this benchmark")
    args = (batch_size, None, *window, None, None, "Tree", position, True)
    # The rows the script's batch takes, in its order, for the bare inserts (the checksums check
    # that the script takes the same rows again when it is timed).
    conn.execute('CREATE TABLE "Src"."NextBatch" (n serial PRIMARY KEY, stream_id uuid NOT NULL)')
    cursor = psycopg.ClientCursor(conn)
    batch_rows = script[:script.index(BATCH_END)] + ")\nSELECT b.stream_id FROM batch AS b ORDER BY b.modified_on"
    run_prepared(cursor, f'INSERT INTO "Src"."NextBatch" (stream_id) {substituted(batch_rows)}', args)
    conn.execute('ANALYZE "Src"."NextBatch"')
    selection = script[:script.index(BATCH_END)] + ")\nSELECT count(*)::integer FROM batch"
    same_rows = 'INSERT INTO "Dst"."Tree" SELECT t.* FROM "Src"."NextBatch" AS b JOIN "Src"."Tree" AS t USING (stream_id)'
    statements = {
        "deployed Children script": substituted(script),
        SELECTION: substituted(selection),
        "bare insert of the same rows, same order": same_rows + " ORDER BY b.n",
        "bare insert of the same rows, path order": same_rows + " ORDER BY t.path_locator",
    }
    result = round_robin(conn, statements, args, repeat, reset)
    conn.execute('DROP TABLE "Src"."NextBatch"')
    return result


def whole_step(conn, window: tuple, repeat: int) -> tuple[dict, dict]:
    statements = {
        # joined to the metadata as the goal's reference is
        "bare insert of the same rows": ('INSERT INTO "Dst"."Tree" SELECT t.* FROM "Src"."Tree" AS t JOIN "Src"."TreeMeta" AS m '
                                         'USING (stream_id) WHERE NOT t.is_directory'),
        "every file in one set-based statement with the step's guards": SET_BASED_CHILDREN,
    }
    return round_robin(conn, statements, (1, None, *window, None, None, "Tree", None, True), repeat, seeded(STEPS_1_AND_2))


def batch_loop(conn, cursor, batch_size: int, args: tuple, after_batch=None) -> int:
    """Path-order batches of ``batch_size`` until one finds nothing, each committed with a progress
    row, as the engine runs a step. Returns the batches run (the empty last one included)."""
    sql = PATH_ORDER_BATCH.replace("$1", str(int(batch_size)))
    batches = 0
    while True:
        with conn.transaction():
            _, taken = run_prepared(cursor, sql, args)
            cursor.execute(PROGRESS, (taken,))
        batches += 1
        if after_batch:
            after_batch()
        if taken == 0:
            return batches


def path_order_batches(conn, window: tuple, batch_size: int, repeat: int):
    """The whole tree into an empty target, committed and timed from the client: the goal's bare
    insert against batched first loads in path order, in turns (``in_turns``). Returns the median
    times, (rows, checksums) as round_robin does, every round's time and the batches each ran."""
    size = conn.execute('SELECT count(*) FROM "Src"."TreeMeta"').fetchone()[0]
    # Each contender's batch size; the bare insert has none.
    contenders = {BARE_NAME: None, "path order, one batch as large as the window": size,
                  f"path order, batches of {batch_size:,}": batch_size,
                  f"path order, batches of {2 * batch_size:,}": 2 * batch_size}
    args = (1, None, *window, None, None, "Tree", None, True)
    cursor = psycopg.ClientCursor(conn)
    batches = {}

    def run(name: str) -> tuple[float, int, str]:
        start = time.perf_counter()
        if contenders[name] is None:
            conn.execute(BARE_INSERT)
        else:
            batches[name] = batch_loop(conn, cursor, contenders[name], args)
        seconds = time.perf_counter() - start
        return seconds, conn.execute('SELECT count(*) FROM "Dst"."Tree"').fetchone()[0], conn.execute(CHECKSUM).fetchone()[0]

    times, rows, sums = in_turns(conn, list(contenders), repeat, seeded(), run)
    return {name: statistics.median(t) for name, t in times.items()}, (rows, sums), times, batches


ORPHANS = ('SELECT count(*) FROM "Dst"."Tree" AS c WHERE c.parent_path_locator IS NOT NULL AND NOT EXISTS '
           '(SELECT 1 FROM "Dst"."Tree" AS p WHERE p.path_locator = c.parent_path_locator)')


def ancestor_branch(conn, window: tuple) -> tuple[int, int]:
    """One business unit's first load, whose rows need ancestors of the other units (the whole
    tree's window needs none), in path-order batches of a tenth of its rows: after every batch no
    child is without its parent and the position has moved on; at the end the rows are those of
    both unbatched first loads without target checks. Not timed. Returns (batches, ancestors)."""
    unit = conn.execute('SELECT "BusinessUnitId" FROM "Src"."LA_BU" ORDER BY "BusinessUnitId" LIMIT 1').fetchone()[0]
    in_unit = conn.execute('SELECT count(*) FROM "Src"."TreeMeta" WHERE "OwningBusinessUnit" = %s', (unit,)).fetchone()[0]
    args = (1, None, *window, unit, None, "Tree", None, True)
    _, (rows, sums) = round_robin(conn, {"window rows held": UNCHECKED_FIRST_LOAD, "only keys held": SLIM_FIRST_LOAD},
                                  args, 1, seeded())
    seeded()(conn)
    positions = [""]

    def check() -> None:
        if conn.execute(ORPHANS).fetchone()[0]:
            raise SystemExit(f"ancestor branch: after batch {len(positions)} a child is without its parent")
        # A harness check: the position is compared in the database's collation.
        taken, position, moved = conn.execute(
            'SELECT (SELECT batch_rows FROM "Src"."Progress" ORDER BY n DESC LIMIT 1), p, p > %s '
            'FROM (SELECT coalesce(max(path_locator), \'\') AS p FROM "Dst"."Tree") AS t', (positions[-1],)).fetchone()
        if moved != (taken > 0):
            raise SystemExit(f"ancestor branch: batch {len(positions)} took {taken} rows and moved the position "
                             f"from {positions[-1]!r} to {position!r}")
        positions.append(position)

    batches = batch_loop(conn, psycopg.ClientCursor(conn), max(1, in_unit // 10), args, check)
    written = conn.execute('SELECT count(*) FROM "Dst"."Tree"').fetchone()[0]
    digest = conn.execute(CHECKSUM).fetchone()[0]
    if batches < 3:
        raise SystemExit(f"ancestor branch: {batches} batches do not carry a position from batch to batch")
    if {written} != {r for values in rows.values() for r in values} or {digest} != {d for v in sums.values() for d in v}:
        raise SystemExit(f"ancestor branch: the path-order batches wrote {written} rows ({digest}), "
                         f"the unbatched first loads {rows} ({sums})")
    return batches, written - in_unit


def agree(values_by_round) -> bool:
    """Whether every contender gave one and the same value in every round (the sets of
    ``in_turns``: row counts or checksums)."""
    return len({value for values in values_by_round for value in values}) == 1


def table(title: str, results: tuple[dict, dict], base: str) -> None:
    times, (rows, sums) = results
    if not agree(rows.values()):
        raise SystemExit(f"{title}: every contender should have written the same rows in every round, not {rows}")
    if 0 in next(iter(rows.values())):
        raise SystemExit(f"{title}: no rows to write; the tree needs more files than two batches: "
                         "raise --roots or lower --batch-size")
    if not agree(values for name, values in sums.items() if name != SELECTION):
        raise SystemExit(f"{title}: every contender should have written the same ids in every round, not {sums}")
    print(f"| {title} | rows | time (s) | {base.split(' (')[0]} / this |")
    print("| --- | ---: | ---: | ---: |")
    for name, seconds in times.items():
        print(f"| {name} | {next(iter(rows[name])):,} | {seconds:.3f} | {times[base] / seconds:.2f} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roots", type=int, default=2000, help="each root has 10 folders of 9 files")
    parser.add_argument("--batch-size", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=15, help="rounds; 5 cannot separate the contenders on a noisy machine")
    args = parser.parse_args()

    with private_server() as admin_url:
        url = fresh_database(admin_url, "bench_tree_parts")
        execute(url, SETUP_COMMON)
        execute(url, SETUP_TREE.format(roots=args.roots))
        with connect(url) as conn:
            conn.execute('VACUUM ANALYZE "Src"."Tree"')
            conn.execute('VACUUM ANALYZE "Src"."TreeMeta"')
            conn.execute(PROGRESS_TABLE)
            script = conn.execute('SELECT "ScriptText" FROM "BlobDeltaJobs"."BlobDeltaStepScript" '
                                  'WHERE "ScriptSet" = \'Hierarchical\' AND "StepName" = \'Children\'').fetchone()[0]
            version = conn.execute("SHOW server_version").fetchone()[0]
            # The window every contender is given: the whole tree.
            window = conn.execute('SELECT min("ModifiedOn"), max("ModifiedOn") + interval \'1 s\' FROM "Src"."TreeMeta"').fetchone()
            tree = whole_tree(conn, window, args.repeat)
            batch = children_batch(conn, window, script, args.batch_size, args.repeat)
            step = whole_step(conn, window, args.repeat)
            batched = path_order_batches(conn, window, args.batch_size, args.repeat)
            branch_batches, ancestors = ancestor_branch(conn, window)

    table(f"whole tree into an empty target, median of {args.repeat}", tree, BARE_NAME)
    table(f"one Children batch, median of {args.repeat}", batch, "bare insert of the same rows, same order")
    table(f"step 3 in one statement, median of {args.repeat}", step, "bare insert of the same rows")
    medians, written, rounds, batch_counts = batched
    table(f"batched first load in path order, committed, median of {args.repeat}", (medians, written), BARE_NAME)
    for name, seconds in rounds.items():
        if name != BARE_NAME:
            ratios = [b / t for b, t in zip(rounds[BARE_NAME], seconds)]
            print(f"* {name}: {batch_counts[name]} batches (the last finds nothing); bare / this paired by round: "
                  f"median {statistics.median(ratios):.2f}, {min(ratios):.2f} to {max(ratios):.2f}: "
                  + " / ".join(f"{r:.2f}" for r in ratios))
    print(f"\nOne business unit's first load in {branch_batches} path-order batches (not timed): the same rows as "
          f"both unbatched first loads without target checks, {ancestors:,} of them ancestors from other units, "
          "no child without its parent after any batch.")
    print(f"PostgreSQL {version} (pgserver)")


if __name__ == "__main__":
    main()
