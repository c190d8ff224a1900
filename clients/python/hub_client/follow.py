"""Following a stream of events (one job's, or all of a user's) over SSE or
long-poll, across any number of dropped connections, without losing or
repeating an event.

The hub gives every state-carrying event a cursor (its `id`) and resumes a
stream or a poll from any cursor it still holds, so reconnecting is just
asking again with the last id delivered. This module adds what the network
cannot promise: backoff with jitter so that many clients do not come back in
the same instant, and a guard against delivering an event twice.
"""

from __future__ import annotations

import enum
import http.client
import json
import ssl
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from hub_client.backoff import Backoff, parse_retry_after
from hub_client.endpoint import MAX_JSON_BODY, Endpoint, error_body, read_bounded
from hub_client.errors import HubClientError, ProtocolError, code_of, error_for
from hub_client.sse import Frame, SSEParser

Event = dict[str, Any]

TRANSPORTS = ("sse", "longpoll")
TERMINAL_STATUSES = frozenset({"completed", "failed"})
#: The floor keeps a `retry: 0` from turning into a busy loop.
MIN_RETRY_DELAY = 0.05
_READ_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class FollowOptions:
    retry_delay: float
    max_delay: float
    max_retries: int | None
    max_line_bytes: int
    max_frame_chars: int


@dataclass(frozen=True, slots=True)
class Retry:
    """What a follow is about to do after a failure, told before it waits:
    `attempt` (the next one; the first connection was attempt 1) of
    `attempts` (None: no limit), after `delay` seconds. `error` is what
    failed: an OSError or HTTPException when the hub could not be reached,
    a HubClientError with the `status` it answered (429, 503, ...), or None
    when a stream ended before the job did."""

    error: BaseException | None
    status: int | None
    delay: float
    attempt: int
    attempts: int | None


#: Told of every retry before its wait (see Retry).
OnRetry = Callable[[Retry], None]


class _Outcome(enum.Enum):
    FINISHED = "finished"  # the terminal event was delivered, or a 204: stop
    ENDED_EARLY = "ended early"  # the stream ended before the job: reconnect after a delay
    NEXT_POLL = "next poll"  # a poll was answered: poll again at once


class _RetryLater(Exception):
    """The hub answered, but asks to come back later (429, 503, other 5xx)."""

    def __init__(self, status: int, body: Any, retry_after: float | None) -> None:
        super().__init__(f"the hub answered {status}{code_of(body)}")
        self.status = status
        self.retry_after = retry_after


