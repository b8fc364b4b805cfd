"""Offline SQL Server scripts that stop cleanly in SSMS as well as under ``sqlcmd -b``.

``sqlcmd -b`` exits at the first error and the open transaction dies with the session. SSMS
(and sqlcmd without ``-b``) carries on with the next batch: after XACT_ABORT has rolled the
transaction back, later batches would run in autocommit, and a compile error would leave
the transaction open for the final COMMIT. So, after every statement inside the migration
transaction, the script checks ``@@ERROR`` and ``XACT_STATE()``; on a failure it records it
in the session context and switches ``SET NOEXEC ON``, so the remaining batches are only
compiled. The last batches switch NOEXEC off again, roll back whatever is left and raise a
clear error.

This module registers an Alembic impl for the ``mssql`` dialect; it changes only offline
(``as_sql``) output.
"""

from __future__ import annotations

from alembic.ddl.mssql import MSSQLImpl

FAILED_KEY = "dbtools.migration_failed"

START = (
    "SET NOEXEC OFF;\n"
    f"EXEC sys.sp_set_session_context @key = N'{FAILED_KEY}', @value = 0"
)


def guard(condition: str | None = "XACT_STATE() <> 1") -> str:
    """A batch (without its final ``;``) that stops the rest of the script on an error.

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


FINISH = (
    f"IF CONVERT(int, SESSION_CONTEXT(N'{FAILED_KEY}')) = 1\n"
    "BEGIN\n"
    "    IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION;\n"
    "    RAISERROR(N'dbtools: the migration script failed; its transaction was rolled back. "
    "See the first error above.', 16, 1);\n"
    "END"
)


class GuardedMSSQLImpl(MSSQLImpl):
    """MSSQLImpl whose offline output guards every statement of the migration transaction."""

    __dialect__ = "mssql"
    _in_transaction = False

    def _exec(self, construct, *args, **kw):
        result = super()._exec(construct, *args, **kw)
        if self.as_sql and self._in_transaction:
            self.static_output(guard() + self.command_terminator)
            self.static_output(self.batch_separator)
        return result

    def emit_begin(self) -> None:
        super().emit_begin()
        self._in_transaction = bool(self.as_sql)

    def emit_commit(self) -> None:
        if not self.as_sql:
            return super().emit_commit()
        # The last statement of the transaction is already followed by a guard.
        self._in_transaction = False
        super().emit_commit()
        self.static_output("SET NOEXEC OFF" + self.command_terminator)
        self.static_output(self.batch_separator)
        self.static_output(FINISH + self.command_terminator)
        self.static_output(self.batch_separator)
