"""The hub's address and credentials, and single HTTP exchanges with it.

Streams (SSE, long-polls) get a connection of their own each. Short JSON
calls reuse one keep-alive connection per thread: a worker publishing a
hundred progress updates should not pay a hundred TCP (and TLS) handshakes.
Nothing here retries; that is the callers' decision, because only they know
whether a request may be sent twice.
"""

from __future__ import annotations

import http.client
import json
import select
import ssl
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from hub_client.backoff import parse_retry_after
from hub_client.errors import ProtocolError

#: An answer holds at most a page of jobs or 500 events; this leaves ample room.
MAX_JSON_BODY = 16 * 1024 * 1024
_MAX_ERROR_BODY = 64 * 1024
USER_AGENT = "hub-client-python/0.2"


class NotSent(Exception):
    """The connection could not be made: the request never left, so sending
    it again cannot do anything twice. The network error is the cause."""


class StaleConnection(Exception):
    """A kept-alive connection broke before any answer: most likely the hub
    or a proxy closed it while idle (the hub does after 30 s), and a new
    connection will do. The network error is the cause."""


#: How a connection closed by the other side shows when it is used again.
_CLOSED_WHILE_IDLE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    #: The decoded JSON body; None when there was none (or, for an error,
    #: when it was not JSON).
    body: Any
    #: Seconds the hub asked to wait (Retry-After), if it did.
    retry_after: float | None = None


class Endpoint:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float,
        connect_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("base_url must be an http:// or https:// URL with a host")
        if not token:
            raise ValueError("a token is required")
        self.base_url = base_url
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        # A hub behind a reverse proxy may live under a path prefix.
        self._prefix = parts.path.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._ssl_context = ssl_context
        self._local = threading.local()

    def stream(self, path: str, headers: dict[str, str]) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Sends a GET on a new connection and returns it with its response,
        whose body the caller reads and then closes the connection."""
        connection = self._connect()
        try:
            connection.request("GET", self._prefix + path, headers=self._headers(headers))
            return connection, connection.getresponse()
        except BaseException:
            connection.close()
            raise

    def exchange(self, method: str, path: str, body: Any = None, *, reuse: bool = True) -> Reply:
        """One request with an optional JSON body, on this thread's keep-alive
        connection (or, without `reuse`, on a new one closed afterwards).
        Raises NotSent when no connection could be made, StaleConnection when
        a kept connection turned out closed, and the network's own errors
        (OSError, http.client.HTTPException) when it broke otherwise."""
        headers = {"Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        connection = self._kept() if reuse else None
        reused = connection is not None
        if connection is None:
            try:
                connection = self._connect()
            except (OSError, http.client.HTTPException) as error:
                if isinstance(error, ssl.SSLCertVerificationError):
                    raise
                raise NotSent(str(error)) from error
            if reuse:
                self._local.connection = connection
            else:
                headers["Connection"] = "close"
        try:
            connection.request(method, self._prefix + path, payload, headers=self._headers(headers))
            response = connection.getresponse()
            reply = _reply(response)
        except _CLOSED_WHILE_IDLE as error:
            self._drop(connection)
            if reused:
                raise StaleConnection(str(error)) from error
            raise
        except BaseException:
            self._drop(connection)
            raise
        if not reuse or response.will_close or not response.isclosed():
            # Closing is the only way past a body left unread.
            self._drop(connection)
        return reply

    def close(self) -> None:
        """Closes this thread's keep-alive connection, if there is one."""
        connection = self._kept()
        if connection is not None:
            self._drop(connection)

    def _kept(self) -> http.client.HTTPConnection | None:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is not None and _closed_by_peer(connection):
            self._drop(connection)
            return None
        return connection

    def _drop(self, connection: http.client.HTTPConnection) -> None:
        connection.close()
        if getattr(self._local, "connection", None) is connection:
            self._local.connection = None

    def _connect(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection
        if self._https:
            context = self._ssl_context or ssl.create_default_context()
            connection = http.client.HTTPSConnection(
                self._host, self._port, timeout=self._connect_timeout, context=context
            )
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=self._connect_timeout)
        try:
            connection.connect()
            # Connecting should be quick; reading may legitimately wait for a
            # keepalive or a held poll, hence a second, longer timeout.
            connection.sock.settimeout(self._timeout)
        except BaseException:
            connection.close()
            raise
        return connection

    def _headers(self, extra: dict[str, str]) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}", "User-Agent": USER_AGENT, **extra}


def _closed_by_peer(connection: http.client.HTTPConnection) -> bool:
    """An idle connection has nothing to read; if it has, the other side
    closed it (or broke the protocol): either way it cannot be used."""
    sock = connection.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _reply(response: http.client.HTTPResponse) -> Reply:
    retry_after = parse_retry_after(response.getheader("Retry-After"))
    if 200 <= response.status < 300:
        raw = read_bounded(response, MAX_JSON_BODY)
        if not raw:
            return Reply(response.status, None, retry_after)
        try:
            return Reply(response.status, json.loads(raw), retry_after)
        except ValueError:
            raise ProtocolError(f"a {response.status} answer is not JSON", response.status) from None
    return Reply(response.status, error_body(response), retry_after)


def read_bounded(response: http.client.HTTPResponse, limit: int) -> bytes:
    data = response.read(limit + 1)
    if len(data) > limit:
        raise ProtocolError(f"an answer is larger than {limit} bytes", response.status)
    return data


def error_body(response: http.client.HTTPResponse) -> Any:
    """The JSON of an error answer, or None. A body longer than any error
    the hub sends is left unread (and its connection is not reused)."""
    try:
        raw = response.read(_MAX_ERROR_BODY)
        return json.loads(raw) if raw else None
    except (ValueError, OSError, http.client.HTTPException):
        return None
