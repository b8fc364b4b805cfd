"""Issue 17, measurement 3 (the real-sized first load): what a batched first load costs beyond the
bare insert, and in which order a batch should read its blobs (PostgreSQL only).

On a private server with the files tree of ``bench/delta_engine.py`` (20,000 files, about 1.8 GiB),
after the same untimed warm-up fills, the contenders take turns (the order reversed every other
round), each into a target emptied as the benchmark empties it (DELETE + VACUUM, a CHECKPOINT):

* ``bare``: the benchmark's bare ``INSERT ... SELECT`` of the whole tree, one statement;
* ``bare in batches``: the same rows in the engine's batches (the folders, then 500 files at a
  time in ModifiedOn order, each read by its key and committed asynchronously, as the engine's
  batches are), inserted in ModifiedOn order;
* ``batches by address``: the same batches, each inserted in the source rows' address (ctid) order;
* ``engine``: a first load by the engine at batch 500 with the deployed Children script;
* ``engine sorted``: the same with the deployed script rewritten by ``by_source_address``: the
  batch keeps each source row's address and the new copies are inserted in that order (the batch
  holds the blobs as the source's TOAST pointers, so the insert reads each blob as it writes it);
* ``engine <name>``: with each ``--variant NAME=FILE`` Children script in its place;
* ``engine batch N``: the deployed script at batch size N, for each N of ``--engine-batches``.

Every contender's target must equal the source (the benchmark's digest). Also printed: each
engine function's self time in the last engine run (``track_functions``), and the planning time of
the filled Children statement (``EXPLAIN (SUMMARY)``, planned for its values as ``EXECUTE ...
USING``). ``--explain-batches 10,20`` compares single Children batches with bare inserts of the
same files instead of the rounds (``explain_batches``).

Usage (from the repository root):
  .venv/bin/python bench/experiments/delta_files_overhead.py [--rounds 4] \\
      [--variant NAME=FILE] [--only "bare,engine,engine sorted"] [--explain-batches 10,20,30]
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

JOB = de.JOB
FUNCTIONS = ("SELECT funcname, calls, total_time, self_time FROM pg_stat_user_functions "
             "WHERE schemaname = 'BlobDeltaJobs' ORDER BY total_time DESC")
CHILDREN = f"{JOB}.\"BlobDeltaStepScript\" WHERE \"ScriptSet\" = 'Hierarchical' AND \"StepNumber\" = 3"
BARE = f'INSERT INTO "Bare"."Files" ({de.COLUMNS}) SELECT {de.COLUMNS} FROM "Src"."Files"'
#: The parameters of a filled step script, as the engine passes them ($1 to $9).
STEP_PARAMETERS = "(int, uuid, timestamp, timestamp, uuid, uuid, text, timestamp, boolean)"
#: The last run's window and RunId.
LAST_WINDOW = (f'SELECT "WindowStart", "WindowEnd", "RunId" FROM {JOB}."BlobDeltaRunStep" WHERE "StepNumber" = 0 '
               'ORDER BY "BatchStartedAt" DESC LIMIT 1')


def bare_batch(by_address: bool) -> str:
    """The bare insert of one batch, its files given as an array (%s) of keys, each source row read
    by its key; inserted in the array's order or in the source rows' address order."""
    return (f'INSERT INTO "Bare"."Files" ({de.COLUMNS}) SELECT {de.COLUMNS} FROM unnest(%s::uuid[]) '
            'WITH ORDINALITY AS k (id, n) CROSS JOIN LATERAL (SELECT s.ctid AS address, s.* FROM "Src"."Files" AS s '
            'WHERE s.stream_id = k.id) AS s ORDER BY ' + ("s.address" if by_address else "k.n"))


def by_source_address(children: str) -> str:
    """Revision 0017's PostgreSQL Children script with its new copies inserted in the source rows'
    address order (the text is rewritten in three places; each must be there)."""
    edits = (
        ("    CROSS JOIN LATERAL (SELECT s.* FROM {SourceObject} AS s WHERE",
         '    CROSS JOIN LATERAL (SELECT s.ctid AS "dbtools$SourceAddress", s.* FROM {SourceObject} AS s WHERE'),
        ('           v.row_address AS "dbtools$VersionAddress"\n',
         '           v.row_address AS "dbtools$VersionAddress",\n           s."dbtools$SourceAddress"\n'),
        ('    WHERE NOT b."dbtools$Exists"\n    RETURNING 1',
         '    WHERE NOT b."dbtools$Exists"\n    ORDER BY b."dbtools$SourceAddress"\n    RETURNING 1'),
    )
    for old, new in edits:
        if children.count(old) != 1:
            raise SystemExit(f"the deployed Children script is not 0017's: {old.strip()!r} is not there once")
        children = children.replace(old, new)
    return children


def batched_bare(url, folders: list, files: list, by_address: bool, size: int = 500) -> float:
    """The bare insert in the engine's batches: the folders, then ``size`` files a transaction, each
    source row read by its key; inserted in the list's order or in the source rows' address order.
    Batches commit asynchronously and the last commit waits for the WAL, as an engine run's do."""
    sql = bare_batch(by_address)
    start = time.perf_counter()
    with connect(url) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET enable_seqscan = off")
        for chunk in [folders] + [files[i:i + size] for i in range(0, len(files), size)]:
            with conn.transaction():
                conn.execute(sql, (chunk,))
        conn.execute("SET synchronous_commit = on")
        with conn.transaction():
            conn.execute("SELECT txid_current()")  # a commit that waits for the WAL flush
    return time.perf_counter() - start


