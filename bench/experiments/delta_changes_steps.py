"""The changes case of bench/delta_engine.py (measurement 1): the bare apply, revision 0010's
PostgreSQL Hierarchical scripts and variants of them, each engine contender at one batch size, in
alternating rounds, with the steps' seconds per round. Every run must leave the target equal to the
source (the bench's digest); compare the rows per step that each contender prints.

A variant is a folder holding any of Hierarchical_QueuePopulation.sql, Hierarchical_1_Roots.sql,
Hierarchical_2_MissingParentsBatch.sql, Hierarchical_3_Children.sql (a file it lacks: 0010's),
optionally followed by ",fillfactor=N": the versions table's fillfactor for its runs (default 100,
the layout before revision 0016; the table is rewritten with it before every run of every contender).

Usage (from the repository root):
  .venv/bin/python bench/experiments/delta_changes_steps.py --variant new=migrations/versions/0013_scripts/postgresql \
      [--variant ff85=migrations/versions/0015_scripts/postgresql,fillfactor=85] [--rounds 5] [--batch 5000] [--explain] [--hold]

--hold keeps the server after the rounds and prints its URL (for EXPLAIN ANALYZE of a filled script:
"BlobDeltaJobs"."fn_BlobDelta_FillScript"('Tree', text)). --case nochange runs measurement 2 (both
trees, every contender, batch 500), --case firstload a first load of the one-byte tree.
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
from embedded import connect, private_server  # noqa: E402


BASE = ROOT / "migrations/versions/0010_scripts/postgresql"
STEPS = {"Hierarchical_1_Roots": 1, "Hierarchical_2_MissingParentsBatch": 2, "Hierarchical_3_Children": 3}
QUEUE = "Hierarchical_QueuePopulation"


def scripts_of(folder: Path | None, fillfactor: int = 100) -> dict[str, str | int]:
    out: dict[str, str | int] = {"fillfactor": fillfactor}
    for name in (*STEPS, QUEUE):
        path = folder / f"{name}.sql" if folder else None
        out[name] = (path if path and path.exists() else BASE / f"{name}.sql").read_text(encoding="utf-8")
    return out


def install(conn, scripts: dict[str, str | int]) -> None:
    """The contender's scripts, and its fillfactor for the versions table (revision 0016 sets 85;
    before it: 100), applied by rewriting the table (VACUUM FULL, then CHECKPOINT) before every run
    of every contender alike."""
    for name, number in STEPS.items():
        conn.execute(f'UPDATE {de.JOB}."BlobDeltaStepScript" SET "ScriptText" = %s '
                     "WHERE \"ScriptSet\" = 'Hierarchical' AND \"StepNumber\" = %s", (scripts[name], number))
    conn.execute(f'UPDATE {de.JOB}."BlobDeltaQueuePopulationScript" SET "ScriptText" = %s '
                 "WHERE \"ScriptName\" = 'HierarchicalMissingParents'", (scripts[QUEUE],))
    conn.execute(f'ALTER TABLE {de.JOB}."BlobDeltaTargetVersion" SET (fillfactor = {int(scripts["fillfactor"])})')
    conn.execute(f'VACUUM (FULL, ANALYZE) {de.JOB}."BlobDeltaTargetVersion"')
    conn.execute("CHECKPOINT")


def hold(url) -> None:
    """--hold: print the private server's URL and keep it up until the process is killed."""
    print(f"holding: {url.render_as_string(hide_password=False)}", flush=True)
    while True:
        time.sleep(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=[], help="name=folder")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--tree-roots", type=int, default=2000)
    parser.add_argument("--hold", action="store_true")
    parser.add_argument("--case", default="changes", choices=("changes", "nochange", "firstload"),
                        help="nochange: bench/delta_engine.py's measurement 2 instead, every contender on both trees")
    parser.add_argument("--small-rows", type=int, default=10_000)
    parser.add_argument("--large-rows", type=int, default=1_000_000)
    parser.add_argument("--stamped", type=int, default=2000)
    args = parser.parse_args()
    contenders = {"0010": scripts_of(None)}
    for v in args.variant:
        name, folder = v.split("=", 1)
        folder, _, fillfactor = folder.partition(",fillfactor=")
        contenders[name] = scripts_of(Path(folder), int(fillfactor or 100))
    names = list(contenders)
    current = {"name": "0010"}
    times = {n: [] for n in names}
    steps = {n: [] for n in names}

    real_run = de.run_engine

    def patched_run(url, table, batch_size):
        with connect(url) as conn:
            install(conn, contenders[current["name"]])
        return real_run(url, table, args.batch)

    def patched_turns(_contenders, rounds):
        everyone = ["bare", *names]
        for r in range(rounds):
            for n in (everyone if r % 2 == 0 else list(reversed(everyone))):
                current["name"] = n
                yield r, "bare" if n == "bare" else "engine 5000"

    de.run_engine = patched_run
    de.in_turns = patched_turns
    original_step_times = de.step_times

    if args.case == "nochange":
        return no_change(args, contenders, names)
    if args.case == "firstload":
        return first_load(args, contenders, names)
    with private_server() as admin_url:
        url = de.bench_database(admin_url, [("Tree", True)])
        with connect(url) as conn:
            de.fill_tree(conn, "Tree", args.tree_roots)

        # Record each run's time and steps by contender through the bench's own loop.
        real_log = de.log

        def patched_log(message):
            real_log(message.replace("engine 5000", f"{current['name']}"))

        de.log = patched_log
        ns = argparse.Namespace(tree_roots=args.tree_roots, rounds=args.rounds, explain_bare=False)

        def recording_step_times(conn, run_id):
            result = original_step_times(conn, run_id)
            steps[current["name"]].append(result)
            return result

        de.step_times = recording_step_times
        real_timed_run = de.run_engine

        def timing_run(url_, table, batch_size):
            seconds, run_id = real_timed_run(url_, table, batch_size)
            if batch_size == 5000:  # the contest's runs (the first load to start from: 500)
                times[current["name"]].append(seconds)
            return seconds, run_id

        de.run_engine = timing_run
        current["name"] = "0010"
        result = de.changes(url, ns)
        bare = result["times"]["bare"]
        print(f"\nbare apply, each round: {' / '.join(f'{t:.2f}' for t in bare)}; median {statistics.median(bare):.2f}")
        for n in names:
            each = [b / e for b, e in zip(bare, times[n])]
            print(f"{n}: bare / engine, each round: {' / '.join(f'{x:.2f}' for x in each)}; "
                  f"of the medians {statistics.median(bare) / statistics.median(times[n]):.2f}; "
                  f"median of the ratios {statistics.median(each):.2f}")
        print(f"\nbatch {args.batch}, {args.rounds} rounds; load averages at the end: "
              f"{open('/proc/loadavg').read().split()[:3]}")
        order = ("QueuePopulation", "Roots", "MissingParentsBatch", "Children")
        print("| contender | run (s), each round | median | " + " | ".join(order) + " (medians) | rows ins/upd/moved per step |")
        print("| --- | --- | ---: | " + " | ".join("---:" for _ in order) + " | --- |")
        for n in names:
            rows = {s: steps[n][0].get(s, (0, 0, 0, 0, 0))[2:] for s in order} if steps[n] else {}
            for other in steps[n]:
                if {s: other.get(s, (0, 0, 0, 0, 0))[2:] for s in order} != rows:
                    print(f"ROWS DIFFER within {n}: {other}")
            med = [statistics.median(s.get(k, (0, 0.0))[1] for s in steps[n]) for k in order]
            print(f"| {n} | {' / '.join(f'{t:.2f}' for t in times[n])} | {statistics.median(times[n]):.2f} | "
                  + " | ".join(f"{m:.3f}" for m in med) + f" | {rows} |")
        for k in order:
            print(f"{k}: " + "; ".join(f"{n} " + " / ".join(f"{s.get(k, (0, 0.0))[1]:.3f}" for s in steps[n]) for n in names))
        if args.hold:
            hold(url)


