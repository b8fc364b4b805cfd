"""Repeatable objects: procedures deployed by checksum, the way Flyway's ``R__`` scripts are.

Policy (the README explains it for DBAs):

* Procedures belong to the package version, not to a migration revision. They are deployed
  when a migration run leaves the database **at the package's head revision**, and only the
  objects whose *rendered* text changed (or that are missing from the catalog) are applied.
* Every deploy or drop appends one row to ``BlobDeltaDeploymentLog`` (object, kind, action,
  SHA-256 of the rendered text, package version, who, when), so the log shows each
  procedure once per changed text.
* ``CREATE OR ALTER`` (SQL Server) / ``CREATE OR REPLACE`` (PostgreSQL) keep permissions.
* A run that leaves the database *below* head (an upgrade to an old revision, a downgrade)
  never deploys: an old revision does not silently pick up new procedure text. A downgrade
  drops the package's procedures, since their text belongs to the head schema; the package
  version that shipped the older head brings its own procedures.

All SQL goes through the Alembic migration context, so the same code writes the offline
script (``--sql``) and talks to a live database.
"""

from __future__ import annotations

import logging
import re

from dataclasses import dataclass

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from sqlalchemy.dialects import mssql, postgresql

from .. import __version__
from ..db.engines import DEPLOYMENT_LOG, EngineInfo
from .render import RenderedObject, render_objects

log = logging.getLogger("dbtools.migrate")

ACTIONS = ("Deployed", "Dropped")


def utc_now_default(engine: EngineInfo) -> sa.TextClause:
    """Server default for a UTC timestamp column."""
    if engine.name == "mssql":
        return sa.text("SYSUTCDATETIME()")
    return sa.text("(now() AT TIME ZONE 'UTC')")


def current_user_default(engine: EngineInfo) -> sa.TextClause:
    """Server default naming the login that wrote the row."""
    return sa.text("SUSER_SNAME()" if engine.name == "mssql" else "CURRENT_USER")


def timestamp_type() -> sa.types.TypeEngine:
    """Millisecond UTC timestamp: DATETIME2(3) on SQL Server, TIMESTAMP(3) on PostgreSQL."""
    return sa.DateTime().with_variant(mssql.DATETIME2(3), "mssql").with_variant(
        postgresql.TIMESTAMP(precision=3), "postgresql"
    )


def log_columns(engine: EngineInfo) -> list[sa.Column]:
    """Columns of the deployment log (shared by the migration and this module)."""
    return [
        sa.Column("DeploymentId", sa.BigInteger, sa.Identity(start=1)),
        sa.Column("ObjectName", sa.Unicode(128), nullable=False),
        sa.Column("ObjectType", sa.Unicode(20), nullable=False),
        sa.Column("Action", sa.Unicode(10), nullable=False),
        sa.Column("Checksum", sa.CHAR(64), nullable=True),
        sa.Column("PackageVersion", sa.Unicode(32), nullable=False),
        sa.Column("DeployedAt", timestamp_type(), nullable=False, server_default=utc_now_default(engine)),
        sa.Column("DeployedBy", sa.Unicode(128), nullable=False, server_default=current_user_default(engine)),
        sa.PrimaryKeyConstraint("DeploymentId", name="PK_BlobDeltaDeploymentLog"),
        sa.CheckConstraint(f"{engine.quote('Action')} IN ('Deployed', 'Dropped')",
                           name="CK_BlobDeltaDeploymentLog_Action"),
    ]


def log_table(engine: EngineInfo) -> sa.Table:
    """The deployment log as the package writes and reads it.

    On SQL Server its INSERTs return nothing: with implicit RETURNING SQLAlchemy adds
    ``OUTPUT inserted.[DeploymentId]``, a stray result set per row in sqlcmd and SSMS, and Msg 334
    once a trigger is put on the log. PostgreSQL keeps it: without RETURNING, SQLAlchemy's offline
    (literal) rendering writes the identity key as an explicit NULL."""
    return sa.Table(DEPLOYMENT_LOG, sa.MetaData(), *log_columns(engine), schema=engine.job_schema,
                    implicit_returning=engine.name != "mssql")


def sql_text(sql: str) -> sa.TextClause:
    """Wrap raw SQL for ``MigrationContext.execute`` without bind-parameter parsing.

    ``text()`` treats ``:name`` as a bind parameter; every colon is escaped so procedure
    bodies (``::`` casts, labels, string literals) pass through unchanged.
    """
    return sa.text(sql.replace(":", r"\:"))


