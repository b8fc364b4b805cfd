"""Static conventions every rendered procedure must follow.

SQL Server
    ``SET NOCOUNT ON`` and ``SET XACT_ABORT ON``; a TRY/CATCH whose outermost CATCH ends in
    ``THROW``; dynamic SQL only through ``EXEC sys.sp_executesql`` on an ``@Sql*`` variable;
    an ``@Sql*`` (or ``@Quoted*``) variable is built only from string literals, ``QUOTENAME(...)``,
    ``NCHAR``/``CHAR`` constants, ``CONVERT`` of a literal, ``REPLACE`` of a stored script's placeholder, ``ISNULL`` and other
    ``@Sql*``/``@Quoted*`` variables (or a stored script's ``ScriptText``, or its ``Filled`` copy), so
    identifiers enter dynamic SQL only through QUOTENAME and values only as sp_executesql parameters.

PostgreSQL
    ``LANGUAGE plpgsql`` with a fixed ``search_path`` (a ``SET`` clause, or ``set_config`` in
    procedures that COMMIT and so cannot have one); ``EXECUTE`` only on ``format(...)`` whose
    format string uses ``%I`` (and ``%%``) alone, directly or through a ``v_sql*`` variable
    assigned that way (or filled by ``replace(v_sql, '{Placeholder}', v_q_name)`` with an
    always-quoted ``v_q_*`` name, or a stored script filled by ``fn_BlobDelta_FillScript``, which puts
    only always-quoted names into it); no ``||`` building of dynamic SQL; positional ``$n`` placeholders need
    ``USING``; an outermost EXCEPTION handler ends in ``RAISE``. A ``SECURITY DEFINER`` routine
    has a ``SET search_path`` clause of its own (set_config would leave the routine's first
    statements to the caller's search_path) and never COMMITs (PostgreSQL refuses it).

:func:`check` returns a list of human-readable violations (empty when clean).
"""

from __future__ import annotations

import re

_TSQL_TOKEN = re.compile(
    r"""
    (?P<comment>--[^\n]*|/\*.*?\*/)
  | (?P<string>N?'(?:[^']|'')*')
  | (?P<bracket>\[(?:[^\]]|\]\])*\])
  | (?P<word>@{0,2}[A-Za-z_][A-Za-z0-9_@#$]*)
  | (?P<number>\d+(?:\.\d+)?)
  | (?P<op>\+=|<>|!=|>=|<=|[-+*/%=<>(),;.])
  | (?P<space>\s+)
  | (?P<other>.)
    """,
    re.S | re.X,
)


def tsql_tokens(sql: str) -> list[tuple[str, str]]:
    """(kind, text) tokens without comments and white space."""
    return [
        (m.lastgroup, m.group())
        for m in _TSQL_TOKEN.finditer(sql)
        if m.lastgroup not in ("comment", "space")
    ]


def _upper(tokens, i) -> str:
    return tokens[i][1].upper() if 0 <= i < len(tokens) else ""


def _expression(tokens, start) -> tuple[list[tuple[str, str]], int]:
    """Tokens of an expression from ``start`` to the end of its statement."""
    depth = 0
    i = start
    stop_words = {"SET", "SELECT", "IF", "EXEC", "EXECUTE", "INSERT", "UPDATE", "DELETE",
                  "DECLARE", "WHILE", "BEGIN", "END", "RETURN", "THROW", "RAISERROR", "ELSE", "PRINT"}
    while i < len(tokens):
        kind, text = tokens[i]
        if text == "(":
            depth += 1
        elif text == ")":
            if depth == 0:
                break
            depth -= 1
        elif depth == 0 and (text == ";" or (kind == "word" and text.upper() in stop_words) or
                             (text == "," and True)):
            break
        i += 1
    return tokens[start:i], i


