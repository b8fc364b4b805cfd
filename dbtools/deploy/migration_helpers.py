"""Small helpers for revision files: the engine in force and portable column types."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mssql

from ..db.engines import EngineInfo, engine_for
from .repeatable import current_user_default, timestamp_type, utc_now_default

__all__ = [
    "current_engine",
    "check",
    "utc_now",
    "current_user",
    "Timestamp",
    "Name",
    "Flag",
    "LongText",
]


def current_engine() -> EngineInfo:
    """The engine the running migration targets (works online and offline)."""
    return engine_for(op.get_context().dialect.name)


def check(name: str, template: str, *columns: str) -> sa.CheckConstraint:
    """A named CHECK constraint whose ``{}`` placeholders are filled with quoted columns."""
    engine = current_engine()
    return sa.CheckConstraint(template.format(*(engine.quote(c) for c in columns)), name=name)


def utc_now() -> sa.TextClause:
    return utc_now_default(current_engine())


def current_user() -> sa.TextClause:
    return current_user_default(current_engine())


def Timestamp() -> sa.types.TypeEngine:  # noqa: N802 - reads like a type in column lists
    return timestamp_type()


def Name() -> sa.types.TypeEngine:  # noqa: N802
    """``sysname``-sized Unicode name (NVARCHAR(128) / VARCHAR(128))."""
    return sa.Unicode(128)


def Flag() -> sa.types.TypeEngine:  # noqa: N802
    """BIT on SQL Server, BOOLEAN on PostgreSQL."""
    return sa.Boolean(create_constraint=False)


def LongText() -> sa.types.TypeEngine:  # noqa: N802
    """NVARCHAR(MAX) on SQL Server (never the deprecated NTEXT), TEXT on PostgreSQL."""
    return sa.UnicodeText().with_variant(mssql.NVARCHAR(), "mssql")
