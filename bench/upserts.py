"""Benchmark the event upsert paths on PostgreSQL (a private pgserver; nothing else is touched).

One deterministic stream of CustomerActivityEvent rows (seeded; generated lazily, never a list)
goes, from the same pre-loaded starting state, through:

* the three writers of dbtools.upsert: ``bulk`` (COPY into staging + reconcile procedure, 50,000
  rows per chunk), ``tvp`` (array of the row type, 1,000 rows per call) and ``single`` (one
  procedure call per row; only at --single-events rows, 10,000 by default); ``bulk`` also with
  ``prefetch=False`` (no chunk read ahead while the database works), to show what that brings;
* the hand-tuned baseline: COPY into a TEMP table with the target's columns, then ONE
  ``INSERT ... SELECT DISTINCT ON (event_id) ... ON CONFLICT (event_id) DO UPDATE ... WHERE``,
  committed per 50,000-row chunk;
* the SQLAlchemy peer, what a user would otherwise write: ``postgresql.insert(table)
  .on_conflict_do_update(...)`` executed with a list of 1,000 parameter dicts (executemany,
  which runs the statement row by row, so in-batch duplicates need no dedupe).

Before each contender the target, staging, reject and batch-log tables are truncated and the
same existing events (a quarter of the stream's size) are pre-loaded, untimed, with the bulk
writer. The measured stream is 70 % new events, 20 % newer versions of pre-loaded events, 5 %
stale versions of pre-loaded events (older than the stored row) and 5 % in-batch duplicates
(an exact repeat of a row sent earlier in the same 1,000-row block, so inside one chunk of
every contender). After each contender the target is digested (every column but row_version)
and every contender must leave the same table, or the benchmark fails.

Goals (issue text): bulk >= 0.9 of the baseline's rate and >= 2x the peer's; tvp >= 20x single
at 10k rows; peak Python memory (tracemalloc) of the bulk and tvp writers flat from 1/10 of the
stream to all of it (ratio <= 1.5). Also UUIDv7 against UUIDv4 keys for the bulk path.

Every timed contender runs --repeat times (default 3), the contenders taking turns, and its
median run is reported: the shared machine's speed changes during a run, and taking turns puts
such a change on every contender alike.

Usage: python bench/upserts.py [--events 1000000] [--single-events 10000] [--repeat 3] [--quick] [--record]
Prints the tables; with --record also rewrites the "Event upserts" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import re
import statistics
import sys
import time
import tracemalloc
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table
from sqlalchemy.dialects import postgresql

from embedded import fresh_database, private_server

from dbtools.upsert import writers
from dbtools.db.engines import engine_for
from dbtools.upsert.specs import spec_named
from dbtools.upsert.writers import chunks, writer_for

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


# ----------------------------------------------------------------------------- the server
def scalar(engine, sql):
    with engine.connect() as conn:
        return conn.exec_driver_sql(sql).scalar()


def maintenance(engine, *statements):
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)


def prepare_state(engine, stream: EventStream) -> None:
    """Empty the entity's tables and pre-load the existing events (untimed), then settle."""
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {TARGET}, {STAGING}, {REJECTS}, {BATCH_LOG}")
    counts = writer_for("bulk", engine, SPEC).upsert(stream.preload())
    assert counts.inserted == stream.existing, counts
    maintenance(engine, f"VACUUM (ANALYZE) {TARGET}", f"VACUUM (ANALYZE) {STAGING}",
                f"VACUUM (ANALYZE) {BATCH_LOG}", "CHECKPOINT")


DIGEST = f"""
SELECT count(*), count(*) FILTER (WHERE {Q(SPEC.version)} > 1), coalesce(sum({Q(SPEC.version)}), 0),
       md5(string_agg(md5(concat_ws('|', {Q('event_id')}, {Q('customer_id')}, {Q('activity_type')},
                                        {Q('time_stamp_utc')}, {Q('details_json')}::jsonb::text)),
                      '' ORDER BY {Q('event_id')}))
FROM {TARGET}
"""


@dataclass
class State:
    rows: int
    updated_rows: int  # rows with row_version > 1
    versions: int  # sum of row_version (differs by path: the peer counts every applied row)
    digest: str  # every column but row_version, rows in key order


def state_of(engine) -> State:
    with engine.connect() as conn:
        rows, updated, versions, digest = conn.exec_driver_sql(DIGEST).one()
    return State(rows, updated, int(versions), digest)


