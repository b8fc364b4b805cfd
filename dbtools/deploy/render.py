"""Render the procedures of one engine from their Jinja2 templates.

One procedure per file: ``procedures/<engine>/<ObjectName>.sql``. Shared fragments live in
``templates/`` (``templates/<engine>/`` for engine-specific macros, ``templates/common/`` for
both). Templates render with ``StrictUndefined``, so a misspelt variable is an error, never
an empty string. The rendered text is what gets deployed and checksummed.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import jinja2

from .. import __version__
from ..db.engines import DEPLOYMENT_LOG, JOB_DATABASE, EngineInfo, engine_for
from ..errors import DeploymentError
from ..paths import procedures_dir, templates_dir
from ..upsert.specs import current_specs

VERSION_DATE = "2026-11-22"

_KIND = {
    "mssql": re.compile(r"^\s*CREATE\s+OR\s+ALTER\s+(PROCEDURE|FUNCTION|VIEW)\b", re.I | re.M),
    "postgresql": re.compile(r"^\s*CREATE\s+OR\s+REPLACE\s+(PROCEDURE|FUNCTION|VIEW)\b", re.I | re.M),
}


@dataclass(frozen=True)
class RenderedObject:
    """One repeatable object: its name, kind, rendered SQL and checksum."""

    name: str
    kind: str  # PROCEDURE, FUNCTION or VIEW
    engine: str
    sql: str
    source: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the rendered text (line endings normalised), as logged on deploy."""
        return hashlib.sha256(self.sql.replace("\r\n", "\n").encode("utf-8")).hexdigest()


#: A batch chosen as a deadlock victim (1205; 40P01/40001) runs again up to this many times.
BATCH_RETRIES = 3


