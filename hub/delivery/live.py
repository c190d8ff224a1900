"""SSE streams in their live phase, written straight from the event bus.

Once a stream has replayed what its client missed, each new event is written
to the client's connection from the bus's own dispatch: no task is woken and
no timer is set per event, so a delivery costs one write and leaves nothing
behind for the garbage collector. While the kernel has not taken a write yet,
the events that follow wait in a bounded queue and go out together in one
write when it drains.

One clock per process does what would otherwise take a timer per stream: it
sends keepalives to idle streams, ends streams whose token has expired and
drops clients whose writes have stalled for longer than the write timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from tornado.iostream import IOStream, StreamClosedError

from hub.delivery.feed import Feed
from hub.delivery.subscriber import CloseReason
from hub.store.events import KEEPALIVE_FRAME, Event

log = logging.getLogger("hub.delivery.live")

#: The clock ticks at least this often, and more often when the keepalive
#: interval or the write timeout is short, so both are kept to within a
#: fraction of themselves.
MAX_TICK_SECONDS = 1.0
MIN_TICK_SECONDS = 0.02


class LiveStreams:
    """The process's live streams and the clock that keeps them."""

    def __init__(
        self, *, keepalive_seconds: float, write_timeout_seconds: float, on_keepalive: Callable[[], None]
    ) -> None:
        self.keepalive_seconds = keepalive_seconds
        self.write_timeout_seconds = write_timeout_seconds
        self.tick_seconds = max(
            MIN_TICK_SECONDS, min(MAX_TICK_SECONDS, keepalive_seconds / 4, write_timeout_seconds / 4)
        )
        self._on_keepalive = on_keepalive
        self._streams: dict[LiveStream, None] = {}
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._streams)

    def add(self, stream: LiveStream) -> None:
        self._streams[stream] = None
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.tick_seconds, self._tick)

    def discard(self, stream: LiveStream) -> None:
        self._streams.pop(stream, None)

    def _tick(self) -> None:
        self._timer = None
        now, wall = time.monotonic(), time.time()
        for stream in list(self._streams):
            try:
                if stream.tick(now, wall):
                    self._on_keepalive()
            except Exception:  # one stream's surprise must not stop the clock for all
                log.exception("live stream tick failed")
                stream.close(CloseReason.CLIENT_GONE)
        if self._streams:
            self._timer = asyncio.get_running_loop().call_later(self.tick_seconds, self._tick)


class LiveStream:
    """One client's stream after its replay: takes events from the bus and
    writes them to the connection, one write per event or per batch."""

    __slots__ = (
        "_chunked",
        "_direct",
        "_expires_at",
        "_feed",
        "_on_delivered",
        "_pending",
        "_queue",
        "_stopped",
        "_stream",
        "_streams",
        "last_write",
        "pending_since",
    )

    def __init__(
        self,
        *,
        stream: IOStream,
        chunked: bool,
        feed: Feed,
        expires_at: float,
        streams: LiveStreams,
        on_delivered: Callable[[Sequence[Event]], Any],
    ) -> None:
        self._stream = stream
        #: Whether the response uses chunked transfer encoding (HTTP/1.1).
        self._chunked = chunked
        #: Whether the socket can be written directly: a plain TCP stream.
        self._direct = type(stream) is IOStream
        self._feed = feed
        self._expires_at = expires_at
        self._streams = streams
        self._on_delivered = on_delivered
        #: The events of the write the kernel has not taken yet, if any.
        self._pending: Sequence[Event] | None = None
        #: Events that came while a write was pending; made when first needed.
        self._queue: deque[Event] | None = None
        self._stopped = False
        self.last_write = time.monotonic()
        self.pending_since = 0.0

    def start(self) -> None:
        """Sends what arrived during the replay, then takes events as they come."""
        self._streams.add(self)
        arrived = self._feed.ready(self._feed.subscriber.max_queued)
        self._feed.subscriber.sink = self.deliver
        if arrived:
            self._write(arrived)

    def stop(self) -> None:
        self._stopped = True
        self._feed.subscriber.sink = None
        self._streams.discard(self)

    def close(self, reason: str) -> None:
        self._feed.subscriber.close(reason)

    def deliver(self, event: Event) -> None:
        """Takes one event from the bus."""
        if self._feed.ended or not self._feed.accept(event):
            return
        if time.time() >= self._expires_at:
            self.close(CloseReason.TOKEN_EXPIRED)
        elif self._pending is None:
            self._write((event,))
        elif self._queue is None:
            self._queue = deque((event,))
        elif len(self._queue) < self._feed.subscriber.max_queued:
            self._queue.append(event)
        else:
            # Dropping the client is safe: it resumes from its cursor.
            self.close(CloseReason.SLOW)

    def tick(self, now: float, wall: float) -> bool:
        """The clock's visit: drops a stalled client, ends an expired stream,
        or keeps an idle one alive. True when it sent a keepalive."""
        if self._feed.subscriber.closed_reason is not None:
            return False  # closed, and its handler has yet to stop it
        if self._pending is not None:
            if now - self.pending_since > self._streams.write_timeout_seconds:
                self.close(CloseReason.SLOW)
            return False
        if wall >= self._expires_at:
            self.close(CloseReason.TOKEN_EXPIRED)
            return False
        if now - self.last_write >= self._streams.keepalive_seconds:
            self._send(KEEPALIVE_FRAME, ())
            return True
        return False

    def _write(self, events: Sequence[Event]) -> None:
        data = events[0].frame if len(events) == 1 else b"".join(event.frame for event in events)
        self._send(data, events)

    def _send(self, data: bytes, events: Sequence[Event]) -> None:
        """Writes `data` now, straight to the socket, or hands what the kernel
        did not take to Tornado, which writes it when the socket drains."""
        stream = self._stream
        if self._chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        sent = 0
        try:
            if stream.closed():
                raise StreamClosedError()
            if self._direct and not stream.writing():
                # With Tornado's buffer empty, writing past it keeps the
                # order, and spares the futures and callbacks that a write
                # through Tornado costs.
                try:
                    sent = stream.socket.send(data)
                except BlockingIOError:
                    sent = 0
            if sent < len(data):
                written = stream.write(memoryview(data)[sent:])
        except (OSError, StreamClosedError):
            self.close(CloseReason.CLIENT_GONE)
            return
        self.last_write = time.monotonic()
        if sent == len(data):
            self._written(events)
        else:
            # The kernel's buffer is full: later events queue until it drains.
            self._pending = events
            self.pending_since = self.last_write
            written.add_done_callback(self._drained)

    def _drained(self, written: asyncio.Future[None]) -> None:
        events, self._pending = self._pending or (), None
        if self._stopped:
            return
        if written.cancelled() or written.exception() is not None:
            self.close(CloseReason.CLIENT_GONE)
            return
        self._written(events)
        if self._queue and self._feed.subscriber.closed_reason is None:
            batch, self._queue = list(self._queue), None
            self._write(batch)

    def _written(self, events: Sequence[Event]) -> None:
        if events:
            self._on_delivered(events)
        # The feed ends when it accepts the job's last event; the stream, once
        # that event is written, which is when nothing waits behind it.
        if self._feed.ended and not self._queue:
            self.close(CloseReason.ENDED)