# ----------------------------------------------------------------------------- the contenders
class DbClock:
    """Seconds spent inside the database calls of a contender (the rest is client work)."""

    def __init__(self):
        self.seconds = 0.0

    def wrap(self, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
        return timed


def run_writer(path: str, batch_size: int | None = None, **options) -> Callable:
    def run(engine, rows: Iterable[dict], clock: DbClock):
        original = writers.call_procedure  # the writers' procedure calls (reconcile / batch / single)
        writers.call_procedure = clock.wrap(original)
        try:
            counts = writer_for(path, engine, SPEC, batch_size=batch_size, **options).upsert(rows)
        finally:
            writers.call_procedure = original
        return counts.as_dict()
    return run


STAGE_COLUMNS = ", ".join(f"{Q(c.name)} {c.target_type(PG)}" for c in SPEC.columns)
BASELINE_INSERT = f"""
INSERT INTO {TARGET} AS t ({", ".join(Q(c) for c in COLUMNS)})
SELECT DISTINCT ON (s.{Q('event_id')}) {", ".join("s." + Q(c) for c in COLUMNS)}
FROM pg_temp.stage AS s
ORDER BY s.{Q('event_id')}, s.{Q('time_stamp_utc')} DESC
ON CONFLICT ({Q('event_id')}) DO UPDATE SET
    {", ".join(f"{Q(c)} = EXCLUDED.{Q(c)}" for c in COLUMNS if c != 'event_id')},
    {Q(SPEC.version)} = t.{Q(SPEC.version)} + 1
WHERE t.{Q('time_stamp_utc')} < EXCLUDED.{Q('time_stamp_utc')}
"""


def run_baseline(engine, rows: Iterable[dict], clock: DbClock):
    """Hand-tuned: COPY into a TEMP table, one INSERT ... ON CONFLICT ... WHERE, per chunk."""
    raw = engine.raw_connection()
    try:
        conn = raw.driver_connection
        conn.execute(f"CREATE TEMP TABLE stage ({STAGE_COLUMNS}) ON COMMIT DELETE ROWS")
        conn.commit()
        affected = 0
        dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
        for chunk in chunks(rows, BASELINE_CHUNK):
            with conn.cursor() as cur:
                with cur.copy(f"COPY pg_temp.stage ({', '.join(Q(c) for c in COLUMNS)}) FROM STDIN") as copy:
                    for r in chunk:
                        copy.write_row((r["event_id"], r["customer_id"], r["activity_type"], r["time_stamp_utc"],
                                        dumps(r["details_json"])))
                start = time.perf_counter()
                cur.execute(BASELINE_INSERT)
                clock.seconds += time.perf_counter() - start
                affected += cur.rowcount
                conn.commit()
        conn.execute("DROP TABLE pg_temp.stage")
        conn.commit()
    finally:
        raw.close()
    return {"inserted + updated": affected}


def peer_table(engine) -> sa.Table:
    return sa.Table(SPEC.table, sa.MetaData(), schema=PG.job_schema, autoload_with=engine)


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
    table = peer_table(engine)
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
    return "executemany row by row (psycopg pipeline); a key twice in one call works"


def run_peer(engine, rows: Iterable[dict], clock: DbClock):
    """What a user would otherwise write: insert().on_conflict_do_update, executemany per chunk."""
    table = peer_table(engine)
    stmt = peer_statement(table)
    sent = 0
    for chunk in chunks(rows, PEER_CHUNK):
        with engine.begin() as conn:
            start = time.perf_counter()
            conn.execute(stmt, chunk)  # (includes SQLAlchemy's parameter processing)
            clock.seconds += time.perf_counter() - start
        sent += len(chunk)
    return {"sent": sent}


@dataclass
class Result:
    name: str
    events: int
    batch: int
    seconds: float
    db_seconds: float
    detail: dict
    state: State
    keys: str = "v7"

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def measure(engine, entries: list[tuple[str, Callable, EventStream, int]], repeat: int,
            console: Console) -> list[Result]:
    """Time each (name, run, stream, batch) entry ``repeat`` times; keep each one's median run.

    The entries take turns (round robin), so a change of the shared machine's speed during the
    benchmark falls on all of them alike instead of on whichever ran at that moment.
    """
    runs: list[list[Result]] = [[] for _ in entries]
    for _ in range(repeat):
        for (name, run, stream, batch), results in zip(entries, runs):
            prepare_state(engine, stream)
            clock = DbClock()
            start = time.perf_counter()
            detail = run(engine, stream.rows(), clock)
            seconds = time.perf_counter() - start
            results.append(Result(name, stream.events, batch, seconds, clock.seconds, detail, state_of(engine),
                                  stream.keys))
            console.log(f"{name} ({stream.keys}, {stream.events:,} events): {seconds:.2f} s "
                        f"({stream.events / seconds:,.0f} rows/s), {detail}")
    medians = []
    for results in runs:
        result = sorted(results, key=lambda r: r.seconds)[len(results) // 2]
        if len(results) > 1:
            console.log(f"{result.name} ({result.keys}): median {result.seconds:.2f} s of "
                        + ", ".join(f"{r.seconds:.2f}" for r in results))
        medians.append(result)
    return medians


def measure_memory(engine, path: str, stream: EventStream, console: Console) -> float:
    """Peak Python memory (tracemalloc, MiB) of one writer over the whole stream."""
    prepare_state(engine, stream)
    rows = stream.rows()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        writer_for(path, engine, SPEC).upsert(rows)
        peak = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    console.log(f"memory {path}, {stream.events:,} events: peak {peak:.1f} MiB")
    return peak


def time_source(stream: EventStream) -> float:
    start = time.perf_counter()
    for _ in stream.rows():
        pass
    return time.perf_counter() - start


def verify(group: str, results: list[Result], console: Console) -> None:
    digests = {r.state.digest for r in results}
    rows = {r.state.rows for r in results}
    if len(digests) != 1 or len(rows) != 1:
        for r in results:
            console.print(f"  {r.name}: {r.state}")
        raise SystemExit(f"FAILED: {group}: the contenders left DIFFERENT target tables; the comparison is void")
    console.print(f"{group}: target tables identical across {', '.join(r.name for r in results)} "
                  f"({results[0].state.rows:,} rows, digest {results[0].state.digest[:12]})")


# ----------------------------------------------------------------------------- the report
def machine(version: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (f"{os.cpu_count()} cores ({cpu}){memory}, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, PostgreSQL {version} (pgserver)")


def met(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def render(report: dict) -> str:
    """The "Event upserts" section of docs/benchmarks.md, between its markers."""
    r, n = report, report["events"]
    mix = r["mix"]
    total = sum(mix.values())
    lines = [BEGIN, "## Event upserts (`bench/upserts.py`)", "",
             "Generated by the script (`--record`); rerun it rather than editing by hand.", "",
             "```sh", f".venv/bin/python {r['command']}", "```", "",
             f"Measured {r['date']} on {r['machine']}.", "",
             f"Stream: {n:,} CustomerActivityEvent rows after {r['existing']:,} pre-loaded events (untimed, "
             "reloaded before every contender): "
             + ", ".join(f"{mix[k] / total:.1%} {label}" for k, label in
                         (("new", "new"), ("newer", "newer versions of pre-loaded events"),
                          ("stale", "stale versions (older than stored)"),
                          ("duplicate", f"in-batch duplicates (repeats within a {DUP_WINDOW:,}-row block)")))
             + f". Seeded (`{SEED}`), generated lazily; every contender gets the same rows and the same "
             "starting table, and every contender left the same target table (digest of all columns but "
             f"`row_version`: `{r['digest'][:12]}`, {r['rows']:,} rows; at {r['single_events']:,} events: "
             f"`{r['digest_small'][:12]}`). Generating the stream alone takes {r['source']:.2f} s "
             "(included in every time below). Keys are UUIDv7 unless stated. "
             + (f"Every time is the median of {r['repeat']} runs, the contenders taking turns (round robin), "
                "so that a change of the machine's speed falls on all of them alike." if r["repeat"] > 1
                else "Every time is a single run."), "",
             "| contender | events | batch | time (s) | rows/s | in database calls (s) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for res in r["results"]:
        lines.append(f"| {res.name} | {res.events:,} | {res.batch:,} | {res.seconds:.2f} | {res.rate:,.0f} "
                     f"| {res.db_seconds:.2f} |")
    lines += ["", "*In database calls*: the procedure calls (writers: reconcile, batch or single-row procedure; "
              "for tvp this includes psycopg adapting the row array), the INSERT (baseline), the executemany "
              "call (peer). The rest is client work (generating, converting and COPYing rows) and commits.", "",
              "| goal | measured | |", "| --- | ---: | --- |"]
    for label, value, ok in r["goals"]:
        lines.append(f"| {label} | {value} | {met(ok)} |")
    sizes = r["memory_sizes"]
    lines += ["", "Peak Python memory (tracemalloc) of the writers over the whole stream, including the "
              "generator's bounded state:", "",
              "| writer | " + " | ".join(f"{s:,} events (MiB)" for s in sizes) + " | ratio | goal <= 1.5 |",
              "| --- | " + " | ".join("---:" for _ in sizes) + " | ---: | --- |"]
    for path, peaks in r["memory"].items():
        ratio = peaks[-1] / peaks[0]
        lines.append(f"| {path} | " + " | ".join(f"{p:.1f}" for p in peaks) + f" | {ratio:.2f} | {met(ratio <= 1.5)} |")
    v7, v4 = r["keys"]
    lines += ["", f"Bulk path, {n:,} events, UUIDv7 against UUIDv4 keys (same mix; only the keys differ):", "",
              "| keys | time (s) | rows/s | in database calls (s) |", "| --- | ---: | ---: | ---: |"]
    for res in (v7, v4):
        lines.append(f"| {res.keys} | {res.seconds:.2f} | {res.rate:,.0f} | {res.db_seconds:.2f} |")
    lines.append(f"| v7 / v4 rate | {v7.rate / v4.rate:.2f} | | |")
    names = [res.name if res.events == n else f"{res.name} ({res.events // 1000:,}k)" for res in r["results"]]
    top = max(res.rate for res in r["results"])
    lines += ["", "```mermaid", "xychart-beta",
              f'    title "Rows per second ({n:,} events; single and its tvp pair at {r["single_events"]:,})"',
              "    x-axis [" + ", ".join(f'"{name}"' for name in names) + "]",
              f'    y-axis "rows/s" 0 --> {int(top * 1.1)}',
              "    bar [" + ", ".join(f"{res.rate:.0f}" for res in r["results"]) + "]", "```", "", END]
    return "\n".join(lines)


def record(section: str) -> None:
    text = DOC.read_text()
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    blocks = list(pattern.finditer(text))
    if blocks:
        # The first block is replaced; any further copy (e.g. a doubled merge) is dropped.
        for block in reversed(blocks[1:]):
            text = text[:block.start()].rstrip("\n") + "\n\n" + text[block.end():].lstrip("\n")
        text = pattern.sub(lambda _: section, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOC.write_text(text)


def show(console: Console, report: dict) -> None:
    table = Table(title=f"Event upserts, {report['events']:,} events ({report['machine']})")
    for col in ("contender", "keys", "events", "batch", "time (s)", "rows/s", "db calls (s)"):
        table.add_column(col, justify="left" if col in ("contender", "keys") else "right")
    for res in [*report["results"], report["keys"][1]]:
        table.add_row(res.name, res.keys, f"{res.events:,}", f"{res.batch:,}", f"{res.seconds:.2f}",
                      f"{res.rate:,.0f}", f"{res.db_seconds:.2f}")
    console.print(table)
    goals = Table(title="Goals")
    for col in ("goal", "measured", ""):
        goals.add_column(col)
    for label, value, ok in report["goals"]:
        goals.add_row(label, value, "met" if ok else "[bold red]missed[/]")
    console.print(goals)
    memory = Table(title="Peak Python memory (tracemalloc, MiB)")
    memory.add_column("writer")
    for size in report["memory_sizes"]:
        memory.add_column(f"{size:,}", justify="right")
    memory.add_column("ratio", justify="right")
    for path, peaks in report["memory"].items():
        memory.add_row(path, *(f"{p:.1f}" for p in peaks), f"{peaks[-1] / peaks[0]:.2f}")
    console.print(memory)
    console.print(f"generating the stream alone: {report['source']:.2f} s; {report['peer_check']}")


# ----------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=None, help="measured events (default 1,000,000)")
    parser.add_argument("--single-events", type=int, default=10_000,
                        help="events for the single-row path and its tvp comparison")
    parser.add_argument("--quick", action="store_true", help="100,000 events (unless --events): a fast check")
    parser.add_argument("--repeat", type=int, default=3,
                        help="timed runs per contender, taking turns (the median is kept; default 3)")
    parser.add_argument("--record", action="store_true", help="rewrite the Event upserts section of docs/benchmarks.md")
    args = parser.parse_args()
    n = args.events or (100_000 if args.quick else 1_000_000)
    console = Console(stderr=True)

    with private_server() as admin_url:
        url = fresh_database(admin_url, "bench")
        engine = sa.create_engine(url)  # pooled: the writers take a connection per chunk (or row)
        version = scalar(engine, "SHOW server_version")
        peer_check = check_peer(engine)
        console.log(peer_check)

        stream = EventStream(n)
        source = time_source(stream)
        mix = stream.mix
        console.log(f"stream of {n:,} events generated in {source:.2f} s: {dict(mix)}")
        v4_stream = EventStream(n, keys="v4")
        contenders = [("bulk", run_writer("bulk"), stream, BULK_BATCH),
                      ("bulk, no read-ahead", run_writer("bulk", prefetch=False), stream, BULK_BATCH),
                      ("baseline (COPY + one INSERT)", run_baseline, stream, BASELINE_CHUNK),
                      ("tvp", run_writer("tvp"), stream, TVP_BATCH),
                      ("SQLAlchemy peer (executemany)", run_peer, stream, PEER_CHUNK),
                      ("bulk", run_writer("bulk"), v4_stream, BULK_BATCH)]
        *main_results, v4 = measure(engine, contenders, args.repeat, console)
        verify(f"{n:,} events", main_results, console)
        expected_rows = stream.existing + mix["new"]
        if main_results[0].state.rows != expected_rows:
            raise SystemExit(f"FAILED: {main_results[0].state.rows:,} rows in the target, {expected_rows:,} expected")

        small = EventStream(args.single_events)
        small_results = measure(engine, [("tvp", run_writer("tvp"), small, TVP_BATCH),
                                         ("single", run_writer("single"), small, 1)], args.repeat, console)
        verify(f"{small.events:,} events", small_results, console)

        v7 = main_results[0]
        if (v4.state.rows, v4.state.updated_rows, v4.state.versions) != (v7.state.rows, v7.state.updated_rows,
                                                                           v7.state.versions):
            raise SystemExit(f"FAILED: v4 and v7 streams did different work: {v4.state} / {v7.state}")

        # 1/10 of the stream, but at least two bulk chunks (a smaller run holds a smaller chunk).
        sizes = (n // 10 if n // 10 >= 2 * BULK_BATCH else min(2 * BULK_BATCH, n // 2), n)
        memory = {path: [measure_memory(engine, path, EventStream(size), console) for size in sizes]
                  for path in ("bulk", "tvp")}
        engine.dispose()

    by = {r.name: r for r in main_results}
    bulk, baseline, peer = by["bulk"], by["baseline (COPY + one INSERT)"], by["SQLAlchemy peer (executemany)"]
    tvp_small, single = small_results
    goals = [
        (f"bulk / baseline rate, {n:,} events (goal >= 0.9)", f"{bulk.rate / baseline.rate:.2f}",
         bulk.rate / baseline.rate >= 0.9),
        (f"bulk / SQLAlchemy peer rate, {n:,} events (goal >= 2)", f"{bulk.rate / peer.rate:.2f}",
         bulk.rate / peer.rate >= 2),
        (f"tvp / single rate, {small.events:,} events (goal >= 20)", f"{tvp_small.rate / single.rate:.1f}",
         tvp_small.rate / single.rate >= 20),
    ]
    for path, peaks in memory.items():
        goals.append((f"{path} writer peak memory, {sizes[1]:,} / {sizes[0]:,} events (goal <= 1.5)",
                      f"{peaks[1] / peaks[0]:.2f}", peaks[1] / peaks[0] <= 1.5))
    report = {
        "events": n, "existing": stream.existing, "mix": mix, "single_events": small.events,
        "results": [*main_results, *small_results], "keys": (v7, v4), "goals": goals,
        "memory_sizes": sizes, "memory": memory, "repeat": args.repeat, "source": source, "peer_check": peer_check,
        "digest": main_results[0].state.digest, "rows": main_results[0].state.rows,
        "digest_small": small_results[0].state.digest,
        "machine": machine(version), "date": dt.date.today().isoformat(),
        "command": " ".join(["bench/upserts.py", *sys.argv[1:]]),
    }
    show(console, report)
    section = render(report)
    print(section)
    if args.record:
        record(section)
        console.log(f"recorded in {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
