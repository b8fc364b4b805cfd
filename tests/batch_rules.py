"""What sqlcmd/SSMS demand of a GO-separated SQL Server script, as a checker.

* ``GO`` alone on a line separates batches (it is not T-SQL).
* CREATE/ALTER PROCEDURE, FUNCTION, VIEW and TRIGGER must be the first statement of a batch.
* Such a batch must run with QUOTED_IDENTIFIER and ANSI_NULLS ON: sqlcmd starts with
  QUOTED_IDENTIFIER OFF, and a module keeps the settings it was created with.
* CREATE DATABASE and USE cannot run inside a user transaction.
"""

from __future__ import annotations

import re

from dbtools.deploy.conventions import tsql_tokens

MODULE = re.compile(r"^CREATE( OR ALTER)? (PROCEDURE|PROC|FUNCTION|VIEW|TRIGGER)\b|^ALTER (PROCEDURE|PROC|FUNCTION|VIEW|TRIGGER)\b")


def split_batches(script: str) -> list[str]:
    batches, current = [], []
    for line in script.splitlines():
        if re.fullmatch(r"\s*GO\s*", line, re.I):
            batches.append("\n".join(current))
            current = []
        else:
            current.append(line)
    batches.append("\n".join(current))
    return [b for b in batches if tsql_tokens(b)]


def violations(script: str) -> list[str]:
    problems: list[str] = []
    settings = {"QUOTED_IDENTIFIER": False, "ANSI_NULLS": True}  # sqlcmd defaults without -I
    open_transactions = 0
    for number, batch in enumerate(split_batches(script), start=1):
        tokens = [t.upper() for _k, t in tsql_tokens(batch)]
        words = " ".join(tokens)
        starts_module = bool(MODULE.match(words))
        if re.search(r"(?<!^)\b(CREATE( OR ALTER)?|ALTER) (PROCEDURE|PROC|FUNCTION|VIEW|TRIGGER)\b", words) and not starts_module:
            problems.append(f"batch {number}: CREATE/ALTER of a module is not the first statement of its batch")
        if starts_module:
            for setting in ("QUOTED_IDENTIFIER", "ANSI_NULLS"):
                if not settings[setting]:
                    problems.append(f"batch {number}: module created with {setting} OFF")
        else:
            for m in re.finditer(r"\bSET (QUOTED_IDENTIFIER|ANSI_NULLS) (ON|OFF)\b", words):
                settings[m.group(1)] = m.group(2) == "ON"
            # A ROLLBACK in a script only appears on its error paths, so COMMIT alone closes.
            for statement in re.findall(r"\b(BEGIN TRANSACTION|BEGIN TRAN|COMMIT|CREATE DATABASE|USE)\b", words):
                if statement.startswith("BEGIN"):
                    open_transactions += 1
                elif statement == "COMMIT":
                    open_transactions -= 1
                elif open_transactions:
                    problems.append(f"batch {number}: {statement} inside a transaction")
    if open_transactions:
        problems.append(f"script ends with {open_transactions} open transaction(s)")
    return problems
