"""Entities written by the upsert paths, described by specs in ``entities/<name>.toml``.

A spec names an entity's key, its ordering column ("newest wins"), its version column and its
columns with their types and checks; ``entities/README.md`` documents the format. From one
spec come, on both engines:

* the target table, the staging table (keyed by batch id), the reject table and the row type
  (SQL Server table type / PostgreSQL composite), created by a migration through
  :func:`create_entity` from a copy of the spec frozen beside the revision;
* the three procedures (single row, row-type batch, staging reconcile), rendered at every
  deployment from the current spec by ``templates/<engine>/entity/*.sql``.

A spec that changes without a migration is caught by ``tests/test_entities.py``: the newest
frozen copy of every spec must equal the current one.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from alembic.runtime.migration import MigrationContext

from .engines import JOB_DATABASE, EngineInfo, engine_for
from .errors import ConfigurationError
from .paths import repo_root

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
TYPES = ("uuid", "int", "bigint", "string", "timestamp", "json")
#: The outcomes every path reports for each row it was sent.
OUTCOMES = ("Inserted", "Updated", "Skipped", "Conflicted", "Rejected")
#: One row per reconciled batch (TVP and staging paths): replaying a batch id returns its counts.
BATCH_LOG = "UpsertBatchLog"
#: Names the package uses beside an entity's columns (table columns, procedure parameters and
#: SQL Server local variables, which share one namespace with the column-named parameters);
#: compared case-insensitively, as SQL Server does.
RESERVED = frozenset(n.lower() for n in (
    "BatchId", "RowNumber", "ExpectedRowVersion", "Reason", "RejectId", "RejectedAt", "Outcome", "RowVersion",
    "Help", "Version", "VersionDate", "Rows", "Replayed", "RowsReceived", "RowsInserted", "RowsUpdated",
    "RowsSkipped", "RowsConflicted", "RowsRejected", "BadNumbers", "HelpText", "RejectReason",
    "StartedTransaction", "Uuid7Ms", "Uuid7Random", "dbtools_Outcome", "dbtools_Rank",
))
#: PL/pgSQL variables of the PostgreSQL procedures (v_received, c_<column>, ...): under
#: ``#variable_conflict use_column`` a column of the same name would be read instead.
RESERVED_PREFIXES = ("c_", "v_")
#: Not a place for an entity's tables (SQL Server's system databases, PostgreSQL's system schemas).
SYSTEM_DATABASES = frozenset({"master", "model", "msdb", "tempdb", "pg_catalog", "information_schema", "pg_toast"})
#: SQL Server indexes at most 900 bytes per key: nvarchar keys and lookup values up to 450 characters.
MAX_INDEXED_STRING = 450
OBJECT_KINDS = ("row_type", "upsert_one", "upsert_many", "staging", "rejects", "reconcile")


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool = True
    length: int | None = None  # string: maximum length in characters
    references: str | None = None  # a lookup table whose one column lists the allowed values

    def target_type(self, engine: EngineInfo) -> str:
        """The column's type in the target table."""
        if engine.name == "mssql":
            return {"uuid": "uniqueidentifier", "int": "int", "bigint": "bigint",
                    "string": f"nvarchar({self.length})", "timestamp": "datetime2(7)",
                    "json": "nvarchar(max)"}[self.type]
        return {"uuid": "uuid", "int": "integer", "bigint": "bigint",
                "string": f"varchar({self.length})", "timestamp": "timestamp(6) without time zone",
                "json": "json"}[self.type]

    def loose_type(self, engine: EngineInfo) -> str:
        """The column's type in staging, rejects and the row type: wide enough for bad values."""
        if self.type in ("string", "json"):
            return "nvarchar(max)" if engine.name == "mssql" else "text"
        return self.target_type(engine)


@dataclass(frozen=True)
class Lookup:
    """A reference table created with the entity: one key column, seeded values."""

    table: str
    column: Column
    values: tuple[str | int, ...]


