"""Environment definitions: which server a name like ``dev`` or ``local`` means.

Definitions live in ``environments.toml`` at the repository root (or the file named by
``DBTOOLS_ENVIRONMENTS``). A definition holds a SQLAlchemy URL in which secrets are
written as ``${VARIABLE}`` references and come only from the process environment; a URL
with a literal password is refused. The special URL ``embedded-postgresql`` starts a
private PostgreSQL server from the ``pgserver`` wheel under ``.dbtools/`` (or
``DBTOOLS_HOME``), so nothing needs to be installed or running beforehand.

Every URL this package prints or logs goes through :func:`mask` first.
"""

from __future__ import annotations

import contextlib
import os
import re
import tomllib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import NullPool

from ..errors import ConfigurationError, ConnectionFailed, DeploymentError, first_line
from ..paths import home_dir, repo_root
from .engines import JOB_DATABASE, EngineInfo, engine_for

EMBEDDED = "embedded-postgresql"
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Environment:
    """One named environment from the environments file."""

    name: str
    url: str
    description: str = ""

    @property
    def is_embedded(self) -> bool:
        return self.url == EMBEDDED or self.url.startswith(EMBEDDED + "/")

    @property
    def embedded_database(self) -> str | None:
        """``embedded-postgresql/NAME``: the database NAME of the embedded server (else its default)."""
        return self.url.partition("/")[2] or None if self.is_embedded else None


def environments_file() -> Path:
    """Path of the environments file in force: ``DBTOOLS_ENVIRONMENTS``, else ``environments.toml``
    in the current directory, else the one the package ships (``local`` and the examples)."""
    override = os.environ.get("DBTOOLS_ENVIRONMENTS")
    if override:
        return Path(override)
    here = Path.cwd() / "environments.toml"
    return here if here.is_file() else repo_root() / "environments.toml"


def load_environments(path: Path | None = None) -> dict[str, Environment]:
    """Read and check every definition; raise :class:`ConfigurationError` on the first bad one."""
    path = path or environments_file()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"environments file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"environments file {path} is not valid TOML: {exc}") from None
    envs: dict[str, Environment] = {}
    for name, body in data.items():
        if not isinstance(body, dict) or not isinstance(body.get("url"), str):
            raise ConfigurationError(f"environment {name!r} in {path} needs a string 'url'")
        unknown = set(body) - {"url", "description"}
        if unknown:
            raise ConfigurationError(
                f"environment {name!r} in {path} has unknown keys {sorted(unknown)}; "
                "allowed keys: url, description"
            )
        env = Environment(name, body["url"], body.get("description", ""))
        _refuse_literal_password(env, path)
        envs[name] = env
    return envs


def _refuse_literal_password(env: Environment, path: Path) -> None:
    if env.is_embedded:
        return
    try:
        url = make_url(env.url)
    except ArgumentError:
        raise ConfigurationError(
            f"environment {env.name!r} in {path}: url is not a SQLAlchemy URL"
        ) from None
    if url.password is not None and not _REFERENCE.fullmatch(str(url.password)):
        raise ConfigurationError(
            f"environment {env.name!r} in {path} holds a literal password; "
            "write ${VARIABLE} and export the secret in the environment instead"
        )


def refuse_literal_password(url: str, *, option: str = "--url", allowed: bool = False) -> None:
    """A URL given on the command line holds its password as ``${VARIABLE}``, or it is refused
    (it would stay in the shell's history and in process listings) unless ``allowed``."""
    if allowed or url == EMBEDDED or url.startswith(EMBEDDED + "/"):
        return
    try:
        parsed = make_url(url)
    except ArgumentError:
        return  # parse_url reports it, with the option's name
    if parsed.password is not None and not _REFERENCE.fullmatch(str(parsed.password)):
        raise ConfigurationError(
            f"{option} holds a literal password; write ${{VARIABLE}} (in single quotes) and export the secret, "
            "or pass --allow-literal-password"
        )


def expand(template: str, *, context: str) -> str:
    """Replace ``${VAR}`` references from the process environment."""

    def sub(match: re.Match[str]) -> str:
        value = os.environ.get(match.group(1))
        if value is None:
            raise ConfigurationError(
                f"{context} needs the environment variable {match.group(1)}, which is not set"
            )
        return value

    return _REFERENCE.sub(sub, template)


