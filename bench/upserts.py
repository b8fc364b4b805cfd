"""Benchmark the event upsert paths on PostgreSQL, honestly (a private pgserver; nothing else is touched).

Method (issue 20):

* **Input built before the clock.** Every contender's child process generates the same seeded
  stream of CustomerActivityEvent rows into a list of dicts *before* it starts its clock; only
  the row labelled "streaming input" reads the lazy generator while timed (its time includes
  generating the rows, about 6 s per million).
* **A fresh process per contender run** (``python bench/upserts.py --child ...``), against an
  identical reset target: the entity's tables truncated, the pre-existing rows reloaded from a
  saved copy, ``VACUUM (ANALYZE)``, ``CHECKPOINT``, all before the child starts.
* **Rounds**: at least 5; the order of the contenders is rotated every round, so that a change of
  the shared machine's speed falls on all of them alike. The median and every round are reported,
  and the goal ratios per round (within one round the contenders ran minutes apart at most).
* **An oracle**: all pre-loaded and streamed rows are copied into one table and reduced with a
  plain ``DISTINCT ON (event_id) ... ORDER BY event_id, time_stamp_utc DESC, seq`` (newest wins;
  on a tie the earlier row, so the stored one); every contender's final table is compared with it
  (row count and an MD5 digest of every column but ``row_version``). A contender that disagrees is
  marked in the tables; the benchmark fails if one of dbtools' paths or the baseline disagrees.
* **The tuned baseline**: binary ``COPY`` into one of two UNLOGGED tables, in 100,000-row chunks,
  a loader thread copying (and encoding) chunk N+1 on its own connection while a second connection
  runs ``INSERT ... SELECT DISTINCT ON (event_id) ... ORDER BY event_id, time_stamp_utc DESC
  ON CONFLICT (event_id) DO UPDATE ... WHERE t.time_stamp_utc < EXCLUDED.time_stamp_utc`` and
  ``TRUNCATE`` of chunk N, with ``work_mem = '256MB'``, ``jit = off`` (``synchronous_commit`` stays on,
  as for the writers: a commit the caller saw must survive a crash).
* **Peers**: SQLAlchemy ``postgresql.insert(...).on_conflict_do_update(...)`` executemany in
  1,000-row transactions (row by row; the script checks SQLAlchemy does not batch it), and dlt's
  ``merge`` (``bench`` extra: primary key ``event_id``, ``dedup_sort`` desc on ``time_stamp_utc``,
  its default ``delete-insert`` strategy and loader format, into its own table reloaded the same way).
* **Memory**: peak RSS (``VmHWM`` of ``/proc/self/status``; ``ru_maxrss`` would include the parent's) of the writer's own process,
  streaming input, at 300,000 and 3,000,000 events (``--rss-events``).

Usage: python bench/upserts.py [--events 1000000] [--rounds 5] [--quick] [--save out.json]
       python bench/upserts.py --render before.json after.json   (docs/benchmarks.md section + SVG chart)
       python bench/upserts.py --render before.json after.json "quiet, at abc1234=now.json"   (a label per file)
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import queue
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.pool import NullPool

from dbtools.db.engines import engine_for
from dbtools.upsert.specs import spec_named

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- upserts:begin -->", "<!-- upserts:end -->"

SPEC = spec_named("CustomerActivityEvent")
PG = engine_for("postgresql")
Q, JOB = PG.quote, PG.job_object
TARGET, STAGING, REJECTS, BATCH_LOG = (SPEC.table_object(PG, SPEC.table), SPEC.table_object(PG, SPEC.staging),
                                       SPEC.table_object(PG, SPEC.rejects), JOB("UpsertBatchLog"))
COLUMNS = [c.name for c in SPEC.columns]
ACTIVITY_TYPES = ("page_view", "search", "add_to_cart", "checkout", "purchase", "login", "logout", "support_ticket")
SOURCES = ("web", "ios", "android", "email", "partner")

BULK_BATCH, TVP_BATCH, BASELINE_CHUNK, PEER_CHUNK = 50_000, 1000, 50_000, 1000
DUP_WINDOW = 1000  # duplicates repeat a row of the current 1,000-row block: in-batch for every contender
MIX = (("new", 0.70), ("newer", 0.20), ("stale", 0.05), ("duplicate", 0.05))
SEED = 20261122

PRELOAD_T0 = dt.datetime(2026, 1, 1)  # pre-loaded event i happened at PRELOAD_T0 + 10 ms * i
STREAM_T0 = dt.datetime(2026, 3, 1)  # stream row p (new or newer) happened at STREAM_T0 + 10 ms * p
KEY_T0_MS = int(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)
STEP = dt.timedelta(milliseconds=10)
STALE_AGE = dt.timedelta(days=1)


# ----------------------------------------------------------------------------- the events
_MASK128 = (1 << 128) - 1
_MULTIPLIER = 0x9E3779B97F4A7C15F39CC0605CEDC835  # odd: distinct indexes give distinct bits
_RAND62 = (1 << 62) - 1
_V7 = (0x7 << 76) | (0b10 << 62)
_V4 = (0x4 << 76) | (0b10 << 62)
_V4_MASK = ((1 << 128) - 1) & ~((0xF << 76) | (0b11 << 62))


def event_key(index: int, kind: str) -> uuid.UUID:
    """The key of event ``index`` (pre-loaded events first, then new ones in stream order).

    Derived from the index, so existing keys need no table in memory. ``v7``: the layout
    dbtools.uuid7 uses on PostgreSQL (48-bit milliseconds, version 7, 12-bit counter, variant,
    62 random bits), one millisecond per event, so keys increase in creation order as UUIDv7
    keys from a live generator do. ``v4``: random (RFC 9562 version 4).
    """
    bits = ((index + 1) * _MULTIPLIER) & _MASK128  # a Weyl sequence, then its high half folded down
    bits ^= bits >> 61
    if kind == "v7":
        counter, rand = bits >> 116, bits & _RAND62
        return uuid.UUID(int=((KEY_T0_MS + index) << 80) | _V7 | (counter << 64) | rand)
    return uuid.UUID(int=(bits & _V4_MASK) | _V4)


def _details(r: Callable[[], float]) -> dict:
    return {"source": SOURCES[int(r() * len(SOURCES))], "page": f"/products/{int(r() * 50_000)}",
            "session": int(r() * (1 << 40)), "duration_ms": int(r() * 60_000)}


@dataclass
class EventStream:
    """The measured events: ``events`` rows after ``existing`` pre-loaded ones, from one seed.

    Every call of :meth:`rows` (or :meth:`preload`) regenerates the same rows; only ``keys``
    (v7 or v4) changes the key values. :attr:`mix` counts what the last full pass yielded.
    """

    events: int
    keys: str = "v7"
    seed: int = SEED
    mix: Counter = field(default_factory=Counter)

    @property
    def existing(self) -> int:
        return max(1, self.events // 4)

    def preload(self) -> Iterator[dict]:
        r = random.Random(self.seed - 1).random
        for i in range(self.existing):
            yield {"event_id": event_key(i, self.keys), "customer_id": 1 + int(r() * 200_000),
                   "activity_type": ACTIVITY_TYPES[int(r() * 8)], "time_stamp_utc": PRELOAD_T0 + STEP * i,
                   "details_json": _details(r)}

    def rows(self) -> Iterator[dict]:
        rng = random.Random(self.seed)
        rand = rng.random
        existing, keys = self.existing, self.keys
        cut_new, cut_newer, cut_stale = (sum(p for _, p in MIX[:k]) for k in (1, 2, 3))
        mix: Counter = Counter()
        block: list[dict] = []
        next_new = existing
        for p in range(self.events):
            if p % DUP_WINDOW == 0:
                block = []
            r = rand()
            if r >= cut_stale and block:
                row = dict(block[int(rand() * len(block))])  # a redelivery: the same event again, same batch
                mix["duplicate"] += 1
            else:
                if r < cut_new or r >= cut_stale:  # (a duplicate at the start of a block: a new event)
                    index, at, kind = next_new, STREAM_T0 + STEP * p, "new"
                    next_new += 1
                elif r < cut_newer:
                    index = int(rand() * existing)
                    at, kind = STREAM_T0 + STEP * p, "newer"  # newer than every earlier row
                else:
                    index = int(rand() * existing)
                    at, kind = PRELOAD_T0 + STEP * index - STALE_AGE, "stale"  # older than the stored row
                mix[kind] += 1
                row = {"event_id": event_key(index, keys), "customer_id": 1 + int(rand() * 200_000),
                       "activity_type": ACTIVITY_TYPES[int(rand() * 8)], "time_stamp_utc": at,
                       "details_json": _details(rand)}
            block.append(row)
            yield row
        self.mix = mix


BASELINE_CHUNK = 100_000
SMALL_EVENTS = 10_000


# ----------------------------------------------------------------------------- the server
BENCH = '"bench"'  # the benchmark's own schema: saved pre-load, oracle, the baseline's staging
ROW_COLUMNS = ", ".join(Q(c) for c in COLUMNS)
PRELOAD, ALL_ROWS, ORACLE = f"{BENCH}.preload", f"{BENCH}.all_rows", f"{BENCH}.oracle"
STAGES = (f"{BENCH}.stage_0", f"{BENCH}.stage_1")
DLT_DATASET, DLT_TABLE = "dlt_events", "events"
DLT_TARGET, DLT_PRELOAD = f'"{DLT_DATASET}"."{DLT_TABLE}"', f"{BENCH}.dlt_preload"


def maintenance(engine, *statements):
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)


def exists(engine, relation: str) -> bool:
    with engine.connect() as conn:
        return conn.exec_driver_sql("SELECT to_regclass(%s) IS NOT NULL", (relation,)).scalar()


def row_hashes(source: str, timestamp: str = Q("time_stamp_utc")) -> str:
    """(e, h) per row of ``source``: the key, and an MD5 of every column but row_version, normalised
    (dlt keeps the key as text, the timestamp with time zone and the JSON as jsonb)."""
    return (f"SELECT {Q('event_id')}::uuid AS e, md5(concat_ws('|', {Q('event_id')}::uuid::text, "
            f"{Q('customer_id')}::text, {Q('activity_type')}, ({timestamp})::timestamp::text, "
            f"{Q('details_json')}::jsonb::text)) AS h FROM {source}")


def digest_of(engine, source: str, timestamp: str = Q("time_stamp_utc")) -> tuple[int, str]:
    hashes = f"SELECT e, h FROM {ORACLE}" if source == ORACLE else row_hashes(source, timestamp)
    with engine.connect() as conn:
        rows, digest = conn.exec_driver_sql(
            f"SELECT count(*), md5(string_agg(x.h, '' ORDER BY x.e)) FROM ({hashes}) AS x").one()
    return rows, digest


def setup_group(engine, stream: EventStream, dlt: bool, workdir: str, url: str) -> dict:
    """Pre-load ``stream``'s existing events once (with the bulk writer, untimed), save them, and
    build the newest-wins oracle of pre-load + stream. Returns the oracle's row count and digest."""
    from dbtools.upsert.writers import writer_for

    maintenance(engine, f"CREATE SCHEMA IF NOT EXISTS {BENCH}",
                f"DROP TABLE IF EXISTS {PRELOAD}, {ALL_ROWS}, {ORACLE}, {DLT_PRELOAD}, {', '.join(STAGES)}",
                f"TRUNCATE {TARGET}, {STAGING}, {REJECTS}, {BATCH_LOG}")
    counts = writer_for("bulk", engine, SPEC).upsert(stream.preload())
    assert counts.inserted == stream.existing, counts
    stage_columns = ", ".join(f"{Q(c.name)} {'text' if c.type == 'json' else c.target_type(PG)}" for c in SPEC.columns)
    maintenance(engine, f"CREATE TABLE {PRELOAD} AS SELECT * FROM {TARGET}",
                *(f"CREATE UNLOGGED TABLE {stage} ({stage_columns})" for stage in STAGES),
                f"CREATE UNLOGGED TABLE {ALL_ROWS} (seq bigint NOT NULL, {stage_columns})")
    # The oracle: every row the target has seen (pre-load first), reduced by the rule alone.
    raw = engine.raw_connection()
    try:
        conn = raw.driver_connection
        with conn.cursor() as cur:
            with cur.copy(f"COPY {ALL_ROWS} (seq, {ROW_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int8", "uuid", "int4", "text", "timestamp", "text"])
                for seq, r in enumerate(stream.preload(), start=-stream.existing):
                    copy.write_row((seq, *(r[c] if c != "details_json" else json.dumps(r[c]) for c in COLUMNS)))
                for seq, r in enumerate(stream.rows(), start=1):
                    copy.write_row((seq, *(r[c] if c != "details_json" else json.dumps(r[c]) for c in COLUMNS)))
        conn.commit()
    finally:
        raw.close()
    winners = (f"(SELECT DISTINCT ON ({Q('event_id')}) * FROM {ALL_ROWS} "
               f"ORDER BY {Q('event_id')}, {Q('time_stamp_utc')} DESC, seq) AS w")
    maintenance(engine, f"CREATE TABLE {ORACLE} AS {row_hashes(winners)}", f"ALTER TABLE {ORACLE} ADD PRIMARY KEY (e)",
                f"DROP TABLE {ALL_ROWS}", f"ANALYZE {ORACLE}")
    rows, digest = digest_of(engine, ORACLE)
    expected = stream.existing + stream.mix["new"]
    if rows != expected:
        raise SystemExit(f"FAILED: the oracle holds {rows:,} rows, {expected:,} expected")
    if dlt:  # dlt's own table, pre-loaded by dlt itself once, then saved like the target's rows
        maintenance(engine, f'DROP SCHEMA IF EXISTS "{DLT_DATASET}" CASCADE',
                    f'DROP SCHEMA IF EXISTS "{DLT_DATASET}_staging" CASCADE')
        run_child("dlt preload", url, stream.events, workdir)
        maintenance(engine, f"CREATE TABLE {DLT_PRELOAD} AS SELECT * FROM {DLT_TARGET}")
    return {"rows": rows, "digest": digest}


