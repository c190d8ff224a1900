"""The connection manager: every open SSE stream and held long-poll, with
its user and transport. The one place that enforces connection limits and
keeps the connection metrics, so counts stay paired whichever way a
connection ends.

The per-process limit is counted here; the per-user limit is counted in
Redis across every hub process (`UserSlots`), so spreading connections over
N processes does not give a user N times the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter

from redis.asyncio import Redis

from hub.errors import ServerBusy, TooManyConnections
from hub.store.keys import KeySpace
from hub.store.scripts import load_script
from hub.web.metrics import HubMetrics

log = logging.getLogger("hub.delivery.connections")

#: Seconds a refused client is told to wait before it tries again.
RETRY_AFTER_SECONDS = 5
#: A user's slot hash outlives its last change by this long at most.
SLOTS_TTL_SECONDS = 24 * 3600


class UserSlots:
    """Per-user connection counts shared by all hub processes through Redis.

    Each process renews a liveness key every `ttl / 3` seconds; the slots of
    a process whose key expired (it crashed) stop counting within `ttl`.
    """

    def __init__(self, redis: Redis, keys: KeySpace, *, ttl: float) -> None:
        self.process_id = uuid.uuid4().hex
        self._redis = redis
        self._keys = keys
        self._ttl = ttl
        self._acquire = redis.register_script(load_script("acquire_slot.lua"))
        self._release = redis.register_script(load_script("release_slot.lua"))
        # Releases Redis did not take (it was down): given back on the next beat.
        self._owed: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self._beat()
        self._task = asyncio.create_task(self._keep_alive(), name="slots-heartbeat")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._pending:
            await asyncio.wait(self._pending, timeout=2)
        with contextlib.suppress(Exception):
            await self._redis.delete(self._keys.process_alive(self.process_id))

    async def take(self, user: str, limit: int) -> bool:
        keys = [self._keys.user_slots(user)]
        args: list[str | int] = [self.process_id, limit, self._keys.process_alive(), SLOTS_TTL_SECONDS]
        return int(await self._acquire(keys=keys, args=args)) >= 0

    def give_back(self, user: str) -> None:
        task = asyncio.get_running_loop().create_task(self._give_back(user, 1))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _give_back(self, user: str, count: int) -> None:
        try:
            await self._release(keys=[self._keys.user_slots(user)], args=[self.process_id, count])
        except Exception:
            self._owed[user] += count

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)
            try:
                await self._beat()
            except Exception as exc:
                log.warning("cannot renew this process's liveness in Redis: %s", exc.__class__.__name__)

    async def _beat(self) -> None:
        await self._redis.set(self._keys.process_alive(self.process_id), "1", px=int(self._ttl * 1000))
        owed, self._owed = self._owed, Counter()
        for user, count in owed.items():
            await self._give_back(user, count)


class Lease:
    """One admitted connection. Releasing twice is harmless."""

    __slots__ = ("_manager", "released", "transport", "user")

    def __init__(self, manager: ConnectionManager, user: str, transport: str) -> None:
        self._manager = manager
        self.user = user
        self.transport = transport
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._manager._release(self)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class ConnectionManager:
    def __init__(self, *, max_per_user: int, max_total: int, metrics: HubMetrics, slots: UserSlots) -> None:
        self._max_per_user = max_per_user
        self._max_total = max_total
        self._metrics = metrics
        self._slots = slots
        self._per_user: Counter[str] = Counter()
        self._total = 0

    @property
    def total(self) -> int:
        return self._total

    def count(self, user: str) -> int:
        """This process's connections of `user`."""
        return self._per_user[user]

    async def acquire(self, user: str, transport: str) -> Lease:
        if self._total >= self._max_total:
            self._metrics.connections_rejected.labels("server_limit").inc()
            raise ServerBusy(retry_after=RETRY_AFTER_SECONDS)
        # Counted locally before Redis answers, so a burst cannot overshoot
        # the process limit while the round trip is under way.
        self._total += 1
        try:
            admitted = await self._slots.take(user, self._max_per_user)
        except BaseException:
            self._total -= 1
            raise
        if not admitted:
            self._total -= 1
            self._metrics.connections_rejected.labels("user_limit").inc()
            raise TooManyConnections(limit=self._max_per_user, retry_after=RETRY_AFTER_SECONDS)
        if self._per_user[user] == 0:
            self._metrics.users_connected.inc()
        self._per_user[user] += 1
        self._metrics.connections.labels(transport).inc()
        self._metrics.connections_opened.labels(transport).inc()
        return Lease(self, user, transport)

    def _release(self, lease: Lease) -> None:
        self._per_user[lease.user] -= 1
        if self._per_user[lease.user] <= 0:
            del self._per_user[lease.user]
            self._metrics.users_connected.dec()
        self._total -= 1
        self._metrics.connections.labels(lease.transport).dec()
        self._slots.give_back(lease.user)
