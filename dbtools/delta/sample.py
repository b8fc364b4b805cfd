"""Sample source, metadata and target tables for the seeded configuration (demo and tests).

Creates, for each attachment table of revision 0003, a FileTable-shaped source
(``Gwent_LA_FileTable``), its metadata (``AdvancedRBS_MetaData``: stream_id, ModifiedOn,
OwningBusinessUnit), the business-unit table ``Gwent_LA_FileTable.dbo.LA_BU`` and an empty
target (``Gwent_LA_FileTable_Delta``), on either engine, with the indexes a real installation
needs: metadata (ModifiedOn), source and target (stream_id) and (path_locator).

A FileTable needs FILESTREAM, which no container has, so the sample source and target are
plain tables shaped and constrained as a FileTable is, on both engines: ``path_locator`` is the
primary key, ``stream_id`` is unique, ``parent_path_locator`` is computed from ``path_locator``
and ``file_type`` and ``cached_file_size`` from the name and the content (so none can be
written), a parent must exist (a foreign key), names are unique within a
directory and a directory holds no ``file_stream``. The engine must therefore write these tables
as it would write a FileTable: a statement that leaves an orphan, names the computed column or
duplicates a name fails here as it does there.

On PostgreSQL the path columns are ``text COLLATE "C"`` in hierarchyid's string form ('/1/3/'),
so that a subtree is a range of the unique index; on SQL Server they are hierarchyid.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from ..db.engines import EngineInfo

SOURCE_DB = "Gwent_LA_FileTable"
TARGET_DB = "Gwent_LA_FileTable_Delta"
METADATA_DB = "AdvancedRBS_MetaData"
TABLES = ("ReferralAttachment", "ClientAttachment")
#: The columns a load writes; parent_path_locator is computed from path_locator, as in a FileTable.
BLOB_COLUMNS = ("stream_id", "name", "file_stream", "path_locator", "is_directory", "creation_time", "last_write_time")


@dataclass(frozen=True)
class Blob:
    stream_id: uuid.UUID
    name: str
    path: str
    parent: str | None
    is_directory: bool
    modified_on: datetime
    business_unit: uuid.UUID
    content: bytes | None = None


@dataclass
class SampleData:
    business_units: list[uuid.UUID]
    blobs: dict[str, list[Blob]] = field(default_factory=dict)


def generate(*, seed: int = 7, roots: int = 20, fanout: int = 3, depth: int = 3, business_units: int = 3,
             start: datetime, end: datetime) -> SampleData:
    """Deterministic trees of folders and files, ModifiedOn spread over [start, end)."""
    rng = random.Random(seed)
    units = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(business_units)]
    data = SampleData(units)
    span = (end - start).total_seconds()
    for table in TABLES:
        blobs: list[Blob] = []

        def add(path: str, parent: str | None, level: int, unit: uuid.UUID) -> None:
            is_dir = level < depth
            blobs.append(Blob(
                stream_id=uuid.UUID(int=rng.getrandbits(128)),
                name=f"{table}-{path.strip('/').replace('/', '-')}{'' if is_dir else '.bin'}",
                path=path, parent=parent, is_directory=is_dir,
                modified_on=(start + timedelta(seconds=rng.uniform(0, span))).replace(microsecond=0),
                business_unit=unit,
                content=None if is_dir else rng.randbytes(16),  # a directory has no file_stream
            ))
            if is_dir:
                for child in range(1, fanout + 1):
                    add(f"{path}{child}/", path, level + 1, unit)

        for root in range(1, roots + 1):
            add(f"/{root}/", None, 1, units[(root - 1) % len(units)])
        data.blobs[table] = blobs
    return data


def _ddl(engine: EngineInfo) -> list[str]:
    q = engine.quote
    pg = engine.name == "postgresql"
    uuid_t = "uuid" if pg else "uniqueidentifier"
    ts_t = "timestamp(3)" if pg else "datetime2(3)"
    text_t = "text" if pg else "nvarchar(255)"

    def table(db: str, name: str) -> str:
        return f"{q(db)}.{q(name)}" if pg else f"{q(db)}.[dbo].{q(name)}"

    statements = []
    if pg:
        statements += [f"CREATE SCHEMA IF NOT EXISTS {q(db)}" for db in (SOURCE_DB, TARGET_DB, METADATA_DB)]
    statements.append(f"CREATE TABLE {table(SOURCE_DB, 'LA_BU')} ({q('BusinessUnitId')} {uuid_t} NOT NULL PRIMARY KEY, "
                      f"{q('Name')} {text_t} NOT NULL)")
    for name in TABLES:
        for db in (SOURCE_DB, TARGET_DB):
            statements.append(blob_table_ddl(engine, db, name))
        statements.append(f"CREATE TABLE {table(METADATA_DB, name)} (stream_id {uuid_t} NOT NULL PRIMARY KEY, "
                          f"{q('ModifiedOn')} {ts_t} NOT NULL, {q('OwningBusinessUnit')} {uuid_t} NOT NULL)")
        statements.append(f"CREATE INDEX {q('IX_' + name + '_ModifiedOn')} ON {table(METADATA_DB, name)} "
                          f"({q('ModifiedOn')}) INCLUDE (stream_id, {q('OwningBusinessUnit')})")
    return statements


def blob_table_ddl(engine: EngineInfo, database: str, name: str) -> str:
    """CREATE TABLE for a FileTable-shaped table ``name`` (see the module docstring) in ``database``.

    On SQL Server the statement runs in that database (its own sp_executesql), because a foreign
    key cannot name a table by three parts. Constraint names are derived from ``name``.
    """
    q = engine.quote
    if engine.name == "postgresql":
        qualified = f"{q(database)}.{q(name)}"
        return (
            f"CREATE TABLE {qualified} ("
            "stream_id uuid NOT NULL, file_stream bytea NULL, name text NOT NULL, "
            'path_locator text COLLATE "C" NOT NULL, '
            # A FileTable computes the parent from the path; a top-level item has none.
            'parent_path_locator text COLLATE "C" GENERATED ALWAYS AS '
            "(CASE WHEN path_locator ~ '^/[^/]+/$' THEN NULL ELSE substring(path_locator FROM '^(.*/)[^/]+/$') END) STORED, "
            "is_directory boolean NOT NULL, creation_time timestamptz NOT NULL, last_write_time timestamptz NOT NULL, "
            # As a FileTable's, computed: an INSERT or UPDATE that names them fails.
            "file_type text GENERATED ALWAYS AS (substring(name FROM '[.]([^.]*)$')) STORED, "
            "cached_file_size bigint GENERATED ALWAYS AS (octet_length(file_stream)) STORED, "
            f"CONSTRAINT {q('PK_' + name)} PRIMARY KEY (path_locator), "
            f"CONSTRAINT {q('UQ_' + name + '_stream_id')} UNIQUE (stream_id), "
            # SQL Server checks a unique index once per statement: deferrable (initially immediate) is that here.
            f"CONSTRAINT {q('UQ_' + name + '_name')} UNIQUE NULLS NOT DISTINCT (parent_path_locator, name) "
            "DEFERRABLE INITIALLY IMMEDIATE, "
            f"CONSTRAINT {q('FK_' + name + '_parent')} FOREIGN KEY (parent_path_locator) REFERENCES {qualified} (path_locator), "
            f"CONSTRAINT {q('CK_' + name + '_path')} CHECK (path_locator ~ '^(/[0-9]+([.][0-9]+)*)+/$'), "
            f"CONSTRAINT {q('CK_' + name + '_directory')} CHECK (NOT is_directory OR file_stream IS NULL))"
        )
    qualified = f"[dbo].{q(name)}"
    create = (
        f"CREATE TABLE {qualified} ("
        "stream_id uniqueidentifier NOT NULL, file_stream varbinary(max) NULL, name nvarchar(255) NOT NULL, "
        "path_locator hierarchyid NOT NULL, "
        # A FileTable's own definition of the column.
        "parent_path_locator AS (CASE WHEN path_locator.GetLevel() = 1 THEN NULL ELSE path_locator.GetAncestor(1) END) PERSISTED, "
        "is_directory bit NOT NULL, creation_time datetimeoffset(7) NOT NULL, last_write_time datetimeoffset(7) NOT NULL, "
        # As a FileTable's, computed (Msg 271 for an INSERT or UPDATE that names them).
        "file_type AS (CASE WHEN CHARINDEX(N'.', name) > 0 THEN RIGHT(name, CHARINDEX(N'.', REVERSE(name)) - 1) END), "
        "cached_file_size AS (CAST(DATALENGTH(file_stream) AS bigint)), "
        f"CONSTRAINT {q('PK_' + name)} PRIMARY KEY NONCLUSTERED (path_locator), "
        f"CONSTRAINT {q('UQ_' + name + '_stream_id')} UNIQUE (stream_id), "
        f"CONSTRAINT {q('UQ_' + name + '_name')} UNIQUE (parent_path_locator, name), "
        f"CONSTRAINT {q('FK_' + name + '_parent')} FOREIGN KEY (parent_path_locator) REFERENCES {qualified} (path_locator), "
        f"CONSTRAINT {q('CK_' + name + '_directory')} CHECK (is_directory = 0 OR file_stream IS NULL))"
    )
    return f"EXEC {q(database)}.sys.sp_executesql N'" + create.replace("'", "''") + "'"


def _table(engine: EngineInfo, db: str, name: str) -> str:
    q = engine.quote
    return f"{q(db)}.{q(name)}" if engine.name == "postgresql" else f"{q(db)}.[dbo].{q(name)}"


def _server(url: sa.URL, engine: EngineInfo, **kwargs) -> sa.Engine:
    """Connections for three-part names on SQL Server (from master), the database itself on PostgreSQL."""
    return sa.create_engine(url.set(database="master") if engine.name == "mssql" else url, poolclass=NullPool, **kwargs)


def create_sample(url: sa.URL, engine: EngineInfo, data: SampleData) -> list[str]:
    """Create the sample databases (schemas on PostgreSQL), the business units and the blobs.

    Returns the SQL Server databases it created, for :func:`drop_databases`; it refuses to
    reuse existing ones, since these are the names of production databases.
    """
    q = engine.quote
    pg = engine.name == "postgresql"
    created: list[str] = []
    if not pg:
        admin = _server(url, engine, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for db in (SOURCE_DB, TARGET_DB, METADATA_DB):
                if conn.exec_driver_sql("SELECT DB_ID(?)", (db,)).scalar() is not None:
                    raise RuntimeError(f"database {db} already exists; the sample creates its own")
                conn.exec_driver_sql(f"CREATE DATABASE {q(db)}")
                created.append(db)
        admin.dispose()
    server = _server(url, engine)
    with server.begin() as conn:
        for statement in _ddl(engine):
            conn.exec_driver_sql(statement)
        mark = "%s" if pg else "?"
        conn.exec_driver_sql(
            f"INSERT INTO {_table(engine, SOURCE_DB, 'LA_BU')} ({q('BusinessUnitId')}, {q('Name')}) VALUES ({mark}, {mark})",
            [(u if pg else str(u), f"BU {i + 1}") for i, u in enumerate(data.business_units)])
    server.dispose()
    load(url, engine, data)
    return created


def drop_databases(url: sa.URL, engine: EngineInfo, names: list[str]) -> None:
    """Drop SQL Server databases that :func:`create_sample` created."""
    if not names:
        return
    admin = _server(url, engine, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for db in names:
            conn.exec_driver_sql(f"ALTER DATABASE {engine.quote(db)} SET SINGLE_USER WITH ROLLBACK IMMEDIATE; "
                                 f"DROP DATABASE {engine.quote(db)};")
    admin.dispose()


def load(url: sa.URL, engine: EngineInfo, data: SampleData) -> None:
    """Insert the blobs of ``data`` into the sources and their metadata."""
    q = engine.quote
    pg = engine.name == "postgresql"
    mark = "%s" if pg else "?"
    # hierarchyid::Parse takes nvarchar(4000): the driver can describe the parameter (and a NULL)
    path = mark if pg else f"hierarchyid::Parse({mark})"
    # A directory's NULL file_stream goes in typed: a driver may describe an untyped NULL as varchar.
    content = mark if pg else f"CONVERT(varbinary(max), {mark})"
    values = ", ".join(path if c == "path_locator" else content if c == "file_stream" else mark for c in BLOB_COLUMNS)
    ident = (lambda u: u) if pg else str
    server = _server(url, engine)
    with server.begin() as conn:
        for name, blobs in data.blobs.items():
            if not blobs:
                continue
            conn.exec_driver_sql(
                f"INSERT INTO {_table(engine, SOURCE_DB, name)} ({', '.join(BLOB_COLUMNS)}) VALUES ({values})",
                # Parents first, as a FileTable requires (the foreign key is checked per statement).
                [(ident(b.stream_id), b.name, b.content, b.path, b.is_directory, b.modified_on, b.modified_on)
                 for b in sorted(blobs, key=lambda b: b.path.count("/"))])
            conn.exec_driver_sql(
                f"INSERT INTO {_table(engine, METADATA_DB, name)} (stream_id, {q('ModifiedOn')}, {q('OwningBusinessUnit')}) "
                f"VALUES ({mark}, {mark}, {mark})",
                [(ident(b.stream_id), b.modified_on, ident(b.business_unit)) for b in blobs])
    server.dispose()
