"""HubClient: follows one job, or every job of a user, over Server-Sent Events
or long-poll, and survives dropped connections without losing or repeating
an event.

The hub gives every state-carrying event a cursor (its `id`) and resumes a
stream or a poll from any cursor it still holds, so reconnecting is just
asking again with the last id delivered. The client adds what the network
cannot promise: backoff with jitter so that many clients do not come back in
the same instant, read timeouts long enough for an idle stream, and a guard
against delivering an event twice.
"""

from __future__ import annotations

import enum
import http.client
import json
import random
import ssl
import time
from collections.abc import Generator, Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlsplit

from hub_client.errors import (
    BadRequest,
    HubClientError,
    NotFound,
    ProtocolError,
    RetriesExhausted,
    Unauthorized,
)
from hub_client.sse import DEFAULT_MAX_FRAME_CHARS, DEFAULT_MAX_LINE_BYTES, Frame, SSEParser

Event = dict[str, Any]

JOB_TYPES = ("character", "media")
TRANSPORTS = ("sse", "longpoll")
TERMINAL_STATUSES = frozenset({"completed", "failed"})

#: Longer than twice the hub's keepalive (15 s) and than its long-poll hold
#: (25 s): an idle stream or a held poll is not mistaken for a dead one, while
#: a connection that went silent (a dead peer, a stalled proxy) is noticed.
DEFAULT_TIMEOUT = 45.0
DEFAULT_CONNECT_TIMEOUT = 10.0
#: The first reconnect delay until the hub's `retry:` says otherwise.
DEFAULT_RETRY_DELAY = 1.0
DEFAULT_MAX_DELAY = 30.0
MIN_RETRY_DELAY = 0.05
#: A Retry-After beyond this is treated as this: a bogus header must not
#: park the client for hours.
MAX_RETRY_AFTER = 300.0

_READ_CHUNK = 64 * 1024
_MAX_ERROR_BODY = 64 * 1024
#: A poll answer holds at most 500 events; this leaves ample room for them.
_MAX_POLL_BODY = 16 * 1024 * 1024
_USER_AGENT = "hub-client-python/0.1"


class _Outcome(enum.Enum):
    FINISHED = "finished"  # the terminal event was delivered, or a 204: stop
    ENDED_EARLY = "ended early"  # the stream ended before the job: reconnect after a delay
    NEXT_POLL = "next poll"  # a poll was answered: poll again at once


class _RetryLater(Exception):
    """The hub answered, but asks to come back later (429, 503, other 5xx)."""

    def __init__(self, status: int, body: Any, retry_after: float | None) -> None:
        super().__init__(f"the hub answered {status}{_code_of(body)}")
        self.retry_after = retry_after


class _Cursor:
    """Where the watch stands, and which events are new.

    The hub already sends exactly the events after the cursor a connection
    starts from; this guard makes "never twice" hold even if it did not (a
    misbehaving proxy replaying a response, a clock-skewed id). An event is
    new when its id is after the cursor the connection started from and not
    before the previous event of the same connection. Equal ids are allowed
    only for `initial_status`: on `/my` those frames share one id.
    """

    def __init__(self, last_event_id: str | None) -> None:
        #: What a reconnect sends (Last-Event-ID, or the poll's `cursor`).
        self.last_id = last_event_id or None
        self._last = _parse_id(self.last_id)
        self._floor = self._last

    def start_connection(self) -> None:
        self._floor = self._last

    def reset(self) -> None:
        """After `reset` the hub sends fresh state whose id may be older than
        the cursor (the history was lost): it must not be skipped. `last_id`
        stays until that state arrives, so a drop in between resumes safely."""
        self._floor = None
        self._last = None

    def accept(self, event: Event) -> bool:
        raw = event.get("id")
        if not isinstance(raw, str) or not raw:
            return True  # no cursor (connected, reset): nothing to compare
        position = _parse_id(raw)
        if position is None:
            # Not a stream id: it cannot be ordered, only remembered.
            self.last_id = raw
            return True
        if self._floor is not None and position <= self._floor:
            return False
        if self._last is not None and (
            position < self._last or (position == self._last and event.get("type") != "initial_status")
        ):
            return False
        self._last = position
        self.last_id = raw
        return True

    def advance(self, poll_cursor: str) -> None:
        """A poll's answer names the cursor to send next; it may be ahead of
        the events (`0-0` on an empty `/my`), never behind them."""
        position = _parse_id(poll_cursor)
        if position is None or self._last is None or position >= self._last:
            self._last = position
            self.last_id = poll_cursor