def _dynamic_sql_violations(expr, target: str) -> list[str]:
    problems = []
    i = 0
    while i < len(expr):
        kind, text = expr[i]
        up = text.upper()
        if kind == "string" or text in ("+", ",", ")"):
            i += 1
            continue
        if kind == "word" and up in ("REPLACE", "ISNULL") and i + 1 < len(expr) and expr[i + 1][1] == "(":
            i += 2  # REPLACE(@Sql, N'{Placeholder}', @Quoted), ISNULL(@Quoted, NCHAR(2)): operands checked like any other
            continue
        if kind == "word" and up in ("QUOTENAME", "NCHAR", "CHAR") and i + 1 < len(expr) and expr[i + 1][1] == "(":
            depth, j = 0, i + 1
            while j < len(expr):
                if expr[j][1] == "(":
                    depth += 1
                elif expr[j][1] == ")":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            inner = expr[i + 2:j]
            if up in ("NCHAR", "CHAR") and not all(k == "number" for k, _t in inner):
                problems.append(f"{target}: {up}() in dynamic SQL takes only a constant")
            i = j + 1
            continue
        if kind == "word" and up == "CONVERT" and i + 1 < len(expr) and expr[i + 1][1] == "(":
            # CONVERT(nvarchar(max), N'literal'): a literal made max-typed, nothing else.
            depth, j = 0, i + 1
            while j < len(expr):
                if expr[j][1] == "(":
                    depth += 1
                elif expr[j][1] == ")":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            inner = expr[i + 2:j]
            commas = [n for n, (_k, t) in enumerate(inner) if t == ","]
            if len(commas) != 1 or [k for k, _t in inner[commas[0] + 1:]] != ["string"]:
                problems.append(f"{target}: CONVERT() in dynamic SQL takes only a string literal")
            i = j + 1
            continue
        if kind == "word" and (re.match(r"@(Sql|Quoted)\w*$", text, re.I) or up == "NULL"):
            i += 1
            continue
        if kind == "word" and up == "COLLATE" and i + 1 < len(expr) and expr[i + 1][0] == "word":
            i += 2  # COLLATE <collation>: how the text is compared, not text that goes into it
            continue
        problems.append(
            f"{target}: {text!r} is concatenated into dynamic SQL; identifiers must go through "
            "QUOTENAME() and values must be sp_executesql parameters"
        )
        i += 1
    return problems


def check_tsql(sql: str, name: str = "object") -> list[str]:
    """Violations of the SQL Server conventions in one rendered object."""
    problems: list[str] = []
    tokens = tsql_tokens(sql)
    words = [t.upper() for k, t in tokens if k == "word"]
    joined = " ".join(t.upper() for _k, t in tokens)
    if "SET NOCOUNT ON" not in joined:
        problems.append(f"{name}: missing SET NOCOUNT ON")
    if "SET XACT_ABORT ON" not in joined:
        problems.append(f"{name}: missing SET XACT_ABORT ON")
    if "BEGIN TRY" not in joined or "BEGIN CATCH" not in joined:
        problems.append(f"{name}: body is not wrapped in TRY/CATCH")
    else:
        # What runs last in the outermost CATCH: the text just before the procedure's last END CATCH
        # (a CATCH nested in it ends earlier).
        end_catch = joined.rfind("END CATCH")
        body = joined[:end_catch].rstrip(" ;")
        if not re.search(r"\bTHROW\s*(;|$)", body) and not body.endswith("THROW"):
            problems.append(f"{name}: the outermost CATCH block must end in THROW")
    for i, (kind, text) in enumerate(tokens):
        up = text.upper()
        # Assignments to dynamic-SQL variables.
        if kind == "word" and re.match(r"@(Sql|Quoted)\w*$", text, re.I):
            prev = _upper(tokens, i - 1)
            nxt = tokens[i + 1][1] if i + 1 < len(tokens) else ""
            if prev in ("SET", "SELECT", ",") and nxt in ("=", "+="):
                expr, _end = _expression(tokens, i + 2)
                if (len(expr) >= 3 and expr[0][0] == "word" and [t.upper() for _k, t in expr[1:3]] in (
                        [".", "SCRIPTTEXT"], [".", "FILLED"]) and (len(expr) == 3 or expr[3][1].upper() == "FROM")):
                    # a stored script (BlobDelta*Script.ScriptText, maintained by DBAs) before it is filled, or
                    # after (the engine's @Scripts.Filled, written only from its checked @Sql* variables)
                    continue
                problems += _dynamic_sql_violations(expr, f"{name}: {text}")
        # Ways of executing strings.
        if up in ("EXEC", "EXECUTE"):
            nxt = tokens[i + 1] if i + 1 < len(tokens) else ("", "")
            if nxt[1] == "(":
                problems.append(f"{name}: EXEC(string) is not allowed; use EXEC sys.sp_executesql with parameters")
            elif nxt[0] == "word" and nxt[1].startswith("@") and _upper(tokens, i + 2) != "=":
                problems.append(f"{name}: EXEC {nxt[1]} executes a string; use EXEC sys.sp_executesql")
            elif nxt[1].upper() in ("SP_EXECUTESQL",) or (
                nxt[1].upper() == "SYS" and _upper(tokens, i + 3) == "SP_EXECUTESQL"
            ):
                first = i + (2 if nxt[1].upper() == "SP_EXECUTESQL" else 4)
                arg = tokens[first][1] if first < len(tokens) else ""
                if arg.startswith("@") and _upper(tokens, first + 1) == "=":
                    arg = tokens[first + 2][1] if first + 2 < len(tokens) else ""
                if not re.match(r"@Sql\w*$", arg, re.I):
                    problems.append(f"{name}: sp_executesql must run an @Sql* variable, not {arg!r}")
    problems += _exec_argument_violations(tokens, name)
    if "SP_EXECUTESQL" in words and "EXEC" not in words and "EXECUTE" not in words:
        problems.append(f"{name}: sp_executesql referenced without EXEC")
    return problems