def explain_batches(url, folders: list, files: list, children: str, batches: tuple[int, ...]) -> None:
    """One Children batch (the deployed script, as a first load runs it) against a bare insert of the
    same 500 files read by their keys in the same order, each under ``EXPLAIN (ANALYZE, BUFFERS,
    WAL)`` and rolled back, twice in turn, on the target as a first load leaves it before step 3:
    its folders and no file (after the warm-up load, the files and their versions are deleted)."""
    with connect(url) as conn:
        start, end, run_id = conn.execute(LAST_WINDOW).fetchone()
        conn.execute('DELETE FROM "Dst"."Files" WHERE NOT is_directory')
        conn.execute(f'DELETE FROM {JOB}."BlobDeltaTargetVersion" AS v USING "Src"."Files" AS s '
                     "WHERE v.stream_id = s.stream_id AND NOT s.is_directory")
        conn.execute('VACUUM "Dst"."Files"')
        conn.execute(f'VACUUM {JOB}."BlobDeltaTargetVersion"')
        de.empty_target(conn, '"Bare"."Files"', None)
        conn.execute(f'INSERT INTO "Bare"."Files" ({de.COLUMNS}) SELECT {de.COLUMNS} FROM "Src"."Files" '
                     "WHERE stream_id = ANY(%s)", (folders,))
        filled = conn.execute(f'SELECT {JOB}."fn_BlobDelta_FillScript"(%s, %s)', ("Files", children)).fetchone()[0]
        modified = {r[0]: r[1] for r in conn.execute('SELECT stream_id, "ModifiedOn" FROM "Src"."FilesMeta"')}
        conn.execute("CHECKPOINT")
        conn.execute(f"PREPARE c{STEP_PARAMETERS} AS " + filled)
        bare = bare_batch(by_address=False)
        print("| batch | engine (ms) | bare (ms) |\n| ---: | --- | --- |")
        for b in batches:
            # From file b * 500 on: the script takes ModifiedOn >= $8, and the files are 10 ms apart.
            position = modified[files[b * 500]]
            ids = files[b * 500:(b + 1) * 500]
            took: dict[str, list[float]] = {"engine": [], "bare": []}
            for which in ("engine", "bare", "engine", "bare"):
                conn.execute("BEGIN")
                conn.execute("SET LOCAL enable_seqscan = off")
                if which == "engine":
                    plan = conn.execute(
                        f"EXPLAIN (ANALYZE, BUFFERS, WAL) EXECUTE c(500, NULL, '{start}', '{end}', NULL, '{run_id}', "
                        f"'Files', '{position}', true)").fetchall()
                else:
                    plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS, WAL) " + bare, (ids,)).fetchall()
                conn.execute("ROLLBACK")
                took[which].append(float(plan[-1][0].split()[2]))
            print(f"| {b} | {' / '.join(f'{t:.1f}' for t in took['engine'])} | "
                  f"{' / '.join(f'{t:.1f}' for t in took['bare'])} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--files", type=int, default=de.FILES_TREE["files"])
    parser.add_argument("--variant", action="append", default=[], help="NAME=FILE: a Children script to run")
    parser.add_argument("--engine-batches", default="",
                        help="comma-separated batch sizes: an \"engine batch N\" contender for each (the deployed script)")
    parser.add_argument("--only", default=None, help="comma-separated contenders to run (default: all)")
    parser.add_argument("--explain-batches", default=None,
                        help="comma-separated Children batch numbers: compare each with a bare batch (EXPLAIN "
                             "ANALYZE) after the warm-up, instead of the rounds")
    args = parser.parse_args()
    files_args = argparse.Namespace(**(de.FILES_TREE | {"files": args.files}))
    with private_server() as admin_url:
        de.set_max_wal_size(admin_url, "8GB")
        url = de.bench_database(admin_url, [("Files", True)])
        with connect(url) as conn:
            conn.execute("ALTER DATABASE bench SET track_functions = 'all'")
            de.log("building the files (untimed)")
            de.fill_files(conn, "Files", files_args)
            de.hold_targets(conn, ('"Bare"."Files"', '"Dst"."Files"'))
            expected = de.digest(conn, de.FILES_DIGEST, '"Src"."Files"')
            folders = [r[0] for r in conn.execute('SELECT stream_id FROM "Src"."Files" WHERE is_directory')]
            files = [r[0] for r in conn.execute(
                'SELECT m.stream_id FROM "Src"."FilesMeta" AS m JOIN "Src"."Files" AS s USING (stream_id) '
                'WHERE NOT s.is_directory ORDER BY m."ModifiedOn"')]
            deployed = conn.execute(f'SELECT "ScriptText" FROM {CHILDREN}').fetchone()[0]
            scripts = {"engine": deployed, "engine sorted": by_source_address(deployed)}
        scripts |= {f"engine {name}": Path(file).read_text(encoding="utf-8")
                    for name, file in (v.split("=", 1) for v in args.variant)}

        def install(text: str) -> None:
            with connect(url) as conn:
                conn.execute(f'UPDATE {CHILDREN.split(" WHERE ")[0]} SET "ScriptText" = %s '
                             f'WHERE "ScriptSet" = \'Hierarchical\' AND "StepNumber" = 3', (text,))

        de.log("warm-up fills")
        de.timed_bare(url, [(BARE, None)])
        de.run_engine(url, "Files", 500)
        if args.explain_batches:
            explain_batches(url, folders, files, deployed, tuple(int(b) for b in args.explain_batches.split(",")))
            return
        batches = {f"engine batch {n}": int(n) for n in args.engine_batches.split(",") if n}
        scripts |= {name: deployed for name in batches}
        contenders = ["bare", "bare in batches", "batches by address", *scripts]
        if args.only:
            contenders = [c for c in contenders if c in args.only.split(",")]
        times: dict[str, list[float]] = {c: [] for c in contenders}
        for r, which in de.in_turns(contenders, args.rounds):
            target = '"Dst"."Files"' if which in scripts else '"Bare"."Files"'
            with connect(url) as conn:
                de.empty_target(conn, target, "Files" if which in scripts else None)
                conn.execute("CHECKPOINT")
                conn.execute("SELECT pg_stat_reset()")
            if which == "bare":
                seconds = de.timed_bare(url, [(BARE, None)])
            elif which in scripts:
                install(scripts[which])
                seconds, _ = de.run_engine(url, "Files", batches.get(which, 500))
            else:
                seconds = batched_bare(url, folders, files, by_address=which == "batches by address")
            with connect(url) as conn:
                got = de.digest(conn, de.FILES_DIGEST, target)
                if got != expected:
                    raise SystemExit(f"round {r + 1}, {which}: the target holds {got}, the source {expected}")
                if which in scripts:
                    conn.execute("SELECT pg_stat_force_next_flush()")
            times[which].append(seconds)
            de.log(f"round {r + 1} {which}: {seconds:.2f} s")
        with connect(url) as conn:
            functions = conn.execute(FUNCTIONS).fetchall()
            start, end, run_id = conn.execute(LAST_WINDOW).fetchone()
            plans = {}
            for name, text in scripts.items():
                if name in batches:  # the deployed text again
                    continue
                filled = conn.execute(f'SELECT {JOB}."fn_BlobDelta_FillScript"(%s, %s)', ("Files", text)).fetchone()[0]
                plans[name] = []
                for _ in range(5):
                    conn.execute("BEGIN")
                    conn.execute("SET LOCAL enable_seqscan = off")
                    conn.execute(f"PREPARE c{STEP_PARAMETERS} AS {filled}")
                    out = [row[0] for row in conn.execute(
                        f"EXPLAIN (SUMMARY) EXECUTE c(500, NULL, '{start}', '{end}', NULL, '{run_id}', 'Files', "
                        f"'{start}', true)")]
                    conn.execute("ROLLBACK")
                    conn.execute("DEALLOCATE c")
                    plans[name].append(float([x for x in out if x.startswith("Planning Time")][0].split()[2]))
    bare = times.get("bare") or next(iter(times.values()))
    print("| contender | median (s) | each round (s) | bare / contender, medians | each round's ratio |")
    print("| --- | ---: | --- | ---: | --- |")
    for name, each in times.items():
        print(f"| {name} | {statistics.median(each):.2f} | {' / '.join(f'{t:.2f}' for t in each)} | "
              f"{statistics.median(bare) / statistics.median(each):.2f} | "
              f"{' / '.join(f'{b / t:.2f}' for b, t in zip(bare, each))} |")
    print("\nThe last engine run, per function (ms): "
          + "; ".join(f"{name} {calls} calls, self {self_time:,.1f}" for name, calls, _, self_time in functions))
    print("Children's planning time (ms), 5 times: "
          + "; ".join(f"{name} {' / '.join(f'{p:.2f}' for p in each)}" for name, each in plans.items()))


if __name__ == "__main__":
    main()
