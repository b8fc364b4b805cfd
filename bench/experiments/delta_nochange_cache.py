"""Issue 17, measurement 2: where a run with no changes spends the time the large tree adds.

Builds the small and the large tree of ``bench/delta_engine.py``'s measurement 2 exactly as it does
(its own functions: first load, ``--stamped`` rows stamped into a window and copied), then times
runs whose window holds those rows again, alternating the trees, at each ``--shared-buffers``
setting in turn (the private server is restarted for each; the first setting is pgserver's own).
Around every run it reads the database's block counters (``pg_stat_database``: blocks found in
shared buffers against blocks read from the kernel) and the run's step times, and it checks that
the run wrote nothing.

Prints, per setting and tree: the median run, every run, and the median blocks hit and read per
run; then large / small per setting.

Usage (from the repository root):
  .venv/bin/python bench/experiments/delta_nochange_cache.py [--repeat 7] [--shared-buffers 128MB,1GB]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import delta_engine as de  # noqa: E402
from embedded import admin_url, connect, private_server_handle, restart  # noqa: E402

BLOCKS = "SELECT blks_hit, blks_read FROM pg_stat_database WHERE datname = current_database()"


def blocks(url) -> tuple[int, int]:
    time.sleep(0.6)  # let the run's backend report its counters when it exits
    with connect(url) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        return conn.execute(BLOCKS).fetchone()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small-rows", type=int, default=10_000)
    parser.add_argument("--large-rows", type=int, default=1_000_000)
    parser.add_argument("--stamped", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--load-batch", type=int, default=50_000)
    parser.add_argument("--shared-buffers", default="128MB,1GB",
                        help="settings in turn, comma-separated (128MB is pgserver's own)")
    args = parser.parse_args()

    with private_server_handle() as server:
        url = de.bench_database(admin_url(server), [("Small", False), ("Large", False)])
        # The trees, first loads and the copied window: measurement 2's own set-up, with no timed run.
        setup = argparse.Namespace(small_rows=args.small_rows, large_rows=args.large_rows,
                                   stamped=args.stamped, repeat=0, load_batch=args.load_batch)
        built = de.no_change(url, setup)
        rows = {name: built[name]["rows"] for name in ("Small", "Large")}
        marks = {name: built[name]["mark"] for name in ("Small", "Large")}
        with connect(url) as conn:
            sizes = conn.execute(
                "SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))) FROM pg_class AS c "
                "JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE c.relkind = 'r' "
                "AND (n.nspname, c.relname) IN (('Dst', 'Large'), ('Src', 'Large'), ('Src', 'LargeMeta'))").fetchone()[0]
        print(f"large tree: target, source and metadata {sizes} with their indexes", flush=True)

        results = {}
        for setting in args.shared_buffers.split(","):
            restart(server, shared_buffers=setting)
            with connect(url) as conn:
                shown = conn.execute("SHOW shared_buffers").fetchone()[0]
            per = {name: {"times": [], "hit": [], "read": []} for name in rows}
            for r, name in de.in_turns(list(rows), args.repeat + 1):
                with connect(url) as conn:
                    de.set_watermark(conn, name, marks[name])
                    conn.execute("CHECKPOINT")
                before = blocks(url)
                seconds, run_id = de.run_engine(url, name, 500)
                after = blocks(url)
                with connect(url) as conn:
                    done = de.step_times(conn, run_id)
                if sum(v[2] + v[3] + v[4] for v in done.values()):
                    raise SystemExit(f"a run of {name} wrote rows; nothing should have changed")
                if r == 0:
                    continue  # the first run of each tree after the restart warms the cache: not kept
                per[name]["times"].append(seconds)
                per[name]["hit"].append(after[0] - before[0])
                per[name]["read"].append(after[1] - before[1])
                print(f"  {shown} run {r} {name}: {seconds:.3f} s, blocks hit {after[0] - before[0]:,}, "
                      f"read {after[1] - before[1]:,}", flush=True)
            results[shown] = per

        print(f"\n{args.stamped:,} rows already copied in each window, batch 500; trees of {rows['Small']:,} and "
              f"{rows['Large']:,} rows; {args.repeat} runs each after one warm-up run per setting\n")
        print("| shared_buffers | tree | median (s) | each run (s) | blocks hit per run (median) | "
              "blocks read per run (median) |")
        print("| --- | --- | ---: | --- | ---: | ---: |")
        for shown, per in results.items():
            for name in ("Small", "Large"):
                p = per[name]
                print(f"| {shown} | {name.lower()} | {statistics.median(p['times']):.3f} | "
                      f"{' / '.join(f'{x:.3f}' for x in p['times'])} | {statistics.median(p['hit']):,.0f} | "
                      f"{statistics.median(p['read']):,.0f} |")
            ratio = statistics.median(per["Large"]["times"]) / statistics.median(per["Small"]["times"])
            rounds = " / ".join(f"{b / a:.2f}" for a, b in zip(per["Small"]["times"], per["Large"]["times"]))
            print(f"| {shown} | large / small | **{ratio:.2f}** | {rounds} | | |")


if __name__ == "__main__":
    main()