@dataclass(frozen=True)
class DeployResult:
    name: str
    kind: str
    action: str  # Deployed, Unchanged, Dropped
    checksum: str | None


def _is_offline(ctx: MigrationContext) -> bool:
    return bool(ctx.as_sql)


def execute_object(ctx: MigrationContext, engine: EngineInfo, obj: RenderedObject) -> None:
    if engine.name == "mssql":
        # Its own batch before the CREATE: sqlcmd defaults QUOTED_IDENTIFIER OFF, and a
        # procedure keeps the settings it was created with.
        ctx.execute(sql_text("SET QUOTED_IDENTIFIER ON;\nSET ANSI_NULLS ON"))
    ctx.execute(sql_text(obj.sql.rstrip().rstrip(";")))


def log_action(ctx: MigrationContext, engine: EngineInfo, name: str, kind: str, action: str,
         checksum: str | None) -> None:
    """Append one deployment-log row.

    Online the caller has already compared with the log. Offline scripts cannot read the log
    first, so the row is written only when it changes the object's latest state: a deploy
    whose checksum differs from the latest deploy, a drop of an object whose latest entry is
    a deploy.
    """
    table = log_table(engine)
    values = {
        "ObjectName": name,
        "ObjectType": kind,
        "Action": action,
        "Checksum": checksum,
        "PackageVersion": __version__,
    }
    if not _is_offline(ctx):
        ctx.execute(table.insert().values(**values))
        return
    latest_id = (
        sa.select(sa.func.max(table.c.DeploymentId))
        .where(table.c.ObjectName == name)
        .scalar_subquery()
    )
    latest_deployed = sa.select(table.c.DeploymentId).where(
        table.c.DeploymentId == latest_id, table.c.Action == "Deployed"
    )
    if action == "Deployed":
        condition = ~sa.exists(latest_deployed.where(table.c.Checksum == checksum))
    else:
        condition = sa.exists(latest_deployed)
    selectable = sa.select(
        *(sa.literal(v, type_=table.c[k].type).label(k) for k, v in values.items())
    ).where(condition)
    ctx.execute(table.insert().from_select(list(values), selectable))


#: The deployment log's ObjectType of a migration revision (upgraded: Deployed; downgraded: Dropped).
REVISION = "REVISION"


def log_revision(ctx: MigrationContext, engine: EngineInfo, revision: str, action: str, checksum: str | None) -> None:
    """Record a revision applied (Deployed) or undone (Dropped): who and when, for dbtools history."""
    table = log_table(engine)
    ctx.execute(table.insert().values(ObjectName=revision, ObjectType=REVISION, Action=action, Checksum=checksum,
                                      PackageVersion=__version__))


def deployed_state(ctx: MigrationContext, engine: EngineInfo) -> dict[str, tuple[str, str | None]]:
    """Latest (action, checksum) per object from the deployment log (online only); revisions,
    which the log records too, are not objects."""
    table = log_table(engine)
    latest = (sa.select(sa.func.max(table.c.DeploymentId)).where(table.c.ObjectType != REVISION)
              .group_by(table.c.ObjectName))
    rows = ctx.connection.execute(
        sa.select(table.c.ObjectName, table.c.Action, table.c.Checksum).where(
            table.c.DeploymentId.in_(latest)
        )
    )
    return {r.ObjectName: (r.Action, r.Checksum) for r in rows}


def existing_objects(connection: sa.Connection, engine: EngineInfo) -> set[str]:
    """Names of routines and views present in the job schema."""
    if engine.name == "mssql":
        sql = (
            "SELECT o.name FROM sys.objects AS o WHERE o.schema_id = SCHEMA_ID(?) "
            "AND o.type IN ('P', 'FN', 'IF', 'TF', 'V')"
        )
        return {r[0] for r in connection.exec_driver_sql(sql, (engine.job_schema,))}
    sql = (
        "SELECT p.proname FROM pg_catalog.pg_proc AS p JOIN pg_catalog.pg_namespace AS n "
        "ON n.oid = p.pronamespace WHERE n.nspname = %(s)s "
        "UNION SELECT c.relname FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n "
        "ON n.oid = c.relnamespace WHERE n.nspname = %(s)s AND c.relkind = 'v'"
    )
    return {r[0] for r in connection.exec_driver_sql(sql, {"s": engine.job_schema})}


