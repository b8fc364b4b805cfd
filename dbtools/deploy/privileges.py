"""Least privilege: the ``BlobDeltaOperator`` role and the rights the engine runs with.

Members of the role may run deltas through ``usp_BlobDelta_RunOperator`` and read the run
tables (``BlobDeltaRun``, ``BlobDeltaRunStep``); they get no right on the configuration, the
sources, the metadata or the targets. Revision 0005 creates the role and its SELECT grants;
the rights on procedures follow the procedures, so they are (re)applied by
:func:`apply_engine_access` after every deployment at head, in the same transaction:

SQL Server
    The engine's dynamic SQL and its cross-database work run under **module signing**: every
    package procedure is signed with a certificate made for this deployment, whose private
    key is dropped right after signing (``templates/mssql/engine_access.sql``). A user made
    from the certificate holds exactly the rights the engine needs, in the job database and
    in each database the configuration names. ``CREATE OR ALTER`` drops a signature, which is
    why signing follows every deployment. No ``TRUSTWORTHY``, no cross-database ownership
    chaining, no ``EXECUTE AS``.

PostgreSQL
    A procedure that COMMITs cannot be ``SECURITY DEFINER``, so ``usp_BlobDelta_Run`` runs with
    the caller's rights and does no work itself: each step between two commits is a
    ``SECURITY DEFINER`` function with a fixed ``search_path`` that takes a RunId and a table
    name and reads everything else from the run tables. Those functions belong to the NOLOGIN
    role ``BlobDeltaEngine``, which holds only the engine's rights
    (``templates/postgresql/engine_access.sql``), never to the deploying user: a trigger on a
    target table fires with the engine's rights, not a superuser's. The role therefore also executes
    those functions (and ``usp_BlobDelta_Run``, which the operator calls); ``PUBLIC`` loses
    EXECUTE on every routine of the job schema.
"""

from __future__ import annotations

import logging
import re

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext

from ..db.engines import EngineInfo
from .render import jinja_environment, render_objects
from .repeatable import sql_text

log = logging.getLogger("dbtools.migrate")

ROLE = "BlobDeltaOperator"
#: PostgreSQL: the NOLOGIN role that owns the SECURITY DEFINER functions and holds the engine's rights.
ENGINE_ROLE = "BlobDeltaEngine"
#: PostgreSQL: job tables the engine reads, and those it writes.
ENGINE_READ_TABLES = ("BlobDeltaTableConfig", "BlobDeltaStepScript", "BlobDeltaQueuePopulationScript",
                      "BlobDeltaPlanScript")
ENGINE_WRITE_TABLES = ("BlobDeltaRun", "BlobDeltaRunStep", "BlobDeltaHighWatermark", "BlobDeltaMissingParentsQueue",
                       "BlobDeltaTargetVersion", "BlobDeltaDeletionLog", "BlobDeltaRunCandidate")
CERTIFICATE = "BlobDeltaEngineSigning"
#: Names of the delta engine's routines: only these are signed (SQL Server) or callable by BlobDeltaEngine.
ENGINE_PREFIXES = ("usp_BlobDelta_", "fn_BlobDelta_")
#: PostgreSQL-only functions: the steps of usp_BlobDelta_Run between two commits (see above).
#: Every other object exists on both engines under the same name.
POSTGRESQL_ENGINE_FUNCTIONS = (
    "fn_BlobDelta_FillScript",
    "fn_BlobDelta_NextStep",
    "fn_BlobDelta_RunAbort",
    "fn_BlobDelta_RunBegin",
    "fn_BlobDelta_RunEnd",
    "fn_BlobDelta_TableAdvance",
    "fn_BlobDelta_TableBegin",
    "fn_BlobDelta_TableEnd",
    "fn_BlobDelta_TableFail",
    "fn_BlobDelta_Window",
)
#: Tables the role may read.
READ_TABLES = ("BlobDeltaRun", "BlobDeltaRunStep")
#: Routines the role may execute, per engine.
EXECUTE_ROUTINES = {
    "mssql": ("usp_BlobDelta_RunOperator",),
    "postgresql": (
        "usp_BlobDelta_RunOperator",
        "usp_BlobDelta_Run",
        "fn_BlobDelta_RunBegin",
        "fn_BlobDelta_TableBegin",
        "fn_BlobDelta_TableAdvance",
        "fn_BlobDelta_TableEnd",
        "fn_BlobDelta_RunEnd",
        "fn_BlobDelta_TableFail",
        "fn_BlobDelta_RunAbort",
    ),
}


