"""Revision 0009's Children script against 0004's, in batches (PostgreSQL only).

Settled (2026-12-03): PostgreSQL's Children script probes per row, as revision 0009 ships it
(0.37 of a bare insert against 0004's 0.20 for step 3 in batches of 500). An experiment on the
plain tree of bench/delta_setup.py: its engine runs fail at head, since revision 0010 refuses a
Hierarchical target whose parent_path_locator is not computed.

Reproduces the tables under "Revision 0009" in docs/benchmarks.md, on a private pgserver with the
delta benchmark's tree (bench/delta_setup.py: 2,000 roots, 20,000 folders, 180,000 files):

1. Step 3 alone, in keyset batches as the engine runs it, after steps 1 and 2 (roots and folders
   copied, the target analysed): 0004's Children script and the deployed one (0009's), each batch
   committed, each planned for its own values as the engine's ``EXECUTE ... USING`` is, the
   target's statistics refreshed by an ``ANALYZE`` once half the files are in, as autovacuum does
   in any load that takes longer than its naptime (not timed: only the batches' EXECUTEs are).
   Against a bare insert of the same files. Every contender must end with the same rows (count and checksum of the ids).
2. Whole engine runs, each a first load of the tree (target emptied, watermark cleared): the
   engine with 0004's Children script swapped in, and with the deployed one, against the delta
   benchmark's bare insert of the whole tree. Autovacuum runs as it will. Also the seconds each
   step took in every round, from the run's step rows.

The contenders take turns, the order alternating by round, with a ``CHECKPOINT`` before each.

Usage: python bench/experiments/delta_children.py [--roots 2000] [--batch-sizes 500,5000,50000] [--rounds 6]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from datetime import timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: delta_setup, embedded

from delta_setup import SETUP_COMMON, SETUP_TREE, bare_insert, count, execute, reset_target, run_table, timed
from delta_tree_parts import CHECKSUM, STEPS_1_AND_2, agree, in_turns, seeded, substituted
from embedded import ENGINE_PARAMETERS, connect, fresh_database, private_server

from dbtools import commands

VERSIONS = Path(__file__).resolve().parents[2] / "migrations" / "versions"
OLD = "0004's Children script"
NEW = "deployed Children script (0009)"
BARE = "bare insert"
FILES = 'SELECT t.* FROM "Src"."Tree" AS t JOIN "Src"."TreeMeta" AS m USING (stream_id) WHERE NOT t.is_directory'
SET_CHILDREN = ('UPDATE "BlobDeltaJobs"."BlobDeltaStepScript" SET "ScriptText" = %s '
                'WHERE "ScriptSet" = \'Hierarchical\' AND "StepName" = \'Children\'')
STEP_TIMES = ('SELECT "StepName", sum(extract(epoch FROM "BatchCompletedAt" - "BatchStartedAt"))::float8 '
              'FROM "BlobDeltaJobs"."BlobDeltaRunStep" WHERE "RunId" = %s GROUP BY 1')


def step_three(conn, scripts: dict[str, str], window: tuple, batch_size: int, files: int, rounds: int):
    """Step 3 alone: every round's seconds by contender, and the rows and checksums they left."""
    cursor = psycopg.ClientCursor(conn)

    def run(name: str) -> tuple[float, int, str]:
        if name == BARE:
            seconds, _ = timed(lambda: conn.execute(f'INSERT INTO "Dst"."Tree" {FILES}'))
        else:
            cursor.execute(f"PREPARE {ENGINE_PARAMETERS} AS {substituted(scripts[name])}")
            position, taken, analysed, seconds = None, 0, False, 0.0
            while True:
                batch_seconds, (rows, last) = timed(lambda: cursor.execute(
                    "EXECUTE p(%s, %s::uuid, %s, %s, %s::uuid, %s::uuid, %s, %s, %s)",
                    (batch_size, None, *window, None, None, "Tree", position, True)).fetchone())
                seconds += batch_seconds
                if rows == 0:
                    break
                taken += rows
                # The engine starts the next batch 1 ms before the last ModifiedOn it took.
                position = last - timedelta(milliseconds=1)
                if not analysed and taken >= files // 2:
                    conn.execute('ANALYZE "Dst"."Tree"')  # not timed
                    analysed = True
            cursor.execute("DEALLOCATE p")
        written = conn.execute('SELECT count(*) FROM "Dst"."Tree" WHERE NOT is_directory').fetchone()[0]
        return seconds, written, conn.execute(CHECKSUM).fetchone()[0]

    return in_turns(conn, [BARE, OLD, NEW], rounds, seeded(STEPS_1_AND_2), run)