def _exec_argument_violations(tokens, name: str) -> list[str]:
    """A procedure's arguments in EXEC are constants or variables, never expressions (Msg 156/102)."""
    problems = []
    for i, (kind, text) in enumerate(tokens):
        if kind != "word" or text.upper() not in ("EXEC", "EXECUTE") or _upper(tokens, i + 1) == "(":
            continue
        j = i + 1
        if j < len(tokens) and tokens[j][1].startswith("@") and _upper(tokens, j + 1) == "=":
            j += 2  # EXEC @ReturnCode = procedure ...
        while j < len(tokens) and ((tokens[j][0] in ("word", "bracket") and not tokens[j][1].startswith("@"))
                                   or tokens[j][1] == "."):
            j += 1  # the procedure's (qualified) name
        arguments, current, depth = [], [], 0
        while j < len(tokens):
            k, t = tokens[j]
            if depth == 0 and (t == ";" or (k == "word" and t.upper() in (
                    "END", "IF", "ELSE", "SET", "SELECT", "EXEC", "EXECUTE", "INSERT", "UPDATE", "DELETE",
                    "DECLARE", "WHILE", "BEGIN", "RETURN", "THROW", "RAISERROR", "PRINT", "COMMIT", "ROLLBACK"))):
                break
            if t == "(":
                depth += 1
            elif t == ")":
                depth -= 1
            if t == "," and depth == 0:
                arguments.append(current)
                current = []
            else:
                current.append((k, t))
            j += 1
        arguments.append(current)
        for argument in arguments:
            if not argument:
                continue
            value = argument[2:] if len(argument) >= 2 and argument[0][1].startswith("@") and argument[1][1] == "=" else argument
            if value and value[-1][1].upper() in ("OUTPUT", "OUT"):
                value = value[:-1]
            if value and value[0][1] == "-" and len(value) == 2 and value[1][0] == "number":
                value = value[1:]
            if len(value) != 1 or not (value[0][0] in ("string", "number") or value[0][1].startswith("@")
                                      or value[0][1].upper() in ("NULL", "DEFAULT")):
                shown = " ".join(t for _k, t in argument)
                problems.append(f"{name}: EXEC argument {shown!r} is an expression; "
                                "pass a constant or a variable (set it first)")
    return problems


_PG_STRING = re.compile(r"'(?:[^']|'')*'")


def _pg_strip_comments(sql: str) -> str:
    return re.sub(r"--[^\n]*|/\*.*?\*/", " ", sql, flags=re.S)


