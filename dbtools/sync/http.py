"""A paged source read from an HTTP JSON API, such as a carrier's device list (Jasper).

Requests: ``GET <url>?modifiedSince=<since>&pageNumber=<n>`` (the two parameter names are
configurable; fixed parameters may be given too, or be in the URL's query). ``since`` is sent as
ISO 8601 UTC with a ``Z``, in whole seconds rounded down (so no change is missed):
``2026-03-01T08:30:00Z``. ``since=None`` sends no ``modifiedSince`` at all.

Responses: a JSON object modelled on Jasper's device list, field names configurable::

    {"devices": [{...}, {...}], "pageNumber": 1, "lastPage": false}

``devices`` (``rows_field``) is the page's rows, a list of objects; ``lastPage``
(``last_page_field``) is true on the last page; ``pageNumber`` (``page_number_field``), when the
response has it, must be the page asked for. With ``last_page_field=None`` the first page
without rows is the last. An item of the rows that is not an object is delivered as a
:class:`~dbtools.upsert.writers.RowError` (its ``row_number`` its position in the page, from 1), so
the session rejects that row and goes on. A body that is not a JSON object, lacks the rows or the
last-page field, or says another page number is a :class:`SourceError` naming the page.

Credentials come from environment variables whose *names* are given, never from a URL or a
command line: ``username_env`` and ``password_env`` for HTTP basic authentication (Jasper's user
name and API key), or ``token_env`` for a bearer token. They are read when the pages are asked
for; a variable that is not set (or empty) is a SourceError naming it. A URL carrying a user name
or password is refused. No message or log line of this module contains a credential: body
excerpts in messages have the credentials' values blanked out.

Failures:

* HTTP 429 and 5xx, connection failures and timeouts are retried with exponential backoff and
  jitter (``initial_wait`` doubling to ``max_wait``, the style of :mod:`dbtools.retry`); a
  ``Retry-After`` header (seconds or an HTTP date) is honoured instead, capped at ``max_wait``.
* Every failed request counts against the error budget (``error_budget``, default 5, as the
  seed's ``MAX_HTTP_RETRY_FAILURE_COUNT``), for one :meth:`HttpSource.pages` call (a resumed
  session starts a new budget): up to that many failures are retried, the next one ends the pages
  with a SourceError saying how many requests failed and how the last one did.
* HTTP 401 and 403 fail at once: the message names the environment variables whose credentials
  were refused, and the status. Any other status that is not 2xx fails at once with the status and
  a short excerpt of the body.
* The page limit (``page_limit``, default 1000, as the seed's ``MaxPagesToProcess``) is the
  highest page number fetched: a source whose page ``page_limit`` is not its last is a runaway,
  and the pages end with a SourceError saying so and how to raise the limit.

Sleeping is injectable (``sleep``), as is the HTTP client (``client``: an ``httpx.Client``, not
closed here; by default one client per :meth:`HttpSource.pages` call, keeping its connection
alive from page to page). ``timeout`` is each request's connect, read and write timeout in seconds.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx
import tenacity

from .. import __version__
from ..errors import ConfigurationError
from ..retry import RetryPolicy
from ..upsert.writers import RowError
from .source import Page, SourceError

log = logging.getLogger("dbtools.sync.http")

DEFAULT_PAGE_LIMIT = 1000
DEFAULT_ERROR_BUDGET = 5
DEFAULT_TIMEOUT = 30.0
DEFAULT_INITIAL_WAIT = 1.0
DEFAULT_MAX_WAIT = 60.0
#: Characters of a response body quoted in an error message.
EXCERPT = 200
#: Transport failures worth another request (not, e.g., a URL of an unsupported scheme).
TRANSIENT_TRANSPORT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def since_text(since: dt.datetime) -> str:
    """``since`` as sent: ISO 8601 UTC with a Z, in whole seconds rounded down.

    A naive datetime is taken as UTC (the protocol's form); an aware one is converted.
    """
    if since.tzinfo is not None:
        since = since.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return since.replace(microsecond=0).isoformat() + "Z"


def retry_after_seconds(value: str | None, now: Callable[[], dt.datetime] | None = None) -> float | None:
    """The wait a ``Retry-After`` header asks for (delay seconds or an HTTP date), or None."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    current = now() if now is not None else dt.datetime.now(dt.timezone.utc)
    return max(0.0, (when - current).total_seconds())


class _Transient(Exception):
    """A failed request worth another one: what happened, and the wait the server asked for."""

    def __init__(self, what: str, retry_after: float | None = None):
        super().__init__(what)
        self.what = what
        self.retry_after = retry_after


@dataclass
class _Run:
    """One pages() call: its credentials and its failures so far (the error budget's count)."""

    auth: httpx.Auth | None
    secrets: tuple[str, ...]
    failures: int = 0


class _BearerAuth(httpx.Auth):
    def __init__(self, token: str):
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request):
        request.headers["Authorization"] = self._header
        yield request

    def __repr__(self) -> str:  # never the token
        return "_BearerAuth(***)"