@dataclass(frozen=True)
class EntitySpec:
    entity: str
    table: str
    key: str
    ordering: str
    version: str
    columns: tuple[Column, ...]
    objects: dict[str, str] = field(default_factory=dict)
    lookups: tuple[Lookup, ...] = ()
    description: str = ""
    source: str = ""
    #: The database that holds the entity's tables (target, lookups, staging, rejects); None: the
    #: job DB. The procedures, the row type and UpsertBatchLog always live in the job DB.
    database: str | None = None

    # -- derived names -------------------------------------------------------------------
    @property
    def row_type(self) -> str:
        return self.objects["row_type"]

    @property
    def upsert_one(self) -> str:
        return self.objects["upsert_one"]

    @property
    def upsert_many(self) -> str:
        return self.objects["upsert_many"]

    @property
    def staging(self) -> str:
        return self.objects["staging"]

    @property
    def rejects(self) -> str:
        return self.objects["rejects"]

    @property
    def reconcile(self) -> str:
        return self.objects["reconcile"]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    @property
    def key_column(self) -> Column:
        return self.column(self.key)

    @property
    def ordering_column(self) -> Column:
        return self.column(self.ordering)

    @property
    def procedures(self) -> tuple[str, str, str]:
        return (self.upsert_one, self.upsert_many, self.reconcile)

    def lookup(self, table: str) -> Lookup:
        return next(lk for lk in self.lookups if lk.table == table)

    @property
    def tables(self) -> tuple[str, ...]:
        """The entity's tables: target, staging, rejects and lookups."""
        return (self.table, self.staging, self.rejects, *(lk.table for lk in self.lookups))

    def table_object(self, engine: EngineInfo, name: str) -> str:
        """One of the entity's tables as the job DB (its procedures, the writers) reaches it.

        In the job DB: ``[dbo].[T]`` / ``"BlobDeltaJobs"."T"``. In a configured database, as
        configured tables are reached everywhere (dbtools.engines): ``[Db].[dbo].[T]`` /
        ``"Db"."T"``.
        """
        if self.database is None:
            return engine.job_object(name)
        return engine.mapped_object(self.database, "dbo", name)


def _fail(source: str, message: str) -> ConfigurationError:
    return ConfigurationError(f"entity spec {source}: {message}")


def _name(source: str, where: str, value: object) -> str:
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise _fail(source, f"{where} must be a plain identifier (letters, digits, _; up to 100 characters), got {value!r}")
    return value


def _column(source: str, where: str, raw: object) -> Column:
    if not isinstance(raw, dict):
        raise _fail(source, f"{where} must be a table")
    unknown = set(raw) - {"name", "type", "required", "length", "references"}
    if unknown:
        raise _fail(source, f"{where} has unknown keys {sorted(unknown)}; allowed: name, type, required, length, references")
    name = _name(source, f"{where}.name", raw.get("name"))
    kind = raw.get("type")
    if kind not in TYPES:
        raise _fail(source, f"column {name}: type must be one of {', '.join(TYPES)}, got {kind!r}")
    length = raw.get("length")
    if kind == "string":
        if not isinstance(length, int) or isinstance(length, bool) or not 1 <= length <= 4000:
            raise _fail(source, f"column {name}: a string needs length between 1 and 4000, got {length!r}")
    elif length is not None:
        raise _fail(source, f"column {name}: length applies to strings only")
    required = raw.get("required", True)
    if not isinstance(required, bool):
        raise _fail(source, f"column {name}: required must be true or false, got {required!r}")
    references = raw.get("references")
    if references is not None:
        references = _name(source, f"column {name}.references", references)
    return Column(name, kind, required, length, references)


