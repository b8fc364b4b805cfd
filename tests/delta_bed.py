"""A delta-engine test bed on one engine: job DB at head, sample sources, helpers to look inside."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from dbtools import commands
from dbtools.delta import runner, sample
from dbtools.delta.sample import METADATA_DB, SOURCE_DB, TARGET_DB, Blob, SampleData

REFERRAL = "Gwent_LA_FileTable.dbo.ReferralAttachment"
CLIENT = "Gwent_LA_FileTable.dbo.ClientAttachment"
TABLES = (CLIENT, REFERRAL)


def utcnow() -> datetime:
    return datetime.utcnow().replace(microsecond=0)


@dataclass
class DeltaBed:
    server: object  # tests.conftest.Server
    data: SampleData
    created: list[str] = field(default_factory=list)  # SQL Server databases to drop afterwards

    def close(self) -> None:
        sample.drop_databases(self.server.url, self.server.engine, self.created)

    # ------------------------------------------------------------------ plumbing
    @property
    def info(self):
        return self.server.engine

    def engine(self) -> sa.Engine:
        """Connections that reach the job DB and, by three-part names, the sample databases."""
        return self.server.job_engine()

    def sql(self, statement: str, params=None):
        engine = self.engine()
        try:
            with engine.begin() as conn:
                result = conn.exec_driver_sql(statement, params) if params is not None else conn.exec_driver_sql(statement)
                return [tuple(r) for r in result] if result.returns_rows else []
        finally:
            engine.dispose()

    def mark(self, name: str) -> str:
        return "?" if self.info.name == "mssql" else f"%({name})s"

    def params(self, **values):
        if self.info.name == "mssql":
            return tuple(str(v) if isinstance(v, uuid.UUID) else v for v in values.values())
        return values

    def table(self, database: str, name: str) -> str:
        q = self.info.quote
        return f"{q(database)}.[dbo].{q(name)}" if self.info.name == "mssql" else f"{q(database)}.{q(name)}"

    # ------------------------------------------------------------------ acting
    def run(self, **kwargs) -> runner.RunResult:
        engine = self.engine()
        try:
            kwargs.setdefault("mode", "AllTables")
            return runner.run_operator(engine, self.info, **kwargs)
        finally:
            engine.dispose()

    def status(self, run_id) -> runner.RunStatus:
        engine = self.engine()
        try:
            return runner.run_status(engine, self.info, run_id)
        finally:
            engine.dispose()

    def deploy(self) -> None:
        """Migrate again after adding configured tables, as DBAs do: it grants the engine its rights."""
        commands.migrate(url=self.server.url_string)

    def configure(self, table: str, **values) -> None:
        q = self.info.quote
        sets = ", ".join(f"{q(k)} = {self.mark(k)}" for k in values)
        self.sql(f"UPDATE {self.info.job_object('BlobDeltaTableConfig')} SET {sets} WHERE {q('TableName')} = {self.mark('t')}",
                 self.params(**values, t=table))

    def set_watermark(self, table: str, value: datetime | None) -> None:
        q = self.info.quote
        self.sql(f"UPDATE {self.info.job_object('BlobDeltaHighWatermark')} SET {q('LastHighWaterModifiedOn')} = "
                 f"{self.mark('v')} WHERE {q('TableName')} = {self.mark('t')}", self.params(v=value, t=table))

    def add_blobs(self, table: str, blobs: list[Blob]) -> None:
        sample.load(self.server.url, self.info, SampleData(self.data.business_units, {table.rsplit(".", 1)[1]: blobs}))

    def new_root(self, table: str, path: str, modified_on: datetime, unit: uuid.UUID | None = None) -> Blob:
        blob = Blob(uuid.uuid4(), f"late{path.strip('/')}", path, None, True, modified_on,
                    unit or self.data.business_units[0])
        self.add_blobs(table, [blob])
        return blob

    # ------------------------------------------------------------------ looking
    def target_ids(self, table: str) -> set[uuid.UUID]:
        name = table.rsplit(".", 1)[1]
        return {uuid.UUID(str(r[0])) for r in self.sql(f"SELECT stream_id FROM {self.table(TARGET_DB, name)}")}

    def orphans(self, table: str) -> list:
        name = table.rsplit(".", 1)[1]
        t = self.table(TARGET_DB, name)
        return self.sql(f"SELECT c.stream_id FROM {t} AS c WHERE c.parent_path_locator IS NOT NULL "
                        f"AND NOT EXISTS (SELECT 1 FROM {t} AS p WHERE p.path_locator = c.parent_path_locator)")

    def watermark(self, table: str) -> tuple:
        q = self.info.quote
        row = self.sql(f"SELECT {q('LastHighWaterModifiedOn')}, {q('LastRunId')}, {q('IsRunning')}, {q('LeaseRunId')}, "
                       f"{q('IsInitialFullLoadDone')} FROM {self.info.job_object('BlobDeltaHighWatermark')} "
                       f"WHERE {q('TableName')} = {self.mark('t')}", self.params(t=table))[0]
        return (row[0], None if row[1] is None else uuid.UUID(str(row[1])), bool(row[2]),
                None if row[3] is None else uuid.UUID(str(row[3])), bool(row[4]))

    def first_load_flags(self, run_id) -> dict:
        """TargetWasEmpty of the run's completed window rows, by table."""
        q, t = self.info.quote, self.info.job_object
        return {r[0]: None if r[1] is None else bool(r[1]) for r in self.sql(
            f"SELECT {q('TableName')}, {q('TargetWasEmpty')} FROM {t('BlobDeltaRunStep')} "
            f"WHERE {q('RunId')} = {self.mark('r')} AND {q('StepNumber')} = 0 AND {q('Status')} = 'Completed'",
            self.params(r=run_id))}

    def job_state(self) -> dict:
        """Every row of every job table and of the targets: 'changes nothing' compares these."""
        t = self.info.job_object
        state = {}
        names = ["BlobDeltaRun", "BlobDeltaRunStep", "BlobDeltaHighWatermark", "BlobDeltaMissingParentsQueue",
                 "BlobDeltaTableConfig", "BlobDeltaStepScript", "BlobDeltaQueuePopulationScript"]
        if self.info.name == "postgresql":
            names.append("BlobDeltaRunCandidate")  # revision 0017's, PostgreSQL's alone
        for name in names:
            state[name] = sorted(map(repr, self.sql(f"SELECT * FROM {t(name)}")))
        # pyodbc cannot fetch hierarchyid (ODBC type -151): read its string form on SQL Server.
        columns = "*" if self.info.name == "postgresql" else (
            "stream_id, name, file_stream, path_locator.ToString() AS path_locator, "
            "parent_path_locator.ToString() AS parent_path_locator, is_directory, creation_time, last_write_time")
        for name in sample.TABLES:
            state[name] = sorted(map(repr, self.sql(f"SELECT {columns} FROM {self.table(TARGET_DB, name)}")))
        return state

    # ------------------------------------------------------------------ oracle
    def expected(self, table: str, start: datetime, end: datetime, unit: uuid.UUID | None = None,
                 extra: list[Blob] = ()) -> set[uuid.UUID]:
        """Blobs with start <= ModifiedOn < end (in scope), plus every ancestor of them."""
        blobs = self.data.blobs[table.rsplit(".", 1)[1]] + list(extra)
        by_path = {b.path: b for b in blobs}
        chosen = {b.stream_id for b in blobs
                  if start <= b.modified_on < end and (unit is None or b.business_unit == unit)}
        for b in blobs:
            if b.stream_id in chosen:
                parent = b.parent
                while parent:
                    chosen.add(by_path[parent].stream_id)
                    parent = by_path[parent].parent
        return chosen


def make_bed(server, *, roots: int = 6, fanout: int = 2, depth: int = 3, days: int = 10) -> DeltaBed:
    now = utcnow()
    data = sample.generate(roots=roots, fanout=fanout, depth=depth, business_units=3,
                           start=now - timedelta(days=days), end=now - timedelta(hours=5))
    created = sample.create_sample(server.url, server.engine, data)
    # After the sources: a deployment grants the engine its rights on the configured tables.
    commands.migrate(url=server.url_string)
    return DeltaBed(server, data, created)


def window_of(status: runner.RunStatus, table: str) -> tuple[datetime, datetime]:
    rows = [s for s in status.steps if s["table_name"] == table and s["step_number"] == 0 and s["status"] == "Completed"]
    return rows[-1]["window_start"], rows[-1]["window_end"]


__all__ = ["DeltaBed", "make_bed", "window_of", "utcnow", "REFERRAL", "CLIENT", "TABLES",
           "SOURCE_DB", "TARGET_DB", "METADATA_DB", "NullPool"]
