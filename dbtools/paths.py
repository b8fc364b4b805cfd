"""Where the repository's migrations, procedures and templates are."""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigurationError


def repo_root() -> Path:
    """The directory holding ``alembic.ini`` (the package is installed editable from it)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "alembic.ini").is_file():
        raise ConfigurationError(
            f"alembic.ini not found beside the dbtools package ({root}); "
            "install the package from its repository with 'pip install -e .'"
        )
    return root


def procedures_dir() -> Path:
    return repo_root() / "procedures"


def templates_dir() -> Path:
    return repo_root() / "templates"
