"""An entity's tables and row type, created and dropped by its migrations.

:func:`create_entity` makes the lookups, target, staging and reject tables and the row type
(SQL Server table type / PostgreSQL composite) of an entity spec (:mod:`dbtools.upsert.specs`),
from the copy of the spec a revision froze beside it; :func:`drop_entity` undoes it. The three
procedures of each entity are not made here: they are repeatable objects, rendered from the
current spec at every deployment (:func:`dbtools.deploy.render.render_entity_objects`).
"""

from __future__ import annotations

from alembic.runtime.migration import MigrationContext

from ..db.engines import EngineInfo, engine_for
from ..upsert.specs import EntitySpec
from .repeatable import DeployResult, _record, deployed_state, drop_object, log_action, sql_text
from .types import create_type, drop_type

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
    # The key columns in the spec's order: the procedures visit (and lock) keys in that order.
    constraints = [f"CONSTRAINT {q('PK_' + spec.table)} PRIMARY KEY ({', '.join(q(k) for k in spec.keys)})"]
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
    # A sync entity's staged rows also name their session and page (dbtools.sync): BatchId is
    # then the page load's id, RowNumber the row's number within its page.
    sync_cols = [("SessionId", uuid_type, NULL), ("PageNumber", "int", NULL)] if spec.sync else []
    staging_cols = [("BatchId", uuid_type, NOT_NULL), ("RowNumber", "bigint", NOT_NULL),
                    *loose, ("ExpectedRowVersion", version_type, NULL), *sync_cols]
    # PostgreSQL: UNLOGGED, since staged rows live only until their batch is reconciled.
    run(f"CREATE {'' if mssql else 'UNLOGGED '}TABLE {job(spec.staging)} (\n"
               + _column_list(engine, staging_cols) + "\n)")
    if mssql:
        run(f"CREATE CLUSTERED INDEX {q('CX_' + spec.staging)} ON {job(spec.staging)} "
                   f"({q('BatchId')}, {q('RowNumber')})")
        run(f"ALTER TABLE {job(spec.staging)} SET (LOCK_ESCALATION = DISABLE)")
    else:
        run(f"CREATE INDEX {q('IX_' + spec.staging + '_BatchId')} ON {job(spec.staging)} ({q('BatchId')})")
    if spec.sync:
        run(f"CREATE INDEX {q('IX_' + spec.staging + '_Session')} ON {job(spec.staging)} "
            f"({q('SessionId')}, {q('PageNumber')}, {q('RowNumber')})")

    now = "SYSUTCDATETIME()" if mssql else "(now() AT TIME ZONE 'UTC')"
    reject_cols = [("RejectId", "bigint IDENTITY(1, 1)" if mssql else "bigint GENERATED ALWAYS AS IDENTITY", NOT_NULL),
                   ("BatchId", uuid_type, NOT_NULL), ("RowNumber", "bigint", NOT_NULL),
                   ("Reason", "nvarchar(400)" if mssql else "varchar(400)", NOT_NULL),
                   *loose, ("ExpectedRowVersion", version_type, NULL), *sync_cols,
                   ("RejectedAt", "datetime2(3)" if mssql else "timestamp(3) without time zone",
                    # SQL Server names its DEFAULT constraints DF_<Table>_<Column> (dbtools.deploy.ddl).
                    f"NOT NULL CONSTRAINT {q('DF_' + spec.rejects + '_RejectedAt')} DEFAULT {now}" if mssql
                    else f"NOT NULL DEFAULT {now}")]
    body = _column_list(engine, reject_cols)
    run(f"CREATE TABLE {job(spec.rejects)} (\n{body},\n"
               f"    CONSTRAINT {q('PK_' + spec.rejects)} PRIMARY KEY ({q('RejectId')})\n)")
    run(f"CREATE INDEX {q('IX_' + spec.rejects + '_BatchId')} ON {job(spec.rejects)} "
               f"({q('BatchId')}, {q('RowNumber')})")
    if spec.sync:
        run(f"CREATE INDEX {q('IX_' + spec.rejects + '_Session')} ON {job(spec.rejects)} "
            f"({q('SessionId')}, {q('PageNumber')}, {q('RowNumber')})")
    if mssql:
        run(f"ALTER TABLE {job(spec.rejects)} SET (LOCK_ESCALATION = DISABLE)")

    create_type(ctx, spec.row_type, mssql=row_type_columns(spec, engine),
                postgresql=row_type_columns(spec, engine))


def drop_entity(ctx: MigrationContext, spec: EntitySpec) -> None:
    """Undo :func:`create_entity` (the package's procedures are dropped before downgrades run)."""
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
