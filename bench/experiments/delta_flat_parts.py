"""Where a Flat batch's time goes, and what a set-based engine could reach (PostgreSQL only).

Settled (2026-12-03): a Flat batch's time is its per-row target and source probes; revision 0008
dropped the target lookups past a first load's start and the self-join (0.91 of a bare insert per
batch, against 0.53 for 0004), so no set-based path was built. An experiment, not rerun since.

Reproduces the two tables under "Where a Flat batch's time goes" in docs/benchmarks.md, on a
private pgserver with the delta benchmark's 1M-row Flat table (bench/delta_setup.py):

1. One 50,000-row batch at the middle of the window (half the rows already in the target),
   run by the revision 0004 Flat script, by variants of it with parts removed, and by the
   deployed (0008) script as a first load and as any other load, each rolled back; the
   variants take turns and the medians are printed beside a bare insert of 50,000 rows.
2. One statement over the whole window into an empty target: the bare insert, the smallest
   ON CONFLICT upsert, and a plain insert of the rows NOT EXISTS in the target as a hash
   anti-join (nested loops disabled; left alone, the planner picks a nested loop over the
   target's heap, which does not finish in minutes).

Usage: python bench/experiments/delta_flat_parts.py [--rows 1000000] [--batch-size 50000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

import psycopg

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # bench/: delta_setup, embedded

from delta_setup import SETUP_COMMON, SETUP_FLAT, execute
from embedded import connect, fresh_database, run_prepared, private_server

COLUMNS = ['"Id"', '"Body"', '"ModifiedOn"', '"OwningBusinessUnit"']
PLACEHOLDERS = {
    "{SourceObject}": '"Src"."Flat"', "{TargetObject}": '"Dst"."Flat"', "{MetadataObject}": '"Src"."Flat"',
    "{BusinessUnitObject}": '"Src"."LA_BU"', "{MetadataIdColumn}": '"Id"', "{MetadataModifiedOnCol}": '"ModifiedOn"',
    "{MetadataBusinessUnitCol}": '"OwningBusinessUnit"', "{BusinessUnitIdColumn}": '"BusinessUnitId"',
    "{SourceColumnList}": ", ".join("s." + c for c in COLUMNS), "{ColumnList}": ", ".join(COLUMNS),
    "{UpdateList}": ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS if c != '"Id"'),
}
SOURCE_PROBE = ("    CROSS JOIN LATERAL (SELECT * FROM {SourceObject} AS s "
                "WHERE s.{MetadataIdColumn} = m.{MetadataIdColumn} OFFSET 0) AS s\n")
TARGET_PROBE = ("    LEFT JOIN LATERAL (SELECT true AS present, t.{MetadataModifiedOnCol} AS modified_on FROM {TargetObject} AS t\n"
                "                       WHERE t.{MetadataIdColumn} = m.{MetadataIdColumn} LIMIT 1) AS t ON true\n")
COUNT = '\nSELECT count(*)::integer, max("dbtools$ModifiedOn") FROM batch'
SCRIPT_0004 = (pathlib.Path(__file__).resolve().parents[2] / "migrations" / "versions" / "0004_scripts"
               / "postgresql" / "Flat_1_Upsert.sql")
# {SourceRow} as the engine fills it for a Flat table that is its own metadata table.
SELF_ROW = "CROSS JOIN LATERAL (SELECT m.*) AS s"
USES_EVERY_PARAMETER = "($2 IS NULL OR $5 IS NULL OR $6 IS NULL OR $7 IS NOT NULL)"


def replaced(text: str, old: str, new: str) -> str:
    """``text`` with ``old`` replaced; the stored script must still contain it (or this is stale)."""
    if old not in text:
        raise SystemExit(f"the deployed Flat script no longer contains {old!r}: update this benchmark")
    return text.replace(old, new)


def variants(script: str, deployed: str) -> dict[str, tuple[str, bool]]:
    """name -> (statement, first-load flag $9)."""
    read = script.split("), updated AS (")[0] + ")" + COUNT
    deployed = replaced(deployed, "{SourceRow}", SELF_ROW)
    statements = {
        "the 0004 Flat script": script,
        "its read alone (metadata walk and every probe, no insert)": read,
        "the read without the target probe": replaced(
            read, TARGET_PROBE, "    CROSS JOIN (SELECT NULL::boolean AS present, NULL::timestamp AS modified_on) AS t\n"),
        "the read without the source probe": replaced(read, SOURCE_PROBE, f"    {SELF_ROW}\n"),
        "metadata walk and insert, with no probe at all": (
            'INSERT INTO {TargetObject} ({ColumnList}) SELECT {SourceColumnList} FROM {MetadataObject} AS s '
            'WHERE s."ModifiedOn" >= greatest($3, $8) AND s."ModifiedOn" < $4 AND ' + USES_EVERY_PARAMETER +
            ' ORDER BY s."ModifiedOn" LIMIT $1'),
        "the script with the source probe dropped (metadata = source)": replaced(
            replaced(script, SOURCE_PROBE, ""), "FROM {MetadataObject} AS m", "FROM {MetadataObject} AS m, LATERAL (SELECT m.*) AS s"),
        "the deployed (0008) script, not a first load": deployed,
    }
    flagged = {name: (sql, False) for name, sql in statements.items()}
    flagged["the deployed (0008) script, first load"] = (deployed, True)
    return flagged


def substituted(sql: str) -> str:
    for key, value in PLACEHOLDERS.items():
        sql = sql.replace(key, value)
    return sql


def batch_parts(conn, script: str, deployed: str, batch_size: int, repeat: int) -> list[tuple[str, float]]:
    lo, hi = conn.execute('SELECT min("ModifiedOn"), max("ModifiedOn") + interval \'1 s\' FROM "Src"."Flat"').fetchone()
    total = conn.execute('SELECT count(*) FROM "Src"."Flat"').fetchone()[0]
    middle = conn.execute('SELECT "ModifiedOn" FROM "Src"."Flat" ORDER BY "ModifiedOn" OFFSET %s LIMIT 1',
                          (total // 2,)).fetchone()[0]
    conn.execute('TRUNCATE "Dst"."Flat"')
    conn.execute('INSERT INTO "Dst"."Flat" SELECT * FROM "Src"."Flat" WHERE "ModifiedOn" < %s', (middle,))
    conn.execute('VACUUM ANALYZE "Dst"."Flat"')
    statements = {name: (substituted(sql), flag) for name, (sql, flag) in variants(script, deployed).items()}
    # The bare insert: batch_size rows not yet in the target, read by a plain scan in heap order
    # (OFFSET 0 keeps the filter out of the scan, so no index is used).
    statements["bare INSERT ... SELECT"] = (
        'INSERT INTO "Dst"."Flat" SELECT s.* FROM (SELECT * FROM "Src"."Flat" OFFSET 0) AS s '
        f'WHERE s."ModifiedOn" >= $8 AND $3 < $4 AND {USES_EVERY_PARAMETER} AND $9 IS NOT NULL LIMIT $1', False)
    times: dict[str, list[float]] = {name: [] for name in statements}
    rows: dict[str, int] = {}
    cursor = psycopg.ClientCursor(conn)
    for _ in range(repeat):
        for name, (sql, first_load) in statements.items():  # round robin: a change of the machine's speed hits all alike
            with conn.transaction(force_rollback=True):
                elapsed, rows[name] = run_prepared(cursor, sql, (batch_size, None, lo, hi, None, None, "Flat", middle, first_load))
            times[name].append(elapsed)
    wrong = {name: n for name, n in rows.items() if n != batch_size}
    if wrong:
        raise SystemExit(f"every statement should have handled {batch_size} rows: {wrong}")
    return [(name, statistics.median(t)) for name, t in times.items()]


WHOLE_WINDOW = {
    "bare INSERT ... SELECT": ('INSERT INTO "Dst"."Flat" SELECT * FROM "Src"."Flat"', True),
    "INSERT ... ON CONFLICT DO UPDATE WHERE older (no metadata join, no batches)": (
        'INSERT INTO "Dst"."Flat" AS t SELECT s.* FROM "Src"."Flat" AS s '
        'WHERE s."OwningBusinessUnit" IN (SELECT "BusinessUnitId" FROM "Src"."LA_BU") '
        'ON CONFLICT ("Id") DO UPDATE SET "Body" = EXCLUDED."Body", "ModifiedOn" = EXCLUDED."ModifiedOn", '
        '"OwningBusinessUnit" = EXCLUDED."OwningBusinessUnit" WHERE t."ModifiedOn" < EXCLUDED."ModifiedOn"', True),
    "plain insert of the rows NOT EXISTS in the target, hash anti-join (nested loops disabled)": (
        'INSERT INTO "Dst"."Flat" SELECT s.* FROM "Src"."Flat" AS s '
        'WHERE s."OwningBusinessUnit" IN (SELECT "BusinessUnitId" FROM "Src"."LA_BU") '
        'AND NOT EXISTS (SELECT 1 FROM "Dst"."Flat" AS d WHERE d."Id" = s."Id")', False),
}


def whole_window(conn, repeat: int) -> list[tuple[str, float]]:
    times: dict[str, list[float]] = {name: [] for name in WHOLE_WINDOW}
    for _ in range(repeat):
        for name, (sql, nested_loops) in WHOLE_WINDOW.items():
            conn.execute('TRUNCATE "Dst"."Flat"')
            conn.execute('VACUUM ANALYZE "Dst"."Flat"')
            conn.execute("CHECKPOINT")
            with conn.transaction():
                if not nested_loops:
                    conn.execute("SET LOCAL enable_nestloop = off")
                start = time.perf_counter()
                conn.execute(sql)
            times[name].append(time.perf_counter() - start)  # commit included, as for the bare insert
    return [(name, statistics.median(t)) for name, t in times.items()]


def table(title: str, unit: str, results: list[tuple[str, float]], bare: str) -> None:
    base = dict(results)[bare]
    print(f"| {title} | {unit} | bare / this |")
    print("| --- | ---: | ---: |")
    for name, seconds in results:
        print(f"| {name} | {seconds:.3f} | {base / seconds:.2f} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=7, help="runs of each batch variant (whole-window: 2)")
    args = parser.parse_args()

    with private_server() as admin_url:
        url = fresh_database(admin_url, "bench_parts")
        execute(url, SETUP_COMMON)
        execute(url, SETUP_FLAT.format(t="Flat", rows=args.rows))
        with connect(url) as conn:
            conn.execute('VACUUM ANALYZE "Src"."Flat"')  # a table in steady state: autovacuum has run
            deployed = conn.execute('SELECT "ScriptText" FROM "BlobDeltaJobs"."BlobDeltaStepScript" '
                                    'WHERE "ScriptSet" = \'Flat\' AND "StepNumber" = 1').fetchone()[0]
            script = SCRIPT_0004.read_text(encoding="utf-8")
            version = conn.execute("SHOW server_version").fetchone()[0]
            parts = batch_parts(conn, script, deployed, args.batch_size, args.repeat)
            window = whole_window(conn, 2)

    table(f"one {args.batch_size:,}-row batch, median of {args.repeat}", "time (s)", parts, "bare INSERT ... SELECT")
    table(f"one statement, {args.rows:,} rows, median of 2", "time (s)", window, "bare INSERT ... SELECT")
    print(f"PostgreSQL {version} (pgserver)")


if __name__ == "__main__":
    main()
