"""Revision 0016: the step-2a (queue population) statement of a first load, for several script
texts in turn, on a server that `delta_changes_steps.py --case firstload --hold` keeps.

The target is emptied as the benchmark empties it (TRUNCATE, the table's versions and watermark
forgotten) and the last run's queue rows are removed; then each text is filled for the table,
prepared with the last run's parameters and `$9` (first load) true, and run under
`EXPLAIN (ANALYZE, BUFFERS)` inside a transaction that is rolled back, the texts in turn, --repeat
times. Prints each text's times and median; the last repeat's plans go to --plans (a folder).

Usage (from the repository root):
  .venv/bin/python bench/experiments/delta_changes_steps.py --case firstload --rounds 1 --hold &
  .venv/bin/python bench/experiments/delta_step2a_first_load.py URL \\
      migrations/versions/0015_scripts/postgresql/Hierarchical_QueuePopulation.sql \\
      migrations/versions/0016_scripts/postgresql/Hierarchical_QueuePopulation.sql [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import delta_engine as de  # noqa: E402
from embedded import connect  # noqa: E402

TYPES = "int, uuid, timestamp, timestamp, uuid, uuid, text, timestamp, boolean"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the held server's URL, as --hold prints it")
    parser.add_argument("scripts", nargs="+", type=Path, help="step-2a script files")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--plans", type=Path, default=None, help="a folder for the last repeat's plans")
    args = parser.parse_args()
    job = de.JOB
    with connect(sa.engine.make_url(args.url)) as conn:
        start, end, run_id = conn.execute(
            f'SELECT s."WindowStart", s."WindowEnd", s."RunId" FROM {job}."BlobDeltaRunStep" AS s '
            f'JOIN {job}."BlobDeltaRun" AS r USING ("RunId") WHERE s."TableName" = \'Tree\' AND s."StepNumber" = 0 '
            'ORDER BY r."RunStartedAt" DESC LIMIT 1').fetchone()
        de.empty_target(conn, '"Dst"."Tree"', "Tree", truncate=True)
        conn.execute(f'DELETE FROM {job}."BlobDeltaMissingParentsQueue" WHERE "RunId" = %s', (run_id,))
        conn.execute("CHECKPOINT")
        times: dict[Path, list[float]] = {s: [] for s in args.scripts}
        for repeat in range(args.repeat):
            for script in args.scripts:
                filled = conn.execute(f'SELECT {job}."fn_BlobDelta_FillScript"(%s, %s)',
                                      ("Tree", script.read_text(encoding="utf-8"))).fetchone()[0]
                conn.execute("BEGIN")
                conn.execute("SET LOCAL enable_seqscan = off")  # as fn_BlobDelta_TableAdvance sets it
                conn.execute(f"PREPARE step2a({TYPES}) AS {filled}")
                first = "NULL" if start is None else f"'{start}'"
                plan = [r[0] for r in conn.execute(
                    f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE step2a(500, NULL, {first}, '{end}', NULL, '{run_id}', "
                    "'Tree', NULL, true)")]
                conn.execute("ROLLBACK")
                conn.execute("DEALLOCATE step2a")
                times[script].append(float(plan[-1].split()[2]))
                if args.plans and repeat == args.repeat - 1:
                    args.plans.mkdir(parents=True, exist_ok=True)
                    (args.plans / f"{script.parent.parent.name}_{script.stem}.txt").write_text("\n".join(plan))
    print("| step 2a text | each (ms) | median (ms) |\n| --- | --- | ---: |")
    for script, each in times.items():
        print(f"| {script} | {' / '.join(f'{t:,.0f}' for t in each)} | {statistics.median(each):,.0f} |")


if __name__ == "__main__":
    main()