def reset(engine, dlt: bool) -> None:
    """The identical starting state for every run: target reloaded, vacuumed, analysed, checkpointed."""
    statements = [f"TRUNCATE {TARGET}, {STAGING}, {REJECTS}, {BATCH_LOG}, {', '.join(STAGES)}",
                  f"INSERT INTO {TARGET} SELECT * FROM {PRELOAD}"]
    tables = [TARGET, STAGING, REJECTS, BATCH_LOG, *STAGES]
    if dlt:
        statements += [f"TRUNCATE {DLT_TARGET}", f"INSERT INTO {DLT_TARGET} SELECT * FROM {DLT_PRELOAD}"]
        tables.append(DLT_TARGET)
    maintenance(engine, *statements, f"VACUUM (ANALYZE) {', '.join(tables)}", "CHECKPOINT")


def check(engine, oracle: dict, name: str) -> dict:
    """The contender's final table against the oracle: rows, digest, and how many rows differ."""
    source, timestamp = (DLT_TARGET, f"{Q('time_stamp_utc')} AT TIME ZONE 'UTC'") if name == DLT \
        else (TARGET, Q("time_stamp_utc"))
    rows, digest = digest_of(engine, source, timestamp)
    differ = 0
    if (rows, digest) != (oracle["rows"], oracle["digest"]):
        with engine.connect() as conn:
            differ = conn.exec_driver_sql(
                f"SELECT count(*) FROM {ORACLE} AS o FULL JOIN ({row_hashes(source, timestamp)}) AS c USING (e) "
                "WHERE o.h IS DISTINCT FROM c.h").scalar()
    return {"rows": rows, "digest": digest, "agrees": differ == 0 and rows == oracle["rows"], "differ": differ}