def catalog_definitions(connection: sa.Connection, engine: EngineInfo) -> dict[str, list[str | None]]:
    """The job schema's routines as the catalog holds them: SQL Server's whole definition,
    PostgreSQL's body (prosrc; a name may have overloads).

    SQL Server shows a login only the modules it has some permission on, and OBJECT_DEFINITION
    gives NULL (kept as None here) without VIEW DEFINITION: see :func:`definitions_readable`."""
    if engine.name == "mssql":
        rows = connection.exec_driver_sql(
            "SELECT o.name, OBJECT_DEFINITION(o.object_id) FROM sys.objects AS o WHERE o.schema_id = SCHEMA_ID(?) "
            "AND o.type IN ('P', 'FN', 'IF', 'TF', 'V')", (engine.job_schema,)).all()
    else:
        rows = connection.exec_driver_sql(
            "SELECT p.proname, p.prosrc FROM pg_catalog.pg_proc AS p JOIN pg_catalog.pg_namespace AS n "
            "ON n.oid = p.pronamespace WHERE n.nspname = %(s)s", {"s": engine.job_schema}).all()
    found: dict[str, list[str | None]] = {}
    for name, text in rows:
        found.setdefault(name, []).append(text)
    return found


def unreadable_definition(engine: EngineInfo) -> str:
    """What a login needs to read the job schema's definitions (SQL Server: VIEW DEFINITION)."""
    return f"definition not readable: this login needs VIEW DEFINITION on schema {engine.quote(engine.job_schema)}"


def definitions_readable(connection: sa.Connection, engine: EngineInfo) -> bool:
    """Whether this login sees every module of the job schema and its definition. SQL Server:
    VIEW DEFINITION on the schema (held directly, through the database, or implied by CONTROL or
    db_owner); without it, a module it may only execute reads as NULL and the others are not
    listed at all. PostgreSQL: pg_proc is readable by every role."""
    if engine.name != "mssql":
        return True
    return connection.exec_driver_sql(
        "SELECT ISNULL(HAS_PERMS_BY_NAME(?, N'SCHEMA', N'VIEW DEFINITION'), 0)", (engine.job_schema,)).scalar() == 1


def _comparable(engine_name: str, text: str, *, rendered: bool) -> str:
    """What the catalog keeps of an object: the whole statement (SQL Server, as sent), or the body
    between its dollar quotes (PostgreSQL: a rendered statement is cut down to it)."""
    text = text.replace("\r\n", "\n")
    if engine_name == "mssql":
        # SQL Server keeps the text of the CREATE as sent, but an ALTER is stored as CREATE: compare
        # from the object's kind on.
        text = re.sub(r"^\s*(?:CREATE(?:\s+OR\s+ALTER)?|ALTER)\s+", "", text, count=1, flags=re.I)
        return text.strip().rstrip(";").rstrip()
    if not rendered:
        return text
    match = re.search(r"\bAS\s+(\$\w*\$)(.*)\1", text, re.S)
    return match.group(2) if match else text


def log_readable(connection: sa.Connection, engine: EngineInfo) -> bool:
    """Whether this login may read the deployment log (which must exist)."""
    if engine.name == "mssql":
        sql = "SELECT ISNULL(HAS_PERMS_BY_NAME(?, N'OBJECT', N'SELECT'), 0)"
        return connection.exec_driver_sql(sql, (engine.job_object(DEPLOYMENT_LOG),)).scalar() == 1
    return bool(connection.exec_driver_sql(
        "SELECT pg_catalog.has_schema_privilege(%(s)s, 'USAGE') "
        "AND pg_catalog.has_table_privilege(%(t)s, 'SELECT')",
        {"s": engine.job_schema, "t": engine.job_object(DEPLOYMENT_LOG)}).scalar())


def unreadable(definitions: list[str | None]) -> bool:
    """Whether the catalog lists the object but this login may not read its definition (SQL
    Server's OBJECT_DEFINITION is NULL without VIEW DEFINITION)."""
    return bool(definitions) and all(d is None for d in definitions)


def edited(engine_name: str, obj: RenderedObject, definitions: list[str | None]) -> bool:
    """Whether the catalog's definition of ``obj`` differs from its rendered text (changed by hand).
    A definition this login cannot read (None) is not evidence of an edit: see :func:`unreadable`."""
    readable = [d for d in definitions if d is not None]
    if definitions and not readable:
        return False
    expected = _comparable(engine_name, obj.sql, rendered=True)
    return expected not in [_comparable(engine_name, d, rendered=False) for d in readable]


