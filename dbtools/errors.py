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
