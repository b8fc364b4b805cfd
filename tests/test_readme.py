"""The README's quick start is exactly two commands, and .ci/run runs the second one."""

from __future__ import annotations

import re


def quick_start(repo) -> list[str]:
    text = (repo / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1]
    block = re.search(r"```\w*\n(.*?)```", section, re.S)
    assert block, "the Quick start heading must be followed by a fenced block"
    assert section.index("```") < section.find("\n## "), "the fenced block belongs to the Quick start section"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_the_quick_start_is_exactly_two_commands(repo):
    commands = quick_start(repo)

    assert len(commands) == 2
    assert "pip install -e" in commands[0] and commands[0].endswith("dbtools demo")


def test_ci_runs_the_readme_test_command(repo):
    test_command = quick_start(repo)[1]
    ci = (repo / ".ci" / "run").read_text(encoding="utf-8")

    assert test_command == ".venv/bin/python -m pytest"
    assert re.search(r"^python -m pytest\b", ci, re.M), "CI must run the README's test command in its venv"
    assert "exit 1" in ci.split("-eq 5", 1)[1], "no tests collected must fail CI"