def parse_spec(text: str, source: str = "<string>") -> EntitySpec:
    """Parse and check one spec; every problem is a ConfigurationError naming the key."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _fail(source, f"not valid TOML: {exc}") from exc
    allowed = {"entity", "table", "key", "ordering", "version", "description", "database", "objects", "columns",
               "lookups"}
    unknown = set(raw) - allowed
    if unknown:
        raise _fail(source, f"unknown keys {sorted(unknown)}; allowed: {', '.join(sorted(allowed))}")
    entity = _name(source, "entity", raw.get("entity"))
    table = _name(source, "table", raw.get("table"))
    columns = tuple(_column(source, f"columns[{i}]", c) for i, c in enumerate(raw.get("columns") or []))
    if not columns:
        raise _fail(source, "columns must list at least the key and the ordering column")
    names = [c.name for c in columns]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise _fail(source, f"columns named twice: {', '.join(duplicates)}")
    key = _name(source, "key", raw.get("key"))
    ordering = _name(source, "ordering", raw.get("ordering"))
    version = _name(source, "version", raw.get("version", "row_version"))
    for what, name in (("key", key), ("ordering", ordering)):
        if name not in names:
            raise _fail(source, f"{what} {name!r} is not one of the columns ({', '.join(names)})")
    by_name = {c.name: c for c in columns}
    if not by_name[key].required or not by_name[ordering].required:
        raise _fail(source, "the key and the ordering column must be required")
    if by_name[key].type not in ("uuid", "int", "bigint", "string"):
        raise _fail(source, f"key {key!r} must be uuid, int, bigint or string")
    for c in columns:
        if c.type == "string" and (c.name == key or c.references) and c.length > MAX_INDEXED_STRING:
            raise _fail(source, f"column {c.name}: a key or referencing string can be at most {MAX_INDEXED_STRING} "
                                "characters (SQL Server indexes 900 bytes)")
    if by_name[ordering].type not in ("timestamp", "int", "bigint"):
        raise _fail(source, f"ordering {ordering!r} must be timestamp, int or bigint")
    if version in names:
        raise _fail(source, f"version {version!r} is maintained by the procedures; it must not be a column")
    clash = sorted(n for n in {*names, version} if n.lower() in RESERVED)
    if clash:
        raise _fail(source, f"column names reserved by the package: {', '.join(clash)}")
    prefixed = sorted(n for n in {*names, version} if n.lower().startswith(RESERVED_PREFIXES))
    if prefixed:
        raise _fail(source, f"column names must not start with {' or '.join(RESERVED_PREFIXES)} (the names of "
                            f"the PostgreSQL procedures' variables, which a column of that name would hide): "
                            f"{', '.join(prefixed)}")

    raw_objects = raw.get("objects") or {}
    unknown = set(raw_objects) - set(OBJECT_KINDS)
    if unknown:
        raise _fail(source, f"objects has unknown keys {sorted(unknown)}; allowed: {', '.join(OBJECT_KINDS)}")
    defaults = {
        "row_type": f"{entity}Type",
        "upsert_one": f"Upsert{entity}",
        "upsert_many": f"Upsert{table}Type",
        "staging": f"{table}_Staging",
        "rejects": f"{table}_Rejects",
        "reconcile": f"Reconcile{table}Batch",
    }
    objects = {k: _name(source, f"objects.{k}", raw_objects.get(k, v)) for k, v in defaults.items()}

    lookups = []
    for lookup_name, body in (raw.get("lookups") or {}).items():
        _name(source, f"lookups.{lookup_name}", lookup_name)
        if not isinstance(body, dict) or set(body) - {"values"} or not isinstance(body.get("values"), list) or not body["values"]:
            raise _fail(source, f"lookups.{lookup_name} must be a table with a non-empty list 'values'")
        users = [c for c in columns if c.references == lookup_name]
        if not users:
            raise _fail(source, f"lookups.{lookup_name} is referenced by no column")
        values = tuple(body["values"])
        for value in values:
            ok = isinstance(value, str) if users[0].type == "string" else isinstance(value, int) and not isinstance(value, bool)
            if not ok or (users[0].type == "string" and len(value) > (users[0].length or 0)):
                raise _fail(source, f"lookups.{lookup_name}: value {value!r} does not fit column {users[0].name}")
        lookups.append(Lookup(lookup_name, Column(users[0].name, users[0].type, True, users[0].length), values))
    for c in columns:
        if c.references and c.references not in {lk.table for lk in lookups}:
            raise _fail(source, f"column {c.name} references {c.references!r}, which is not under [lookups]")
        if c.references and c.type not in ("string", "int", "bigint"):
            raise _fail(source, f"column {c.name}: only string, int and bigint columns can reference a lookup")
    all_names = [table, *objects.values(), *(lk.table for lk in lookups)]
    clashes = sorted({n for n in all_names if all_names.count(n) > 1})
    if clashes:
        raise _fail(source, f"object names used twice: {', '.join(clashes)}")
    description = raw.get("description", "")
    if not isinstance(description, str) or "*/" in description or "'" in description:
        raise _fail(source, "description must be text without quotes or '*/'")
    database = raw.get("database")
    if database is not None:
        database = _name(source, "database", database)
        if database.lower() in SYSTEM_DATABASES:
            raise _fail(source, f"database {database!r} is a system database; name a user database or schema")
        if database.lower() == JOB_DATABASE.lower():
            database = None  # the default, spelt out
    return EntitySpec(entity, table, key, ordering, version, columns, objects, tuple(lookups), description, source,
                      database)


def entities_dir() -> Path:
    return repo_root() / "entities"


def load_spec(path: Path) -> EntitySpec:
    return parse_spec(path.read_text(encoding="utf-8"), source=str(path.relative_to(repo_root())
                                                                    if path.is_relative_to(repo_root()) else path))


def current_specs() -> list[EntitySpec]:
    """Every spec in ``entities/``, ordered by file name."""
    return [load_spec(p) for p in sorted(entities_dir().glob("*.toml"))]


def spec_named(entity: str) -> EntitySpec:
    """The current spec of one entity, or a ConfigurationError listing the known ones."""
    specs = current_specs()
    for spec in specs:
        if spec.entity.lower() == entity.lower():
            return spec
    raise ConfigurationError(
        f"--entity {entity!r} is not a known entity; allowed values: {', '.join(s.entity for s in specs)}"
    )


# ----------------------------------------------------------------------------- DDL
NULL, NOT_NULL = "NULL", "NOT NULL"


def _column_list(engine: EngineInfo, cols: list[tuple[str, str, str]]) -> str:
    """Column definitions from (name, type, what follows the type: NULL, NOT NULL [DEFAULT ...] or nothing)."""
    return ",\n".join(f"    {engine.quote(n)} {t} {rest}".rstrip() for n, t, rest in cols)


def _nullability(required: bool) -> str:
    return NOT_NULL if required else NULL


def row_type_columns(spec: EntitySpec, engine: EngineInfo) -> str:
    """The row type: RowNumber, every column (loose types), ExpectedRowVersion."""
    nullable = NULL if engine.name == "mssql" else ""  # composite types take no constraints
    cols = [("RowNumber", "bigint", nullable)]
    cols += [(c.name, c.loose_type(engine), nullable) for c in spec.columns]
    cols.append(("ExpectedRowVersion", "binary(8)" if engine.name == "mssql" else "bigint", nullable))
    body = _column_list(engine, cols)
    # No key on RowNumber: a duplicate would fail while the TVP is bound, with a key-violation
    # error instead of the procedure's own validation message (50010 / 22023).
    return body


def _exec(ctx: MigrationContext, sql: str) -> None:
    from .repeatable import sql_text

    ctx.execute(sql_text(sql))


class _TablePlace:
    """Where DDL for an entity's tables runs, and how it names them there.

    SQL Server: a configured database is entered through ``EXEC [Db].sys.sp_executesql``, so the
    statement runs in that database and names its tables ``[dbo].[T]`` (a foreign key names its
    referenced table without a database). PostgreSQL: ``"Db"."T"`` from anywhere.
    """

    def __init__(self, ctx: MigrationContext, engine: EngineInfo, spec: EntitySpec):
        self.ctx, self.engine, self.spec = ctx, engine, spec
        self.enter = engine.name == "mssql" and spec.database is not None

    def name(self, table: str) -> str:
        return self.engine.job_object(table) if self.enter else self.spec.table_object(self.engine, table)

    def execute(self, sql: str) -> None:
        if self.enter:
            literal = sql.replace("'", "''")
            sql = f"EXEC {self.engine.quote(self.spec.database)}.sys.sp_executesql N'{literal}'"
        _exec(self.ctx, sql)

    def require_database(self, collation: bool = True) -> None:
        """Stop with a clear error unless the configured database exists and fits.

        dbtools creates only the job DB. On SQL Server the database must also be open to the
        deploying login and (with ``collation``, for creating) share the job DB's collation: the
        procedures compare the row type's and temp tables' strings (job DB collation) with the
        tables' (that database's). Its collation is read from inside it, which also starts a
        database that AUTO_CLOSE has closed (DATABASEPROPERTYEX would give NULL from outside).
        """
        database = self.spec.database
        if database is None:
            return
        where = f"entity spec {self.spec.source}: ".replace("'", "''")
        if self.engine.name == "mssql":
            lines = [
                "DECLARE @Message nvarchar(2048), @Collation nvarchar(128),",
                "    @JobCollation nvarchar(128) = CONVERT(nvarchar(128), DATABASEPROPERTYEX(DB_NAME(), 'Collation'));",
                f"IF DB_ID(N'{database}') IS NULL",
                f"    SET @Message = N'{where}database {database} does not exist; create it before migrating "
                "(dbtools creates only the job database)';",
                f"ELSE IF ISNULL(HAS_DBACCESS(N'{database}'), 0) = 0",  # NULL: dropped meanwhile
                f"    SET @Message = N'{where}database {database} is not open to this login (offline, restoring, "
                "or no user there)';",
            ]
            if collation:
                lines += [
                    "ELSE",
                    "BEGIN",
                    f"    EXEC {self.engine.quote(database)}.sys.sp_executesql",
                    "        N'SET @c = CONVERT(nvarchar(128), DATABASEPROPERTYEX(DB_NAME(), N''Collation''))',",
                    "        N'@c nvarchar(128) OUTPUT', @c = @Collation OUTPUT;",
                    "    IF @Collation IS NULL OR @JobCollation IS NULL",
                    "            OR @Collation <> @JobCollation COLLATE Latin1_General_100_BIN2",
                    f"        SET @Message = N'{where}database {database} has the collation '",
                    "            + ISNULL(@Collation, N'(unknown)') + N' and the job database ' + ISNULL(@JobCollation, N'(unknown)')",
                    "            + N'; they must match, since the procedures compare strings across the two';",
                    "END",
                ]
            lines += ["IF @Message IS NOT NULL", "    THROW 50000, @Message, 1"]
            _exec(self.ctx, "\n".join(lines))
        else:
            _exec(self.ctx, "DO $check$ BEGIN\n"
                            f"    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = '{database}') THEN\n"
                            f"        RAISE EXCEPTION USING ERRCODE = '3F000', MESSAGE = '{where}schema {database} "
                            "does not exist; create it before migrating (dbtools creates only the job database)';\n"
                            "    END IF;\nEND $check$")


def create_entity(ctx: MigrationContext, spec: EntitySpec) -> None:
    """Create the lookups, target, staging and reject tables and the row type of ``spec``.

    The tables go into the spec's ``database`` (which must exist) or the job DB; the row type
    always into the job DB, beside the procedures that take it.
    """
    from .types import create_type

    engine = engine_for(ctx.dialect.name)
    place = _TablePlace(ctx, engine, spec)
    place.require_database()
    q, job, run = engine.quote, place.name, place.execute
    mssql = engine.name == "mssql"
    for lookup in spec.lookups:
        run(f"CREATE TABLE {job(lookup.table)} (\n"
                   + _column_list(engine, [(lookup.column.name, lookup.column.target_type(engine), NOT_NULL)])
                   + f",\n    CONSTRAINT {q('PK_' + lookup.table)} PRIMARY KEY ({q(lookup.column.name)})\n)")
        rows = ", ".join("(" + (("N" if mssql else "") + "'" + v.replace("'", "''") + "'" if isinstance(v, str) else str(v)) + ")"
                         for v in lookup.values)
        run(f"INSERT INTO {job(lookup.table)} ({q(lookup.column.name)}) VALUES {rows}")

    cols = [(c.name, c.target_type(engine), _nullability(c.required)) for c in spec.columns]
    cols.append((spec.version, "rowversion", NOT_NULL) if mssql else (spec.version, "bigint", "NOT NULL DEFAULT 1"))
    body = _column_list(engine, cols)
    constraints = [f"CONSTRAINT {q('PK_' + spec.table)} PRIMARY KEY ({q(spec.key)})"]
    for c in spec.columns:
        if c.type == "json" and mssql:
            constraints.append(f"CONSTRAINT {q('CK_' + spec.table + '_' + c.name)} CHECK (ISJSON({q(c.name)}) = 1)")
        if c.references:
            lookup = spec.lookup(c.references)
            constraints.append(
                f"CONSTRAINT {q('FK_' + spec.table + '_' + c.name)} FOREIGN KEY ({q(c.name)}) "
                f"REFERENCES {job(lookup.table)} ({q(lookup.column.name)})")
    run(f"CREATE TABLE {job(spec.table)} (\n{body},\n    " + ",\n    ".join(constraints) + "\n)")
    if mssql:
        # A batch holds one key lock per row until commit; escalating them to a table lock would
        # block every other writer of the entity (about 5,000 locks trigger escalation).
        run(f"ALTER TABLE {job(spec.table)} SET (LOCK_ESCALATION = DISABLE)")

    loose = [(c.name, c.loose_type(engine), NULL) for c in spec.columns]
    version_type = "binary(8)" if mssql else "bigint"
    uuid_type = "uniqueidentifier" if mssql else "uuid"
    staging_cols = [("BatchId", uuid_type, NOT_NULL), ("RowNumber", "bigint", NOT_NULL),
                    *loose, ("ExpectedRowVersion", version_type, NULL)]
    # PostgreSQL: UNLOGGED, since staged rows live only until their batch is reconciled.
    run(f"CREATE {'' if mssql else 'UNLOGGED '}TABLE {job(spec.staging)} (\n"
               + _column_list(engine, staging_cols) + "\n)")
    if mssql:
        run(f"CREATE CLUSTERED INDEX {q('CX_' + spec.staging)} ON {job(spec.staging)} "
                   f"({q('BatchId')}, {q('RowNumber')})")
        run(f"ALTER TABLE {job(spec.staging)} SET (LOCK_ESCALATION = DISABLE)")
    else:
        run(f"CREATE INDEX {q('IX_' + spec.staging + '_BatchId')} ON {job(spec.staging)} ({q('BatchId')})")

    now = "SYSUTCDATETIME()" if mssql else "(now() AT TIME ZONE 'UTC')"
    reject_cols = [("RejectId", "bigint IDENTITY(1, 1)" if mssql else "bigint GENERATED ALWAYS AS IDENTITY", NOT_NULL),
                   ("BatchId", uuid_type, NOT_NULL), ("RowNumber", "bigint", NOT_NULL),
                   ("Reason", "nvarchar(400)" if mssql else "varchar(400)", NOT_NULL),
                   *loose, ("ExpectedRowVersion", version_type, NULL),
                   ("RejectedAt", "datetime2(3)" if mssql else "timestamp(3) without time zone",
                    # SQL Server names its DEFAULT constraints DF_<Table>_<Column> (dbtools.ddl).
                    f"NOT NULL CONSTRAINT {q('DF_' + spec.rejects + '_RejectedAt')} DEFAULT {now}" if mssql
                    else f"NOT NULL DEFAULT {now}")]
    body = _column_list(engine, reject_cols)
    run(f"CREATE TABLE {job(spec.rejects)} (\n{body},\n"
               f"    CONSTRAINT {q('PK_' + spec.rejects)} PRIMARY KEY ({q('RejectId')})\n)")
    run(f"CREATE INDEX {q('IX_' + spec.rejects + '_BatchId')} ON {job(spec.rejects)} "
               f"({q('BatchId')}, {q('RowNumber')})")
    if mssql:
        run(f"ALTER TABLE {job(spec.rejects)} SET (LOCK_ESCALATION = DISABLE)")

    create_type(ctx, spec.row_type, mssql=row_type_columns(spec, engine),
                postgresql=row_type_columns(spec, engine))


def drop_entity(ctx: MigrationContext, spec: EntitySpec) -> None:
    """Undo :func:`create_entity` (the package's procedures are dropped before downgrades run)."""
    from .types import drop_type

    from .repeatable import DeployResult, _record, deployed_state, drop_object, log_action

    engine = engine_for(ctx.dialect.name)
    place = _TablePlace(ctx, engine, spec)
    place.require_database(collation=False)  # before anything is dropped; a mismatch may be why
    # The procedures take the row type, so they go first (DROP TYPE fails while they exist).
    # Offline, log_action itself writes the row only when the log's latest entry is a deploy.
    state = {} if ctx.as_sql else deployed_state(ctx, engine)
    for name in spec.procedures:
        drop_object(ctx, engine, name, "PROCEDURE")
        if ctx.as_sql or state.get(name, ("Dropped",))[0] == "Deployed":
            log_action(ctx, engine, name, "PROCEDURE", "Dropped", None)
            _record(ctx, [DeployResult(name, "PROCEDURE", "Dropped", None)])
    drop_type(ctx, spec.row_type)
    for table in (spec.rejects, spec.staging, spec.table, *(lk.table for lk in spec.lookups)):
        place.execute(f"DROP TABLE {place.name(table)}")


def frozen_spec(revision_file: str, name: str) -> EntitySpec:
    """Load the copy of a spec a revision froze in ``<revision>_entities/<name>.toml``."""
    revision = Path(revision_file)
    return load_spec(revision.parent / f"{revision.stem.split('_')[0]}_entities" / f"{name}.toml")