def first_load(args, contenders, names) -> None:
    """A first load of the one-byte tree of measurement 1 (bench/delta_engine.py's onebyte case,
    engine only), each contender's scripts in turn, at --batch."""
    times = {n: [] for n in names}
    steps = {n: [] for n in names}
    with private_server() as admin_url:
        url = de.bench_database(admin_url, [("Tree", False)])
        with connect(url) as conn:
            de.fill_tree(conn, "Tree", args.tree_roots)
            expected = de.digest(conn, de.TREE_DIGEST, '"Src"."Tree"')
        for r in range(args.rounds):
            for n in (names if r % 2 == 0 else list(reversed(names))):
                with connect(url) as conn:
                    de.empty_target(conn, '"Dst"."Tree"', "Tree", truncate=True)
                    install(conn, contenders[n])
                    conn.execute("CHECKPOINT")
                seconds, run_id = de.run_engine(url, "Tree", args.batch)
                with connect(url) as conn:
                    if de.digest(conn, de.TREE_DIGEST, '"Dst"."Tree"') != expected:
                        raise SystemExit(f"first load, round {r + 1}: {n} left a target that differs from the source")
                    steps[n].append(de.step_times(conn, run_id))
                times[n].append(seconds)
                de.log(f"  round {r + 1} {n}: {seconds:.2f} s")
        if args.hold:
            report_first_load(args, names, times, steps)
            hold(url)
    report_first_load(args, names, times, steps)


