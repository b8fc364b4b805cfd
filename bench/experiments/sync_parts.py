"""Where a paged sync's time goes, part by part, each measured alone (issue 21; docs/benchmarks.md).

``bench/sync.py`` times the whole sync against the bulk path and splits the sync's wall time from
inside the run. This script measures the same parts *alone*, where no other thread or part
competes, so that what a part costs can be told from what it waits for:

1. **Client CPU** (``time.thread_time``, one thread, the carrier API in another process): per 200
   pages of 1,000 devices, the HTTP request, the JSON parse and page checks (``HttpSource._page``),
   the session's conversion (``_Stager.convert``) and the binary COPY body; against the bulk
   path's reading of the same rows from JSON Lines (``read_jsonl``) and its conversion and
   encoding (the writer's own chunk builder, no database).
2. **Staging, database side** (one connection, bodies encoded beforehand, no Python thread
   competing): 200 page transactions of COPY + ``usp_Sync_Page`` + COMMIT, per page; the same with
   ``synchronous_commit = off`` for the page's transaction; COPY + COMMIT alone; one COPY of all
   the rows.
3. **Promote, database side**, from one staged session, each part from a target emptied by
   TRUNCATE (staging restored from a saved copy, VACUUM ANALYZE, CHECKPOINT): the entity's promote
   procedure; its statement; the statement as a plain INSERT (no ON CONFLICT); its ``checked`` CTE
   alone; a bare ``INSERT ... SELECT`` into the target, and into a copy of it without the two
   lookup foreign keys; the DELETE of the staged rows; and, for comparison, the bulk path's
   reconcile of the same rows in four 50,000-row batches.

Usage: python bench/experiments/sync_parts.py [--devices 200000] [--page-size 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]

from embedded import fresh_database, private_server  # noqa: E402

from dbtools.db.engines import engine_for  # noqa: E402
from dbtools.db.procs import call_procedure  # noqa: E402
from dbtools.sync import session  # noqa: E402
from dbtools.sync.http import HttpSource  # noqa: E402
from dbtools.sync.source import Page  # noqa: E402
from dbtools.upsert.ingest import read_jsonl  # noqa: E402
from dbtools.upsert.specs import spec_named  # noqa: E402
from dbtools.upsert.writers import writer_for  # noqa: E402
from dbtools.uuid7 import uuid7  # noqa: E402
from tests.carrier_api import make_devices  # noqa: E402

SPEC = spec_named("JasperDevice")
PG = engine_for("postgresql")
Q, JOB = PG.quote, PG.job_object
TARGET, STAGING, REJECTS = (SPEC.table_object(PG, SPEC.table), SPEC.table_object(PG, SPEC.staging),
                            SPEC.table_object(PG, SPEC.rejects))
COLUMNS = ", ".join(Q(c.name) for c in SPEC.columns)
SCOPE = 42
AS_OF, SINCE = dt.datetime(2026, 3, 31, 12), dt.datetime(2026, 2, 27, 12)
START, STEP = dt.datetime(2026, 3, 1), dt.timedelta(seconds=10)
SAVED, NO_FK = '"bench".saved_staging', '"bench".no_fk'


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def maintenance(engine, *statements) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)


def median_table(title: str, results: dict[str, list[float]], unit: str = "s") -> str:
    lines = [f"| {title} | median ({unit}) | each |", "| --- | ---: | --- |"]
    for name, values in results.items():
        lines.append(f"| {name} | {statistics.median(values):.3f} | {' / '.join(f'{v:.3f}' for v in values)} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- 1. client CPU
API_SERVER = """
import datetime as dt, sys, time
sys.path.insert(0, {root!r})
from tests.carrier_api import CarrierApi, make_devices
api = CarrierApi(make_devices({n}, start=dt.datetime(2026, 3, 1), step=dt.timedelta(seconds=10)), page_size={size},
                 username=None).start()