def render_access_template(engine: EngineInfo, template: str) -> str:
    """Render ``templates/<engine>/<template>`` with the package's object names."""
    # The delta engine's own routines only: entity upsert procedures need none of its rights.
    objects = [o for o in render_objects(engine.name) if o.name.startswith(ENGINE_PREFIXES)]
    procedures = [o.name for o in objects if o.kind == "PROCEDURE"]
    definer = [name for name in EXECUTE_ROUTINES["postgresql"] if name.startswith("fn_")]
    env = jinja_environment(engine)
    return env.get_template(f"{engine.name}/{template}").render(
        procedures=procedures,
        certificate=CERTIFICATE,
        engine_role=ENGINE_ROLE,
        definer_functions=definer,
        helper_routines=[o.name for o in objects if o.name not in definer and o.name not in EXECUTE_ROUTINES[engine.name]],
        read_tables=ENGINE_READ_TABLES,
        write_tables=ENGINE_WRITE_TABLES,
    ).strip()


def execute_batch(ctx: MigrationContext, engine: EngineInfo, sql: str) -> None:
    """Run one batch through the migration context, surfacing every error it raises.

    Offline (and on PostgreSQL) this is ``ctx.execute``. Online on SQL Server the batch goes
    through a raw cursor whose result sets are drained: pyodbc reports an error raised after a
    PRINT only on ``nextset()``, and a swallowed error would let the migration commit what the
    batch's CATCH had already rolled back.
    """
    if engine.name != "mssql" or ctx.as_sql:
        ctx.execute(sql_text(sql))
        return
    dbapi = ctx.connection.dialect.loaded_dbapi
    cursor = ctx.connection.connection.cursor()
    try:
        cursor.execute(sql)
        _log_messages(cursor)
        while cursor.nextset():
            _log_messages(cursor)
    except dbapi.Error as exc:
        _log_messages(cursor)
        # As SQLAlchemy would raise it, so the CLI shows one clean line.
        raise sa.exc.DBAPIError.instance(sql[:200], None, exc, dbapi.Error,
                                         dialect=ctx.connection.dialect) from exc
    finally:
        try:
            # A plain batch's SET options outlive it; Alembic needs row counts afterwards.
            cursor.execute("SET NOCOUNT OFF")
        except dbapi.Error:
            pass
        cursor.close()


def _log_messages(cursor) -> None:
    """Pass the batch's PRINT output (skipped databases, warnings) to the migration log."""
    for _kind, text in getattr(cursor, "messages", None) or []:
        log.info("%s", re.sub(r"^(\[[^\]]*\])+", "", str(text)).strip())


def apply_engine_access(ctx: MigrationContext, engine: EngineInfo) -> None:
    """Sign (SQL Server) and grant the role its routines; run after every deployment."""
    if engine.name == "mssql":
        execute_batch(ctx, engine, render_access_template(engine, "engine_access.sql"))
        for name in EXECUTE_ROUTINES["mssql"]:
            ctx.execute(sql_text(f"GRANT EXECUTE ON OBJECT::{engine.job_object(name)} TO {engine.quote(ROLE)}"))
        return
    schema = engine.quote(engine.job_schema)
    role = engine.quote(ROLE)
    routines = ", ".join(engine.job_object(name) for name in EXECUTE_ROUTINES["postgresql"])
    ctx.execute(sql_text(f"REVOKE ALL ON ALL ROUTINES IN SCHEMA {schema} FROM PUBLIC, {role}"))
    ctx.execute(sql_text(render_access_template(engine, "engine_access.sql")))
    ctx.execute(sql_text(f"GRANT EXECUTE ON ROUTINE {routines} TO {role}"))