def deploy_all(ctx: MigrationContext, engine: EngineInfo) -> list[DeployResult]:
    """Deploy every changed or missing object; drop objects the package no longer ships.

    The results are also added to the run's outcome, like :func:`drop_all`'s.
    """
    objects = render_objects(engine.name)
    results: list[DeployResult] = []
    if _is_offline(ctx):
        for obj in objects:
            execute_object(ctx, engine, obj)
            log_action(ctx, engine, obj.name, obj.kind, "Deployed", obj.checksum)
            results.append(DeployResult(obj.name, obj.kind, "Deployed", obj.checksum))
        return _record(ctx, results)
    state = deployed_state(ctx, engine)
    present = existing_objects(ctx.connection, engine)
    definitions = catalog_definitions(ctx.connection, engine)
    shipped = {obj.name for obj in objects}
    for obj in objects:
        action, checksum = state.get(obj.name, (None, None))
        if unreadable(definitions.get(obj.name, [])):
            log.warning("%s: %s; whether it was edited by hand is not known", obj.name, unreadable_definition(engine))
        # Unchanged only when the log says so and the catalog agrees: a procedure dropped or edited
        # by hand since it was deployed is deployed again.
        if (action == "Deployed" and checksum == obj.checksum and obj.name in present
                and not edited(engine.name, obj, definitions.get(obj.name, []))):
            results.append(DeployResult(obj.name, obj.kind, "Unchanged", obj.checksum))
            continue
        execute_object(ctx, engine, obj)
        log_action(ctx, engine, obj.name, obj.kind, "Deployed", obj.checksum)
        results.append(DeployResult(obj.name, obj.kind, "Deployed", obj.checksum))
    for name, (action, _checksum) in sorted(state.items()):
        if action == "Deployed" and name not in shipped:
            kind = _logged_kind(ctx, engine, name)
            drop_object(ctx, engine, name, kind)
            log_action(ctx, engine, name, kind, "Dropped", None)
            results.append(DeployResult(name, kind, "Dropped", None))
    return _record(ctx, results)


def _record(ctx: MigrationContext, results: list[DeployResult]) -> list[DeployResult]:
    """Add results to the run's outcome (``config.attributes['dbtools.outcome']``) and return them."""
    outcome = ctx.config.attributes.get("dbtools.outcome") if ctx.config is not None else None
    if outcome is not None:
        outcome.objects.extend(results)
    return results


def _logged_kind(ctx: MigrationContext, engine: EngineInfo, name: str) -> str:
    table = log_table(engine)
    return ctx.connection.execute(
        sa.select(table.c.ObjectType).where(table.c.ObjectName == name)
        .order_by(table.c.DeploymentId.desc()).limit(1)
    ).scalar_one()


def drop_object(ctx: MigrationContext, engine: EngineInfo, name: str, kind: str) -> None:
    if engine.name == "mssql":
        ctx.execute(sql_text(f"DROP {kind} IF EXISTS {engine.job_object(name)}"))
        return
    if kind == "VIEW":
        ctx.execute(sql_text(f"DROP VIEW IF EXISTS {engine.job_object(name)}"))
        return
    # Every overload of the routine, whatever its argument list.
    schema_literal = engine.job_schema.replace("'", "''")
    name_literal = name.replace("'", "''")
    ctx.execute(sql_text(
        "DO $dbtools$\nDECLARE r regprocedure;\nBEGIN\n"
        "  FOR r IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc AS p\n"
        "           JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace\n"
        f"           WHERE n.nspname = '{schema_literal}' AND p.proname = '{name_literal}' LOOP\n"
        "    EXECUTE format('DROP ROUTINE %s', r);\n"
        "  END LOOP;\nEND\n$dbtools$"
    ))


def drop_all(ctx: MigrationContext, engine: EngineInfo) -> list[DeployResult]:
    """Drop every repeatable object: the package's own and any the log still lists.

    Called from env.py after a downgrade and from the revision that drops the log; the
    results are also added to the run's outcome (``config.attributes['dbtools.outcome']``).
    """
    kinds = {obj.name: obj.kind for obj in render_objects(engine.name)}
    logged: dict[str, tuple[str, str | None]] = {}
    if not _is_offline(ctx):
        logged = deployed_state(ctx, engine)
        for name, (action, _c) in logged.items():
            if action == "Deployed" and name not in kinds:
                kinds[name] = _logged_kind(ctx, engine, name)
    results = []
    for name, kind in sorted(kinds.items()):
        drop_object(ctx, engine, name, kind)
        if _is_offline(ctx) or logged.get(name, ("Dropped",))[0] == "Deployed":
            log_action(ctx, engine, name, kind, "Dropped", None)
            results.append(DeployResult(name, kind, "Dropped", None))
    return _record(ctx, results)
