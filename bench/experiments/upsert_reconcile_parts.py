"""Issue 20: where the bulk path's time goes against the tuned baseline of ``bench/upserts.py``
(PostgreSQL only), in three parts, on the benchmark's stream (300,000 events after 75,000 pre-loaded).

1. **Whole runs** in this process, in turns (the order rotated every round), each against the
   benchmark's reset target and checked against its newest-wins oracle: the tuned baseline, and the
   bulk writer at each ``--chunks`` size, with ``track_functions = 'all'``: each run's wall time and
   the time its reconcile procedure took on the server (``pg_stat_user_functions``).
2. **One staged chunk** (the first ``--chunk`` rows, staged by the bulk writer's own COPY) reconciled
   by the procedure as deployed; by variants of its text without one of its parts (the RowNumber
   check, the JSON check, the lookup check, the DELETE of the staged rows) or with each JSON text
   parsed once; cumulatively without all four, then without any reject reason, then without the
   materialized pass (the floor of the procedure with no guarantee left); and by the baseline's
   bare ``INSERT ... SELECT DISTINCT ON ... ON CONFLICT`` of the same rows; each in a transaction
   rolled back, then the target and reject tables vacuumed, the contenders in rotated order. The
   table gives the median, the lowest and each time: single runs vary by 10 to 20% here, so read
   differences of a few ms from many repeats (``--repeat 21``).
3. **Client CPU** for the stream, one thread: the bulk writer's row preparation and COPY body
   against the baseline's encoding (``format_row_binary`` of its tuples, JSON encoded).

Usage (from the repository root): .venv/bin/python bench/experiments/upsert_reconcile_parts.py
    [--events 300000] [--rounds 3] [--chunks 20000,50000,100000] [--chunk 50000] [--repeat 5]
    [--parts 1,2,3]
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import upserts as U  # noqa: E402
from embedded import connect, fresh_database, private_server  # noqa: E402

from dbtools.upsert import pgcopy, writers  # noqa: E402


#: The first non-blank character of a JSON object or array (PostgreSQL's JSON whitespace).
JSON_SHAPE = """left(ltrim(s."details_json", E' \\t\\n\\r'), 1) IN ('{', '[')"""


def _edit(text: str, name: str, old: str, new: str, *, regex: bool = False) -> str:
    """``text`` with its first ``old`` replaced, or SystemExit when ``old`` is not there."""
    out = re.sub(old, new, text, count=1, flags=re.S) if regex else text.replace(old, new, 1)
    if out == text:
        raise SystemExit(f"{name}: the deployed procedure has changed; this experiment no longer applies")
    return out


_JSON_CHECK = 'WHEN NOT (s."details_json" IS JSON OBJECT OR s."details_json" IS JSON ARRAY)'


def _without_numbers(text: str) -> str:
    """Without the RowNumber check (its statement and the IF that raises)."""
    start = text.index("SELECT count(*) - count(DISTINCT")
    return text[:start] + text[text.index("END IF;", start) + len("END IF;"):]


def _without_delete(text: str) -> str:
    """Without the last DELETE (of the staged rows)."""
    delete = text.rindex("DELETE FROM")
    return text[:delete] + text[text.index(";", delete) + 1:]


def _without_json(text: str) -> str:
    return _edit(text, "no JSON check", re.escape(_JSON_CHECK) + r"\s+THEN '[^']*'", "", regex=True)


def _without_lookup(text: str) -> str:
    return _edit(text, "no lookup check",
                 r'WHEN s\."activity_type" IS NOT NULL AND NOT EXISTS \(SELECT 1 FROM [^)]*\)\s+THEN \'[^\']*\'', "",
                 regex=True)


def variants(text: str) -> dict[str, str]:
    """The reconcile procedure's definition; variants without one part each; and, cumulatively,
    without all four, then without any reject reason, then without the materialized pass: the
    floor of the procedure's shape with no guarantee left. Each edit must find its text."""
    # Parsing each text once: the cheap shape test as the reason, the cast done in the checked pass
    # (a syntax error would then fail the batch; the procedure would need a fallback to the full
    # check, which this speed test leaves out), the text kept only for rejects.
    once = _edit(text, "JSON parsed once", _JSON_CHECK, f"WHEN NOT ({JSON_SHAPE})")
    once = _edit(once, "JSON parsed once", 's."details_json", s."ExpectedRowVersion",',
                 f'CASE WHEN {JSON_SHAPE} THEN s."details_json"::json END AS parsed_json, '
                 f'CASE WHEN {JSON_SHAPE} THEN NULL ELSE s."details_json" END AS "details_json", s."ExpectedRowVersion",')
    once = _edit(once, "JSON parsed once", 'w."details_json"::json', "w.parsed_json")
    once = _edit(once, "JSON parsed once", 'c."details_json", c."ExpectedRowVersion"\n',
                 'coalesce(c.parsed_json::text, c."details_json"), c."ExpectedRowVersion"\n')
    none = _without_lookup(_without_json(_without_delete(_without_numbers(text))))
    no_reason = _edit(none, "no reject reason", r'CASE\s+WHEN s\."event_id" IS NULL.*?END AS "Reason"',
                      'NULL::text AS "Reason"', regex=True)
    return {
        "as deployed": text,
        "no RowNumber check": _without_numbers(text),
        "no JSON check": _without_json(text),
        "no lookup check": _without_lookup(text),
        "no DELETE": _without_delete(text),
        "JSON parsed once": once,
        "none of the four": none,
        "... and no reject reason": no_reason,
        "... and no materialized pass": _edit(no_reason, "no materialized pass", "checked AS MATERIALIZED",
                                              "checked AS NOT MATERIALIZED"),
    }