def expand_url(template: str, *, context: str, lookup=None) -> URL:
    """Parse a URL template, then fill each part's ``${VAR}`` references.

    Expanding part by part (not the string) keeps secrets containing ``@``, ``:`` or ``/``
    intact.
    """
    url = parse_url(template, context=context)

    def fill(value):
        if value is None:
            return None
        if lookup is not None:
            return _REFERENCE.sub(lambda m: lookup(m.group(1)), value)
        return expand(value, context=context)

    query = {
        key: tuple(fill(v) for v in value) if isinstance(value, tuple) else fill(value)
        for key, value in url.query.items()
    }
    return url.set(
        username=fill(url.username),
        password=fill(None if url.password is None else str(url.password)),
        host=fill(url.host),
        database=fill(url.database),
        query=query,
    )


def mask(url: str | URL) -> str:
    """Render a URL for humans with its password replaced by ``***``."""
    if isinstance(url, str):
        if url == EMBEDDED or url.startswith(EMBEDDED + "/"):
            return url
        try:
            url = make_url(url)
        except ArgumentError:
            return "<unparseable URL>"
    return url.render_as_string(hide_password=True)


def parse_url(raw: str, *, context: str) -> URL:
    """Turn a user-given URL into a SQLAlchemy URL with the driver dbtools uses."""
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ConfigurationError(f"{context}: {mask(raw)!r} is not a SQLAlchemy URL") from None
    backend = url.get_backend_name()
    engine_for(backend)  # raises with the allowed values
    if backend == "postgresql" and url.get_driver_name() in ("psycopg2", "postgresql"):
        url = url.set(drivername="postgresql+psycopg")
    if backend == "postgresql" and "+" not in url.drivername:
        url = url.set(drivername="postgresql+psycopg")
    if backend == "mssql" and "+" not in url.drivername:
        url = url.set(drivername="mssql+pyodbc")
    return url


def embedded_home() -> Path:
    """Directory that holds the embedded server's data."""
    return home_dir()


@contextlib.contextmanager
def embedded_postgresql() -> Iterator[URL]:
    """Start (or reuse) the embedded PostgreSQL server and yield its URL."""
    try:
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError:  # pragma: no cover - pgserver is a dependency
        raise ConfigurationError("the embedded PostgreSQL needs the 'pgserver' package") from None
    data_dir = embedded_home() / "pgdata"
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = pgserver.get_server(str(data_dir), cleanup_mode="stop")
    except Exception as exc:  # pgserver raises plain exceptions with the server log
        raise ConnectionFailed(f"could not start the embedded PostgreSQL in {data_dir}: {exc}") from exc
    yield make_url(server.get_uri()).set(drivername="postgresql+psycopg")


@dataclass(frozen=True)
class Target:
    """A resolved database target: its URL and the engine behind it."""

    label: str
    url: URL

    @property
    def engine(self) -> EngineInfo:
        return engine_for(self.url)

    @property
    def masked(self) -> str:
        return mask(self.url)


def _definition(env: str) -> Environment:
    envs = load_environments()
    if env not in envs:
        allowed = ", ".join(sorted(envs)) or "(none defined)"
        raise ConfigurationError(f"--env {env!r} is not defined; allowed values: {allowed}")
    return envs[env]


def create_engine(target: Target, url: sa.URL | None = None, **kwargs) -> sa.Engine:
    """``sa.create_engine`` on ``target`` (or ``url``, another database of its server).

    SQLAlchemy loads the driver here: one that cannot load (pyodbc without the ODBC driver
    manager, say) becomes one ConnectionFailed line that says what to install.
    """
    try:
        return sa.create_engine(url if url is not None else target.url, **kwargs)
    except ImportError as exc:
        raise ConnectionFailed(driver_missing(target, exc)) from exc


def job_engine(target: Target) -> sa.Engine:
    """An engine on the job DB of ``target`` (the BlobDeltaJobs database on SQL Server)."""
    url = target.url.set(database=JOB_DATABASE) if target.engine.name == "mssql" else target.url
    return create_engine(target, url, poolclass=NullPool)


def driver_missing(target: Target, exc: ImportError) -> str:
    """One line: which driver failed to load, and what to install."""
    if target.engine.name == "mssql":
        return (f"{target.label}: the SQL Server driver cannot load ({exc}). Install the ODBC driver manager "
                "unixODBC (libodbc.so.2) and Microsoft ODBC Driver 18 (msodbcsql18), then pip install -e '.[mssql]'; "
                "without Microsoft's package source, unixODBC and the mssql-python-odbc wheel "
                "(docs/deployment.md: SQL Server drivers).")
    return f"{target.label}: database driver not available ({exc}); pip install -e . installs psycopg."


