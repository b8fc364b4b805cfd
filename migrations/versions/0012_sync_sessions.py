"""Paged sync sessions, and the JasperDevice entity they load.

A paged source (a carrier's device API, say) reaches an entity through *sync sessions*
(dbtools.sync, docs/sync.md): a session stages the pages of one scope (a service provider), and
only when every page up to the last has arrived does ``usp_Sync_Promote`` apply them to the
entity's table, newest wins, in one transaction. This revision creates:

* ``SyncScopeState``: per entity and scope, the last successful sync point (the start of the
  session last promoted), that session, and whether a full sync has completed;
* ``SyncSession``: one row per session (UUIDv7): its entity, scope, type, since-date, pages and
  rows received, the last page number once known, its status (Open, Promoting, Promoted, Failed,
  Superseded), counts and timestamps. At most one session per entity and scope is Open,
  Promoting or Failed (a filtered unique index);
* ``SyncSessionPage``: one row per page a session received, replaced when the page is loaded
  again (so a retried page never duplicates rows);
* the JasperDevice entity (spec frozen in ``0012_entities/``): its lookups, target (keyed by
  ServiceProviderId and ICCID), staging and reject tables and row type. A sync entity's staging
  table also carries ``SessionId`` and ``PageNumber`` (rows are numbered within their page),
  and its reject table ``SessionId`` and ``PageNumber``, so a reject names its page and row.

The procedures (``usp_Sync_Begin``, ``usp_Sync_Page``, ``usp_Sync_Promote`` and the entity's
``SyncPromoteJasperDevices``) are repeatable objects, rendered at deployment.

A scope is text of at most 300 characters (an integer scope in its canonical decimal form). On
SQL Server the ``Scope`` columns compare binary (``Latin1_General_100_BIN2``), as PostgreSQL's
text does, so two scopes that differ in case are two scopes everywhere, and the keys that hold
a scope stay within SQL Server's 900 bytes.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mssql

from dbtools.deploy.entities import create_entity, drop_entity
from dbtools.deploy.migration_helpers import Flag, LongText, Name, Timestamp, check, current_engine, current_user, utc_now
from dbtools.upsert.specs import frozen_spec

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

SPEC = frozen_spec(__file__, "jasper_device")
STATUSES = ("Open", "Promoting", "Promoted", "Failed", "Superseded")
#: A scope is text in the sync tables (an int scope column is compared as its decimal text). 300
#: characters keep (EntityName, Scope) within SQL Server's 900-byte clustered key.
SCOPE_LENGTH = 300


def Scope() -> sa.types.TypeEngine:  # noqa: N802 - reads like a type in column lists
    """A scope: compared exactly on both engines (binary collation on SQL Server)."""
    return sa.Unicode(SCOPE_LENGTH).with_variant(
        mssql.NVARCHAR(SCOPE_LENGTH, collation="Latin1_General_100_BIN2"), "mssql")


def upgrade() -> None:
    engine = current_engine()
    schema = engine.job_schema
    op.create_table(
        "SyncScopeState",
        sa.Column("EntityName", Name(), nullable=False),
        sa.Column("Scope", Scope(), nullable=False),
        sa.Column("LastSyncPoint", Timestamp(), nullable=True),
        sa.Column("LastSessionId", sa.Uuid(), nullable=True),
        sa.Column("IsInitialFullSyncDone", Flag(), nullable=False, server_default=sa.false()),
        sa.Column("UpdatedAt", Timestamp(), nullable=False, server_default=utc_now()),
        sa.PrimaryKeyConstraint("EntityName", "Scope", name="PK_SyncScopeState"),
        schema=schema,
    )
    op.create_table(
        "SyncSession",
        sa.Column("SessionId", sa.Uuid(), nullable=False),
        sa.Column("EntityName", Name(), nullable=False),
        sa.Column("Scope", Scope(), nullable=False),
        sa.Column("SyncType", sa.Unicode(20), nullable=False),
        sa.Column("SinceDate", Timestamp(), nullable=False),
        sa.Column("Status", sa.Unicode(20), nullable=False, server_default=sa.text("'Open'")),
        sa.Column("PagesReceived", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("LastPageNumber", sa.Integer(), nullable=True),
        sa.Column("RowsReceived", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("RowsInserted", sa.BigInteger(), nullable=True),
        sa.Column("RowsUpdated", sa.BigInteger(), nullable=True),
        sa.Column("RowsSkipped", sa.BigInteger(), nullable=True),
        sa.Column("RowsRejected", sa.BigInteger(), nullable=True),
        sa.Column("StartedAt", Timestamp(), nullable=False),
        sa.Column("StartedBy", sa.Unicode(128), nullable=False, server_default=current_user()),
        sa.Column("LastPageAt", Timestamp(), nullable=True),
        sa.Column("EndedAt", Timestamp(), nullable=True),
        sa.Column("SupersededBy", sa.Uuid(), nullable=True),
        sa.Column("ErrorMessage", LongText(), nullable=True),
        sa.PrimaryKeyConstraint("SessionId", name="PK_SyncSession"),
        check("CK_SyncSession_SyncType", "{} IN ('Full', 'Incremental')", "SyncType"),
        check("CK_SyncSession_Status", "{} IN (" + ", ".join(f"'{s}'" for s in STATUSES) + ")", "Status"),
        check("CK_SyncSession_LastPageNumber", "{} >= 1", "LastPageNumber"),
        schema=schema,
    )
    # At most one session per scope is live; Begin supersedes the one there before it opens another.
    live = "{} IN ('Open', 'Promoting', 'Failed')"
    op.create_index("UX_SyncSession_Live", "SyncSession", ["EntityName", "Scope"], unique=True, schema=schema,
                    mssql_where=sa.text(live.format("[Status]")),
                    postgresql_where=sa.text(live.format('"Status"')))
    op.create_index("IX_SyncSession_Scope", "SyncSession", ["EntityName", "Scope", "StartedAt"], schema=schema)
    op.create_table(
        "SyncSessionPage",
        sa.Column("SessionId", sa.Uuid(), nullable=False),
        sa.Column("PageNumber", sa.Integer(), nullable=False),
        sa.Column("LoadId", sa.Uuid(), nullable=False),
        sa.Column("RowsReceived", sa.Integer(), nullable=False),
        sa.Column("RowsStaged", sa.Integer(), nullable=False),
        sa.Column("RowsRejected", sa.Integer(), nullable=False),
        sa.Column("IsLastPage", Flag(), nullable=False),
        sa.Column("ReceivedAt", Timestamp(), nullable=False, server_default=utc_now()),
        sa.PrimaryKeyConstraint("SessionId", "PageNumber", name="PK_SyncSessionPage"),
        sa.ForeignKeyConstraint(["SessionId"], [f"{schema}.SyncSession.SessionId"], name="FK_SyncSessionPage_Session"),
        check("CK_SyncSessionPage_PageNumber", "{} >= 1", "PageNumber"),
        check("CK_SyncSessionPage_Rows", "{} = {} + {}", "RowsReceived", "RowsStaged", "RowsRejected"),
        schema=schema,
    )
    create_entity(op.get_context(), SPEC)


def downgrade() -> None:
    schema = current_engine().job_schema
    drop_entity(op.get_context(), SPEC)
    op.drop_table("SyncSessionPage", schema=schema)
    op.drop_index("IX_SyncSession_Scope", table_name="SyncSession", schema=schema)
    op.drop_index("UX_SyncSession_Live", table_name="SyncSession", schema=schema)
    op.drop_table("SyncSession", schema=schema)
    op.drop_table("SyncScopeState", schema=schema)
