"""Rendering procedures from templates."""

from __future__ import annotations

import jinja2
import pytest

from dbtools.deploy import render
from dbtools.errors import DeploymentError


@pytest.mark.parametrize("engine", ["mssql", "postgresql"])
def test_rendering_is_deterministic_and_checksums_the_rendered_text(engine):
    first = render.render_objects(engine)
    second = render.render_objects(engine)

    assert [(o.name, o.sql, o.checksum) for o in first] == [(o.name, o.sql, o.checksum) for o in second]
    assert all(len(o.checksum) == 64 for o in first)


def test_a_misspelt_template_variable_is_an_error_not_an_empty_string(monkeypatch):
    env = render.jinja_environment(render.engine_for("mssql"))
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("CREATE OR ALTER PROCEDURE {{ jbo('x') }} AS SELECT 1;").render()


@pytest.mark.parametrize("sql, problem", [
    ("CREATE OR ALTER PROCEDURE [dbo].[p] AS SELECT 1;\nGO\n", "contains GO"),
    ("CREATE OR ALTER PROCEDURE [dbo].[p] AS SELECT 1;\ngo 5\n", "contains GO"),
    ("CREATE OR ALTER PROCEDURE [dbo].[p] AS SELECT N'$(x)';\n", "sqlcmd substitutes"),
    ("CREATE OR ALTER PROCEDURE [dbo].[q] AS SELECT 1;\n", "does not create an object named p"),
    ("CREATE OR ALTER PROCEDURE [dbo].[p] AS SELECT 1;\nCREATE OR ALTER VIEW [dbo].[v] AS SELECT 1 AS a;\n",
     "exactly one CREATE OR ALTER"),
])
def test_a_template_that_would_break_a_deploy_is_refused(sql, problem):
    with pytest.raises(DeploymentError, match=problem):
        render._checked("mssql", "mssql/p.sql", sql)
