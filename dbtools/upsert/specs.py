"""Entities written by the upsert paths, described by specs in ``entities/<name>.toml``.

A spec names an entity's key, its ordering column ("newest wins"), its version column and its
columns with their types and checks; ``entities/README.md`` documents the format. From one
spec come, on both engines:

* the target table, the staging table (keyed by batch id), the reject table and the row type
  (SQL Server table type / PostgreSQL composite), created by a migration through
  :func:`dbtools.deploy.entities.create_entity` from a copy of the spec frozen beside the
  revision (:func:`frozen_spec`);
* the three procedures (single row, row-type batch, staging reconcile), rendered at every
  deployment from the current spec by ``templates/<engine>/entity/*.sql``.

This module only reads and checks specs: it imports nothing that renders or deploys, so the
writers, ingest and the renderer can all read specs without pulling in each other.

A spec that changes without a migration is caught by ``tests/test_entities.py``: the newest
frozen copy of every spec must equal the current one.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..db.engines import JOB_DATABASE, EngineInfo
from ..errors import ConfigurationError
from ..paths import entities_dir, repo_root

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
    "SessionId", "PageNumber", "Scope", "Entity", "SyncType", "SinceDate", "LastPageNumber",
))
#: PL/pgSQL variables of the PostgreSQL procedures (v_received, c_<column>, ...): under
#: ``#variable_conflict use_column`` a column of the same name would be read instead.
RESERVED_PREFIXES = ("c_", "v_")
#: Not a place for an entity's tables (SQL Server's system databases, PostgreSQL's system schemas).
SYSTEM_DATABASES = frozenset({"master", "model", "msdb", "tempdb", "pg_catalog", "information_schema", "pg_toast"})
#: SQL Server indexes at most 900 bytes per key: nvarchar keys and lookup values up to 450 characters.
MAX_INDEXED_STRING = 450
OBJECT_KINDS = ("row_type", "upsert_one", "upsert_many", "staging", "rejects", "reconcile", "sync_promote")
#: Columns a sync entity's staging table (SessionId, PageNumber; rows numbered within their page)
#: and reject table (PageNumber) gain; dbtools.sync.
SYNC_STAGING_COLUMNS = ("SessionId", "PageNumber")
SYNC_KEYS = ("scope", "full_since_months", "full_since_days", "buffer_seconds")
#: The longest scope the sync tables hold (revision 0012: nvarchar(300) / varchar(300)).
SYNC_SCOPE_LENGTH = 300


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
class SyncOptions:
    """``[sync]``: the entity can be loaded by paged sync sessions (dbtools.sync).

    ``scope`` is the key column that names a scope (for example the service provider): a
    session loads and promotes the rows of one scope, and a full sync clears only that scope's
    staging. A full sync asks the source for rows modified since now minus
    ``full_since_months`` months minus ``full_since_days`` days; an incremental one since the
    scope's last sync point minus ``buffer_seconds``.
    """

    scope: str
    full_since_months: int = 1
    full_since_days: int = 1
    buffer_seconds: int = 300


@dataclass(frozen=True)
class EntitySpec:
    entity: str
    table: str
    #: The key columns, in the order given: one column, or several (``key = ["a", "b"]``).
    keys: tuple[str, ...]
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
    #: ``[sync]`` options, or None when the entity is not loaded by sync sessions.
    sync: SyncOptions | None = None

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

    @property
    def sync_promote(self) -> str:
        """The procedure that promotes a sync session's staged rows (sync entities only)."""
        return self.objects["sync_promote"]

    @property
    def key(self) -> str:
        """The key column of a single-column key; a composite key has no one name (use ``keys``)."""
        if len(self.keys) != 1:
            raise ValueError(f"{self.entity} has a composite key ({', '.join(self.keys)}); use keys")
        return self.keys[0]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    @property
    def key_columns(self) -> tuple[Column, ...]:
        return tuple(self.column(k) for k in self.keys)

    @property
    def ordering_column(self) -> Column:
        return self.column(self.ordering)

    @property
    def procedures(self) -> tuple[str, ...]:
        """The procedures rendered for the entity (the sync promote only for a sync entity)."""
        return (self.upsert_one, self.upsert_many, self.reconcile) + ((self.sync_promote,) if self.sync else ())

    def lookup(self, table: str) -> Lookup:
        return next(lk for lk in self.lookups if lk.table == table)

    @property
    def tables(self) -> tuple[str, ...]:
        """The entity's tables: target, staging, rejects and lookups."""
        return (self.table, self.staging, self.rejects, *(lk.table for lk in self.lookups))

    def table_object(self, engine: EngineInfo, name: str) -> str:
        """One of the entity's tables as the job DB (its procedures, the writers) reaches it.

        In the job DB: ``[dbo].[T]`` / ``"BlobDeltaJobs"."T"``. In a configured database, as
        configured tables are reached everywhere (dbtools.db.engines): ``[Db].[dbo].[T]`` /
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
               "lookups", "sync"}
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
    raw_key = raw.get("key")
    if isinstance(raw_key, list):
        if not raw_key:
            raise _fail(source, "key must name a column, or list the columns of a composite key")
        keys = tuple(_name(source, f"key[{i}]", k) for i, k in enumerate(raw_key))
        if len(set(keys)) != len(keys):
            raise _fail(source, f"key lists a column twice: {raw_key}")
    else:
        keys = (_name(source, "key", raw_key),)
    ordering = _name(source, "ordering", raw.get("ordering"))
    version = _name(source, "version", raw.get("version", "row_version"))
    for what, name in (*(("key", k) for k in keys), ("ordering", ordering)):
        if name not in names:
            raise _fail(source, f"{what} {name!r} is not one of the columns ({', '.join(names)})")
    if ordering in keys:
        raise _fail(source, f"ordering {ordering!r} cannot be a key column")
    by_name = {c.name: c for c in columns}
    if not all(by_name[k].required for k in keys) or not by_name[ordering].required:
        raise _fail(source, "the key and the ordering column must be required")
    for key in keys:
        if by_name[key].type not in ("uuid", "int", "bigint", "string"):
            raise _fail(source, f"key {key!r} must be uuid, int, bigint or string")
    key_strings = [by_name[k].length for k in keys if by_name[k].type == "string"]
    if len(keys) > 1 and sum(2 * n for n in key_strings) + 16 * len(keys) > 900:
        raise _fail(source, "a composite key's strings are too long: SQL Server indexes at most 900 bytes "
                            "(2 per character, up to 16 per other column)")
    for c in columns:
        if c.type == "string" and (c.name in keys or c.references) and c.length > MAX_INDEXED_STRING:
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
        "sync_promote": f"SyncPromote{table}",
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
    sync = _sync_options(source, raw.get("sync"), keys, by_name)
    return EntitySpec(entity, table, keys, ordering, version, columns, objects, tuple(lookups), description, source,
                      database, sync)


def _sync_options(source: str, raw: object, keys: tuple[str, ...], by_name: dict[str, Column]) -> SyncOptions | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _fail(source, "sync must be a table")
    unknown = set(raw) - set(SYNC_KEYS)
    if unknown:
        raise _fail(source, f"sync has unknown keys {sorted(unknown)}; allowed: {', '.join(SYNC_KEYS)}")
    scope = _name(source, "sync.scope", raw.get("scope"))
    if scope not in keys:
        raise _fail(source, f"sync.scope {scope!r} must be one of the key columns ({', '.join(keys)}), so each "
                            "scope's rows are its own")
    if by_name[scope].type not in ("int", "bigint", "string"):
        raise _fail(source, f"sync.scope {scope!r} must be an int, bigint or string column")
    if by_name[scope].type == "string" and by_name[scope].length > SYNC_SCOPE_LENGTH:
        raise _fail(source, f"sync.scope {scope!r} can be at most {SYNC_SCOPE_LENGTH} characters long (the sync "
                            f"tables' Scope), got length {by_name[scope].length}")
    numbers = {}
    for name, low, high in (("full_since_months", 0, 120), ("full_since_days", 0, 3660),
                            ("buffer_seconds", 0, 86_400 * 30)):
        value = raw.get(name, getattr(SyncOptions, name))
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise _fail(source, f"sync.{name} must be an integer from {low} to {high}, got {value!r}")
        numbers[name] = value
    return SyncOptions(scope, **numbers)


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


def frozen_spec(revision_file: str, name: str) -> EntitySpec:
    """Load the copy of a spec a revision froze in ``<revision>_entities/<name>.toml``."""
    revision = Path(revision_file)
    return load_spec(revision.parent / f"{revision.stem.split('_')[0]}_entities" / f"{name}.toml")
