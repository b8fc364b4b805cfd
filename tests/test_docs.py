"""The README and docs/ stay true to the command line and to themselves, without running anything.

Every line of a fenced block that invokes ``dbtools`` (also after a pipe or ``&&``, and inside
``$(...)``) must name a subcommand of :data:`dbtools.cli.cli` and use only options that subcommand
(or the group) has, with an allowed value where the option offers a choice. Every relative link
must point to a file that exists, and an anchor to a heading of that file.
"""

from __future__ import annotations

import re
import shlex
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from dbtools.cli import cli

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

#: Tokens that end a command: what follows is another command, a redirection or a background job.
_SEPARATORS = {"|", "||", "&&", ";", "&"}
_REDIRECTION = re.compile(r"^(?:\d?>>?|&>|<<?|\d?>&\d)")
_PLACEHOLDER = re.compile(r"^<[^<>\s]+>$")  # <RUN_ID>, <GUID>
_SUBSTITUTION = re.compile(r"\$\(([^()]*)\)")
_FENCE = re.compile(r"^(\s*)(```|~~~)")


@dataclass(frozen=True)
class Command:
    """One dbtools invocation found in a page: where it is, and its arguments after ``dbtools``."""

    page: Path
    line: int
    text: str
    args: tuple[str, ...]
    error: str | None = None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def fenced_lines(text: str):
    """(line number, line) of every line inside a fenced code block, continuation lines joined."""
    inside, fence = False, ""
    pending, start = "", 0
    for number, line in enumerate(text.splitlines(), start=1):
        match = _FENCE.match(line)
        if match and (not inside or line.strip().startswith(fence)):
            inside, fence = (not inside), match.group(2)
            pending = ""
            continue
        if not inside:
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield start, pending + line
        pending = ""


class Unparseable(ValueError):
    pass


def invocations(line: str) -> list[list[str]]:
    """The argument lists of every dbtools invocation on one shell line (comments dropped)."""
    found: list[list[str]] = []
    # A command substitution is a command of its own; outside, it stands for one value.
    for inner in _SUBSTITUTION.findall(line):
        found += invocations(inner)
    line = _SUBSTITUTION.sub("SUBSTITUTED", line)
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError as exc:  # an unbalanced quote: the test reports it with the line
        raise Unparseable(f"cannot be split as a shell line: {exc}") from None
    segment: list[str] = []
    segments = [segment]
    for token in tokens:
        if token in _SEPARATORS:
            segment = []
            segments.append(segment)
        else:
            segment.append(token)
    for words in segments:
        # Leading VAR=value assignments belong to the shell.
        while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
            words = words[1:]
        if not words or words[0] not in ("dbtools", ".venv/bin/dbtools"):
            continue
        args = []
        for word in words[1:]:
            if _REDIRECTION.match(word) and not _PLACEHOLDER.match(word):
                break  # > file, 2>&1, < input: the rest is the shell's
            args.append(word)
        found.append(args)
    return found


def documented_commands() -> list[Command]:
    commands = []
    for page in PAGES:
        for number, line in fenced_lines(page.read_text(encoding="utf-8")):
            stripped = line.strip()
            if "dbtools" not in stripped or stripped.startswith(("#", "--", "//")):
                continue
            try:
                found = invocations(stripped)
            except Unparseable as exc:
                commands.append(Command(page, number, stripped, (), str(exc)))
                continue
            for args in found:
                commands.append(Command(page, number, stripped, tuple(args)))
    return commands


def option_map(command: click.Command) -> dict[str, click.Parameter]:
    return {name: param for param in command.params if isinstance(param, click.Option)
            for name in (*param.opts, *param.secondary_opts)}


GROUP_OPTIONS = {**option_map(cli), "-h": None, "--help": None}


def problems(command: Command) -> list[str]:
    """What does not match ``dbtools --help`` in one documented invocation."""
    if command.error:
        return [command.error]
    args = list(command.args)
    # Group options come first: dbtools --debug run ...
    while args and args[0].startswith("-"):
        if args[0] not in GROUP_OPTIONS:
            return [f"{args[0]} is not an option of dbtools itself"]
        if args[0] in ("--version", "-h", "--help"):
            return []
        args.pop(0)
    if not args:
        return ["no subcommand"]
    name, rest = args[0], args[1:]
    if name not in cli.commands:
        return [f"{name!r} is not a dbtools command; commands: {', '.join(sorted(cli.commands))}"]
    sub = cli.commands[name]
    options = {**option_map(sub), "-h": None, "--help": None}
    found = []
    for n, word in enumerate(rest):
        if not word.startswith("-") or word == "-" or re.fullmatch(r"-\d+(\.\d+)?", word):
            continue  # an argument, stdin, a negative number
        option, _, inline = word.partition("=")
        if option not in options:
            found.append(f"{option} is not an option of 'dbtools {name}' (see 'dbtools {name} --help')")
            continue
        param = options[option]
        if param is None or param.is_flag:
            if inline:
                found.append(f"{option} is a flag and takes no value")
            continue
        value = inline if inline else (rest[n + 1] if n + 1 < len(rest) else None)
        if value is None:
            found.append(f"{option} needs a value")
        elif isinstance(param.type, click.Choice) and not _PLACEHOLDER.match(value) \
                and value not in param.type.choices:
            found.append(f"{option} {value!r} is not one of {', '.join(param.type.choices)}")
    return found