print(api.url, flush=True)
time.sleep(3600)
"""


def client_cpu(devices: list[dict], page_size: int, repeat: int) -> str:
    server = subprocess.Popen([sys.executable, "-c", API_SERVER.format(root=str(ROOT), n=len(devices), size=page_size)],
                              stdout=subprocess.PIPE, text=True)
    try:
        source = HttpSource(server.stdout.readline().strip())
        list(source.pages(SINCE))  # every device encoded once by the server
        stager = session._Stager(PG, SPEC, str(SCOPE))
        encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
        text = "".join(encode({"ServiceProviderId": SCOPE, **d}) + "\n" for d in devices)
        bulk = writer_for("bulk", sa.create_engine("postgresql+psycopg://nobody@localhost/none"), SPEC)
        bulk._pause = None  # one thread here: nothing to yield to
        results: dict[str, list[float]] = {k: [] for k in (
            "sync: HTTP request and body", "sync: JSON parse and page checks", "sync: convert (_Stager.convert)",
            "sync: binary COPY body", "sync: all four", "bulk: read_jsonl", "bulk: read_jsonl + convert + COPY body")}
        for _ in range(repeat):
            client, run = source._new_client(), source._run()
            spent = dict.fromkeys(("get", "parse", "convert", "encode"), 0.0)
            params = {source.since_param: "2026-02-27T12:00:00Z"}
            number, session_id = 0, uuid.uuid4()
            while True:
                number += 1
                params[source.page_param] = str(number)
                t = time.thread_time()
                response = source._get(client, params, number, run)
                u = time.thread_time()
                page = source._page(response, number, run)
                v = time.thread_time()
                valid, _ = stager.convert(page)
                w = time.thread_time()
                add, finish = stager.new_body()
                load_id = uuid.uuid4()
                for r in valid:
                    add((load_id, r.row_number, *r.values, None, session_id, number))
                finish()
                x = time.thread_time()
                for key, value in zip(spent, (u - t, v - u, w - v, x - w)):
                    spent[key] += value
                if page.is_last:
                    break
            client.close()
            for key, name in zip(spent, list(results)[:4]):
                results[name].append(spent[key])
            results["sync: all four"].append(sum(spent.values()))
            t = time.thread_time()
            for _ in read_jsonl(io.StringIO(text)):
                pass
            results["bulk: read_jsonl"].append(time.thread_time() - t)
            t = time.thread_time()
            for _ in bulk._prepared_chunks(read_jsonl(io.StringIO(text))):
                pass
            results["bulk: read_jsonl + convert + COPY body"].append(time.thread_time() - t)
        return median_table(f"client CPU, {len(devices):,} rows, one thread", results, "CPU s")
    finally:
        server.kill()


# ----------------------------------------------------------------------------- 2. staging, database side
def sync_tables_reset(engine) -> None:
    tables = [TARGET, STAGING, REJECTS, JOB("UpsertBatchLog"), JOB("SyncSessionPage"), JOB("SyncSession"),
              JOB("SyncScopeState")]
    maintenance(engine, f"TRUNCATE {', '.join(tables)}", f"VACUUM (ANALYZE) {', '.join(tables)}", "CHECKPOINT")


def staged_pages(engine, pages, converted, stager, synchronous_commit: str = "on", page_procedure: bool = True):
    """Stage every page as the session does, bodies encoded beforehand: (session, seconds, per-page parts)."""
    sync_tables_reset(engine)
    state = session._Session(engine, PG, SPEC, str(SCOPE), "5s")
    session_id = state.begin("Full", False, AS_OF)["SessionId"]
    bodies = []
    for page, (valid, _) in zip(pages, converted):
        load_id = uuid7("postgresql")
        add, finish = stager.new_body()
        for r in valid:
            add((load_id, r.row_number, *r.values, None, session_id, page.number))
        bodies.append((load_id, finish()))
    conn, parts = state.conn, []
    start = time.perf_counter()
    for page, (load_id, body) in zip(pages, bodies):
        a = time.perf_counter()
        with conn.begin():
            if synchronous_commit != "on":
                conn.exec_driver_sql(f"SET LOCAL synchronous_commit = {synchronous_commit}")
            with conn.connection.dbapi_connection.cursor() as cursor:
                with cursor.copy(f"COPY {stager.staging} ({stager.column_list}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.write(body)
            b = time.perf_counter()
            if page_procedure:
                call_procedure(conn, PG, "usp_Sync_Page", {"SessionId": session_id, "PageNumber": page.number,
                                                           "LoadId": load_id, "RowsReceived": len(page.rows),
                                                           "IsLastPage": bool(page.is_last)}, session.PAGE_OUTPUTS)
            c = time.perf_counter()
        parts.append((b - a, c - b, time.perf_counter() - c))
    seconds = time.perf_counter() - start
    return state, session_id, seconds, parts


def staging_parts(engine, pages, converted, stager, repeat: int) -> str:
    results: dict[str, list[float]] = {}
    for _ in range(repeat):
        for label, sync_commit, procedure in (("COPY + usp_Sync_Page + COMMIT", "on", True),
                                              ("the same, synchronous_commit = off", "off", True),
                                              ("COPY + COMMIT", "on", False)):
            state, _, seconds, parts = staged_pages(engine, pages, converted, stager, sync_commit, procedure)
            state.close()
            results.setdefault(f"{label}: whole", []).append(seconds)
            for k, part in enumerate(("COPY", "usp_Sync_Page", "COMMIT")):
                if part != "usp_Sync_Page" or procedure:
                    results.setdefault(f"{label}: {part}, ms per page", []).append(
                        1000 * sum(p[k] for p in parts) / len(parts))
        sync_tables_reset(engine)
        add, finish = stager.new_body()
        session_id = uuid.uuid4()
        for page, (valid, _) in zip(pages, converted):
            for r in valid:
                add((session_id, r.row_number, *r.values, None, session_id, page.number))
        body = finish()
        raw = engine.raw_connection()
        try:
            start = time.perf_counter()
            with raw.driver_connection.cursor() as cursor:
                with cursor.copy(f"COPY {stager.staging} ({stager.column_list}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.write(body)
            raw.driver_connection.commit()
            results.setdefault("one COPY of every row + COMMIT", []).append(time.perf_counter() - start)
        finally:
            raw.close()
    return median_table(f"staging {len(pages)} pages, database side, one connection", results)


# ----------------------------------------------------------------------------- 3. promote, database side
def promote_parts(engine, pages, converted, stager, repeat: int) -> str:
    state, session_id, _, _ = staged_pages(engine, pages, converted, stager)
    state.close()
    maintenance(engine, 'CREATE SCHEMA IF NOT EXISTS "bench"', f"DROP TABLE IF EXISTS {SAVED}, {NO_FK}",
                f"CREATE TABLE {SAVED} AS SELECT * FROM {STAGING}",
                f"CREATE TABLE {NO_FK} (LIKE {TARGET} INCLUDING ALL)")  # LIKE copies no foreign key
    with engine.connect() as conn:
        body = conn.exec_driver_sql("SELECT pg_get_functiondef(%s::regproc)", (JOB(SPEC.sync_promote),)).scalar()
    statement = body[body.index("WITH checked"):body.index('INTO "RowsStaged"')]
    statement = statement.replace("v_session", f"'{session_id}'::uuid").replace("v_scope", f"'{SCOPE}'")
    plain = (statement[:statement.index("ON CONFLICT")] + 'RETURNING true AS "Inserted"\n    )'
             + statement[statement.index("\n    SELECT (SELECT count(*) FROM checked)"):])
    checked = statement[:statement.index("), rejected AS")] + ") SELECT count(*) FROM checked"
    settings = ["SET LOCAL work_mem = '64MB'", "SET LOCAL search_path = pg_catalog, pg_temp"]
    variants = {
        "the promote procedure (as shipped)": [f"CALL {JOB(SPEC.sync_promote)}('{session_id}', '{SCOPE}')"],
        "its statement": [*settings, statement],
        "its statement as a plain INSERT (no ON CONFLICT)": [*settings, plain],
        "its checked CTE alone": [*settings, checked],
        "bare INSERT ... SELECT into the target": [f"INSERT INTO {TARGET} ({COLUMNS}) SELECT {COLUMNS} FROM {STAGING}"],
        "bare INSERT ... SELECT, target copy without the lookup FKs": [
            f"INSERT INTO {NO_FK} ({COLUMNS}) SELECT {COLUMNS} FROM {STAGING}"],
        "DELETE of the session's staged rows": [f"DELETE FROM {STAGING} WHERE {Q('SessionId')} = '{session_id}'"],
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    results["bulk reconcile, 4 batches of 50,000 (sum)"] = []
    for _ in range(repeat):
        for name, statements in variants.items():
            maintenance(engine, f"TRUNCATE {TARGET}, {NO_FK}, {STAGING}", f"INSERT INTO {STAGING} SELECT * FROM {SAVED}",
                        f"VACUUM (ANALYZE) {TARGET}, {NO_FK}, {STAGING}", "CHECKPOINT")
            raw = engine.raw_connection()
            try:
                cursor = raw.driver_connection.cursor()
                start = time.perf_counter()
                for sql in statements:
                    cursor.execute(sql)
                raw.driver_connection.commit()
                results[name].append(time.perf_counter() - start)
            finally:
                raw.close()
        batches = [uuid7("postgresql") for _ in range(4)]
        per = max(1, len(pages) // 4)
        maintenance(engine, f"TRUNCATE {TARGET}, {STAGING}, {JOB('UpsertBatchLog')}",
                    f"INSERT INTO {STAGING} ({Q('BatchId')}, {Q('RowNumber')}, {COLUMNS}) "
                    f"SELECT (ARRAY[{', '.join(f'{chr(39)}{b}{chr(39)}::uuid' for b in batches)}])"
                    f"[least(4, 1 + ({Q('PageNumber')} - 1) / {per})], row_number() OVER (), {COLUMNS} FROM {SAVED}",
                    f"VACUUM (ANALYZE) {TARGET}, {STAGING}", "CHECKPOINT")
        start = time.perf_counter()
        for batch in batches:
            with engine.begin() as conn:
                conn.exec_driver_sql(f"CALL {JOB(SPEC.reconcile)}('{batch}')")
        results["bulk reconcile, 4 batches of 50,000 (sum)"].append(time.perf_counter() - start)
    return median_table(f"promote parts, {len(pages) * len(pages[0].rows):,} staged rows, each from an emptied target",
                        results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200_000)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--parts", default="client,staging,promote")
    args = parser.parse_args()
    wanted = args.parts.split(",")
    devices = make_devices(args.devices, start=START, step=STEP)
    print(f"Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; load averages {os.getloadavg()}; "
          f"{args.devices:,} devices in pages of {args.page_size:,}, {args.repeat} repeats.\n")
    if "client" in wanted:
        log("client CPU")
        print(client_cpu(devices, args.page_size, args.repeat) + "\n", flush=True)
    if "staging" in wanted or "promote" in wanted:
        stager = session._Stager(PG, SPEC, str(SCOPE))
        pages = [Page(i // args.page_size + 1, devices[i:i + args.page_size], i + args.page_size >= len(devices))
                 for i in range(0, len(devices), args.page_size)]
        converted = [stager.convert(page) for page in pages]
        with private_server() as admin_url:
            engine = sa.create_engine(fresh_database(admin_url, "parts"), poolclass=NullPool)
            if "staging" in wanted:
                log("staging")
                print(staging_parts(engine, pages, converted, stager, args.repeat) + "\n", flush=True)
            if "promote" in wanted:
                log("promote")
                print(promote_parts(engine, pages, converted, stager, args.repeat) + "\n", flush=True)
            engine.dispose()
    print(f"Load averages at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
