"""Benchmark a paged sync session against the bulk path on PostgreSQL (issue 21; a private pgserver).

The question: a full sync of ``--devices`` JasperDevice rows (200,000) in ``--page-size``-row pages
(1,000) from the local carrier API, against the ``bulk`` path loading the same rows from a JSON
Lines file (the code ``dbtools ingest --path bulk`` runs). Goal: the sync's throughput at least 0.8
of the bulk path's (bulk seconds / sync seconds >= 0.8). The session's cost per page is recorded.

Method (the house rules of docs/benchmarks.md):

* **Input built before the clock.** The parent makes the devices once (``tests/carrier_api.py``'s
  ``make_devices``: every device modified inside the full sync's window at the fixed clock
  ``AS_OF``), writes them as JSON Lines with ``ServiceProviderId`` filled in (the bulk
  contender's file), and starts the carrier API on them. The API encodes a device once, when it
  first serves it: the parent reads every page once through ``HttpSource`` before any run, so a
  timed sync only fetches pre-encoded pages.
* **The API server runs in the parent process** (a thread), not in the contender's: in the child
  it would share the contender's GIL, which no real carrier API does. It still shares the 2 cores
  with the database and the contender, as any local source must; its CPU time during each sync is
  measured (the parent does nothing else meanwhile) and reported.
* **A fresh process per contender run** (``python bench/sync.py --child ...``) against an identical
  reset target: ``TRUNCATE`` of JasperDevices, its staging and reject tables, UpsertBatchLog and
  the three sync tables, then ``VACUUM (ANALYZE)`` and ``CHECKPOINT``, all before the child starts.
  TRUNCATE rather than DELETE: every run starts from new, empty table and index files, so what a
  contender leaves behind (200,000 dead rows, index pages, a full-size staging file) never reaches
  the next one, whichever ran before; a DELETE would leave a start that depends on the order.
* **Rounds**: ``--rounds`` (5); the order of the contenders is rotated every round. The median and
  every round are reported, and each round's ratios (a round's contenders ran a minute apart at most).
* **An oracle**: the devices are copied into a table by plain psycopg (not through dbtools) and
  reduced with ``DISTINCT ON (ServiceProviderId, ICCID) ... ORDER BY ModifiedDate DESC``; each
  contender's final table is compared with it (row count and an MD5 digest of every column but
  ``row_version``, in key order). A run that disagrees fails the benchmark.
* **The baseline as fast as it goes**: the bulk writer reading the file with
  ``dbtools.upsert.ingest.read_jsonl`` (its COPY runs a chunk ahead of the reconcile), at each of
  ``--bulk-batches`` rows per chunk, each a contender of its own: by default 20,000, the fastest of
  10,000, 20,000, 50,000 and 100,000 in rotated A/B runs on this machine, and the path's own
  default, 50,000. The goal's ratio is taken against the fastest.
* **Where the sync's time goes**: the sync child wraps (without changing them) the session's
  procedure calls, its stager (convert, stage) and the HTTP source's request and page parsing, and
  records each page's load from ``on_page``; the page loads, the waits for the next page, Begin and
  Promote add up to the wall time. Fetching, parsing and converting run in a thread a page ahead.
* **CPU**: the contender's own (``time.process_time``), the API server's (the parent's) and the
  database server's (the postmaster's and its children's user + system time from ``/proc``).
* **Memory**: peak RSS of the contender's process (``VmHWM``).

Usage: python bench/sync.py [--devices 200000] [--page-size 1000] [--rounds 5] [--bulk-batches 20000,50000]
                           [--quick] [--save out.json]
Prints Markdown tables (progress on stderr).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

import dbtools
from dbtools.db.engines import engine_for
from dbtools.upsert.specs import spec_named

ROOT = Path(__file__).resolve().parents[1]
SPEC = spec_named("JasperDevice")
PG = engine_for("postgresql")
Q, JOB = PG.quote, PG.job_object
TARGET, STAGING, REJECTS = (SPEC.table_object(PG, SPEC.table), SPEC.table_object(PG, SPEC.staging),
                            SPEC.table_object(PG, SPEC.rejects))
SYNC_TABLES = [JOB("SyncSessionPage"), JOB("SyncSession"), JOB("SyncScopeState")]
ALL_TABLES = [TARGET, STAGING, REJECTS, JOB("UpsertBatchLog"), *SYNC_TABLES]
COLUMNS = [c.name for c in SPEC.columns]
KEYS = list(SPEC.keys)

SCOPE = 42  # the ServiceProviderId synced
AS_OF = dt.datetime(2026, 3, 31, 12, 0, 0)  # the sync's clock
SINCE = dt.datetime(2026, 2, 27, 12, 0, 0)  # a full sync's since-date at AS_OF: one month and one day before
START = dt.datetime(2026, 3, 1)  # device n is modified at START + n * STEP (200,000 devices: to 2026-03-24)
STEP = dt.timedelta(seconds=10)

SYNC, BULK = "sync", "bulk"
BENCH = '"bench"'
ORACLE = f"{BENCH}.oracle"


# ----------------------------------------------------------------------------- helpers
def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def peak_rss_mib() -> float:
    """This process's peak RSS (MiB), ``VmHWM`` (``ru_maxrss`` would carry the parent's over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("no VmHWM in /proc/self/status")


