"""One client's inbox of live events: bounded, closed when it cannot keep up.

A subscriber either queues events for its owner to take (`next`, long-polls)
or, once given a `sink`, hands each one over at once, from the bus's own
call (live SSE streams: no task is woken per event).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from hub.store.events import Cursor, Event


class CloseReason:
    CLIENT_GONE = "client_gone"
    SLOW = "slow_consumer"
    BUS_RESET = "bus_reset"
    SHUTDOWN = "shutdown"
    #: The job's terminal event has been written.
    ENDED = "ended"
    TOKEN_EXPIRED = "token_expired"


class Subscriber:
    # One per connection, so kept small: the queue is made when first needed
    # (a live SSE stream never needs one), and there is one future at most.
    __slots__ = ("_queue", "_waiter", "closed_reason", "max_queued", "sink")

    def __init__(self, max_queued: int) -> None:
        self._queue: deque[Event] | None = None
        self.max_queued = max_queued
        self._waiter: asyncio.Future[None] | None = None
        self.closed_reason: str | None = None
        #: When set, takes every event instead of the queue.
        self.sink: Callable[[Event], None] | None = None

    @property
    def closed(self) -> bool:
        return self.closed_reason is not None

    def push(self, event: Event) -> None:
        if self.closed_reason is not None:
            return
        if self.sink is not None:
            self.sink(event)
            return
        if self._queue is None:
            self._queue = deque()
        elif len(self._queue) >= self.max_queued:
            # Dropping the client is safe: it resumes from its cursor. Growing
            # the queue is not: one stuck client would hold the hub's memory.
            self.close(CloseReason.SLOW)
            return
        self._queue.append(event)
        self._wake()

    def close(self, reason: str) -> None:
        if self.closed_reason is None:
            self.closed_reason = reason
            self._queue = None
            self.sink = None
        self._wake()

    def discard_through(self, cursor: Cursor) -> None:
        """Drops queued events at or before `cursor` (history has supplied
        them), so that a long replay does not fill the queue with duplicates
        and drop a client that is keeping up."""
        queue = self._queue
        while queue and queue[0].cursor is not None and queue[0].cursor <= cursor:
            queue.popleft()

    def pop_ready(self) -> Event | None:
        """The next event if one is already waiting; never blocks."""
        if self._queue and self.closed_reason is None:
            return self._queue.popleft()
        return None

    async def next(self, timeout: float) -> Event | None:
        """The next live event; None after `timeout` seconds or once closed."""
        if not self._queue and self.closed_reason is None:
            # A bare future and a timer: far cheaper than asyncio.wait_for,
            # which wraps every wait in a task of its own.
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(timeout, wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        return self.pop_ready()

    def when_closed(self) -> asyncio.Future[None]:
        """A future (no task, no timer) that resolves once the subscriber is
        closed; for a subscriber with a sink, which nothing else wakes."""
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        if self.closed_reason is not None:
            waiter.set_result(None)
        return waiter

    def _wake(self) -> None:
        wake(self._waiter)


def wake(waiter: asyncio.Future[None] | None) -> None:
    """Resolves a waiting future, once; harmless when there is none or it is done."""
    if waiter is not None and not waiter.done():
        waiter.set_result(None)