class HttpSource:
    """Pages of a paged HTTP JSON API (see the module docstring)."""

    def __init__(self, url: str, *, since_param: str = "modifiedSince", page_param: str = "pageNumber",
                 rows_field: str = "devices", last_page_field: str | None = "lastPage",
                 page_number_field: str | None = "pageNumber", params: Mapping[str, str] | None = None,
                 username_env: str | None = None, password_env: str | None = None, token_env: str | None = None,
                 page_limit: int = DEFAULT_PAGE_LIMIT, error_budget: int = DEFAULT_ERROR_BUDGET,
                 timeout: float = DEFAULT_TIMEOUT, initial_wait: float = DEFAULT_INITIAL_WAIT,
                 max_wait: float = DEFAULT_MAX_WAIT, client: httpx.Client | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(f"source URL {_without_credentials(parts)!r}: expected an http:// or https:// "
                                     "URL with a host")
        if parts.username is not None or parts.password is not None:
            raise ConfigurationError(f"source URL {_without_credentials(parts)}: the URL carries credentials; give "
                                     "them in environment variables instead (username_env and password_env, or "
                                     "token_env)")
        if (username_env is None) != (password_env is None):
            raise ConfigurationError("username_env and password_env go together (HTTP basic authentication)")
        if token_env is not None and username_env is not None:
            raise ConfigurationError("give either username_env and password_env, or token_env, not both")
        for name, value in (("page_limit", page_limit), ("error_budget", error_budget)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "page_limit" else 0):
                raise ConfigurationError(f"{name} must be an integer of {1 if name == 'page_limit' else 0} or more, "
                                         f"got {value!r}")
        if not timeout > 0:
            raise ConfigurationError(f"timeout must be more than 0 seconds, got {timeout!r}")
        try:
            self._backoff = RetryPolicy(initial_wait=initial_wait, max_wait=max_wait, sleep=sleep)
        except ValueError as exc:
            raise ConfigurationError(f"waits: {exc}") from None
        self.url = urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", ""))
        self.params: dict[str, str] = dict(parse_qsl(parts.query, keep_blank_values=True))
        self.params.update(params or {})
        self.since_param, self.page_param = since_param, page_param
        self.rows_field, self.last_page_field, self.page_number_field = rows_field, last_page_field, page_number_field
        self.username_env, self.password_env, self.token_env = username_env, password_env, token_env
        self.page_limit, self.error_budget = page_limit, error_budget
        self.timeout, self.initial_wait, self.max_wait = float(timeout), float(initial_wait), float(max_wait)
        self.client, self.sleep = client, sleep

    def describe(self) -> str:
        """The URL without credentials or query."""
        return self.url

    # ------------------------------------------------------------------------- pages
    def pages(self, since: dt.datetime | None, first_page: int = 1) -> Iterator[Page]:
        """Pages ``first_page``.. of the rows modified since ``since``, up to the last one."""
        if first_page < 1:
            raise SourceError(f"{self.describe()}: first page {first_page}: pages are numbered from 1")
        if first_page > self.page_limit:
            raise SourceError(self._limit_message(first_page - 1, asked=first_page))
        run = self._run()
        params = dict(self.params)
        if since is not None:
            params[self.since_param] = since_text(since)
        client = self.client if self.client is not None else self._new_client()
        try:
            number = first_page
            while True:
                params[self.page_param] = str(number)
                response = self._get(client, params, number, run)
                page = self._page(response, number, run)
                yield page
                if page.is_last:
                    return
                if number >= self.page_limit:
                    raise SourceError(self._limit_message(number))
                number += 1
        finally:
            if client is not self.client:
                client.close()

    def _new_client(self) -> httpx.Client:
        return httpx.Client(headers={"Accept": "application/json", "User-Agent": f"dbtools/{__version__}"},
                            timeout=self.timeout)

    def _run(self) -> _Run:
        """Credentials from the environment, for one pages() call."""
        if self.token_env is not None:
            token = _env(self.token_env, "the bearer token", self.describe())
            return _Run(_BearerAuth(token), (token,))
        if self.username_env is not None:
            username = _env(self.username_env, "the user name", self.describe())
            password = _env(self.password_env, "the password", self.describe())
            return _Run(httpx.BasicAuth(username, password), (password, username))
        return _Run(None, ())

    def _limit_message(self, number: int, asked: int | None = None) -> str:
        if asked is not None:
            where = f"page {asked} was asked for, past the page limit of {self.page_limit}"
        else:
            where = f"page limit reached: page {number} was not the last page and the limit is {self.page_limit} pages"
        return (f"{self.describe()}: {where}; a source with more pages than that is taken for a runaway. If it "
                f"really has more, raise page_limit (now {self.page_limit})")

    # ------------------------------------------------------------------------- one request
    def _get(self, client: httpx.Client, params: dict[str, str], number: int, run: _Run) -> httpx.Response:
        """Page ``number``'s response, retried within the error budget."""

        def wait(state: tenacity.RetryCallState) -> float:
            error = state.outcome.exception()
            if isinstance(error, _Transient) and error.retry_after is not None:
                return min(error.retry_after, self.max_wait)
            return self._backoff.delay(state.attempt_number)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            log.warning("%s: page %d: %s (failure %d of an error budget of %d); retrying in %.2fs",
                        self.describe(), number, state.outcome.exception().what, run.failures,
                        self.error_budget, state.upcoming_sleep)

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Transient),
            stop=lambda state: run.failures > self.error_budget,
            wait=wait,
            before_sleep=before_sleep,
            sleep=self.sleep,
            reraise=True,
        )
        try:
            return retrying(self._request, client, params, number, run)
        except _Transient as exc:
            raise SourceError(
                f"{self.describe()}: page {number}: {run.failures} request{'s' if run.failures != 1 else ''} "
                f"failed, more than the error budget of "
                f"{self.error_budget} (error_budget); the last: {exc.what}") from None

    def _request(self, client: httpx.Client, params: dict[str, str], number: int, run: _Run) -> httpx.Response:
        try:
            response = client.get(self.url, params=params, auth=run.auth, timeout=self.timeout)
        except TRANSIENT_TRANSPORT as exc:
            run.failures += 1
            raise _Transient(_transport_text(exc)) from None
        except httpx.HTTPError as exc:
            raise SourceError(f"{self.describe()}: page {number}: {_transport_text(exc)}") from None
        status = response.status_code
        if status == 429 or 500 <= status <= 599:
            run.failures += 1
            raise _Transient(_status_text(response), retry_after_seconds(response.headers.get("Retry-After")))
        if status in (401, 403):
            raise SourceError(f"{self.describe()}: page {number}: {_status_text(response)}: {self._refused()}")
        if not 200 <= status <= 299:
            raise SourceError(f"{self.describe()}: page {number}: {_status_text(response)}: "
                              f"{_excerpt(response.text, run.secrets) or 'no body'}")
        return response

    def _refused(self) -> str:
        if self.token_env is not None:
            return (f"the service refused the bearer token from the environment variable {self.token_env}; "
                    "check it (not retried)")
        if self.username_env is not None:
            return (f"the service refused the credentials from the environment variables {self.username_env} and "
                    f"{self.password_env}; check them (not retried)")
        return ("the service asks for credentials and none are configured: name the environment variables that hold "
                "them (username_env and password_env, or token_env)")

    # ------------------------------------------------------------------------- one page
    def _page(self, response: httpx.Response, number: int, run: _Run) -> Page:
        where = f"{self.describe()}: page {number}"
        try:
            body = response.json()
        except ValueError:
            raise SourceError(f"{where}: the response is not JSON: "
                              f"{_excerpt(response.text, run.secrets) or 'an empty body'}") from None
        if not isinstance(body, dict):
            raise SourceError(f"{where}: the response is not a JSON object but {_json_kind(body)}")
        if self.rows_field not in body:
            raise SourceError(f"{where}: the response has no {self.rows_field!r} field (rows_field); its fields: "
                              f"{_field_list(body)}")
        items = body[self.rows_field]
        if not isinstance(items, list):
            raise SourceError(f"{where}: the response's {self.rows_field!r} is {_json_kind(items)}, not a list")
        if self.page_number_field is not None and self.page_number_field in body:
            said = body[self.page_number_field]
            if said != number and str(said) != str(number):
                raise SourceError(f"{where}: the response says it is page {_short(said)} "
                                  f"({self.page_number_field!r}), not the page asked for")
        rows: list[Mapping[str, Any] | RowError] = [
            item if isinstance(item, dict) else RowError(position, f"page {number} row {position}: "
                                                                   f"{_json_kind(item)}, not a JSON object")
            for position, item in enumerate(items, start=1)]
        if self.last_page_field is None:
            is_last = not items
        else:
            if self.last_page_field not in body:
                raise SourceError(f"{where}: the response has no {self.last_page_field!r} field (last_page_field); "
                                  f"its fields: {_field_list(body)}")
            is_last = body[self.last_page_field]
            if not isinstance(is_last, bool):
                raise SourceError(f"{where}: the response's {self.last_page_field!r} is {_short(is_last)}, "
                                  "not true or false")
        return Page(number, rows, is_last)


# ----------------------------------------------------------------------------- helpers
def _env(name: str, what: str, where: str) -> str:
    value = os.environ.get(name)
    if not value:
        state = "is empty" if value is not None else "is not set"
        raise SourceError(f"{where}: the environment variable {name} ({what}) {state}")
    return value


def _without_credentials(parts) -> str:
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _status_text(response: httpx.Response) -> str:
    return f"HTTP {response.status_code} {response.reason_phrase}".rstrip()


def _transport_text(exc: httpx.HTTPError) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _excerpt(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= EXCERPT else text[:EXCERPT] + "..."


def _json_kind(value: Any) -> str:
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


def _field_list(body: dict) -> str:
    names = sorted(map(str, body))
    return ", ".join(names[:12]) + (", ..." if len(names) > 12 else "") if names else "none"


__all__ = ["HttpSource", "since_text", "retry_after_seconds", "DEFAULT_PAGE_LIMIT", "DEFAULT_ERROR_BUDGET",
           "DEFAULT_TIMEOUT"]