def maintenance(engine, *statements):
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)


def carrier_api_module():
    """tests/carrier_api.py (the local carrier API the tests use), imported from the repository root."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests import carrier_api

    return carrier_api


# ----------------------------------------------------------------------------- the database server's CPU
_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields from the state on (field 3)


def postmaster_pid(engine) -> int:
    with engine.connect() as conn:  # the backend's parent, read while it lives
        return int(_stat(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar())[1])


def db_cpu(postmaster: int) -> float:
    """User + system seconds of the postmaster, its reaped children and its live children."""
    fields = _stat(postmaster)
    total = sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            child = _stat(int(entry.name))
            if child is not None and int(child[1]) == postmaster:
                total += int(child[11]) + int(child[12])
    return total / _TICKS


# ----------------------------------------------------------------------------- the oracle and the reset
def row_hashes(source: str) -> str:
    """(k, h) per row of ``source``: its key as text and an MD5 of every column but row_version."""
    key = " || '|' || ".join(f"{Q(k)}::text" for k in KEYS)
    values = ", ".join(f"{Q(c)}::text" for c in COLUMNS)
    return f"SELECT {key} AS k, md5(concat_ws('|', {values})) AS h FROM {source}"


def digest_of(engine, source: str) -> tuple[int, str]:
    hashes = f"SELECT k, h FROM {ORACLE}" if source == ORACLE else row_hashes(source)
    with engine.connect() as conn:
        rows, digest = conn.exec_driver_sql(
            f"SELECT count(*), md5(string_agg(x.h, '' ORDER BY x.k)) FROM ({hashes}) AS x").one()
    return rows, digest


def typed(device: dict) -> tuple:
    """A device's values as the table holds them, converted here (not by dbtools)."""
    def ts(text):
        return None if text is None else dt.datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None)

    row = {**device, "ServiceProviderId": SCOPE}
    return tuple(ts(row.get(c)) if c in ("CreatedDate", "ModifiedDate") else row.get(c) for c in COLUMNS)


