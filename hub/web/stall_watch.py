"""When a line of requests waiting for Redis gives up.

A line may be long and still move: while Redis answers, everyone waits for
its turn. Only once Redis has answered nothing for `seconds` is everyone in
line told so (the API answers 503), however short the line."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class StallWatch:
    def __init__(self, seconds: float, *, line_empty: Callable[[], bool], fail_line: Callable[[str], None]) -> None:
        self._seconds = seconds
        self._line_empty = line_empty
        self._fail_line = fail_line
        #: When a command last came back with an answer from Redis.
        self._answered_at = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None

    def answered(self) -> None:
        self._answered_at = time.monotonic()

    def line_forms(self) -> None:
        """A new line: its wait is measured from now, not from the last
        answer before a quiet spell."""
        self._answered_at = max(self._answered_at, time.monotonic())

    def watch(self) -> None:
        if self._timer is None:
            due = self._answered_at + self._seconds - time.monotonic()
            self._timer = asyncio.get_running_loop().call_later(max(0.0, due), self._check)

    def _check(self) -> None:
        self._timer = None
        if self._line_empty():
            return
        if time.monotonic() - self._answered_at < self._seconds:
            self.watch()
            return
        self._fail_line(f"no connection available: Redis has answered nothing for {self._seconds:g}s")