def engine_runs(url, conn, scripts: dict[str, str], batch_size: int, rounds: int):
    """Whole first loads: every round's seconds by contender, the rows and checksums they left, and
    every engine round's seconds by step."""
    steps: dict[str, list[dict]] = {OLD: [], NEW: []}

    def run(name: str) -> tuple[float, int, str]:
        if name == BARE:
            seconds, rows = bare_insert(url, "Tree", "t.*", '"Src"."Tree" AS t JOIN "Src"."TreeMeta" AS m USING (stream_id)')
            return seconds, rows, conn.execute(CHECKSUM.replace('"Dst"', '"Bare"')).fetchone()[0]
        conn.execute(SET_CHILDREN, (scripts[name],))
        reset_target(url, "Tree")
        conn.execute("CHECKPOINT")
        seconds, result = timed(lambda: run_table(url, "Tree", batch_size))
        if result.status != "Succeeded":
            raise SystemExit(f"{name}: the run {result.run_id} ended {result.status}")
        steps[name].append(dict(conn.execute(STEP_TIMES, (str(result.run_id),)).fetchall()))
        return seconds, count(url, 'SELECT count(*) FROM "Dst"."Tree"'), conn.execute(CHECKSUM).fetchone()[0]

    times, rows, sums = in_turns(conn, [BARE, OLD, NEW], rounds, lambda c: None, run)
    return times, rows, sums, steps


def same_rows(title: str, rows: dict, sums: dict) -> None:
    if not (agree(rows.values()) and agree(sums.values())):
        raise SystemExit(f"{title}: the contenders did not leave the same rows in every round: {rows} {sums}")


def report(title: str, batch_size: int, times: dict) -> None:
    bare = times[BARE]
    print(f"| {title} | {batch_size:,} | {statistics.median(bare):.2f} | " + " | ".join(
        f"{statistics.median(times[name]):.2f} | **{statistics.median([b / t for b, t in zip(bare, times[name])]):.2f}** "
        f"({' / '.join(f'{b / t:.2f}' for b, t in zip(bare, times[name]))})" for name in (OLD, NEW)) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roots", type=int, default=2000, help="each root has 10 folders of 9 files")
    parser.add_argument("--batch-sizes", default="500,5000,50000")
    parser.add_argument("--rounds", type=int, default=6, help="even, so that each order runs as often")
    args = parser.parse_args()
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    scripts = {OLD: (VERSIONS / "0004_scripts" / "postgresql" / "Hierarchical_3_Children.sql").read_text(encoding="utf-8")}

    lines, step_lines = [], []
    with private_server() as admin_url:
        url = fresh_database(admin_url, "bench_children")
        execute(url, SETUP_COMMON)
        execute(url, SETUP_TREE.format(roots=args.roots))
        # Deploy again now that the tree is configured: it grants the engine its rights on it.
        commands.migrate(url=url.render_as_string(hide_password=False))
        with connect(url) as conn:
            # Every batch planned for its own values, as the engine's EXECUTE ... USING is (a
            # prepared statement may switch to a generic plan after five executions).
            conn.execute("SET plan_cache_mode = force_custom_plan")
            scripts[NEW] = conn.execute('SELECT "ScriptText" FROM "BlobDeltaJobs"."BlobDeltaStepScript" '
                                        'WHERE "ScriptSet" = \'Hierarchical\' AND "StepName" = \'Children\'').fetchone()[0]
            if scripts[NEW] == scripts[OLD]:
                raise SystemExit("the deployed Children script is 0004's: nothing to compare")
            version = conn.execute("SHOW server_version").fetchone()[0]
            window = conn.execute('SELECT min("ModifiedOn"), max("ModifiedOn") + interval \'1 s\' FROM "Src"."TreeMeta"').fetchone()
            files = conn.execute(f"SELECT count(*) FROM ({FILES}) AS f").fetchone()[0]
            for size in sizes:
                times, rows, sums = step_three(conn, scripts, window, size, files, args.rounds)
                same_rows(f"step 3 at {size:,}", rows, sums)
                lines.append(("step 3 alone, target analysed halfway", size, times))
            for size in sizes:
                times, rows, sums, steps = engine_runs(url, conn, scripts, size, args.rounds)
                same_rows(f"engine at {size:,}", rows, sums)
                lines.append(("engine, whole first load", size, times))
                for name in (OLD, NEW):
                    medians = {step: statistics.median(r.get(step, 0.0) for r in steps[name])
                               for step in ("Roots", "QueuePopulation", "MissingParentsBatch", "Children")}
                    step_lines.append(f"| {size:,} | {name} | " + " | ".join(f"{v:.2f}" for v in medians.values()) + " |")
            conn.execute(SET_CHILDREN, (scripts[NEW],))

    print(f"| contenders, median of {args.rounds} rounds | batch size | bare (s) | {OLD} (s) | bare / it, paired "
          f"(each round) | {NEW} (s) | bare / it, paired (each round) |")
    print("| --- | ---: | ---: | ---: | --- | ---: | --- |")
    for title, size, times in lines:
        report(title, size, times)
    print(f"\nThe engine runs' steps, medians of {args.rounds} rounds from the runs' step rows:\n")
    print("| batch size | Children script | Roots (s) | QueuePopulation (s) | MissingParentsBatch (s) | Children (s) |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    print("\n".join(step_lines))
    print(f"\n{files:,} files in step 3; PostgreSQL {version} (pgserver)")


if __name__ == "__main__":
    main()