def build_oracle(engine, devices: list[dict]) -> dict:
    import psycopg

    staged_types = ", ".join(f"{Q(c.name)} {c.target_type(PG)}" for c in SPEC.columns)
    maintenance(engine, f"CREATE SCHEMA IF NOT EXISTS {BENCH}", f"DROP TABLE IF EXISTS {BENCH}.sent, {ORACLE}",
                f"CREATE UNLOGGED TABLE {BENCH}.sent (seq bigint NOT NULL, {staged_types})")
    url = engine.url
    params = url.translate_connect_args(username="user", database="dbname")
    params.update(url.query)
    with psycopg.connect(**params) as conn:
        with conn.cursor() as cur:
            with cur.copy(f"COPY {BENCH}.sent (seq, {', '.join(Q(c) for c in COLUMNS)}) FROM STDIN") as copy:
                for seq, device in enumerate(devices):
                    copy.write_row((seq, *typed(device)))
    keys = ", ".join(Q(k) for k in KEYS)
    winners = f"(SELECT DISTINCT ON ({keys}) * FROM {BENCH}.sent ORDER BY {keys}, {Q(SPEC.ordering)} DESC, seq DESC) AS w"
    maintenance(engine, f"CREATE TABLE {ORACLE} AS {row_hashes(winners)}", f"DROP TABLE {BENCH}.sent")
    rows, digest = digest_of(engine, ORACLE)
    if rows != len({d["ICCID"] for d in devices}):
        raise SystemExit(f"FAILED: the oracle holds {rows:,} rows for {len(devices):,} distinct devices")
    return {"rows": rows, "digest": digest}


def reset(engine) -> None:
    """The identical start of every run: every table a contender writes emptied by TRUNCATE (new files)."""
    maintenance(engine, f"TRUNCATE {', '.join(ALL_TABLES)}", f"VACUUM (ANALYZE) {', '.join(ALL_TABLES)}",
                "CHECKPOINT")


def check(engine, oracle: dict) -> dict:
    rows, digest = digest_of(engine, TARGET)
    differ = 0
    if (rows, digest) != (oracle["rows"], oracle["digest"]):
        with engine.connect() as conn:
            differ = conn.exec_driver_sql(
                f"SELECT count(*) FROM {ORACLE} AS o FULL JOIN ({row_hashes(TARGET)}) AS c USING (k) "
                "WHERE o.h IS DISTINCT FROM c.h").scalar()
    with engine.connect() as conn:
        left = conn.exec_driver_sql(f"SELECT (SELECT count(*) FROM {STAGING}) + (SELECT count(*) FROM {REJECTS})").scalar()
    return {"rows": rows, "digest": digest, "differ": differ, "left_in_staging_or_rejects": left,
            "agrees": rows == oracle["rows"] and digest == oracle["digest"] and left == 0}


# ----------------------------------------------------------------------------- the contenders (child side)
class Timings:
    """(start, end) perf_counter pairs per name, from wrappers around the session's own calls."""

    def __init__(self):
        self.spans: dict[str, list[tuple[float, float]]] = defaultdict(list)

    def wrap(self, owner, attribute: str, name: str | None = None, by_argument: int | None = None):
        real = getattr(owner, attribute)
        spans = self.spans

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                spans[args[by_argument] if by_argument is not None else name].append((start, time.perf_counter()))
        setattr(owner, attribute, timed)

    def total(self, name: str) -> float:
        return sum(end - start for start, end in self.spans.get(name, ()))

    def durations(self, name: str) -> list[float]:
        return [end - start for start, end in self.spans.get(name, ())]