def whole_runs(engine, url: str, oracle: dict, rows: list[dict], chunks: list[int], rounds: int) -> None:
    names = ["baseline (tuned)", *(f"bulk, {n:,}-row chunks" for n in chunks)]
    sizes = dict(zip(names[1:], chunks))
    seen: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            U.reset(engine, False)
            U.maintenance(engine, "SELECT pg_stat_reset()")
            writer_engine = sa.create_engine(url, poolclass=NullPool)
            start = time.perf_counter()
            if name in sizes:
                writers.writer_for("bulk", writer_engine, U.SPEC, batch_size=sizes[name]).upsert(rows)
            else:
                U.run_baseline(url, rows)
            seconds = time.perf_counter() - start
            writer_engine.dispose()
            if not U.check(engine, oracle, name)["agrees"]:
                raise SystemExit(f"round {r + 1}, {name}: the table disagrees with the oracle")
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT pg_stat_force_next_flush()")
            with engine.connect() as conn:
                reconcile = conn.exec_driver_sql(
                    "SELECT coalesce(sum(total_time), 0) FROM pg_stat_user_functions WHERE funcname = %s",
                    (U.SPEC.reconcile,)).scalar()
            seen[name].append((seconds, reconcile / 1000))
            print(f"  round {r + 1} {name}: {seconds:.2f} s, reconcile {reconcile / 1000:.2f} s", file=sys.stderr)
    base = [s for s, _ in seen[names[0]]]
    print("\n| contender | median (s) | each round (s) | baseline / this, each round | reconcile on the server (s), each |")
    print("| --- | ---: | --- | --- | --- |")
    for name, each in seen.items():
        print(f"| {name} | {statistics.median(s for s, _ in each):.2f} | {' / '.join(f'{s:.2f}' for s, _ in each)} | "
              f"{' / '.join(f'{b / s:.2f}' for b, (s, _) in zip(base, each))} | "
              f"{' / '.join(f'{x:.2f}' for _, x in each) if name in sizes else '-'} |")