#: How each engine says that the job database (or an object in it) is not there.
_NOT_MIGRATED = (
    re.compile(r'schema "BlobDeltaJobs" does not exist|relation "BlobDeltaJobs\.|'
               r'(?:function|procedure) "?BlobDeltaJobs"?\.'),
    re.compile(r"Cannot open database \"BlobDeltaJobs\"|Invalid object name 'dbo\.(?:BlobDelta|\w+_Staging)|"
               r"Could not find stored procedure 'dbo\.(?:usp_BlobDelta|Upsert|Reconcile)"),
)
#: A connection that could not be made at all (nothing was done; nothing to retry or resume).
_CONNECT_FAILED = re.compile(r"^connection failed:|\[08001\]|Login failed|Login timeout|\(18456\)", re.I)


@contextlib.contextmanager
def database_errors(target: Target, action: str) -> Iterator[None]:
    """A DBAPI error of ``action`` on ``target`` as one line with the masked URL: a connection that
    could not be made is :class:`ConnectionFailed`; a job database that was never migrated says
    so; anything else names the action and the target."""
    try:
        yield
    except Exception as exc:
        # SQLAlchemy's wrapper, or a driver's own error (the COPY and TVP writers use the driver).
        if isinstance(exc, sa.exc.DBAPIError):
            orig = exc.orig
        elif type(exc).__module__.split(".")[0] in ("psycopg", "pyodbc"):
            orig = exc
        else:
            raise
        text = first_line(orig)
        if any(pattern.search(text) for pattern in _NOT_MIGRATED):
            raise ConfigurationError(
                f"no BlobDeltaJobs job database on {target.masked} ({target.label}), or not at this package's "
                f"revision: run dbtools migrate first ({text})") from exc
        if _CONNECT_FAILED.search(text):
            raise ConnectionFailed(f"cannot connect to {target.masked} ({target.label}): {text}") from exc
        raise DeploymentError(f"{action} failed on {target.masked} ({target.label}): {text}") from exc


def connect(engine: sa.Engine, target: Target) -> sa.Connection:
    """Open a connection; a refused or unreachable server becomes one masked ConnectionFailed line."""
    try:
        return engine.connect()
    except sa.exc.DBAPIError as exc:
        raise ConnectionFailed(f"cannot connect to {target.masked} ({target.label}): {first_line(exc.orig)}") from exc
    except ImportError as exc:
        raise ConnectionFailed(driver_missing(target, exc)) from exc


@contextlib.contextmanager
def resolve_target(env: str | None = None, url: str | None = None) -> Iterator[Target]:
    """Resolve ``--env``/``--url`` into a :class:`Target` (starting the embedded server if needed).

    ``url`` wins over ``env``; with neither, the error names both options.
    """
    if url:
        # ${VAR} references are filled from the environment, as in environments.toml.
        yield Target("--url", expand_url(url, context="--url"))
    elif env:
        definition = _definition(env)
        if definition.is_embedded:
            with embedded_postgresql() as embedded_url:
                database = definition.embedded_database
                yield Target(f"env {env}", embedded_url.set(database=database) if database else embedded_url)
        else:
            yield Target(f"env {env}", expand_url(definition.url, context=f"environment {env!r}"))
    else:
        raise ConfigurationError("no target: give --env NAME or --url URL")


def offline_target(env: str | None = None, url: str | None = None) -> Target:
    """Like :func:`resolve_target` but for offline scripts: nothing is started or contacted."""
    if url:
        # Offline scripts never connect, so unset secrets must not stop them.
        return Target("--url", expand_url(url, context="--url", lookup=lambda name: os.environ.get(name, "offline")))
    if env:
        definition = _definition(env)
        if definition.is_embedded:
            return Target(f"env {env}", make_url("postgresql+psycopg://embedded/postgres"))
        # Offline scripts never connect, so unset secrets must not stop them.
        return Target(
            f"env {env}",
            expand_url(
                definition.url,
                context=f"environment {env!r}",
                lookup=lambda name: os.environ.get(name, "offline"),
            ),
        )
    raise ConfigurationError("no target: give --env NAME or --url URL")
