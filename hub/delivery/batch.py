"""The long-poll transport's writer: one answer's batch of events."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from hub.store.events import Event


class Batch:
    """Collects live events for one answer; the first one wakes the poll,
    and whatever else arrives before it answers goes in too, up to `limit`."""

    __slots__ = ("_done", "events", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.events: list[Event] = []
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def start(self) -> bool:
        return True  # the answer's beginning is its whole body, written at the end

    def write(self, events: Sequence[Event]) -> bool:
        self.events.extend(events)
        self._wake()
        # Full: further events wait in the subscriber's queue for the next poll.
        return len(self.events) < self.limit

    def keepalive(self) -> None:
        pass

    def end(self, reason: str) -> None:
        self._wake()

    async def wait(self, timeout: float) -> None:
        """Until the first event, the subscriber's end, or `timeout` seconds.
        A bare future and a timer: asyncio.wait_for would add a task per poll."""
        timer = asyncio.get_running_loop().call_later(timeout, self._wake)
        try:
            await self._done
        finally:
            timer.cancel()

    def _wake(self) -> None:
        if not self._done.done():
            self._done.set_result(None)
