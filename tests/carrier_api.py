"""A local HTTP server that plays a carrier's paged device API (Jasper's device list) for tests.

It serves ``GET <path>?modifiedSince=<ISO 8601>&pageNumber=<n>`` with::

    {"devices": [...], "pageNumber": n, "lastPage": true|false}

* devices are held in insertion order (putting a device whose key is already there replaces it in
  its place); a request sees those modified at or after ``modifiedSince`` (all of them without
  it), in that order, ``page_size`` per page; a page past the end is empty and last;
* HTTP basic authentication is required (``username``/``password``; ``username=None``: none, or
  ``token=``: a bearer token); wrong or missing credentials get 401;
* failures on demand: ``fail(page=3, status=500, times=2)``, ``fail(status=429, retry_after=1)``,
  ``fail(page=2, status=200, body=b"not json")`` (a malformed page), ``fail(page=2, drop=True)``
  (the connection closed without an answer); ``times=None`` fails for ever; ``page=None`` any page;
* slow pages: ``slow(page=2, seconds=1.5)`` sleeps before answering;
* ``never_last = True``: no page is ever the last (a runaway source);
* every request is recorded: ``requests`` (method, path, query, page, since, authorized, status),
  ``pages_asked()``, ``since_asked()``.

It runs on 127.0.0.1 on a free port, in a background thread, as a context manager or through
the ``carrier_api`` fixture (import it into a test module). HTTP/1.1 with keep-alive; a device is
encoded once, when first served, so a 200,000-device list serves its pages quickly.

``api.env()`` is the environment (variable name -> value) an :class:`~dbtools.sync.http.HttpSource`
with ``api.source_options()`` reads its credentials from.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

PATH = "/rws/api/v1/devices"
USERNAME_ENV = "CARRIER_API_USERNAME"
PASSWORD_ENV = "CARRIER_API_KEY"
TOKEN_ENV = "CARRIER_API_TOKEN"


@dataclass
class Request:
    """One request the server received (logged on arrival), and the status it answered: None while
    it is being answered (a slow page), 0 when the connection was dropped unanswered."""

    method: str
    path: str
    query: Mapping[str, str]
    page: int | None
    since: str | None
    authorized: bool
    status: int | None = None


@dataclass
class _Failure:
    page: int | None
    status: int
    times: int | None
    retry_after: str | None
    body: bytes | None
    drop: bool


@dataclass
class _Slow:
    page: int | None
    seconds: float
    times: int | None


def utc(value: Any) -> dt.datetime:
    """A timestamp (an ISO 8601 text, Z or offset allowed, or a datetime) as a naive UTC datetime."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if not isinstance(value, dt.datetime):
        raise TypeError(f"not a timestamp: {value!r}")
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def iso_z(value: dt.datetime) -> str:
    """A naive UTC datetime as the API writes it: ``2026-03-01T08:30:00.123Z``."""
    return utc(value).isoformat(timespec="milliseconds") + "Z"


def make_devices(count: int, *, start: dt.datetime = dt.datetime(2026, 1, 1),
                 step: dt.timedelta = dt.timedelta(seconds=1), first_id: int = 1,
                 status: str = "ACTIVATED") -> list[dict[str, Any]]:
    """``count`` devices shaped as the JasperDevice entity's columns (but its scope), the n-th
    modified at ``start + n * step``."""
    plans = ("Basic 1GB", "Standard 5GB", "Pooled 10GB", "Unlimited")
    comms = ("Data Only", "Data and SMS", "Data SMS and Voice")
    devices = []
    for n in range(count):
        number = first_id + n
        when = iso_z(start + n * step)
        devices.append({"ICCID": f"8901260{number:013d}", "ID": number, "Status": status,
                        "RatePlan": plans[number % 4], "CommunicationPlan": comms[number % 3],
                        "CreatedBy": "carrier", "CreatedDate": when, "ModifiedDate": when})
    return devices