class _Backoff:
    """Reconnect delays: `base` after a working connection ended, doubling
    with each consecutive failure up to `cap`, each with random jitter so
    that clients dropped together do not return together."""

    def __init__(self, base: float, cap: float, max_retries: int | None) -> None:
        self.base = base
        self.cap = cap
        self.max_retries = max_retries
        self.failures = 0

    def succeeded(self) -> None:
        self.failures = 0

    def failed(self, error: BaseException | None, retry_after: float | None = None) -> float:
        """Counts a failure and returns how long to wait before the next try."""
        self.failures += 1
        if self.max_retries is not None and self.failures > self.max_retries:
            reason = f": {error}" if error is not None else ""
            raise RetriesExhausted(f"gave up after {self.max_retries} retries{reason}") from error
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER)
        delay = min(self.cap, self.base * 2 ** (self.failures - 1))
        return random.uniform(delay / 2, delay)


class HubClient:
    """Follows jobs on a hub. One client may run several watches; each watch
    (a generator) owns its own connections and closes them when it ends or
    when the caller stops iterating."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        retry_delay: float = DEFAULT_RETRY_DELAY,
        max_delay: float = DEFAULT_MAX_DELAY,
        max_retries: int | None = None,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        max_frame_chars: int = DEFAULT_MAX_FRAME_CHARS,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("base_url must be an http:// or https:// URL with a host")
        if not token:
            raise ValueError("a token is required")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        # A hub behind a reverse proxy may live under a path prefix.
        self._prefix = parts.path.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._retry_delay = retry_delay
        self._max_delay = max_delay
        self._max_retries = max_retries
        self._max_line_bytes = max_line_bytes
        self._max_frame_chars = max_frame_chars
        self._ssl_context = ssl_context
        self.base_url = base_url

    def __repr__(self) -> str:
        # Never the token: a repr ends up in logs and tracebacks.
        return f"HubClient({self.base_url!r})"

    def watch(
        self,
        job_id: str,
        type: str,
        *,
        transport: str = "sse",
        last_event_id: str | None = None,
        include_connected: bool = False,
    ) -> Iterator[Event]:
        """Yields the job's events in order, each once, and stops after its
        terminal event (`completed` or `failed`) or when the hub answers 204
        (the cursor is already at or after that event).

        Without `last_event_id` the first event is `initial_status`, the job's
        state now; with one, exactly the events after it. `connected`
        greetings (one per connection, SSE only) are left out unless asked
        for; `reset` and any other frame without an id (such as the hub's
        `token_expired`, after which the reconnect answers 401) pass through.
        Raises Unauthorized, NotFound, BadRequest, ProtocolError, or
        RetriesExhausted when `max_retries` is set and reached.
        """
        if type not in JOB_TYPES:
            raise ValueError(f"type must be one of {', '.join(JOB_TYPES)}")
        if not job_id:
            raise ValueError("job_id must not be empty")
        tail = f"jobs/{type}/{quote(job_id, safe='')}"
        return self._follow(tail, transport, last_event_id, ends_with_job=True, include_connected=include_connected)

    def watch_my(
        self,
        *,
        transport: str = "sse",
        last_event_id: str | None = None,
        include_connected: bool = False,
    ) -> Iterator[Event]:
        """Yields the events of every job of the token's user, including jobs
        created later. It never ends by itself: the caller breaks out."""
        return self._follow(
            "jobs/my", transport, last_event_id, ends_with_job=False, include_connected=include_connected
        )

    def _follow(
        self, tail: str, transport: str, last_event_id: str | None, *, ends_with_job: bool, include_connected: bool
    ) -> Iterator[Event]:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}")
        # Validate eagerly, so a bad argument fails at the call, not at the
        # first next().
        return self._run(tail, transport, _Cursor(last_event_id), ends_with_job, include_connected)

    def _run(
        self, tail: str, transport: str, cursor: _Cursor, ends_with_job: bool, include_connected: bool
    ) -> Iterator[Event]:
        backoff = _Backoff(self._retry_delay, self._max_delay, self._max_retries)
        while True:
            try:
                if transport == "sse":
                    outcome = yield from self._stream_once(
                        f"/api/v1/sse/{tail}", cursor, backoff, ends_with_job, include_connected
                    )
                else:
                    outcome = yield from self._poll_once(f"/api/v1/poll/{tail}", cursor, backoff, ends_with_job)
            except _RetryLater as busy:
                time.sleep(backoff.failed(busy, busy.retry_after))
                continue
            except (OSError, http.client.HTTPException) as error:
                if isinstance(error, ssl.SSLCertVerificationError):
                    # A certificate that does not verify will not verify later.
                    raise HubClientError(f"TLS verification failed: {error}") from error
                time.sleep(backoff.failed(error))
                continue
            if outcome is _Outcome.FINISHED:
                return
            if outcome is _Outcome.ENDED_EARLY:
                time.sleep(backoff.failed(None))

    def _stream_once(
        self, path: str, cursor: _Cursor, backoff: _Backoff, ends_with_job: bool, include_connected: bool
    ) -> Generator[Event, None, _Outcome]:
        """One SSE connection, read until it ends."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if cursor.last_id:
            headers["Last-Event-ID"] = cursor.last_id
        connection, response = self._get(path, headers)
        try:
            if not self._check_status(response, path):
                return _Outcome.FINISHED
            _require_event_stream(response)
            parser = SSEParser(self._max_line_bytes, self._max_frame_chars)
            cursor.start_connection()
            while chunk := response.read1(_READ_CHUNK):
                frames = parser.feed(chunk)
                if parser.retry_ms is not None:
                    # The floor keeps a `retry: 0` from turning into a busy loop.
                    backoff.base = max(parser.retry_ms / 1000, MIN_RETRY_DELAY)
                for frame in frames:
                    backoff.succeeded()
                    event = _event_from(frame)
                    if event.get("type") == "connected" and not include_connected:
                        continue
                    if (yield from self._deliver([event], cursor, ends_with_job)):
                        return _Outcome.FINISHED
            return _Outcome.ENDED_EARLY
        finally:
            connection.close()

    def _poll_once(
        self, path: str, cursor: _Cursor, backoff: _Backoff, ends_with_job: bool
    ) -> Generator[Event, None, _Outcome]:
        """One long-poll request. Each poll gets its own connection: a
        keep-alive connection that the hub or a proxy closed while idle would
        only turn the next poll into a needless failure."""
        query = f"?cursor={quote(cursor.last_id, safe='')}" if cursor.last_id else ""
        connection, response = self._get(path + query, {"Accept": "application/json", "Connection": "close"})
        try:
            if not self._check_status(response, path):
                return _Outcome.FINISHED
            events, next_cursor = _parse_poll(_read_bounded(response, _MAX_POLL_BODY))
        finally:
            connection.close()
        backoff.succeeded()
        cursor.start_connection()
        if (yield from self._deliver(events, cursor, ends_with_job)):
            return _Outcome.FINISHED
        cursor.advance(next_cursor)
        return _Outcome.NEXT_POLL

    @staticmethod
    def _deliver(events: list[Event], cursor: _Cursor, ends_with_job: bool) -> Generator[Event, None, bool]:
        """Yields the new events; returns True once the job's terminal event is out."""
        for event in events:
            if event.get("type") == "reset":
                cursor.reset()
            if not cursor.accept(event):
                continue
            yield event
            if ends_with_job and event.get("status") in TERMINAL_STATUSES:
                return True
        return False

    def _get(self, path: str, headers: dict[str, str]) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        connection = self._connection()
        try:
            connection.connect()
            # Connecting should be quick; reading may legitimately wait for a
            # keepalive or a held poll, hence a second, longer timeout.
            connection.sock.settimeout(self._timeout)
            all_headers = {
                "Authorization": f"Bearer {self._token}",
                "User-Agent": _USER_AGENT,
                **headers,
            }
            connection.request("GET", self._prefix + path, headers=all_headers)
            return connection, connection.getresponse()
        except BaseException:
            connection.close()
            raise

    def _connection(self) -> http.client.HTTPConnection:
        if self._https:
            context = self._ssl_context or ssl.create_default_context()
            return http.client.HTTPSConnection(self._host, self._port, timeout=self._connect_timeout, context=context)
        return http.client.HTTPConnection(self._host, self._port, timeout=self._connect_timeout)

    @staticmethod
    def _check_status(response: http.client.HTTPResponse, path: str) -> bool:
        """True for 200, False for 204 (nothing more will come); raises for
        the rest: _RetryLater for what may pass, an error for what will not."""
        status = response.status
        if status == 200:
            return True
        if status == 204:
            return False
        body = _error_body(response)
        if status in (429, 503):
            raise _RetryLater(status, body, _retry_after(response.getheader("Retry-After")))
        if status >= 500 or status == 408:
            raise _RetryLater(status, body, None)
        error_class = {400: BadRequest, 401: Unauthorized, 404: NotFound}.get(status, HubClientError)
        raise error_class(_describe(status, body, path), status, body)


