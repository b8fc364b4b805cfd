"""The driver-independent pieces of procedure calls."""

from __future__ import annotations

from dbtools.errors import driver_message
from dbtools.db.procs import ProcedureValidationError, _translate


class FakePyodbcError(Exception):
    """pyodbc.Error: args = (SQLSTATE, message); str() is the repr of that tuple."""


def test_a_pyodbc_message_keeps_its_newlines_and_quotes():
    text = ("[42000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Table 'A': one.\nTable \"B\": two. "
            "(50010) (SQLExecDirectW)")
    error = FakePyodbcError("42000", text)

    assert "\\n" in str(error)  # the escaping that driver_message undoes
    assert driver_message(error) == text
    translated = _translate(error)
    assert isinstance(translated, ProcedureValidationError)
    assert str(translated).splitlines() == ["Table 'A': one.", 'Table "B": two.']


def test_other_sql_server_errors_are_not_validation_errors():
    error = FakePyodbcError("23000", "[23000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Violation (2627)")
    assert _translate(error) is None