class CarrierApi:
    """The carrier API server (see the module docstring)."""

    def __init__(self, devices: Iterable[Mapping[str, Any]] = (), *, page_size: int = 50, key_field: str = "ICCID",
                 modified_field: str = "ModifiedDate", rows_field: str = "devices", last_page_field: str = "lastPage",
                 page_number_field: str = "pageNumber", since_param: str = "modifiedSince",
                 page_param: str = "pageNumber", username: str | None = "carrier-user",
                 password: str | None = "carrier-secret-key", token: str | None = None, path: str = PATH):
        self.page_size = page_size
        self.key_field, self.modified_field = key_field, modified_field
        self.rows_field, self.last_page_field, self.page_number_field = rows_field, last_page_field, page_number_field
        self.since_param, self.page_param = since_param, page_param
        self.username, self.password, self.token = username, password, token
        self.path = path
        self.never_last = False
        self._lock = threading.Lock()
        self._devices: list[dict[str, Any]] = []
        self._modified: list[dt.datetime] = []
        self._encoded: list[bytes | None] = []
        self._index: dict[Any, int] = {}
        self._version = 0
        self._selections: dict[tuple[int, dt.datetime | None], list[int]] = {}
        self._failures: list[_Failure] = []
        self._slow: list[_Slow] = []
        self._requests: list[Request] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.put(*devices)

    # ------------------------------------------------------------------------- life
    def start(self, port: int = 0) -> CarrierApi:
        api = self

        class Handler(_Handler):
            carrier = api

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="carrier-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = self._thread = None

    def __enter__(self) -> CarrierApi:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "the carrier API is not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """The device list's URL (no credentials, no query)."""
        return f"http://127.0.0.1:{self.port}{self.path}"

    def env(self) -> dict[str, str]:
        """The environment variables (name -> value) that hold this server's credentials."""
        if self.token is not None:
            return {TOKEN_ENV: self.token}
        if self.username is not None:
            return {USERNAME_ENV: self.username, PASSWORD_ENV: self.password}
        return {}

    def source_options(self) -> dict[str, Any]:
        """HttpSource keyword arguments that match this server (fields, parameters, credentials)."""
        options: dict[str, Any] = {"since_param": self.since_param, "page_param": self.page_param,
                                   "rows_field": self.rows_field, "last_page_field": self.last_page_field,
                                   "page_number_field": self.page_number_field}
        if self.token is not None:
            options["token_env"] = TOKEN_ENV
        elif self.username is not None:
            options.update(username_env=USERNAME_ENV, password_env=PASSWORD_ENV)
        return options

    # ------------------------------------------------------------------------- devices
    def put(self, *devices: Mapping[str, Any]) -> None:
        """Add devices, or replace those whose key is already there (they keep their place).

        A datetime value is stored as the API writes it (ISO 8601, Z); the modified field is required.
        """
        with self._lock:
            for device in devices:
                row = {k: iso_z(v) if isinstance(v, dt.datetime) else v for k, v in device.items()}
                modified = utc(row[self.modified_field])
                key = row[self.key_field]
                at = self._index.get(key)
                if at is None:
                    self._index[key] = len(self._devices)
                    self._devices.append(row)
                    self._modified.append(modified)
                    self._encoded.append(None)
                else:
                    self._devices[at], self._modified[at], self._encoded[at] = row, modified, None
            self._changed()

    def clear(self) -> None:
        with self._lock:
            self._devices, self._modified, self._encoded, self._index = [], [], [], {}
            self._changed()

    @property
    def devices(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(d) for d in self._devices]

    def _changed(self) -> None:
        self._version += 1
        self._selections.clear()

    # ------------------------------------------------------------------------- behaviour on demand
    def fail(self, page: int | None = None, status: int = 500, times: int | None = 1, *,
             retry_after: float | str | None = None, body: bytes | str | None = None, drop: bool = False) -> None:
        """Answer ``times`` requests of ``page`` (None: any page; times None: for ever) with ``status``
        (and a ``Retry-After`` header, and this body), or close the connection unanswered (``drop``).
        Failures are used in the order they were set; a status of 200 with a body plays a malformed page."""
        if isinstance(body, str):
            body = body.encode()
        if isinstance(retry_after, float) and retry_after.is_integer():
            retry_after = int(retry_after)
        with self._lock:
            self._failures.append(_Failure(page, status, times, None if retry_after is None else str(retry_after),
                                           body, drop))

    def slow(self, page: int | None = None, seconds: float = 1.0, times: int | None = None) -> None:
        """Sleep ``seconds`` before answering ``times`` requests of ``page`` (None: every page; for ever)."""
        with self._lock:
            self._slow.append(_Slow(page, seconds, times))

    def heal(self) -> None:
        """Forget every failure and slowness set (the log stays)."""
        with self._lock:
            self._failures.clear()
            self._slow.clear()

    # ------------------------------------------------------------------------- what was asked
    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def pages_asked(self) -> list[int | None]:
        return [r.page for r in self.requests]

    def since_asked(self) -> list[str | None]:
        return [r.since for r in self.requests]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # ------------------------------------------------------------------------- serving (handler threads)
    def _take(self, items: list, page: int | None):
        """The first failure or slowness that applies to ``page``, used once (under the lock)."""
        for item in items:
            if item.page is None or item.page == page:
                if item.times is not None:
                    item.times -= 1
                    if item.times <= 0:
                        items.remove(item)
                return item
        return None

    def _record(self, handler: _Handler, query: Mapping[str, str], page: int | None, authorized: bool) -> Request:
        request = Request(handler.command, urlsplit(handler.path).path, dict(query), page,
                          query.get(self.since_param), authorized)
        with self._lock:
            self._requests.append(request)
        return request

    def _authorized(self, header: str | None) -> bool:
        if self.token is not None:
            return header == f"Bearer {self.token}"
        if self.username is None:
            return True
        expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return header == f"Basic {expected}"

    def _page_body(self, since: dt.datetime | None, page: int) -> bytes:
        with self._lock:
            key = (self._version, since)
            selection = self._selections.get(key)
            if selection is None:
                if since is None:
                    selection = list(range(len(self._devices)))
                else:
                    selection = [i for i, m in enumerate(self._modified) if m >= since]
                self._selections[key] = selection
            first = (page - 1) * self.page_size
            chosen = selection[first:first + self.page_size]
            parts = []
            for i in chosen:
                encoded = self._encoded[i]
                if encoded is None:
                    encoded = self._encoded[i] = json.dumps(self._devices[i], separators=(",", ":")).encode()
                parts.append(encoded)
            last = not self.never_last and first + self.page_size >= len(selection)
        head = json.dumps(self.rows_field).encode()
        tail = {self.page_number_field: page, self.last_page_field: last}
        return b"{" + head + b":[" + b",".join(parts) + b"]," + json.dumps(tail, separators=(",", ":")).encode()[1:]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "CarrierApi/1.0"
    timeout = 60  # an idle keep-alive connection is closed after this
    carrier: CarrierApi

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        api = self.carrier
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        raw_page = query.get(api.page_param, "1")
        try:
            page: int | None = int(raw_page)
        except ValueError:
            page = None
        authorized = api._authorized(self.headers.get("Authorization"))
        self.logged = api._record(self, query, page, authorized)
        with api._lock:
            slow = api._take(api._slow, page)
            failure = api._take(api._failures, page)
        if slow is not None:
            time.sleep(slow.seconds)
        if failure is not None:
            if failure.drop:
                self.logged.status = 0
                self.close_connection = True
                return
            headers = {"Retry-After": failure.retry_after} if failure.retry_after is not None else {}
            body = failure.body if failure.body is not None else json.dumps(
                {"errorMessage": f"injected failure {failure.status}", "errorCode": str(failure.status)}).encode()
            self._answer(failure.status, body, headers)
            return
        if parts.path != api.path:
            self._answer(404, b'{"errorMessage":"Not found"}')
            return
        if not authorized:
            self._answer(401, b'{"errorMessage":"Invalid credentials","errorCode":"10000001"}',
                         {"WWW-Authenticate": 'Basic realm="carrier"'})
            return
        if page is None or page < 1:
            self._answer(400, b'{"errorMessage":"Invalid pageNumber"}')
            return
        since = query.get(api.since_param)
        try:
            since_value = utc(since) if since is not None else None
        except (TypeError, ValueError):
            self._answer(400, b'{"errorMessage":"Invalid modifiedSince"}')
            return
        self._answer(200, api._page_body(since_value, page))

    def _answer(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.logged.status = status
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout): nothing to answer
            self.close_connection = True