def _parse_id(raw: str | None) -> tuple[int, int] | None:
    """A Redis stream id "<ms>-<seq>" as a tuple that orders correctly."""
    if not raw:
        return None
    ms, dash, seq = raw.partition("-")
    if not (dash and ms.isdigit() and seq.isdigit()):
        return None
    return int(ms), int(seq)


def _event_from(frame: Frame) -> Event:
    try:
        event = json.loads(frame.data)
    except ValueError:
        raise ProtocolError("an event's data is not JSON") from None
    if not isinstance(event, dict):
        raise ProtocolError("an event's data is not a JSON object")
    if frame.id:
        event["id"] = frame.id
    return event


def _require_event_stream(response: http.client.HTTPResponse) -> None:
    """A 200 that is not an event stream (a login page from a proxy, say)
    would never turn into one: fail instead of reconnecting forever."""
    content_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
    if content_type != "text/event-stream":
        raise ProtocolError(f"expected text/event-stream, got {content_type or 'no content type'!r}", 200)


def _read_bounded(response: http.client.HTTPResponse, limit: int) -> bytes:
    data = response.read(limit + 1)
    if len(data) > limit:
        raise ProtocolError(f"an answer is larger than {limit} bytes", response.status)
    return data


def _parse_poll(raw: bytes) -> tuple[list[Event], str]:
    try:
        answer = json.loads(raw)
    except ValueError:
        raise ProtocolError("a poll answer is not JSON", 200) from None
    events = answer.get("events") if isinstance(answer, dict) else None
    cursor = answer.get("cursor") if isinstance(answer, dict) else None
    if not isinstance(events, list) or not isinstance(cursor, str) or not all(isinstance(e, dict) for e in events):
        raise ProtocolError('a poll answer must be {"events": [...], "cursor": "..."}', 200, answer)
    return events, cursor


def _error_body(response: http.client.HTTPResponse) -> Any:
    try:
        raw = response.read(_MAX_ERROR_BODY)
        return json.loads(raw) if raw else None
    except (ValueError, OSError, http.client.HTTPException):
        return None


def _code_of(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return f" ({body['error']})"
    return ""


def _describe(status: int, body: Any, path: str) -> str:
    message = body.get("message") if isinstance(body, dict) else None
    detail = f": {message}" if isinstance(message, str) and message else ""
    return f"{status}{_code_of(body)} for {path}{detail}"


def _retry_after(value: str | None) -> float | None:
    """Retry-After is either seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