# ----------------------------------------------------------------------------- the contenders (child side)
BASELINE, BULK, STREAMING, TVP, PEER, DLT, SINGLE = (
    "baseline (tuned)", "bulk", "bulk, streaming input", "tvp", "SQLAlchemy executemany", "dlt merge", "single")
BASELINE_APPLY = f"""
INSERT INTO {TARGET} AS t ({ROW_COLUMNS})
SELECT DISTINCT ON (s.{Q('event_id')}) {", ".join("s." + Q(c) + ("::json" if c == "details_json" else "") for c in COLUMNS)}
FROM {{stage}} AS s
ORDER BY s.{Q('event_id')}, s.{Q('time_stamp_utc')} DESC
ON CONFLICT ({Q('event_id')}) DO UPDATE SET
    {", ".join(f"{Q(c)} = EXCLUDED.{Q(c)}" for c in COLUMNS if c != 'event_id')},
    {Q(SPEC.version)} = t.{Q(SPEC.version)} + 1
WHERE t.{Q('time_stamp_utc')} < EXCLUDED.{Q('time_stamp_utc')}
"""
BASELINE_SETTINGS = "SET work_mem = '256MB'; SET jit = off"
#: The baseline's staging columns (ROW_COLUMNS) in binary COPY, and one input row as it copies it.
BASELINE_TYPES = ["uuid", "int4", "text", "timestamp", "text"]


