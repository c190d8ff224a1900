"""How many jobs a user may start per minute, counted in Redis across all hub
processes (fixed one-minute windows)."""

from __future__ import annotations

import math
import time

from redis.asyncio import Redis

from hub.errors import RateLimited
from hub.store.keys import KeySpace

WINDOW_SECONDS = 60


class JobRateLimit:
    def __init__(self, redis: Redis, keys: KeySpace, per_minute: int) -> None:
        self._redis = redis
        self._keys = keys
        self._per_minute = per_minute

    async def check(self, user: str) -> None:
        """Counts one job for `user`; RateLimited when over the limit."""
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        key = self._keys.job_rate(user, window)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, WINDOW_SECONDS * 2)
            count, _ = await pipe.execute()
        if count > self._per_minute:
            retry_after = max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))
            raise RateLimited(limit=self._per_minute, retry_after=retry_after)
