"""Where the package's migrations, procedures, templates and entity specs are.

They keep the repository's top-level layout (``alembic.ini``, ``migrations/``, ``procedures/``,
``templates/``, ``entities/``, ``environments.toml``). In a checkout (and an editable install) they
are read beside the package; a wheel ships copies of them inside the package, under
``dbtools/_resources/``, found with :mod:`importlib.resources`. So ``pip install .`` works from
any directory.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from .errors import ConfigurationError

#: What the resource root must hold.
_MARKERS = ("alembic.ini", "migrations", "procedures", "templates", "entities")


def _complete(root: Path) -> bool:
    return all((root / name).exists() for name in _MARKERS)


def checkout_root() -> Path | None:
    """The repository the package runs from (a checkout or an editable install), if it does."""
    root = Path(__file__).resolve().parent.parent
    return root if _complete(root) else None


def resource_root() -> Path:
    """The directory holding ``alembic.ini`` and the folders beside it."""
    checkout = checkout_root()
    if checkout is not None:
        return checkout
    packaged = Path(str(resources.files("dbtools") / "_resources"))
    if _complete(packaged):
        return packaged
    raise ConfigurationError(
        f"the package's migrations are missing: neither beside dbtools ({Path(__file__).resolve().parent.parent}) "
        f"nor in {packaged}; reinstall it (pip install dbtools, or pip install -e . in its repository)"
    )


#: The name the rest of the package used before wheels shipped the resources.
repo_root = resource_root


def procedures_dir() -> Path:
    return resource_root() / "procedures"


def templates_dir() -> Path:
    return resource_root() / "templates"


def entities_dir() -> Path:
    return resource_root() / "entities"


def home_dir() -> Path:
    """Where dbtools keeps its own files (the embedded server): ``DBTOOLS_HOME``, else ``.dbtools``
    in the checkout, else ``~/.dbtools`` for an installed package (never inside site-packages)."""
    override = os.environ.get("DBTOOLS_HOME")
    if override:
        return Path(override)
    checkout = checkout_root()
    return (checkout if checkout is not None else Path.home()) / ".dbtools"
