"""One client's inbox of live events: bounded, closed when it cannot keep up."""

from __future__ import annotations

import asyncio
from collections import deque

from hub.events import Event


class CloseReason:
    CLIENT_GONE = "client_gone"
    SLOW = "slow_consumer"
    BUS_RESET = "bus_reset"
    SHUTDOWN = "shutdown"


class Subscriber:
    def __init__(self, max_queued: int) -> None:
        self._queue: deque[Event] = deque()
        self._max_queued = max_queued
        self._wakeup = asyncio.Event()
        self.closed_reason: str | None = None

    @property
    def closed(self) -> bool:
        return self.closed_reason is not None

    def push(self, event: Event) -> None:
        if self.closed:
            return
        if len(self._queue) >= self._max_queued:
            # Dropping the client is safe: it resumes from its cursor. Growing
            # the queue is not: one stuck client would hold the hub's memory.
            self.close(CloseReason.SLOW)
            return
        self._queue.append(event)
        self._wakeup.set()

    def close(self, reason: str) -> None:
        if self.closed_reason is None:
            self.closed_reason = reason
            self._queue.clear()
        self._wakeup.set()

    def pop_ready(self) -> Event | None:
        """The next event if one is already waiting; never blocks."""
        if self._queue and not self.closed:
            return self._queue.popleft()
        return None

    async def next(self, timeout: float) -> Event | None:
        """The next live event; None after `timeout` seconds or once closed."""
        if not self._queue and not self.closed:
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            except TimeoutError:
                return None
        if self._queue and not self.closed:
            return self._queue.popleft()
        return None
