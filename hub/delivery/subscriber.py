"""One client's subscription: what it missed, then live events, without gap
or duplicate, through a writer its transport supplies.

The order matters: subscribe for live events first, then read what the
client missed, then release live events, skipping any the backlog already
supplied. An event published while history is being read is thus seen
twice and sent once.

Live events go to the writer from the bus's own call: no task is woken per
event. While the writer is busy (a replay page on its way, or a socket the
kernel will not take more from), events wait in one bounded queue and go
out together when it drains; there a job's newer progress replaces its
older progress (see PendingEvents), so a client that falls behind catches
up with each job's latest state. The slow-client rule is this module's
alone: a client whose queue fills anyway, or whose writer stays busy past
the write timeout, is dropped. Dropping it is safe: it resumes from its
cursor. Letting it grow is not: one stuck client would hold the hub's
memory.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from hub.delivery.backlog import Backlog
from hub.delivery.bus import EventBus
from hub.delivery.clock import Clock
from hub.delivery.pending import PendingEvents
from hub.delivery.reasons import CloseReason
from hub.delivery.sources import Source
from hub.store.events import BEGINNING, Cursor, Event, format_cursor
from hub.store.history import History, Position


class Writer(Protocol):
    """How a transport hands events to its client."""

    def start(self) -> bool:
        """Sends the answer's beginning. True if done; False if still on its
        way (the writer then calls the subscriber's `drained`)."""
        ...

    def write(self, events: Sequence[Event]) -> bool:
        """Sends `events`; True or False as for `start`."""
        ...

    def keepalive(self) -> None: ...

    def end(self, reason: str) -> None:
        """Ends the answer as `reason` calls for, and lets the client go."""
        ...


#: Called with events the client has been sent, and whether they were live.
OnSent = Callable[[Sequence[Event], bool], None]


class Subscriber:
    # One per connection, so kept small: the queue is made only when needed.
    __slots__ = (
        "_ahead",
        "_backlog",
        "_bus",
        "_clock",
        "_full_reason",
        "_in_flight",
        "_live",
        "_on_close",
        "_on_collapsed",
        "_on_sent",
        "_queue",
        "_subscribed",
        "_waiter",
        "_writer",
        "busy_since",
        "closed_reason",
        "ended",
        "expires_at",
        "last",
        "last_write",
        "max_batch",
        "max_queued",
        "source",
    )

    def __init__(
        self,
        *,
        bus: EventBus,
        history: History,
        source: Source,
        start: Position | None,
        max_queued: int,
        max_batch: int | None = None,
        expires_at: float,
        on_sent: OnSent,
        on_close: Callable[[str], None],
        on_collapsed: Callable[[], None] | None = None,
        full_reason: str = CloseReason.SLOW,
    ) -> None:
        """`on_collapsed` is called for each queued progress update a newer
        one replaced; None: nothing is replaced (a long-poll answer carries
        every event). `full_reason` is why a full queue closes the
        subscriber: a stream's client is too slow; a long-poll's answer is
        complete, and its next poll reads the rest from history."""
        self.source = source
        self._bus = bus
        self._backlog = Backlog(history, source, start)
        self.max_queued = max_queued
        #: The most events one write carries.
        self.max_batch = max_batch or max_queued
        self.expires_at = expires_at
        self._on_sent = on_sent
        self._on_close = on_close
        self._on_collapsed = on_collapsed
        self._full_reason = full_reason
        self._subscribed = False
        self._writer: Writer | None = None
        self._clock: Clock | None = None
        self._queue: PendingEvents | None = None
        self._live = False
        #: The live events the writer is busy with.
        self._in_flight: Sequence[Event] | None = None
        #: The first page of what the client missed, read before the replay.
        self._ahead: list[Event] | None = None
        self._waiter: asyncio.Future[None] | None = None
        #: The newest cursor sent, once live: later events at or before it are duplicates.
        self.last: Cursor | None = None
        #: Whether the job's terminal event has been handed to the writer.
        self.ended = False
        self.closed_reason: str | None = None
        #: Since when the writer has been busy (time.monotonic()), if it is.
        self.busy_since: float | None = None
        self.last_write = time.monotonic()

    @property
    def closed(self) -> bool:
        return self.closed_reason is not None

    async def open(self) -> None:
        """Subscribes: from now on no event is missed."""
        await self._bus.subscribe(self.source.channel, self)
        self._subscribed = True

    async def missed(self, limit: int) -> list[Event]:
        """The next page of what the client missed (see Backlog)."""
        page = await self._backlog.next_page(limit)
        if self._queue and self._backlog.position is not None:
            # What the backlog supplied need not wait in the queue as well,
            # where a long replay would fill it and drop a client keeping up.
            self._queue.drop_through(self._backlog.position)
        return page

    async def read_ahead(self, limit: int) -> None:
        """Reads the first page of what the client missed now (while its
        transport can still answer an error), for `replay` to send."""
        self._ahead = await self.missed(limit)

    def resume_cursor(self) -> str:
        """The cursor that goes on from what the client has been sent."""
        if not self._live:
            return self._backlog.resume_cursor()
        # A user with no events yet goes on from the very beginning.
        return format_cursor(self.last or BEGINNING)

    async def replay(self, writer: Writer, page_size: int, clock: Clock | None = None) -> None:
        """Sends the answer's beginning and what the client missed, page by
        page (each sent before the next is read), then goes live."""
        self._writer = writer
        if clock is not None:
            self._clock = clock
            clock.add(self)
        if not writer.start():
            await self._until_drained()
        page, self._ahead = self._ahead, None
        while page and not self.closed:
            sent = writer.write(page)
            self._sent(page, False)
            page = None  # only the writer's bytes are kept while the client takes them
            if not sent:
                await self._until_drained()
            if not self.closed and not self._backlog.done:
                page = await self.missed(page_size)
        if not self.closed:
            self._go_live()

    def push(self, event: Event) -> None:
        """Takes one event from the bus."""
        if self.closed_reason is not None:
            return
        if self._live and self.busy_since is None:
            if not self._accept(event):
                return
            if time.time() >= self.expires_at:
                self.close(CloseReason.TOKEN_EXPIRED)
            else:
                self._write((event,))
            return
        queue = self._queue
        if queue is None:
            queue = self._queue = PendingEvents(self.max_queued, self._on_collapsed)
        if not queue.append(event):
            self.close(self._full_reason)

    def drained(self) -> None:
        """The writer's call: what it was busy with is sent."""
        in_flight, self._in_flight = self._in_flight, None
        self.busy_since = None
        if self.closed_reason is not None:
            return
        waiter = self._waiter
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(None)  # a replay waits: it goes on
            return
        if in_flight:
            self._sent(in_flight, True)
        if self._live:
            self._release_queue()

    def tick(self, now: float, wall: float) -> bool:
        """The clock's visit: drops a stalled client, ends an expired
        stream, or keeps an idle one alive. True when it sent a keepalive."""
        assert self._clock is not None
        if self.closed_reason is not None:
            return False
        if self.busy_since is not None:
            if now - self.busy_since > self._clock.write_timeout_seconds:
                self.close(CloseReason.SLOW)
            return False
        if not self._live:
            return False
        if wall >= self.expires_at:
            self.close(CloseReason.TOKEN_EXPIRED)
            return False
        if now - self.last_write >= self._clock.keepalive_seconds and self._writer is not None:
            self._writer.keepalive()
            self.last_write = now
            return True
        return False

    def close(self, reason: str) -> None:
        if self.closed_reason is not None:
            return
        self.closed_reason = reason
        self._queue = None
        if self._subscribed:
            self._subscribed = False
            self._bus.unsubscribe(self.source.channel, self)
        if self._clock is not None:
            self._clock.discard(self)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._writer is not None:
            self._writer.end(reason)
        self._on_close(reason)

    # -- inside ----------------------------------------------------------

    async def _until_drained(self) -> None:
        """Waits for the writer to finish a replay page (or the beginning)."""
        self.busy_since = time.monotonic()
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _go_live(self) -> None:
        self.last = self._backlog.position
        self.ended = self._backlog.ended
        self._live = True
        if not self.ended and time.time() >= self.expires_at:
            self.close(CloseReason.TOKEN_EXPIRED)  # a stream does not outlive its token
        else:
            self._release_queue()

    def _release_queue(self) -> None:
        queued = self._queue
        if not queued:
            if self.ended:
                # The terminal event is sent, and nothing waits behind it.
                self.close(CloseReason.ENDED)
            return
        batch: list[Event] = []
        while queued and len(batch) < self.max_batch:
            event = queued.popleft()
            if self._accept(event):
                batch.append(event)
        if not queued:
            self._queue = None
        if batch:
            self._write(batch)
        elif self.ended:
            self.close(CloseReason.ENDED)

    def _accept(self, event: Event) -> bool:
        """Whether a live event is new to this client (and, if so, tracks it)."""
        if self.ended:
            return False
        cursor = event.cursor
        if cursor is not None:
            if self.last is not None and cursor <= self.last:
                return False
            self.last = cursor
        if event.terminal and self.source.ends_with_job:
            self.ended = True
        return True

    def _write(self, events: Sequence[Event]) -> None:
        assert self._writer is not None
        if self._writer.write(events):
            self._sent(events, True)
            self._release_queue()
        elif self.closed_reason is None:
            # Kept for their delivery times, counted once the writer is done.
            self._in_flight = events
            self.busy_since = time.monotonic()

    def _sent(self, events: Sequence[Event], live: bool) -> None:
        self.last_write = time.monotonic()
        if events:
            self._on_sent(events, live)
