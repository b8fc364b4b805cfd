"""DDL compile hooks for what the migrations write, online and in offline scripts.

**The version table is created only when it is missing.** Alembic no longer drops
``alembic_version`` when it downgrades to base; it empties it. Offline it cannot check first, so a
script from an empty database failed on a job database that had been downgraded to base. The
table's CREATE is made conditional (``IF OBJECT_ID(...) IS NULL`` / ``IF NOT EXISTS``); the
script's first check has already made sure the table is empty, if it exists.

**SQL Server DEFAULT constraints get names: ``DF_<Table>_<Column>``.** SQLAlchemy and Alembic write a column default inline (``... NOT NULL DEFAULT (x)``) or as
``ALTER TABLE t ADD DEFAULT x FOR c``; SQL Server then names the constraint itself
(``DF__BlobDelta__Statu__3B75D760``), differently on every server, and a later revision cannot drop
or change it by name. These compile hooks name every default the migrations create, online and
offline; revision 0011 renames the ones created before them.
"""

from __future__ import annotations

from alembic.ddl import mssql as alembic_mssql
from alembic.ddl.base import AddColumn, ColumnDefault, alter_table, format_column_name, format_server_default
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import CreateColumn, CreateTable

#: Alembic's version table (dbtools keeps its default name).
VERSION_TABLE = "alembic_version"

#: SQL Server's limit on an identifier's length.
MAX_NAME = 128


def default_constraint_name(table: str, column: str) -> str:
    """The name dbtools gives the DEFAULT constraint of ``table.column``."""
    return f"DF_{table}_{column}"[:MAX_NAME]


def _bracket(name: str) -> str:
    return "[" + name.replace("]", "]]") + "]"


def _named(text: str, table: str, column, compiler) -> str:
    """A column specification whose inline DEFAULT carries its name.

    SQL Server's column specification ends in ``" DEFAULT " + <the compiled default>`` when it has
    one (an IDENTITY column has none); the name goes before exactly that suffix, so a default whose
    own text holds " DEFAULT " (``server_default="IN DEFAULT MODE"``) is not split inside it."""
    if column.server_default is None:
        return text
    default = compiler.get_column_default_string(column)
    suffix = f" DEFAULT {default}" if default is not None else None
    if suffix is None or not text.endswith(suffix):
        return text
    return f"{text[:-len(suffix)]} CONSTRAINT {_bracket(default_constraint_name(table, column.name))}{suffix}"


@compiles(CreateColumn, "mssql")
def _create_column(element: CreateColumn, compiler, **kw) -> str:
    column = element.element
    return _named(compiler.visit_create_column(element, **kw), column.table.name, column, compiler)


@compiles(AddColumn, "mssql")
def _add_column(element: AddColumn, compiler, **kw) -> str:
    return _named(alembic_mssql.visit_add_column(element, compiler, **kw), element.table_name, element.column,
                  compiler)


@compiles(ColumnDefault, "mssql")
def _column_default(element: ColumnDefault, compiler, **kw) -> str:
    name = default_constraint_name(element.table_name, element.column_name)
    return "%s ADD CONSTRAINT %s DEFAULT %s FOR %s" % (
        alter_table(compiler, element.table_name, element.schema),
        _bracket(name),
        format_server_default(compiler, element.default),
        format_column_name(compiler, element.column_name),
    )


@compiles(CreateTable, "mssql")
def _create_table_mssql(element: CreateTable, compiler, **kw) -> str:
    text = compiler.visit_create_table(element, **kw)
    table = element.element
    if table.name != VERSION_TABLE:
        return text
    qualified = compiler.preparer.format_table(table).replace("'", "''")
    return f"IF OBJECT_ID(N'{qualified}', N'U') IS NULL\n{text.strip()}"


@compiles(CreateTable, "postgresql")
def _create_table_postgresql(element: CreateTable, compiler, **kw) -> str:
    if element.element.name == VERSION_TABLE:
        element.if_not_exists = True
    return compiler.visit_create_table(element, **kw)