@pytest.fixture
def carrier_api() -> Iterator[CarrierApi]:
    """A started carrier API with no devices (``put`` some), stopped after the test."""
    with CarrierApi() as api:
        yield api


def main(argv: list[str] | None = None) -> None:
    """Serve a carrier API by hand, for the walk-through of docs/sync.md.

    ``python -m tests.carrier_api --devices 2500 --port 8765`` serves 2,500 devices and prints the
    URL and the credential variables. Typing ``touch N`` (and Enter) in its terminal modifies the
    first N devices now (a new Status and ModifiedDate), so an incremental sync has changes to
    fetch; ``quit`` stops it.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m tests.carrier_api", description=main.__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=2500, help="devices to serve (default 2500)")
    parser.add_argument("--page-size", type=int, default=1000, help="devices per page (default 1000)")
    parser.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (default 8765)")
    args = parser.parse_args(argv)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    api = CarrierApi(make_devices(args.devices, start=now - dt.timedelta(days=7), step=dt.timedelta(seconds=60)),
                     page_size=args.page_size).start(args.port)
    print(f"carrier API at {api.url}", flush=True)
    for name, value in api.env().items():
        print(f"export {name}={value}", flush=True)
    print("type 'touch N' to modify N devices now, 'quit' to stop", flush=True)
    try:
        for line in sys.stdin:
            words = line.split()
            if words[:1] == ["quit"]:
                break
            if words[:1] == ["touch"] and len(words) == 2 and words[1].isdigit():
                stamp = iso_z(dt.datetime.now(dt.timezone.utc).replace(tzinfo=None))
                changed = [{**d, "Status": "DEACTIVATED", "ModifiedDate": stamp} for d in api.devices[:int(words[1])]]
                api.put(*changed)
                print(f"modified {len(changed)} devices at {stamp}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        api.stop()


if __name__ == "__main__":
    main()
