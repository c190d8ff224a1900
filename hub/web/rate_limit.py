"""Per-user rate limits counted in Redis across all hub processes: at most
N events in any span of one window (a sliding window, so no burst gets
through across a window boundary)."""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable

from redis.asyncio import Redis

from hub.errors import RateLimited
from hub.store.keys import KeySpace
from hub.store.redis_errors import store_errors
from hub.store.scripts import load_script

WINDOW_SECONDS = 60


class SlidingWindowLimit:
    def __init__(
        self, redis: Redis, key: Callable[[str], str], limit: int, *, window_seconds: float, refusal: str
    ) -> None:
        """`key` names a subject's counter; `refusal` is the message a refused caller reads."""
        self._key = key
        self._limit = limit
        self._window_ms = round(window_seconds * 1000)
        self._refusal = refusal
        self._count = redis.register_script(load_script("sliding_window.lua"))

    @store_errors
    async def check(self, subject: str) -> None:
        """Counts one event for `subject`; RateLimited (not counted) when
        over the limit, with the seconds until the next one is allowed."""
        # The hub processes' clocks (NTP-synchronised) share the window; a
        # few milliseconds of skew between them move its edge by as much.
        now_ms = round(time.time() * 1000)
        args: list[int | str] = [now_ms, self._window_ms, self._limit, secrets.token_hex(8)]
        wait_ms = int(await self._count(keys=[self._key(subject)], args=args))
        if wait_ms:
            raise RateLimited(limit=self._limit, retry_after=max(1, math.ceil(wait_ms / 1000)), message=self._refusal)


class JobRateLimit(SlidingWindowLimit):
    """How many jobs a user may start in any minute (`HUB_JOB_RATE_PER_MINUTE`)."""

    def __init__(self, redis: Redis, keys: KeySpace, per_minute: int) -> None:
        super().__init__(
            redis, keys.job_rate, per_minute, window_seconds=WINDOW_SECONDS, refusal="too many jobs started this minute"
        )
