"""The wheel: installed anywhere, dbtools finds its migrations, procedures, templates and specs.

A wheel is built from the checkout and installed (without dependencies: those of the test run's
own environment are made visible to it by a ``.pth`` file) into a fresh virtualenv. Every command
then runs from an unrelated directory, where no ``alembic.ini`` is to be found.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from .conftest import HEAD, fresh_pg_database

pytestmark = pytest.mark.postgresql_only

REPO = Path(__file__).resolve().parent.parent
SHIPPED = ("alembic.ini", "environments.toml", "migrations", "procedures", "templates", "entities")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from the checkout."""
    dist = tmp_path_factory.mktemp("dist")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q",
                            "-w", str(dist), str(REPO)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, f"building the wheel failed:\n{build.stdout}\n{build.stderr}"
    [built] = dist.glob("dbtools-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(tmp_path_factory, wheel) -> Path:
    """The bin directory of a fresh virtualenv holding only the built wheel."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "-q",
                              str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # The dependencies, from this environment (a path line: its own .pth files, the editable
    # install of dbtools among them, are not read).
    Path(site, "dbtools_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env_dir / "bin"


def run(installed: Path, cwd: Path, *args: str, env: dict | None = None):
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DBTOOLS_ENVIRONMENTS")}
    environment.update(env or {})
    return subprocess.run([str(installed / "dbtools"), *args], cwd=cwd, capture_output=True, text=True,
                          env=environment, timeout=600)


def tracked(folder: str) -> set[str]:
    """The files git tracks under a top-level name of the checkout."""
    listed = subprocess.run(["git", "ls-files", "--", folder], cwd=REPO, capture_output=True, text=True, check=True)
    return set(listed.stdout.split())


def test_the_wheel_ships_every_tracked_file_of_the_top_level_folders_inside_the_package(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        shipped = {n.removeprefix("dbtools/_resources/") for n in names if n.startswith("dbtools/_resources/")}
        same = all(archive.read(f"dbtools/_resources/{name}") == (REPO / name).read_bytes() for name in shipped)

    expected = set().union(*(tracked(folder) for folder in SHIPPED))
    assert shipped == expected
    assert same
    assert not [n for n in names if "__pycache__" in n]
    # Every module, the subpackages' (deploy/, delta/, upsert/, db/) included.
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "dbtools").rglob("*.py") if "__pycache__" not in p.parts}
    assert {"dbtools/deploy/__init__.py", "dbtools/upsert/specs.py"} <= modules
    assert modules - names == set()


def test_the_installed_wheel_reads_its_own_resources_not_the_checkout(installed, tmp_path):
    proc = subprocess.run([str(installed / "python"), "-c",
                           "import dbtools, dbtools.paths as p; print(dbtools.__file__); print(p.resource_root()); "
                           "print(p.home_dir())"],
                          cwd=tmp_path, capture_output=True, text=True, check=True,
                          env={k: v for k, v in os.environ.items() if k != "DBTOOLS_HOME"})
    module, root, home = proc.stdout.splitlines()

    assert not Path(module).is_relative_to(REPO)
    assert Path(root) == Path(module).parent / "_resources"
    assert Path(home) == Path.home() / ".dbtools", "never inside site-packages"


def test_render_and_offline_scripts_work_from_an_unrelated_directory(installed, tmp_path):
    render = run(installed, tmp_path, "render", "--engine", "mssql", "--out", "rendered")
    script = run(installed, tmp_path, "migrate", "--url", "postgresql://u@offline/db", "--sql")

    assert render.returncode == 0, render.stderr
    assert (tmp_path / "rendered" / "usp_BlobDelta_Run.sql").is_file()
    assert script.returncode == 0, script.stderr
    assert f"-- to revision: {HEAD}" in script.stdout
    assert 'CREATE TABLE "BlobDeltaJobs"."BlobDeltaRun"' in script.stdout


def test_demo_migrate_and_ingest_work_from_an_unrelated_directory(installed, tmp_path, pg_admin_url):
    home = tmp_path / "home"
    demo = run(installed, tmp_path, "demo", "--json", env={"DBTOOLS_HOME": str(home)})
    assert demo.returncode == 0, demo.stderr
    assert json.loads(demo.stdout)["status"] == "Succeeded"
    assert any(home.iterdir()), "the embedded server lives under DBTOOLS_HOME"

    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({"event_id": "019a0000-0000-7000-8000-000000000001", "customer_id": 1,
                                  "activity_type": "login", "time_stamp_utc": "2026-03-01T12:00:00Z",
                                  "details_json": {"n": 1}}) + "\n")
    with fresh_pg_database(pg_admin_url) as url:
        target = url.render_as_string(hide_password=False)
        migrate = run(installed, tmp_path, "migrate", "--url", target, "--allow-literal-password")
        ingest = run(installed, tmp_path, "ingest", "--url", target, "--allow-literal-password",
                     "--entity", "CustomerActivityEvent", "--path", "bulk", "--json", str(events))
        assert (tmp_path / "alembic.ini").exists() is False

    assert migrate.returncode == 0, migrate.stderr
    assert ingest.returncode == 0, ingest.stderr
    assert json.loads(ingest.stdout)["inserted"] == 1