COMMANDS = documented_commands()


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"{c.where}:{' '.join(c.args[:1])}")
def test_every_dbtools_command_in_the_docs_parses_against_its_help(command):
    assert not problems(command), f"{command.where}: {command.text}\n  " + "\n  ".join(problems(command))


def test_the_docs_show_every_dbtools_command_at_least_once():
    shown = {c.args[0] for c in COMMANDS if c.args and not c.args[0].startswith("-")}

    assert sorted(set(cli.commands) - shown) == [], "commands without an example in README.md or docs/"


def test_the_readme_links_every_docs_page():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    linked = {m.group(1).split("#")[0] for m in _LINK.finditer(readme)}

    assert sorted(f"docs/{p.name}" for p in (REPO / "docs").glob("*.md") if f"docs/{p.name}" not in linked) == []


# ----------------------------------------------------------------------------- links

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link keeps its text
    text = unicodedata.normalize("NFC", text).lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    counts: dict[str, int] = {}
    inside = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            inside = not inside
            continue
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if inside or not match:
            continue
        base = slug(match.group(1))
        n = counts.get(base, 0)
        counts[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(page: Path):
    """(line number, target) of every link outside fenced blocks and code spans."""
    inside = False
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
        if _FENCE.match(line):
            inside = not inside
            continue
        if inside:
            continue
        # A code span is not a link ([Db].[dbo].[T]), but it may be a link's text: [`x`](x).
        for match in _LINK.finditer(re.sub(r"(?<!\[)`[^`]*`(?!\])", "``", line)):
            yield number, match.group(1)


def broken_links(page: Path) -> list[str]:
    found = []
    for number, target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
            continue  # https:, mailto: ...
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        where = f"{page.relative_to(REPO)}:{number}: {target}"
        if not resolved.exists():
            found.append(f"{where}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            found.append(f"{where}: no heading #{anchor} in {resolved.relative_to(REPO)}")
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_in_the_docs_points_to_an_existing_file_and_heading(page):
    assert broken_links(page) == []


# ----------------------------------------------------------------------------- the checker itself


def test_the_checker_finds_commands_in_pipes_substitutions_and_continuations_and_ignores_comments():
    text = "\n".join([
        "```sh",
        "dbtools status \"$(dbtools runs --env dev --last 1 --json | jq -r '.[0].run_id')\" --env dev",
        "cat events.jsonl | dbtools ingest --env dev --entity E --path tvp -   # don't: a comment",
        "dbtools migrate --env prod --sql \\",
        "    --from 0002 > migrate-prod.sql",
        "DBTOOLS_HOME=/tmp/x .venv/bin/dbtools demo --json 2>/dev/null",
        "```",
        "dbtools outside --a-fence",
    ])

    found = [args for _n, line in fenced_lines(text) for args in invocations(line)]

    assert found == [
        ["runs", "--env", "dev", "--last", "1", "--json"],
        ["status", "SUBSTITUTED", "--env", "dev"],
        ["ingest", "--env", "dev", "--entity", "E", "--path", "tvp", "-"],
        ["migrate", "--env", "prod", "--sql", "--from", "0002"],
        ["demo", "--json"],
    ]


@pytest.mark.parametrize("args, problem", [
    (("migrate", "--env", "dev", "--bogus"), "--bogus is not an option of 'dbtools migrate'"),
    (("nosuch",), "'nosuch' is not a dbtools command"),
    (("run", "--env", "dev", "--mode", "AllTables"), "--mode 'AllTables' is not one of all-tables, single-table"),
    (("run", "--env", "dev", "--mode=all-tables", "--plan=yes"), "--plan is a flag and takes no value"),
    (("--nope", "envs"), "--nope is not an option of dbtools itself"),
])
def test_the_checker_reports_an_unknown_command_option_or_value(args, problem):
    found = problems(Command(REPO / "README.md", 1, " ".join(args), args))

    assert any(p.startswith(problem) for p in found), found


def test_the_checker_accepts_placeholders_group_options_and_inline_values():
    for args in [("status", "<RUN_ID>", "--env", "demo"), ("--debug", "run", "--mode=single-table", "--table", "T"),
                 ("--version",), ("ingest", "--path", "<PATH>", "-h")]:
        assert problems(Command(REPO / "README.md", 1, " ".join(args), args)) == [], args


def test_a_heading_anchor_is_what_github_makes_of_it():
    assert slug("Destructive commands and `--yes`") == "destructive-commands-and---yes"
    assert slug("JSON output: the `dbtools.run/1` schema") == "json-output-the-dbtoolsrun1-schema"
    assert slug("Least privilege: the `BlobDeltaOperator` role") == "least-privilege-the-blobdeltaoperator-role"