def report_first_load(args, names, times, steps) -> None:
    print(f"\nfirst load, one-byte tree, batch {args.batch}, {args.rounds} rounds; load averages at the end: "
          f"{open('/proc/loadavg').read().split()[:3]}")
    order = ("QueuePopulation", "Roots", "MissingParentsBatch", "Children")
    for n in names:
        print(f"{n}: runs {' / '.join(f'{t:.2f}' for t in times[n])} (median {statistics.median(times[n]):.2f}); "
              + "; ".join(f"{k} " + " / ".join(f"{s.get(k, (0, 0.0))[1]:.2f}" for s in steps[n]) for k in order)
              + f"; rows {[{k: s.get(k, (0, 0, 0, 0, 0))[2:] for k in order} for s in steps[n][:1]]}")


def no_change(args, contenders, names) -> None:
    """Measurement 2 of bench/delta_engine.py (batch 500), each contender's scripts in turn."""
    current = {"name": names[0], "timed": False}
    times = {(n, t): [] for n in names for t in ("Small", "Large")}
    real_run = de.run_engine

    def patched_run(url, table, batch_size):
        with connect(url) as conn:
            install(conn, contenders[current["name"]])
            if not current["timed"]:
                # Before the untimed loads: the run that copies the stamped rows once spent over six
                # minutes in one batch (a nested loop over uuids) on the statistics the Large first
                # load left behind, with 0010's scripts; the timed runs are analysed by the bench.
                conn.execute(f'ANALYZE "Dst"."{table}", {de.JOB}."BlobDeltaTargetVersion"')
        seconds, run_id = real_run(url, table, batch_size)
        if current["timed"]:
            times[(current["name"], table)].append(seconds)
        return seconds, run_id

    def patched_turns(trees, rounds):
        current["timed"] = True
        for r in range(rounds):
            for n in (names if r % 2 == 0 else list(reversed(names))):
                current["name"] = n
                for t in (trees if r % 2 == 0 else list(reversed(trees))):
                    yield r, t

    de.run_engine, de.in_turns = patched_run, patched_turns
    with private_server() as admin_url:
        url = de.bench_database(admin_url, [("Small", False), ("Large", False)])
        ns = argparse.Namespace(small_rows=args.small_rows, large_rows=args.large_rows, stamped=args.stamped,
                                load_batch=50_000, repeat=args.rounds)
        de.no_change(url, ns)
        report_no_change(args, names, times)
        if args.hold:
            hold(url)


def report_no_change(args, names, times) -> None:
    print(f"\nno change, batch 500, {args.rounds} rounds; load averages at the end: "
          f"{open('/proc/loadavg').read().split()[:3]}")
    print("| contender | small (s), each run | large (s), each run | large / small, each round | medians: small, large, large / small |")
    print("| --- | --- | --- | --- | --- |")
    for n in names:
        small, large = times[(n, "Small")], times[(n, "Large")]
        each = [b / a for a, b in zip(small, large)]
        print(f"| {n} | {' / '.join(f'{x:.3f}' for x in small)} | {' / '.join(f'{x:.3f}' for x in large)} | "
              f"{' / '.join(f'{x:.2f}' for x in each)} | {statistics.median(small):.3f}, {statistics.median(large):.3f}, "
              f"{statistics.median(large) / statistics.median(small):.2f} |")


if __name__ == "__main__":
    main()
