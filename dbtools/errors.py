"""The one exception family dbtools raises on purpose.

The CLI shows a :class:`DbToolsError` as a one-line message and exits non-zero; anything
else is a bug and keeps its traceback (always shown with ``--debug``).
"""


class DbToolsError(Exception):
    """Base class: a problem the user can fix, described in one line."""


class ConfigurationError(DbToolsError):
    """Environment file, URL or option is wrong."""


class ConnectionFailed(DbToolsError):
    """The database server could not be reached or refused the login."""


class DeploymentError(DbToolsError):
    """A migration or a repeatable object could not be applied."""


def driver_message(orig: BaseException | None) -> str:
    """The server's message text of a DBAPI error, unescaped.

    pyodbc errors carry ``args = (SQLSTATE, message)``, and ``str()`` of them is the repr of
    that tuple, with newlines and quotes escaped; psycopg's ``str()`` is the message itself.
    """
    if orig is None:
        return ""
    args = getattr(orig, "args", ())
    if len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        return args[1]
    return str(orig)


def first_line(orig: BaseException | None) -> str:
    text = driver_message(orig).strip()
    return text.splitlines()[0] if text else type(orig).__name__