def jinja_environment(engine: EngineInfo) -> jinja2.Environment:
    """The Jinja2 environment for one engine: strict, and loading both template roots."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(procedures_dir()), str(templates_dir())]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.globals.update(
        engine=engine.name,
        job_database=JOB_DATABASE,
        job_schema=engine.job_schema,
        deployment_log=DEPLOYMENT_LOG,
        package_version=__version__,
        version_date=VERSION_DATE,
        q=engine.quote,
        job=engine.job_object,
        # How many times the engine runs a batch again after it was chosen as a deadlock victim.
        batch_retries=BATCH_RETRIES,
        # The entities loaded by paged sync sessions (usp_Sync_*), with the engine they render for.
        sync_entities=[spec for spec in current_specs() if spec.sync],
        engine_info=engine,
    )
    return env


def template_names(engine: str) -> list[str]:
    """Template paths (relative to ``procedures/``) of one engine, in deployment order."""
    folder = procedures_dir() / engine
    return sorted(f"{engine}/{p.name}" for p in folder.glob("*.sql"))


def render_objects(engine_name: str) -> list[RenderedObject]:
    """Render every repeatable object of one engine, checked for shape."""
    engine = engine_for(engine_name)
    env = jinja_environment(engine)
    objects = []
    for template in template_names(engine.name):
        try:
            sql = env.get_template(template).render().strip() + "\n"
        except jinja2.TemplateError as exc:
            raise DeploymentError(f"cannot render procedures/{template}: {exc}") from exc
        objects.append(_checked(engine.name, template, sql))
    objects += render_entity_objects(engine, env)
    return sorted(objects, key=lambda o: o.name)  # the deployment order, as the log shows it


#: The procedures rendered for every entity spec: template stem -> EntitySpec attribute.
ENTITY_TEMPLATES = (("upsert_one", "upsert_one"), ("upsert_many", "upsert_many"), ("reconcile", "reconcile"))
#: Rendered for a spec with ``[sync]`` only.
SYNC_TEMPLATES = (("sync_promote", "sync_promote"),)


def render_entity_objects(engine: EngineInfo, env: jinja2.Environment, specs=None) -> list[RenderedObject]:
    """The procedures of each spec (default: every spec in ``entities/``; dbtools.upsert.specs): three,
    and a fourth (the sync promote) for a spec with ``[sync]``.

    ``tbl(name)`` in the templates names one of the entity's tables, in its database.
    """
    objects = []
    for spec in current_specs() if specs is None else specs:
        for stem, attribute in ENTITY_TEMPLATES + (SYNC_TEMPLATES if spec.sync else ()):
            template = f"{engine.name}/entity/{stem}.sql"
            name = getattr(spec, attribute)
            try:
                sql = env.get_template(template).render(
                    e=spec, engine_info=engine, tbl=lambda table, spec=spec: spec.table_object(engine, table),
                    origin=f"templates/{template} for {spec.source}",
                ).strip() + "\n"
            except jinja2.TemplateError as exc:
                raise DeploymentError(f"cannot render templates/{template} for {spec.source}: {exc}") from exc
            objects.append(_checked(engine.name, template, sql, name=name))
    return objects


def _checked(engine: str, template: str, sql: str, name: str | None = None) -> RenderedObject:
    name = name or Path(template).stem
    kinds = _KIND[engine].findall(sql)
    if len(kinds) != 1:
        raise DeploymentError(
            f"procedures/{template} must hold exactly one CREATE OR "
            f"{'ALTER' if engine == 'mssql' else 'REPLACE'} statement, found {len(kinds)}"
        )
    if engine == "mssql" and re.search(r"^\s*GO(\s+\d+)?\s*$", sql, re.I | re.M):
        raise DeploymentError(f"procedures/{template} contains GO, which is not T-SQL")
    if engine == "mssql" and "$(" in sql:
        raise DeploymentError(
            f"procedures/{template} contains '$(', which sqlcmd substitutes as a variable even in strings"
        )
    if not re.search(rf"[\[\"]{re.escape(name)}[\]\"]", sql):
        raise DeploymentError(f"procedures/{template} does not create an object named {name}")
    return RenderedObject(name=name, kind=kinds[0].upper(), engine=engine, sql=sql, source=template)


def standalone_file(engine_name: str, obj: RenderedObject) -> str:
    """One rendered object as a file a DBA can apply by hand.

    SQL Server: a ``USE`` of the job database, checked (in SSMS a failed USE leaves the session
    where it was: ``NOEXEC`` then stops the rest), and, in a batch of their own, the SET options a
    module keeps (``ANSI_NULLS``, ``QUOTED_IDENTIFIER``: sqlcmd starts with the latter OFF), then
    the object, alone in its batch. A header says what applying it by hand skips.
    """
    if engine_name == "mssql":
        return (
            f"-- dbtools {__version__}: {obj.kind.lower()} {obj.name}, rendered for SQL Server "
            f"(checksum {obj.checksum[:12]}).\n"
            "-- Apply with sqlcmd -b -i FILE or in SSMS. Applied by hand it is not in the deployment log, and an\n"
            "-- engine procedure loses its signature: dbtools migrate (or its offline script) signs it again.\n"
            # In SSMS (or sqlcmd without -b) a failed USE would leave the session where it was, and
            # the procedure would be created there: the database is checked, and NOEXEC stops the rest.
            f"SET NOEXEC OFF;\nGO\nUSE [{JOB_DATABASE}];\nGO\n"
            f"IF DB_NAME() <> N'{JOB_DATABASE}'\nBEGIN\n"
            f"    RAISERROR(N'dbtools: database {JOB_DATABASE} is missing or closed to this login; nothing was created.', 16, 1);\n"
            "    SET NOEXEC ON;\nEND;\nGO\n"
            "SET ANSI_NULLS ON;\nSET QUOTED_IDENTIFIER ON;\nGO\n"
            f"{obj.sql.strip()}\nGO\nSET NOEXEC OFF;\nGO\n"
        )
    return (
        f"-- dbtools {__version__}: {obj.kind.lower()} {obj.name}, rendered for PostgreSQL "
        f"(checksum {obj.checksum[:12]}).\n"
        "-- Apply with psql -v ON_ERROR_STOP=1 -f FILE in the job database. Applied by hand it is not in the\n"
        "-- deployment log, and its grants are not renewed: dbtools migrate (or its offline script) does both.\n"
        f"{obj.sql.strip()}\n"
    )


def write_rendered(engine_name: str, out_dir: Path) -> list[Path]:
    """Write each rendered object to ``out_dir/<name>.sql`` (see :func:`standalone_file`); return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for obj in render_objects(engine_name):
        path = out_dir / f"{obj.name}.sql"
        path.write_text(standalone_file(engine_name, obj), encoding="utf-8")
        written.append(path)
    return written
