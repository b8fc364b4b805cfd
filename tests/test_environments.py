"""Environment definitions: secrets only from the environment, URLs always masked."""

from __future__ import annotations

import pytest

from dbtools.db.environments import (
    expand_url,
    load_environments,
    mask,
    offline_target,
    resolve_target,
)
from dbtools.errors import ConfigurationError


def write(tmp_path, text):
    path = tmp_path / "environments.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_repository_environments_file_loads_and_holds_no_secret():
    envs = load_environments()

    assert set(envs) == {"local", "demo", "dev", "test", "prod", "pg"}
    assert envs["local"].is_embedded and envs["local"].embedded_database is None
    assert envs["demo"].is_embedded and envs["demo"].embedded_database == "dbtools_demo"
    for env in envs.values():
        assert "${" in env.url or env.is_embedded


def test_a_literal_password_in_the_environments_file_is_refused(tmp_path):
    path = write(tmp_path, '[dev]\nurl = "mssql+pyodbc://sa:Passw0rd@host/master"\n')

    with pytest.raises(ConfigurationError, match="environment 'dev' .* holds a literal password"):
        load_environments(path)


def test_unknown_keys_are_refused_with_the_allowed_ones(tmp_path):
    path = write(tmp_path, '[dev]\nurl = "postgresql://h/db"\npasword = "x"\n')

    with pytest.raises(ConfigurationError, match="unknown keys \\['pasword'\\]; allowed keys: url, description"):
        load_environments(path)


def test_a_secret_with_url_syntax_characters_survives_expansion(monkeypatch):
    monkeypatch.setenv("T_PW", "p@ss:w/rd?#%")
    monkeypatch.setenv("T_HOST", "db.internal")

    url = expand_url("mssql+pyodbc://sa:${T_PW}@${T_HOST}:1433/master?driver=ODBC+Driver+18+for+SQL+Server",
                     context="test")

    assert (url.username, url.password, url.host, url.port, url.database) == (
        "sa", "p@ss:w/rd?#%", "db.internal", 1433, "master")
    assert url.query == {"driver": "ODBC Driver 18 for SQL Server"}
    assert "p@ss" not in mask(url)


def test_a_missing_variable_is_named_in_the_error(monkeypatch, tmp_path):
    monkeypatch.setenv("DBTOOLS_ENVIRONMENTS", str(write(tmp_path, '[dev]\nurl = "postgresql://u:${NOPE_PW}@h/db"\n')))
    monkeypatch.delenv("NOPE_PW", raising=False)

    with pytest.raises(ConfigurationError, match="environment 'dev' needs the environment variable NOPE_PW"):
        with resolve_target("dev"):
            pass


def test_url_overrides_env_and_gets_the_psycopg_driver(monkeypatch, tmp_path):
    monkeypatch.setenv("DBTOOLS_ENVIRONMENTS", str(write(tmp_path, '[dev]\nurl = "postgresql://u:${X}@h/db"\n')))

    with resolve_target("dev", "postgresql://other/db2") as target:
        assert (target.label, target.url.drivername, target.url.database) == ("--url", "postgresql+psycopg", "db2")


def test_offline_targets_need_no_secret_and_no_server(monkeypatch):
    monkeypatch.delenv("DBTOOLS_PROD_PASSWORD", raising=False)

    target = offline_target("prod")

    assert target.engine.name == "mssql"
    assert target.url.drivername == "mssql+pyodbc"


@pytest.mark.parametrize("raw, masked", [
    ("postgresql://u:secret@h/db", "postgresql://u:***@h/db"),
    ("mssql+pyodbc://sa:${PW}@h/master", "mssql+pyodbc://sa:***@h/master"),
    ("postgresql://h/db", "postgresql://h/db"),
    ("embedded-postgresql", "embedded-postgresql"),
    ("not a url", "<unparseable URL>"),
])
def test_mask_hides_every_password(raw, masked):
    assert mask(raw) == masked
