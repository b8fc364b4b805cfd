"""Offline SQL Server scripts that stop cleanly in SSMS as well as under ``sqlcmd -b``.

``sqlcmd -b`` exits at the first error and the open transaction dies with the session. SSMS
(and sqlcmd without ``-b``) carries on with the next batch: after XACT_ABORT has rolled the
transaction back, later batches would run in autocommit, and a compile error (which
XACT_ABORT does not cover) would leave the transaction open for the final COMMIT.

So every batch inside the migration transaction proves that it ran to its end, and the batch
after it checks that proof before anything else runs:

* an ordinary statement is followed, in its own batch, by
  ``EXEC sys.sp_set_session_context N'dbtools.step', <n>``: a batch that failed to compile or
  was aborted never sets it;
* a CREATE/ALTER of a module must be alone in its batch, so its proof is the module's
  ``modify_date`` being no older than the script's start.

A failed check records the failure in the session context and switches ``SET NOEXEC ON``:
the remaining batches are only compiled. The last batches switch NOEXEC off, roll back what is
left and raise one clear error. The script also refuses to start inside an open transaction
and turns IMPLICIT_TRANSACTIONS off (with it on, the final COMMIT would commit nothing).

This module registers an Alembic impl for the ``mssql`` dialect; only offline (``as_sql``)
output changes.
"""

from __future__ import annotations

import re

from alembic.ddl.impl import DefaultImpl
from alembic.ddl.mssql import MSSQLImpl

FAILED_KEY = "dbtools.migration_failed"
STEP_KEY = "dbtools.step"
STARTED_KEY = "dbtools.started"

START = (
    "SET NOEXEC OFF;\n"
    "SET IMPLICIT_TRANSACTIONS OFF;\n"
    f"EXEC sys.sp_set_session_context @key = N'{FAILED_KEY}', @value = 0;\n"
    f"EXEC sys.sp_set_session_context @key = N'{STEP_KEY}', @value = 0;\n"
    "DECLARE @Started datetime = GETDATE();\n"
    f"EXEC sys.sp_set_session_context @key = N'{STARTED_KEY}', @value = @Started;\n"
    "IF @@TRANCOUNT <> 0\n"
    "BEGIN\n"
    f"    EXEC sys.sp_set_session_context @key = N'{FAILED_KEY}', @value = 1;\n"
    "    RAISERROR(N'dbtools: the session already has an open transaction; run the script in a new session.', 16, 1);\n"
    "    SET NOEXEC ON;\n"
    "END"
)

_MODULE = re.compile(
    r"^\s*(?:CREATE\s+OR\s+ALTER|CREATE|ALTER)\s+(?:PROCEDURE|PROC|FUNCTION|VIEW|TRIGGER)\s+"
    r"((?:\[(?:[^\]]|\]\])*\]|\w+)(?:\s*\.\s*(?:\[(?:[^\]]|\]\])*\]|\w+))?)",
    re.I,
)


def guard(condition: str | None = "XACT_STATE() <> 1 OR @@TRANCOUNT <> 1") -> str:
    """A batch (without its final ``;``) that stops the rest of the script on a failure.

    It fires when the previous batch raised (``@@ERROR``) or ``condition`` holds.
    """
    test = "@@ERROR <> 0" + (f" OR {condition}" if condition else "")
    return (
        f"IF {test}\n"
        "BEGIN\n"
        f"    EXEC sys.sp_set_session_context @key = N'{FAILED_KEY}', @value = 1;\n"
        "    SET NOEXEC ON;\n"
        "END"
    )


def _version_read(table: str, indent: str = "") -> str:
    """A statement that leaves the version(s) alembic_version holds in @Current (NULL: none).
    @Current nvarchar(200) must be declared (and NULL) before it."""
    literal = table.replace("'", "''")
    return (
        f"{indent}IF OBJECT_ID(N'{literal}', N'U') IS NOT NULL\n"
        f"{indent}    EXEC sys.sp_executesql\n"
        f"{indent}        N'SELECT @Version = STRING_AGG(version_num, N'', '') WITHIN GROUP (ORDER BY version_num) "
        f"FROM {literal.replace(chr(39), chr(39) * 2)};',\n"
        f"{indent}        N'@Version nvarchar(200) OUTPUT', @Version = @Current OUTPUT;\n"
    )