def one_chunk(engine, url, rows: list[dict], size: int, repeat: int) -> None:
    U.reset(engine, False)
    writer = writers.writer_for("bulk", engine, U.SPEC, batch_size=size, prefetch=False)
    chunk = next(writer._prepared_chunks(rows[:size]))
    with engine.begin() as conn:
        writer._copy(conn, chunk.batch_id, chunk.payload)
    procedure = U.SPEC.reconcile
    with connect(sa.make_url(url)) as conn:
        oid, schema = conn.execute("SELECT p.oid, p.pronamespace::regnamespace::text FROM pg_catalog.pg_proc AS p "
                                   "WHERE p.proname = %s", (procedure,)).fetchone()
        text = conn.execute("SELECT pg_catalog.pg_get_functiondef(%s)", (oid,)).fetchone()[0]
        if f'{schema}."{procedure}"' not in text:
            raise SystemExit(f"the procedure's definition does not name {schema}.\"{procedure}\" as expected")
        texts = variants(text)
        staged = f'(SELECT * FROM {schema}."{U.SPEC.staging}" WHERE "BatchId" = \'{chunk.batch_id}\')'
        names = [*texts, "bare apply"]
        took: dict[str, list[float]] = {n: [] for n in names}
        for r in range(repeat):
            for name in names[r % len(names):] + names[:r % len(names)]:
                if name != "bare apply":
                    conn.execute(texts[name].replace(f'{schema}."{procedure}"', f'{schema}."x_{procedure}"', 1))
                conn.execute("BEGIN")
                start = time.perf_counter()
                if name == "bare apply":
                    conn.execute("SET LOCAL work_mem = '256MB'")
                    conn.execute(U.BASELINE_APPLY.format(stage=staged))
                else:
                    conn.execute(f'CALL {schema}."x_{procedure}"(%s)', (chunk.batch_id,))
                took[name].append(time.perf_counter() - start)
                conn.execute("ROLLBACK")
                conn.execute(f"VACUUM {U.TARGET}, {U.REJECTS}")
        conn.execute(f'DROP PROCEDURE IF EXISTS {schema}."x_{procedure}"')
    print(f"\nOne staged chunk of {size:,} rows, {repeat} times in rotated order, rolled back:\n")
    print("| reconcile | median (ms) | lowest (ms) | median over the bare apply's | each (ms) |\n| --- | ---: | ---: | ---: | --- |")
    bare = statistics.median(took["bare apply"])
    for name, each in took.items():
        print(f"| {name} | {statistics.median(each) * 1000:.0f} | {min(each) * 1000:.0f} | "
              f"{statistics.median(each) / bare:.2f} | {' / '.join(f'{t * 1000:.0f}' for t in each)} |")


def client_cpu(rows: list[dict], repeat: int) -> None:
    spec = U.SPEC
    prepare = writers._preparer(spec)
    new_body = pgcopy.body_factory(["uuid", "int8", *(writers._copy_type(c, U.PG) for c in spec.columns), "int8"],
                                   piece_size=pgcopy.PIECE_SIZE)
    baseline_row = pgcopy.native_formatter()
    transformer = pgcopy._binary_transformer(U.BASELINE_TYPES)
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    batch_id = uuid.uuid4()
    took: dict[str, list[float]] = {"bulk: prepare": [], "bulk: COPY body": [], "baseline: COPY body, JSON encoded": []}
    for _ in range(repeat):
        start = time.thread_time()
        prepared = [prepare(row, n) for n, row in enumerate(rows, start=1)]
        took["bulk: prepare"].append(time.thread_time() - start)
        start = time.thread_time()
        add, finish = new_body()
        for p in prepared:
            add((batch_id, p.row_number, *p.values, p.expected))
        finish()
        took["bulk: COPY body"].append(time.thread_time() - start)
        if baseline_row is not None:
            start = time.thread_time()
            out = bytearray()
            for r in rows:
                baseline_row(U.baseline_values(r, dumps), transformer, out)
            took["baseline: COPY body, JSON encoded"].append(time.thread_time() - start)
        del prepared
    print(f"\nClient CPU for {len(rows):,} rows, one thread (s):\n")
    print("| part | median | each |\n| --- | ---: | --- |")
    for name, each in took.items():
        if each:
            print(f"| {name} | {statistics.median(each):.2f} | {' / '.join(f'{t:.2f}' for t in each)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunks", default="20000,50000,100000")
    parser.add_argument("--chunk", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--parts", default="1,2,3", help="which of the three parts to run")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    with private_server() as admin_url, tempfile.TemporaryDirectory(prefix="dbtools-parts-") as workdir:
        url = fresh_database(admin_url, "bench")
        url_text = url.render_as_string(hide_password=False)
        engine = sa.create_engine(url, poolclass=NullPool)
        stream = U.EventStream(args.events)
        oracle = U.setup_group(engine, stream, False, workdir, url_text)
        U.maintenance(engine, "ALTER DATABASE bench SET track_functions = 'all'")
        rows = list(stream.rows())
        gc.collect()
        gc.freeze()
        if "1" in parts:
            whole_runs(engine, url_text, oracle, rows, [int(n) for n in args.chunks.split(",")], args.rounds)
        if "2" in parts:
            one_chunk(engine, url_text, rows, args.chunk, args.repeat)
        engine.dispose()
    if "3" in parts:
        client_cpu(rows, 3)


if __name__ == "__main__":
    main()
