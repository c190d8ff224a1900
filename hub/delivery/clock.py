"""One clock per process does what would otherwise take a timer per stream:
it keeps idle streams alive, ends streams whose token has expired and drops
clients whose writes have stalled (each subscriber's `tick` decides)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from hub.delivery.reasons import CloseReason

log = logging.getLogger("hub.delivery.clock")

#: The clock ticks at least this often, and more often when the keepalive
#: interval or the write timeout is short, so both are kept to within a
#: fraction of themselves.
MAX_TICK_SECONDS = 1.0
MIN_TICK_SECONDS = 0.02


class Ticking(Protocol):
    def tick(self, now: float, wall: float) -> bool: ...

    def close(self, reason: str) -> None: ...


class Clock:
    def __init__(
        self, *, keepalive_seconds: float, write_timeout_seconds: float, on_keepalive: Callable[[], None]
    ) -> None:
        self.keepalive_seconds = keepalive_seconds
        self.write_timeout_seconds = write_timeout_seconds
        self.tick_seconds = max(
            MIN_TICK_SECONDS, min(MAX_TICK_SECONDS, keepalive_seconds / 4, write_timeout_seconds / 4)
        )
        self._on_keepalive = on_keepalive
        self._members: dict[Ticking, None] = {}
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._members)

    def add(self, member: Ticking) -> None:
        self._members[member] = None
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.tick_seconds, self._tick)

    def discard(self, member: Ticking) -> None:
        self._members.pop(member, None)

    def _tick(self) -> None:
        self._timer = None
        now, wall = time.monotonic(), time.time()
        for member in list(self._members):
            try:
                if member.tick(now, wall):
                    self._on_keepalive()
            except Exception:  # one stream's surprise must not stop the clock for all
                log.exception("a stream's tick failed")
                member.close(CloseReason.CLIENT_GONE)
        if self._members:
            self._timer = asyncio.get_running_loop().call_later(self.tick_seconds, self._tick)