def _expected(start: str | None) -> tuple[str, str]:
    """(the revision as a T-SQL literal or NULL, as shown in messages)."""
    if start is None:
        return "NULL", "N'base (no revision)'"
    literal = "N'" + start.replace("'", "''") + "'"
    return literal, literal


def revision_check(database: str, schema: str, start: str | None) -> str:
    """The script's first check, before it creates or changes anything: it stops unless the job
    DB is at ``start``.

    ``start`` None: the script is for an empty database, so the job DB or its alembic_version must
    be absent, or the table empty. The table is read through sp_executesql (a batch naming a table
    that does not exist fails when the statement runs, whatever guards it), in a TRY: an error
    there (no right to read it) stops the script too. Only the read sits in the TRY: a RAISERROR
    of severity 11 or more inside it would jump to the CATCH, and the DBA would read "could not be
    read" instead of the revision the database is at.
    """
    table = "[" + database.replace("]", "]]") + "].[" + schema.replace("]", "]]") + "].[alembic_version]"
    expected, shown = _expected(start)
    return (
        "DECLARE @Current nvarchar(200) = NULL, @ReadError nvarchar(2048) = NULL;\n"
        "BEGIN TRY\n"
        + _version_read(table, "    ")
        + "END TRY\n"
        "BEGIN CATCH\n"
        "    SET @ReadError = ERROR_MESSAGE();\n"
        "END CATCH;\n"
        "IF @ReadError IS NOT NULL\n"
        "BEGIN\n"
        f"    EXEC sys.sp_set_session_context @key = N'{FAILED_KEY}', @value = 1;\n"
        "    RAISERROR(N'dbtools: the database''s revision could not be read (%s); nothing was changed.', 16, 1, @ReadError);\n"
        "    SET NOEXEC ON;\n"
        "END\n"
        f"ELSE IF ISNULL(@Current, N'') <> ISNULL({expected}, N'')\n"
        "BEGIN\n"
        f"    DECLARE @Expected nvarchar(200) = {shown};\n"
        "    SET @Current = ISNULL(@Current, N'base (no revision)');\n"
        f"    EXEC sys.sp_set_session_context @key = N'{FAILED_KEY}', @value = 1;\n"
        "    RAISERROR(N'dbtools: this script migrates from revision %s, but the database is at %s; nothing was "
        "changed. Generate the script with --from set to the database''s revision.', 16, 1, @Expected, @Current);\n"
        "    SET NOEXEC ON;\n"
        "END"
    )


def revision_recheck(schema: str, start: str | None) -> str:
    """The same check inside the migration transaction, under the migration lock: another
    migration may have run while this script waited for it. A THROW rolls the transaction back."""
    table = "[" + schema.replace("]", "]]") + "].[alembic_version]"
    expected, _shown = _expected(start)
    message = (f"dbtools: the database is no longer at revision {start or 'base (no revision)'} (another migration "
               "ran while this script waited for the migration lock); nothing was changed.").replace("'", "''")
    return (
        "DECLARE @Current nvarchar(200) = NULL;\n"
        + _version_read(table)
        + f"IF ISNULL(@Current, N'') <> ISNULL({expected}, N'')\n"
        f"    THROW 50022, N'{message}', 1"
    )


def step_marker(step: int) -> str:
    return f"EXEC sys.sp_set_session_context @key = N'{STEP_KEY}', @value = {step}"


def step_guard(step: int) -> str:
    """Guard after an ordinary statement: its batch must have reached its marker."""
    return guard(
        f"ISNULL(CONVERT(int, SESSION_CONTEXT(N'{STEP_KEY}')), -1) <> {step}"
        " OR XACT_STATE() <> 1 OR @@TRANCOUNT <> 1"
    )


