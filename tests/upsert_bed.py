"""Shared pieces of the upsert tests: a migrated job DB, events, readers and the oracle."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from dbtools import commands
from dbtools.upsert.specs import EntitySpec, parse_spec, spec_named
from dbtools.upsert.writers import Counts

T0 = dt.datetime(2026, 3, 1, 12, 0, 0)
ACTIVITY = spec_named("CustomerActivityEvent")
CLICK = spec_named("ClickEvent")
#: A composite key (ServiceProviderId, ICCID), like JasperDevice's, parsed here so it needs no
#: migration. Its columns are not in key order, so nothing may take the first column for the key.
PROVIDER_DEVICE = parse_spec("""
entity = "ProviderDevice"
table = "ProviderDevices"
key = ["ServiceProviderId", "ICCID"]
ordering = "ModifiedDate"

[[columns]]
name = "Status"
type = "string"
length = 50

[[columns]]
name = "ICCID"
type = "string"
length = 32

[[columns]]
name = "ServiceProviderId"
type = "int"

[[columns]]
name = "ModifiedDate"
type = "timestamp"
""", "tests/upsert_bed.py")


@dataclass
class Bed:
    server: object
    engine: sa.Engine

    def table(self, spec: EntitySpec) -> list[tuple]:
        """The whole target table (without the version column), ordered by key (by_key)."""
        q, t = self.server.engine.quote, self.place(spec)
        cols = ", ".join(q(c.name) for c in spec.columns)
        with self.engine.connect() as conn:
            rows = conn.exec_driver_sql(f"SELECT {cols} FROM {t(spec.table)}").all()
        return sorted((normalise(spec, r) for r in rows), key=by_key(spec))

    def versions(self, spec: EntitySpec) -> dict:
        """key (key_of) -> stored version."""
        q, t = self.server.engine.quote, self.place(spec)
        keys = ", ".join(q(k) for k in spec.keys)
        with self.engine.connect() as conn:
            rows = conn.exec_driver_sql(f"SELECT {keys}, {q(spec.version)} FROM {t(spec.table)}").all()
        return {key_of(spec, dict(zip(spec.keys, r))): (int.from_bytes(r[-1], "big") if isinstance(r[-1], bytes)
                                                       else r[-1]) for r in rows}

    def rejects(self, spec: EntitySpec) -> list[tuple]:
        """(RowNumber, Reason, key (key_of)) of every rejected row, ordered."""
        q, t = self.server.engine.quote, self.place(spec)
        keys = ", ".join(q(k) for k in spec.keys)
        with self.engine.connect() as conn:
            rows = conn.exec_driver_sql(
                f"SELECT {q('RowNumber')}, {q('Reason')}, {keys} FROM {t(spec.rejects)}").all()
        return sorted(((int(r[0]), r[1], key_of(spec, dict(zip(spec.keys, r[2:])))) for r in rows),
                      key=lambda x: (x[0], x[1], str(x[2])))

    def staged(self, spec: EntitySpec) -> int:
        with self.engine.connect() as conn:
            return conn.exec_driver_sql(
                f"SELECT COUNT(*) FROM {self.place(spec)(spec.staging)}").scalar_one()

    def clear(self, *specs: EntitySpec) -> None:
        with self.engine.begin() as conn:
            for spec in specs:
                for table in (spec.table, spec.rejects, spec.staging):
                    conn.exec_driver_sql(f"DELETE FROM {self.place(spec)(table)}")
            conn.exec_driver_sql(f"DELETE FROM {self.server.engine.job_object('UpsertBatchLog')}")

    def place(self, spec: EntitySpec):
        """name -> one of the spec's tables as the job DB reaches it (its database or the job DB)."""
        return lambda table: spec.table_object(self.server.engine, table)


def make_bed(server) -> Bed:
    commands.migrate(url=server.url_string)
    return Bed(server, server.job_engine())


def _key(value):
    return str(value).lower() if isinstance(value, (uuid.UUID, str)) else value


def key_of(spec: EntitySpec, row) -> object:
    """A row's key (a mapping from column name) as the tests compare keys: the value of a
    one-column key (uuids and strings as lower-case text), a tuple of them for a composite key."""
    parts = tuple(_key(row[k]) for k in spec.keys)
    return parts[0] if len(parts) == 1 else parts


def by_key(spec: EntitySpec):
    """Sort key for rows in column order (as Bed.table returns them): by the key columns, as text."""
    positions = [[c.name for c in spec.columns].index(k) for k in spec.keys]
    return lambda row: tuple(str(row[i]) for i in positions)


def normalise(spec: EntitySpec, row: Sequence) -> tuple:
    """A row as plain comparable values: uuid keys as text, JSON parsed, naive timestamps."""
    out = []
    for column, value in zip(spec.columns, row):
        if column.type == "json" and isinstance(value, str):
            value = json.loads(value)
        elif column.type == "uuid" and value is not None:
            value = str(value).lower()
        elif column.type == "timestamp" and isinstance(value, dt.datetime) and value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        out.append(value)
    return tuple(out)


def activity(key: uuid.UUID, minutes: int, customer: int = 1, kind: str = "page_view", details=None, **extra) -> dict:
    row = {"event_id": key, "customer_id": customer, "activity_type": kind,
           "time_stamp_utc": T0 + dt.timedelta(minutes=minutes), "details_json": details}
    row.update(extra)
    return row


def device(spec: EntitySpec, provider: int, iccid: str, minutes: int, status: str = "Active", **extra) -> dict:
    """A device row of PROVIDER_DEVICE or JasperDevice (whose required plans get their lookups' first values)."""
    row = {"ServiceProviderId": provider, "ICCID": iccid, "Status": status,
           "ModifiedDate": T0 + dt.timedelta(minutes=minutes)}
    for c in spec.columns:
        if c.references and c.required:
            row[c.name] = spec.lookup(c.references).values[0]
    row.update(extra)
    return row


def expected_row(row: dict, spec: EntitySpec = ACTIVITY) -> tuple:
    values = []
    for c in spec.columns:
        v = row.get(c.name)
        if c.type == "json" and isinstance(v, str):
            v = json.loads(v)
        if c.type == "uuid" and v is not None:
            v = str(v).lower()
        values.append(v)
    return tuple(values)


# ----------------------------------------------------------------------------- the oracle
class Oracle:
    """Newest wins, per batch: what the table and the counts must be (no ExpectedRowVersion)."""

    def __init__(self, spec: EntitySpec = ACTIVITY, valid=lambda row: True):
        self.spec = spec
        self.valid = valid
        self.rows: dict = {}

    def apply(self, batch: Iterable[dict]) -> Counts:
        spec = self.spec
        counts = Counts()
        winners: dict = {}
        for number, row in enumerate(batch, start=1):
            counts.received += 1
            if not self.valid(row):
                counts.rejected += 1
                continue
            key = key_of(spec, row)
            best = winners.get(key)
            # Newest ordering value wins; on a tie the earlier row (lower RowNumber) stays.
            if best is None or row[spec.ordering] > best[spec.ordering]:
                winners[key] = row
        counts.skipped += counts.received - counts.rejected - len(winners)
        for key, row in winners.items():
            stored = self.rows.get(key)
            if stored is None:
                counts.inserted += 1
                self.rows[key] = row
            elif row[spec.ordering] > stored[spec.ordering]:
                counts.updated += 1
                self.rows[key] = row
            else:
                counts.skipped += 1
        return counts

    def table(self) -> list[tuple]:
        return sorted((expected_row(r, self.spec) for r in self.rows.values()), key=by_key(self.spec))