class Cursor:
    """Where a follow stands, and which events are new.

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


def job_tail(job_type: str, job_id: str) -> str:
    return f"jobs/{job_type}/{quote(job_id, safe='')}"


def follow(
    endpoint: Endpoint,
    options: FollowOptions,
    tail: str,
    transport: str,
    last_event_id: str | None,
    *,
    ends_with_job: bool,
    include_connected: bool,
    on_retry: OnRetry | None = None,
) -> Iterator[Event]:
    """The events of `/api/v1/{sse|poll}/{tail}`; see HubClient.watch."""
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}")
    # A generator's body runs at the first next(): validating above makes a
    # bad argument fail at the call instead.
    follower = _Follower(endpoint, options, ends_with_job, include_connected, on_retry)
    return follower.run(tail, transport, Cursor(last_event_id))


class _Follower:
    def __init__(
        self,
        endpoint: Endpoint,
        options: FollowOptions,
        ends_with_job: bool,
        include_connected: bool,
        on_retry: OnRetry | None,
    ) -> None:
        self._endpoint = endpoint
        self._options = options
        self._ends_with_job = ends_with_job
        self._include_connected = include_connected
        self._on_retry = on_retry
        self._backoff = Backoff(options.retry_delay, options.max_delay, options.max_retries)

    def run(self, tail: str, transport: str, cursor: Cursor) -> Iterator[Event]:
        while True:
            try:
                if transport == "sse":
                    outcome = yield from self._stream_once(f"/api/v1/sse/{tail}", cursor)
                else:
                    outcome = yield from self._poll_once(f"/api/v1/poll/{tail}", cursor)
            except _RetryLater as busy:
                self._wait(busy, busy.status, busy.retry_after)
                continue
            except (OSError, http.client.HTTPException) as error:
                if isinstance(error, ssl.SSLCertVerificationError):
                    # A certificate that does not verify will not verify later.
                    raise HubClientError(f"TLS verification failed: {error}") from error
                self._wait(error)
                continue
            if outcome is _Outcome.FINISHED:
                return
            if outcome is _Outcome.ENDED_EARLY:
                self._wait(None)

    def _wait(self, error: BaseException | None, status: int | None = None, retry_after: float | None = None) -> None:
        """Counts a failure (raising RetriesExhausted past the limit), says
        so through on_retry, and waits before the next attempt."""
        backoff = self._backoff
        delay = backoff.failed(error, retry_after)
        if self._on_retry is not None:
            attempts = None if backoff.max_retries is None else backoff.max_retries + 1
            self._on_retry(Retry(error, status, delay, backoff.failures + 1, attempts))
        time.sleep(delay)

    def _stream_once(self, path: str, cursor: Cursor) -> Generator[Event, None, _Outcome]:
        """One SSE connection, read until it ends."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if cursor.last_id:
            headers["Last-Event-ID"] = cursor.last_id
        connection, response = self._endpoint.stream(path, headers)
        try:
            if not _check_status(response, path):
                return _Outcome.FINISHED
            _require_event_stream(response)
            parser = SSEParser(self._options.max_line_bytes, self._options.max_frame_chars)
            cursor.start_connection()
            while chunk := response.read1(_READ_CHUNK):
                frames = parser.feed(chunk)
                if parser.retry_ms is not None:
                    self._backoff.base = max(parser.retry_ms / 1000, MIN_RETRY_DELAY)
                for frame in frames:
                    self._backoff.succeeded()
                    event = _event_from(frame)
                    if event.get("type") == "connected" and not self._include_connected:
                        continue
                    if (yield from self._deliver([event], cursor)):
                        return _Outcome.FINISHED
            return _Outcome.ENDED_EARLY
        finally:
            connection.close()

    def _poll_once(self, path: str, cursor: Cursor) -> Generator[Event, None, _Outcome]:
        """One long-poll request. Each poll gets its own connection: a
        keep-alive connection that the hub or a proxy closed while idle would
        only turn the next poll into a needless failure."""
        query = f"?cursor={quote(cursor.last_id, safe='')}" if cursor.last_id else ""
        connection, response = self._endpoint.stream(
            path + query, {"Accept": "application/json", "Connection": "close"}
        )
        try:
            if not _check_status(response, path):
                return _Outcome.FINISHED
            events, next_cursor = _parse_poll(read_bounded(response, MAX_JSON_BODY))
        finally:
            connection.close()
        self._backoff.succeeded()
        cursor.start_connection()
        if (yield from self._deliver(events, cursor)):
            return _Outcome.FINISHED
        cursor.advance(next_cursor)
        return _Outcome.NEXT_POLL

    def _deliver(self, events: list[Event], cursor: Cursor) -> Generator[Event, None, bool]:
        """Yields the new events; returns True once the job's terminal event is out."""
        for event in events:
            if event.get("type") == "reset":
                cursor.reset()
            if not cursor.accept(event):
                continue
            yield event
            if self._ends_with_job and event.get("status") in TERMINAL_STATUSES:
                return True
        return False


def _check_status(response: http.client.HTTPResponse, path: str) -> bool:
    """True for 200, False for 204 (nothing more will come); raises for the
    rest: _RetryLater for what may pass, an error for what will not."""
    status = response.status
    if status == 200:
        return True
    if status == 204:
        return False
    body = error_body(response)
    if status in (429, 503):
        raise _RetryLater(status, body, parse_retry_after(response.getheader("Retry-After")))
    if status >= 500 or status == 408:
        raise _RetryLater(status, body, None)
    raise error_for(status, body, path)


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