def module_guard(name: str) -> str:
    """Guard after a CREATE/ALTER of a module: it must exist, created or altered by this script."""
    literal = name.replace("'", "''")
    return guard(
        "XACT_STATE() <> 1 OR @@TRANCOUNT <> 1 OR NOT EXISTS (SELECT 1 FROM sys.objects AS o "
        f"WHERE o.object_id = OBJECT_ID(N'{literal}') "
        f"AND o.modify_date >= CONVERT(datetime, SESSION_CONTEXT(N'{STARTED_KEY}')))"
    )


FINISH = (
    f"IF CONVERT(int, SESSION_CONTEXT(N'{FAILED_KEY}')) = 1 OR @@TRANCOUNT > 0\n"
    "BEGIN\n"
    "    IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION;\n"
    "    RAISERROR(N'dbtools: the migration script failed and stopped at its first error (see above); "
    "its transaction, if it had begun, was rolled back.', 16, 1);\n"
    "END"
)


def identity_columns(table) -> set[str]:
    """Names of the columns SQL Server creates as IDENTITY for ``table`` (a ``sa.Table``; a
    lightweight ``sa.table`` has none it could know of)."""
    names = {column.name for column in table.c if getattr(column, "identity", None) is not None}
    auto = getattr(table, "autoincrement_column", None)  # Table only: its implicit IDENTITY column
    if auto is not None:
        names.add(auto.name)
    return names


class GuardedMSSQLImpl(MSSQLImpl):
    """MSSQLImpl whose offline output proves every batch of the migration transaction ran."""

    __dialect__ = "mssql"
    _in_transaction = False
    _began = False
    _step = 0

    def _exec(self, construct, *args, **kw):
        if not (self.as_sql and self._in_transaction):
            return super()._exec(construct, *args, **kw)
        # DefaultImpl writes the statement without MSSQLImpl's GO; we close the batch ourselves.
        result = DefaultImpl._exec(self, construct, *args, **kw)
        text = str(construct) if isinstance(construct, str) else getattr(construct, "text", "")
        module = _MODULE.match(text or "")
        if module:
            self.static_output(self.batch_separator)
            check = module_guard(module.group(1))
        else:
            self._step += 1
            self.static_output(step_marker(self._step) + self.command_terminator)
            self.static_output(self.batch_separator)
            check = step_guard(self._step)
        self.static_output(check + self.command_terminator)
        self.static_output(self.batch_separator)
        return result

    def bulk_insert(self, table, rows, **kw) -> None:
        """Offline, Alembic wraps every bulk insert in ``SET IDENTITY_INSERT ... ON/OFF``, which
        fails on a table without an identity column (Msg 8106) and on rows that leave the identity
        out (Msg 545). Only rows that give the identity column a value get it, as SQLAlchemy does
        online. The identity column is one with ``sa.Identity`` or the one SQL Server makes
        IDENTITY through SQLAlchemy's implicit autoincrement (a lone integer primary key): describe
        such a table with ``sa.Table``, as a lightweight ``sa.table`` cannot say which it is."""
        if self.as_sql and not any(name in row for row in rows for name in identity_columns(table)):
            return DefaultImpl.bulk_insert(self, table, rows, **kw)
        return super().bulk_insert(table, rows, **kw)

    def emit_begin(self) -> None:
        if self.as_sql and self._began:
            raise NotImplementedError(
                "offline SQL Server scripts are one transaction; transaction_per_migration is not supported"
            )
        super().emit_begin()
        self._in_transaction = self._began = bool(self.as_sql)

    def emit_commit(self) -> None:
        if not self.as_sql:
            return super().emit_commit()
        # The last statement of the transaction is already followed by its guard.
        self._in_transaction = False
        super().emit_commit()
        self.static_output(guard("@@TRANCOUNT <> 0") + self.command_terminator)
        self.static_output(self.batch_separator)
        self.static_output("SET NOEXEC OFF" + self.command_terminator)
        self.static_output(self.batch_separator)
        self.static_output(FINISH + self.command_terminator)
        self.static_output(self.batch_separator)