def check_plpgsql(sql: str, name: str = "object") -> list[str]:
    """Violations of the PostgreSQL conventions in one rendered object."""
    problems: list[str] = []
    if not re.search(r"\bLANGUAGE\s+plpgsql\b", sql, re.I):
        problems.append(f"{name}: must be LANGUAGE plpgsql")
    if not (re.search(r"^\s*SET\s+search_path\s*(=|TO)\s*[^\n]+", sql, re.I | re.M)
            or re.search(r"set_config\s*\(\s*'search_path'\s*,\s*'pg_catalog, pg_temp'", sql, re.I)):
        problems.append(f"{name}: must fix its search_path (SET search_path = ... or set_config)")
    body = _pg_strip_comments(sql)
    header = body[: body.find("$")] if "$" in body else body
    if re.search(r"\bSECURITY\s+DEFINER\b", header, re.I):
        if not re.search(r"^\s*SET\s+search_path\s*(=|TO)\s*[^\n]+", header, re.I | re.M):
            problems.append(f"{name}: a SECURITY DEFINER routine needs its own SET search_path clause")
        if re.search(r"\b(COMMIT|ROLLBACK)\s*;", _PG_STRING.sub("''", body), re.I):
            problems.append(f"{name}: a SECURITY DEFINER routine cannot COMMIT or ROLLBACK")
    # Variables that hold dynamic SQL: every assignment must be a safe format() call.
    safe_vars: set[str] = set()
    for m in re.finditer(r"\b(v_sql\w*)\s*:=\s*(.*?);", body, re.S | re.I):
        var, expr = m.group(1), m.group(2)
        problems += _pg_format_violations(expr, f"{name}: {var}")
        safe_vars.add(var.lower())
    # Find EXECUTE statements with string literals blanked (same length), so a word inside a
    # message ('@Execute must be ...') is not taken for a statement; read them from the real text.
    blanked = _PG_STRING.sub(lambda lit: "'" + " " * (len(lit.group()) - 2) + "'", body)
    for m in re.finditer(r"\bEXECUTE\s+(?!PROCEDURE\b|FUNCTION\b)(.*?);", blanked, re.S | re.I):
        stmt = body[m.start(1):m.end(1)]
        expr = re.split(r"\b(?:INTO|USING)\b", stmt, maxsplit=1, flags=re.I)[0].strip()
        if expr.lower() in safe_vars:
            text = expr
        else:
            problems += _pg_format_violations(expr, f"{name}: EXECUTE")
            text = expr
        placeholders = set(re.findall(r"\$(\d+)", _format_literal(text, body)))
        if placeholders and not re.search(r"\bUSING\b", stmt, re.I):
            problems.append(f"{name}: EXECUTE uses ${min(placeholders)} but has no USING clause")
    if re.search(r"\bEXCEPTION\s+WHEN\b", blanked, re.I):
        # Only the handler of the outermost block must re-raise; inner blocks that catch a
        # batch's error to log it and go on are the point of them. The last handler is the
        # outermost one when no other block ends between it and the body's final END.
        last = [m.start() for m in re.finditer(r"\bEXCEPTION\s+WHEN\b", blanked, re.I)][-1]  # not RAISE EXCEPTION
        handler = body[last:]
        end = re.search(r"\bEND\s*;?\s*\$\w*\$", handler)
        handler = handler[: end.start()] if end else handler
        inner_ends = re.findall(r"\bEND\s*;", re.sub(r"\bEND\s+(IF|LOOP|CASE)\b", "", handler, flags=re.I), re.I)
        outermost = not inner_ends
        if outermost and not re.search(r"\bRAISE\s*;\s*$", handler.strip() + ("" if handler.strip().endswith(";") else ";"), re.I):
            problems.append(f"{name}: the outermost EXCEPTION handler must end in RAISE")
    return problems


def _format_literal(expr: str, body: str) -> str:
    """The format string behind an EXECUTE expression (following one v_sql variable)."""
    m = re.match(r"format\s*\(\s*('(?:[^']|'')*')", expr, re.I | re.S)
    if m:
        return m.group(1)
    assigned = re.findall(rf"\b{re.escape(expr)}\s*:=\s*format\s*\(\s*('(?:[^']|'')*')", body, re.I | re.S)
    return " ".join(assigned)


_PG_STORED_SCRIPT = re.compile(r"^\w+\.script_text$", re.I)
_PG_REPLACE = re.compile(r"^replace\s*\(\s*(v_sql\w*)\s*,\s*'\{\w+\}'\s*,\s*(v_q_\w+)\s*\)$", re.I | re.S)
_PG_FILLED = re.compile(r'^"BlobDeltaJobs"\."fn_BlobDelta_FillScript"\s*\(', re.I)


def _pg_format_violations(expr: str, where: str) -> list[str]:
    expr = expr.strip()
    if _PG_REPLACE.match(expr):
        return []  # a placeholder of a stored script filled with an always-quoted identifier
    if _PG_FILLED.match(expr):
        return []  # a stored script whose placeholders fn_BlobDelta_FillScript filled with always-quoted names
    if _PG_STORED_SCRIPT.match(expr):
        return []  # the stored script itself (BlobDeltaStepScript, maintained by DBAs), before its placeholders are filled
    if "||" in _PG_STRING.sub("''", expr):
        return [f"{where}: dynamic SQL built with ||; use format('%I') and EXECUTE ... USING"]
    m = re.match(r"format\s*\(\s*('(?:[^']|'')*')", expr, re.I | re.S)
    if not m:
        if _PG_STRING.fullmatch(expr):
            return []
        return [f"{where}: dynamic SQL must come from format('...') with %I for identifiers"]
    specifiers = re.findall(r"%(?:\d+\$)?-?\d*([a-zA-Z%])", m.group(1))
    bad = sorted({s for s in specifiers if s not in ("I", "%")})
    if bad:
        return [f"{where}: format() specifier %{bad[0]} puts a value into SQL text; pass values with USING"]
    return []


def check(engine: str, sql: str, name: str = "object") -> list[str]:
    return check_tsql(sql, name) if engine == "mssql" else check_plpgsql(sql, name)