def run_sync(args) -> dict:
    """One full sync from the carrier API (its URL and source options from the parent), instrumented."""
    from dbtools.sync import session
    from dbtools.sync.http import HttpSource

    timings = Timings()
    timings.wrap(session, "call_procedure", by_argument=2)  # usp_Sync_Begin, usp_Sync_Page, usp_Sync_Promote
    timings.wrap(session._Stager, "convert", "convert")  # prefetch thread
    timings.wrap(session._Stager, "stage", "stage")  # main thread: COPY body + COPY
    timings.wrap(HttpSource, "_get", "fetch")  # prefetch thread: the request and the response's body
    timings.wrap(HttpSource, "_page", "parse")  # prefetch thread: JSON parse and the page's checks
    pages: list[tuple[int, int, float, float]] = []  # number, rows, seconds, perf_counter at the callback

    def on_page(progress) -> None:
        pages.append((progress.number, progress.rows, progress.seconds, time.perf_counter()))

    options = json.loads(args.source_options)
    engine = sa.create_engine(args.url)
    source = HttpSource(args.api_url, **options)
    start = time.perf_counter()
    cpu = time.process_time()
    result = session.sync(engine, SPEC, SCOPE, source, full=True, as_of=AS_OF, on_page=on_page)
    end = time.perf_counter()
    cpu = time.process_time() - cpu
    engine.dispose()
    if (result.status != "Promoted" or result.inserted != args.devices or result.pages_loaded != len(pages)
            or result.since != SINCE):
        raise SystemExit(f"the sync did not promote every device: {result.as_dict()}")

    (begin_start, begin_end), = timings.spans["usp_Sync_Begin"]
    (promote_start, promote_end), = timings.spans["usp_Sync_Promote"]
    loads = [seconds for _, _, seconds, _ in pages]
    waits, previous = [], begin_end
    for _, _, seconds, at in pages:
        waits.append(at - seconds - previous)
        previous = at
    stage, page_proc = timings.durations("stage"), timings.durations("usp_Sync_Page")
    tenth = max(1, len(pages) // 10)
    return {
        "seconds": end - start, "cpu": cpu, "pages": len(pages), "detail": result.as_dict() | {"rejects": None},
        "parts": {
            "connect + Begin": begin_end - start,
            "Begin": begin_end - begin_start,
            "waiting for the next page": sum(waits),
            "page loads": sum(loads),
            "stage (COPY body + COPY)": sum(stage),
            "usp_Sync_Page": sum(page_proc),
            "commit and the rest of a load": sum(loads) - sum(stage) - sum(page_proc),
            "after the last page, before Promote": promote_start - previous,
            "Promote": promote_end - promote_start,
            "after Promote (rejects query, close)": end - promote_end,
        },
        "thread": {"fetch": timings.total("fetch"), "parse": timings.total("parse"),
                   "convert": timings.total("convert")},
        "per_page_ms": {
            "load median": statistics.median(loads) * 1000,
            "load first tenth": statistics.mean(loads[:tenth]) * 1000,
            "load last tenth": statistics.mean(loads[-tenth:]) * 1000,
            "usp_Sync_Page median": statistics.median(page_proc) * 1000,
            "usp_Sync_Page first tenth": statistics.mean(page_proc[:tenth]) * 1000,
            "usp_Sync_Page last tenth": statistics.mean(page_proc[-tenth:]) * 1000,
            "stage median": statistics.median(stage) * 1000,
            "wait median": statistics.median(waits) * 1000,
        },
    }


def run_bulk(args) -> dict:
    from dbtools.upsert.ingest import read_jsonl
    from dbtools.upsert.writers import writer_for

    engine = sa.create_engine(args.url)
    options = {"batch_size": args.bulk_batch} if args.bulk_batch else {}
    start = time.perf_counter()
    cpu = time.process_time()
    with open(args.file, encoding="utf-8") as stream:
        counts = writer_for("bulk", engine, SPEC, **options).upsert(read_jsonl(stream))
    end = time.perf_counter()
    cpu = time.process_time() - cpu
    engine.dispose()
    if counts.inserted != args.devices:
        raise SystemExit(f"the bulk path did not insert every device: {counts.as_dict()}")
    return {"seconds": end - start, "cpu": cpu, "detail": counts.as_dict()}


def child(args) -> None:
    result = run_sync(args) if args.child == SYNC else run_bulk(args)  # "bulk" (--bulk-batch: its chunk)
    result["rss_mib"] = peak_rss_mib()
    result["dbtools"] = str(Path(dbtools.__file__).parent)
    print("RESULT " + json.dumps(result))


# ----------------------------------------------------------------------------- the parent
def run_child(name: str, args, url: str, api_url: str, source_options: dict, file: Path,
              env: dict | None = None) -> dict:
    """One contender in a fresh process: ``sync``, or ``bulk:<chunk rows>``."""
    kind, _, batch = name.partition(":")
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--url", url, "--api-url", api_url,
               "--source-options", json.dumps(source_options), "--file", str(file), "--devices", str(args.devices)]
    if batch:
        command += ["--bulk-batch", batch]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **env} if env else None)
    results = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not results:
        raise SystemExit(f"FAILED: {name} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(results[-1][len("RESULT "):])


def machine(version: str) -> str:
    cpu = platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    kib = int(Path("/proc/meminfo").read_text().split()[1])
    return (f"{os.cpu_count()} cores ({cpu}), {kib / 2**20:.0f} GiB RAM, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, PostgreSQL {version} (pgserver)")


def commit() -> str:
    """HEAD, and whether the code the benchmark runs changed since; in an exported tree (git archive), the
    commit that ``DBTOOLS_COMMIT`` names."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "dbtools", "procedures",
                                "templates", "migrations", "entities", "bench/sync.py", "tests/carrier_api.py"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + (" (with uncommitted changes to the code measured)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("DBTOOLS_COMMIT", "unknown") + " (exported tree)"


def warm(api, options: dict, devices: int) -> int:
    """Read every page once (untimed), as the sync will ask for them: the API encodes each device then."""
    from dbtools.sync.http import HttpSource

    pages = rows = 0
    for page in HttpSource(api.url, **options).pages(SINCE):
        pages += 1
        rows += len(page.rows)
    if rows != devices:
        raise SystemExit(f"FAILED: the API served {rows:,} of {devices:,} devices since {SINCE}")
    return pages


@contextmanager
def bed(args, report: dict) -> Iterator[Callable[..., dict]]:
    """The private server, the devices (file, oracle, warmed API): yields ``run(name, round, env=None)``,
    which resets the target, runs one contender in a fresh process and checks its table."""
    from embedded import fresh_database, private_server

    carrier = carrier_api_module()
    log(f"making {args.devices:,} devices")
    devices = carrier.make_devices(args.devices, start=START, step=STEP)
    with private_server() as admin_url, tempfile.TemporaryDirectory(prefix="dbtools-sync-bench-") as workdir:
        url = fresh_database(admin_url, "bench")
        url_text = url.render_as_string(hide_password=False)
        engine = sa.create_engine(url, poolclass=NullPool)
        with engine.connect() as conn:
            report["machine"] = machine(conn.exec_driver_sql("SHOW server_version").scalar())
        postmaster = postmaster_pid(engine)
        file = Path(workdir) / "devices.jsonl"
        encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
        with open(file, "w", encoding="utf-8") as out:
            for device in devices:
                out.write(encode({"ServiceProviderId": SCOPE, **device}) + "\n")
        report["file_mib"] = round(file.stat().st_size / 2**20, 1)
        oracle = build_oracle(engine, devices)
        report["oracle"] = oracle
        log(f"oracle {oracle['rows']:,} rows, digest {oracle['digest'][:12]}; file {report['file_mib']} MiB")
        with carrier.CarrierApi(devices, page_size=args.page_size) as api:
            os.environ.update(api.env())  # the children inherit the credentials' variables
            options = api.source_options()
            report["pages"] = warm(api, options, args.devices)
            log(f"API warmed: {report['pages']} pages of {args.page_size:,}")
            del devices

            def run(name: str, round_number: int, env: dict | None = None, label: str | None = None) -> dict:
                reset(engine)
                before, api_cpu, database_cpu = load(), time.process_time(), db_cpu(postmaster)
                result = run_child(name, args, url_text, api.url, options, file, env)
                time.sleep(0.2)  # the child's backends exit and are reaped
                result["api_cpu"] = time.process_time() - api_cpu
                result["db_cpu"] = db_cpu(postmaster) - database_cpu
                result.update(round=round_number, load=before, rate=args.devices / result["seconds"],
                              **check(engine, oracle))
                log(f"round {round_number} {label or name}: {result['seconds']:.2f} s, {result['rate']:,.0f} rows/s, "
                    f"CPU client {result['cpu']:.1f} s, DB {result['db_cpu']:.1f} s, API {result['api_cpu']:.1f} s, "
                    f"RSS {result['rss_mib']:.0f} MiB, {'agrees' if result['agrees'] else 'DISAGREES'}, load {before}")
                return result

            yield run
        engine.dispose()


def measure(args) -> dict:
    report: dict = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="minutes"), "commit": commit(),
                    "command": " ".join(["bench/sync.py", *sys.argv[1:]]), "devices": args.devices,
                    "page_size": args.page_size, "rounds": args.rounds, "bulk_batches": args.bulk_batches,
                    "dbtools": str(Path(dbtools.__file__).parent), "load_start": load()}
    names = [SYNC, *(f"{BULK}:{b}" for b in args.bulk_batches)]
    runs: dict[str, list[dict]] = {name: [] for name in names}
    with bed(args, report) as run:
        for r in range(args.rounds):
            k = r % len(names)
            for name in names[k:] + names[:k]:
                runs[name].append(run(name, r + 1))
    report["runs"] = runs
    report["load_end"] = load()
    for name, results in runs.items():
        if not all(x["agrees"] for x in results):
            raise SystemExit(f"FAILED: {name} left a table that disagrees with the oracle: "
                             f"{[(x['round'], x['differ'], x['left_in_staging_or_rejects']) for x in results]}")
    return report


# ----------------------------------------------------------------------------- the tables
def each(values, digits: int = 2) -> str:
    return " / ".join(f"{v:.{digits}f}" for v in values)


def summary(report: dict) -> str:
    runs = report["runs"]
    sync_runs = runs[SYNC]
    bulks = [name for name in runs if name != SYNC]
    n, pages = report["devices"], report["pages"]
    med = statistics.median
    fastest = min(bulks, key=lambda name: med(x["seconds"] for x in runs[name]))
    lines = [f"Measured {report['date']} at commit `{report['commit']}` on {report['machine']}; "
             f"`{report['command']}`. Load averages (1, 5, 15 min): {report['load_start']} at the start, "
             f"{report['load_end']} at the end, {min(x['load'][0] for r in runs.values() for x in r)} to "
             f"{max(x['load'][0] for r in runs.values() for x in r)} (1 min) before the runs.", "",
             f"{n:,} devices, {pages} pages of {report['page_size']:,}; JSON Lines file {report['file_mib']} MiB; "
             f"oracle {report['oracle']['rows']:,} rows, digest `{report['oracle']['digest'][:12]}`.", "",
             "| contender | median s | median rows/s | seconds per round (in order) | client CPU s | DB CPU s "
             "| API CPU s | peak RSS MiB | matches the oracle |",
             "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |"]
    labels = {SYNC: f"sync, {report['page_size']:,}-row pages from the local API",
              **{name: f"bulk from a JSON Lines file, {int(name.split(':')[1]):,}-row chunks" for name in bulks}}
    for name, results in runs.items():
        lines.append(f"| {labels[name]} | {med(x['seconds'] for x in results):.2f} "
                     f"| {med(x['rate'] for x in results):,.0f} | {each(x['seconds'] for x in results)} "
                     f"| {med(x['cpu'] for x in results):.1f} | {med(x['db_cpu'] for x in results):.1f} "
                     f"| {med(x['api_cpu'] for x in results):.1f} | {med(x['rss_mib'] for x in results):.0f} "
                     f"| {'yes' if all(x['agrees'] for x in results) else '**no**'} |")
    lines += ["", "| ratio (goal: sync throughput >= 0.8 of bulk) | medians | median of rounds | each round |",
              "| --- | ---: | ---: | --- |"]
    for name in sorted(bulks, key=lambda b: b != fastest):
        bulk_runs = runs[name]
        ratios = [b["seconds"] / s["seconds"] for s, b in zip(sync_runs, bulk_runs)]
        extra = [(s["seconds"] - b["seconds"]) / pages * 1000 for s, b in zip(sync_runs, bulk_runs)]
        of_medians = med(x["seconds"] for x in bulk_runs) / med(x["seconds"] for x in sync_runs)
        extra_of_medians = (med(x["seconds"] for x in sync_runs) - med(x["seconds"] for x in bulk_runs)) / pages * 1000
        what = f"{int(name.split(':')[1]):,}-row chunks" + (", the fastest" if name == fastest else "")
        lines += [f"| bulk seconds / sync seconds (bulk: {what}) | {of_medians:.2f} | {med(ratios):.2f} | {each(ratios)} |",
                  f"| (sync - bulk) per page, ms (bulk: {what}) | {extra_of_medians:.1f} | {med(extra):.1f} "
                  f"| {each(extra, 1)} |"]
    parts = list(sync_runs[0]["parts"])
    lines += ["", "Where the sync's wall time goes (main thread; seconds, median of the rounds; each round):", "",
              "| part | median s | per page, ms | each round |", "| --- | ---: | ---: | --- |"]
    for part in parts:
        values = [x["parts"][part] for x in sync_runs]
        lines.append(f"| {part} | {med(values):.2f} | {med(values) / pages * 1000:.2f} | "
                     f"{each(values)} |")
    lines += ["", "In the prefetch thread, a page ahead of the loads (seconds, overlapping the table above):", "",
              "| part | median s | per page, ms |", "| --- | ---: | ---: |"]
    for part in sync_runs[0]["thread"]:
        value = med(x["thread"][part] for x in sync_runs)
        lines.append(f"| {part} | {value:.2f} | {value / pages * 1000:.2f} |")
    lines += ["", "Per page (ms, median of the rounds):", "", "| figure | ms |", "| --- | ---: |"]
    for figure in sync_runs[0]["per_page_ms"]:
        lines.append(f"| {figure} | {med(x['per_page_ms'][figure] for x in sync_runs):.2f} |")
    overhead = [(x["seconds"] - x["parts"]["Promote"] - x["parts"]["waiting for the next page"]) / pages * 1000
                for x in sync_runs]
    lines += ["", f"Session overhead per page, (wall - Promote - waiting for the source) / pages: "
                  f"**{med(overhead):.2f} ms** (rounds {each(overhead)})."]
    cpu = {name: [x["cpu"] + x["db_cpu"] + x["api_cpu"] for x in results] for name, results in runs.items()}
    lines += ["", f"CPU of each run, client + database + API (s): sync {each(cpu[SYNC], 1)}, bulk ({labels[fastest]}) "
                  f"{each(cpu[fastest], 1)}; bulk / sync on the medians {med(cpu[fastest]) / med(cpu[SYNC]):.2f}: on 2 "
                  "busy cores, about what a sync that overlapped its parts as well as the bulk path does could reach."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=None, help="devices synced (default 200,000)")
    parser.add_argument("--page-size", type=int, default=1000, help="rows per API page (default 1,000)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds, order alternated (default 5)")
    parser.add_argument("--bulk-batches", default="20000,50000",
                        help="the bulk contenders' chunk sizes (default 20000,50000: the fastest measured, and the "
                             "path's own default)")
    parser.add_argument("--bulk-batch", type=int, default=None, help=argparse.SUPPRESS)  # a bulk child's chunk
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20,000 devices, 2 rounds")
    parser.add_argument("--save", type=Path, help="write the results as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--api-url", help=argparse.SUPPRESS)
    parser.add_argument("--source-options", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    args.devices = args.devices or (20_000 if args.quick else 200_000)
    args.rounds = args.rounds or (2 if args.quick else 5)
    args.bulk_batches = [int(x) for x in args.bulk_batches.split(",")]
    report = measure(args)
    print(summary(report))
    if args.save:
        args.save.write_text(json.dumps(report, indent=1, default=str) + "\n")
        log(f"saved {args.save}")


if __name__ == "__main__":
    main()