def baseline_values(row: dict, dumps: Callable[[Any], str]) -> tuple:
    return (row["event_id"], row["customer_id"], row["activity_type"], row["time_stamp_utc"],
            dumps(row["details_json"]))


def connect(url: str):
    import psycopg

    u = sa.make_url(url)
    params = u.translate_connect_args(username="user", database="dbname")
    params.update(u.query)
    return psycopg.connect(**params)


def run_baseline(url: str, rows: list[dict]) -> dict:
    """The tuned hand-written load (see the module docstring)."""
    apply_conn, load_conn = connect(url), connect(url)
    apply_conn.execute(BASELINE_SETTINGS)
    apply_conn.commit()
    free = [threading.Semaphore(1) for _ in STAGES]
    ready: queue.Queue = queue.Queue()
    failed: list[BaseException] = []
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

    def load():
        try:
            for k, first in enumerate(range(0, len(rows), BASELINE_CHUNK)):
                stage = k % 2
                free[stage].acquire()
                with load_conn.cursor() as cur:
                    with cur.copy(f"COPY {STAGES[stage]} ({ROW_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
                        copy.set_types(BASELINE_TYPES)
                        for r in rows[first:first + BASELINE_CHUNK]:
                            copy.write_row(baseline_values(r, dumps))
                load_conn.commit()
                ready.put(stage)
        except BaseException as exc:
            failed.append(exc)
        finally:
            ready.put(None)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    affected = 0
    while (stage := ready.get()) is not None:
        with apply_conn.cursor() as cur:
            cur.execute(BASELINE_APPLY.format(stage=STAGES[stage]))
            affected += cur.rowcount
            cur.execute(f"TRUNCATE {STAGES[stage]}")
        apply_conn.commit()
        free[stage].release()
    loader.join()
    apply_conn.close()
    load_conn.close()
    if failed:
        raise failed[0]
    return {"inserted + updated": affected}


def peer_statement(table: sa.Table):
    stmt = postgresql.insert(table)
    return stmt.on_conflict_do_update(
        index_elements=[table.c.event_id],
        set_={**{c: stmt.excluded[c] for c in COLUMNS if c != "event_id"},
              SPEC.version: table.c[SPEC.version] + 1},
        where=table.c.time_stamp_utc < stmt.excluded.time_stamp_utc,
    )


def check_peer(engine) -> str:
    """The peer's executemany must run row by row: a key twice in one call must just work."""
    if engine.dialect.use_insertmanyvalues_wo_returning:
        raise SystemExit("SQLAlchemy would batch the peer's executemany into multi-row VALUES; "
                         "the peer would then fail on in-batch duplicates")
    table = sa.Table(SPEC.table, sa.MetaData(), schema=PG.job_schema, autoload_with=engine)
    key = uuid.uuid4()
    rows = [{"event_id": key, "customer_id": 1, "activity_type": "login", "time_stamp_utc": STREAM_T0 + STEP * i,
             "details_json": {"i": i}} for i in (1, 2, 0)]
    with engine.connect() as conn:
        with conn.begin() as tx:
            conn.execute(peer_statement(table), rows)
            stored = conn.execute(sa.select(table.c.details_json, table.c[SPEC.version])
                                  .where(table.c.event_id == key)).one()
            tx.rollback()
    if tuple(stored) != ({"i": 2}, 2):
        raise SystemExit(f"the peer's executemany did not apply row by row: {tuple(stored)}")
    return ("SQLAlchemy's executemany runs the statement row by row (psycopg pipeline; insertmanyvalues is "
            "not used for it), so a key twice in one call works")


def run_peer(engine, rows: list[dict]) -> dict:
    from dbtools.upsert.writers import chunks

    table = sa.Table(SPEC.table, sa.MetaData(), schema=PG.job_schema, autoload_with=engine)
    stmt = peer_statement(table)
    sent = 0
    for chunk in chunks(rows, PEER_CHUNK):
        with engine.begin() as conn:
            conn.execute(stmt, chunk)
        sent += len(chunk)
    return {"sent": sent}


def dlt_pipeline(url: str, workdir: str):
    import dlt

    u = sa.make_url(url)
    credentials = {"database": u.database, "username": u.username, "password": u.password or "",
                   "host": u.host or "localhost", "port": u.port or 5432, "query": dict(u.query)}
    return dlt.pipeline(pipeline_name="bench_events", pipelines_dir=str(Path(workdir) / "dlt"),
                        destination=dlt.destinations.postgres(credentials=credentials), dataset_name=DLT_DATASET)


def run_dlt(url: str, rows, workdir: str) -> dict:
    """dlt's merge, as its docs configure it for "newest version per key"."""
    import dlt

    @dlt.resource(name=DLT_TABLE, primary_key="event_id", write_disposition="merge",
                  columns={"details_json": {"data_type": "json"}, "time_stamp_utc": {"dedup_sort": "desc"}})
    def events():
        yield rows

    info = dlt_pipeline(url, workdir).run(events())
    return {"loads": len(info.loads_ids)}


def peak_rss_mib() -> float:
    """This process's peak RSS (MiB). ``VmHWM`` rather than ``getrusage``'s ``ru_maxrss``: Linux
    carries ru_maxrss over fork and exec, so a child would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args) -> None:
    """One contender run in this (fresh) process; prints ``RESULT {json}`` last."""
    from dbtools.upsert.writers import DEFAULT_BATCH_SIZE, writer_for

    name = args.child
    stream = EventStream(args.events)
    if name == "dlt preload":
        run_dlt(args.url, list(stream.preload()), args.workdir)
        print("RESULT " + json.dumps({}))
        return
    streaming = name == STREAMING or args.streaming
    rows = stream.rows() if streaming else list(stream.rows())
    gc.collect()
    gc.freeze()  # the input is the harness's: no garbage collection walks it during the run
    engine = sa.create_engine(args.url)
    path = {BULK: "bulk", STREAMING: "bulk", TVP: "tvp", SINGLE: "single"}.get(name)
    batch = DEFAULT_BATCH_SIZE.get(path) if path else {BASELINE: BASELINE_CHUNK, PEER: PEER_CHUNK}.get(name, 0)
    start = time.perf_counter()
    cpu = time.process_time()
    if path:
        detail = writer_for(path, engine, SPEC).upsert(rows).as_dict()
    elif name == BASELINE:
        detail = run_baseline(args.url, rows)
    elif name == PEER:
        detail = run_peer(engine, rows)
    elif name == DLT:
        detail = run_dlt(args.url, rows, args.workdir)
    else:
        raise SystemExit(f"unknown contender {name!r}")
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    engine.dispose()
    rss = peak_rss_mib()
    print("RESULT " + json.dumps({"seconds": seconds, "cpu": cpu, "rss_mib": rss, "batch": batch, "detail": detail,
                                  "mix": dict(stream.mix)}))


# ----------------------------------------------------------------------------- the parent
def run_child(name: str, url: str, events: int, workdir: str, streaming: bool = False) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--url", url, "--events", str(events),
               "--workdir", workdir] + (["--streaming"] if streaming else [])
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    results = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not results:
        raise SystemExit(f"FAILED: {name} ({events:,} events) exited {done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(results[-1][len("RESULT "):])


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def measure_group(engine, url: str, workdir: str, stream: EventStream, names: list[str], rounds: int,
                  log: Callable[[str], None]) -> dict:
    dlt = DLT in names
    oracle = setup_group(engine, stream, dlt, workdir, url)
    log(f"{stream.events:,} events: oracle {oracle['rows']:,} rows, digest {oracle['digest'][:12]}")
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            reset(engine, dlt)
            before = load()
            result = run_child(name, url, stream.events, workdir)
            result.update(round=r + 1, load=before, rate=stream.events / result["seconds"], **check(engine, oracle, name))
            runs[name].append(result)
            log(f"round {r + 1} {name}: {result['seconds']:.2f} s, {result['rate']:,.0f} rows/s, "
                f"RSS {result['rss_mib']:.0f} MiB, {'agrees' if result['agrees'] else 'DISAGREES'} "
                f"(differ {result['differ']:,}), load {before}")
    for name, results in runs.items():
        if name != DLT and not all(x["agrees"] for x in results):
            raise SystemExit(f"FAILED: {name} left a table that disagrees with the newest-wins oracle: {results}")
    return {"events": stream.events, "existing": stream.existing, "mix": dict(stream.mix), "oracle": oracle,
            "runs": runs}


def measure_memory(engine, url: str, workdir: str, sizes: list[int], paths: list[str],
                   log: Callable[[str], None]) -> dict:
    """Peak RSS of a writer's own process, streaming input, per input size."""
    from dbtools.upsert.writers import writer_for

    memory: dict[str, dict[str, float]] = {path: {} for path in paths}
    for size in sizes:
        stream = EventStream(size)
        for path in paths:
            maintenance(engine, f"TRUNCATE {TARGET}, {STAGING}, {REJECTS}, {BATCH_LOG}")
            writer_for("bulk", engine, SPEC).upsert(stream.preload())
            maintenance(engine, f"VACUUM (ANALYZE) {TARGET}", "CHECKPOINT")
            result = run_child({"bulk": BULK, "tvp": TVP}[path], url, size, workdir, streaming=True)
            memory[path][str(size)] = result["rss_mib"]
            log(f"RSS {path}, {size:,} events (streaming): {result['rss_mib']:.1f} MiB, {result['seconds']:.1f} s")
    return memory


def machine(version: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    kib = int(Path("/proc/meminfo").read_text().split()[1])
    return (f"{os.cpu_count()} cores ({cpu}), {kib / 2**20:.0f} GiB RAM, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, PostgreSQL {version} (pgserver)")


def dlt_available() -> str | None:
    """None when dlt can run here, else why not."""
    try:
        import dlt  # noqa: F401
        import psycopg2  # noqa: F401
    except ImportError as exc:
        return f"dlt is not installed ({exc}); install the bench extra: pip install -e '.[bench]'"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=None, help="measured events (default 1,000,000)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds, order rotated (default 5)")
    parser.add_argument("--single-events", type=int, default=None, help="events for single and its tvp pair")
    parser.add_argument("--rss-events", default=None, help="sizes for the peak RSS runs (default 300000,3000000)")
    parser.add_argument("--contenders", default=None, help="comma-separated subset of the main contenders")
    parser.add_argument("--no-dlt", action="store_true", help="leave dlt out")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak RSS runs")
    parser.add_argument("--rss-paths", default="bulk,tvp", help="writers of the peak RSS runs (default bulk,tvp)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 50,000 events, 2 rounds, small RSS runs")
    parser.add_argument("--save", type=Path, help="write the results as JSON")
    parser.add_argument("--render", type=Path, nargs="+", help="render saved results (before, after; or LABEL=PATH each) into the docs")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--streaming", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.render:
        import upserts_report

        return upserts_report.render_docs(args.render)
    n = args.events or (50_000 if args.quick else 1_000_000)
    rounds = args.rounds or (2 if args.quick else 5)
    small_n = args.single_events or (2_000 if args.quick else SMALL_EVENTS)
    rss_sizes = [int(x) for x in (args.rss_events or ("20000,200000" if args.quick else "300000,3000000")).split(",")]
    names = args.contenders.split(",") if args.contenders else [BASELINE, BULK, STREAMING, TVP, PEER, DLT]
    why_no_dlt = "left out (--no-dlt)" if args.no_dlt else dlt_available()
    if why_no_dlt and DLT in names:
        names.remove(DLT)

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    from embedded import fresh_database, private_server

    report: dict = {"date": dt.datetime.now().isoformat(timespec="minutes"), "load_start": load(),
                    "command": " ".join(["bench/upserts.py", *sys.argv[1:]]), "rounds": rounds,
                    "baseline_settings": BASELINE_SETTINGS, "baseline_chunk": BASELINE_CHUNK, "no_dlt": why_no_dlt}
    with private_server() as admin_url, tempfile.TemporaryDirectory(prefix="dbtools-upserts-") as workdir:
        url = fresh_database(admin_url, "bench")
        url_text = url.render_as_string(hide_password=False)
        engine = sa.create_engine(url, poolclass=NullPool)
        with engine.connect() as conn:
            version = conn.exec_driver_sql("SHOW server_version").scalar()
        report["machine"] = machine(version)
        report["peer_check"] = check_peer(engine)
        log(report["peer_check"])
        report["main"] = measure_group(engine, url_text, workdir, EventStream(n), names, rounds, log)
        report["small"] = measure_group(engine, url_text, workdir, EventStream(small_n), [TVP, SINGLE], rounds, log)
        if not args.no_memory:
            report["memory"] = measure_memory(engine, url_text, workdir, rss_sizes, args.rss_paths.split(","), log)
        engine.dispose()
    report["load_end"] = load()
    import upserts_report

    print(upserts_report.summary(report))
    if args.save:
        args.save.write_text(json.dumps(report, indent=1, default=str))
        log(f"saved {args.save}")


if __name__ == "__main__":
    main()
