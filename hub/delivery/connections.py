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
import math
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, cast

from redis.asyncio import Redis

from hub.errors import ServerBusy, TooManyConnections
from hub.store.keys import KeySpace
from hub.store.scripts import load_script
from hub.web.metrics import HubMetrics
from hub.web.redis_pool import act_for, place_in_line

log = logging.getLogger("hub.delivery.connections")

#: Seconds a refused client is told to wait before it tries again.
RETRY_AFTER_SECONDS = 5
#: A user's slot hash outlives its last change by this long at most.
SLOTS_TTL_SECONDS = 24 * 3600
#: Slots wanted in one script call at most (it holds Redis while it runs).
MAX_BATCH = 256


class UserSlots:
    """Per-user connection counts shared by all hub processes through Redis.

    The slots taken and given back during one turn of the event loop go to
    Redis together, in one script call: an admission costs no round trip of
    its own, and a reconnect storm of thousands of clients is a few dozen
    calls. The script runs atomically, so the limit stays exact however the
    connections of a user spread over processes and batches.

    Each process renews a liveness key every `ttl / 3` seconds; the slots of
    a process whose key expired (it crashed) stop counting within `ttl`.

    On a Redis Cluster a script must stay in one hash slot: the call goes
    out once per bucket of the users it serves (at once), and the process
    keeps a liveness key in every bucket, next to the slot hashes the
    script reads it for (256 keys, renewed in one round trip per node).
    """

    def __init__(self, redis: Redis, keys: KeySpace, *, ttl: float) -> None:
        self.process_id = uuid.uuid4().hex
        self._redis = redis
        self._keys = keys
        self._ttl = ttl
        self._script = redis.register_script(load_script("user_slots.lua"))
        # What the next call carries: slots wanted (user, limit, answer), slots given back.
        self._wanted: list[tuple[str, int, asyncio.Future[bool]]] = []
        self._returned: Counter[str] = Counter()
        #: The place in the Redis line of the oldest request the next call serves.
        self._place = math.inf
        self._flush_due = False
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
        if self._flush_due:
            self._flush()
        if self._pending:
            await asyncio.wait(self._pending, timeout=2)
        with contextlib.suppress(Exception):
            await self._each_bucket(lambda pipe, key: pipe.delete(key))

    async def take(self, user: str, limit: int) -> bool:
        """Takes one of `user`'s slots if they hold fewer than `limit`."""
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._wanted.append((user, limit, answer))
        self._flush_soon(place_in_line())
        return await answer

    def give_back(self, user: str) -> None:
        self._returned[user] += 1
        self._flush_soon(place_in_line())

    def _flush_soon(self, place: float) -> None:
        # On the loop's next turn: whatever else arrives in this one goes along.
        self._place = min(self._place, place)
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        place, self._place = self._place, math.inf
        while self._wanted or self._returned:
            wanted, self._wanted = self._wanted[:MAX_BATCH], self._wanted[MAX_BATCH:]
            # A request that ended while waiting for its turn wants nothing.
            wanted = [want for want in wanted if not want[2].done()]
            returned, self._returned = self._returned, Counter()
            task = asyncio.get_running_loop().create_task(self._call(wanted, returned, place))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _call(
        self, wanted: list[tuple[str, int, asyncio.Future[bool]]], returned: Counter[str], place: float | None = None
    ) -> None:
        if place is not None:
            act_for(place)  # its requests' place in the line for Redis, not a newcomer's
        bucket_of = self._keys.user_bucket
        by_bucket: dict[str, tuple[list[tuple[str, int, asyncio.Future[bool]]], Counter[str]]] = {}
        for user, count in returned.items():
            by_bucket.setdefault(bucket_of(user), ([], Counter()))[1][user] = count
        for want in wanted:
            by_bucket.setdefault(bucket_of(want[0]), ([], Counter()))[0].append(want)
        if len(by_bucket) == 1:
            (bucket, calls), *_ = by_bucket.items()
            await self._call_bucket(bucket, *calls)
        else:
            await asyncio.gather(*(self._call_bucket(bucket, *calls) for bucket, calls in by_bucket.items()))

    async def _call_bucket(
        self, bucket: str, wanted: list[tuple[str, int, asyncio.Future[bool]]], returned: Counter[str]
    ) -> None:
        slots = self._keys.user_slots
        keys = [slots(user) for user in returned] + [slots(user) for user, _, _ in wanted]
        alive = self._keys.process_alive(bucket=bucket)
        args: list[str | int] = [self.process_id, alive, SLOTS_TTL_SECONDS, len(returned)]
        args += returned.values()
        args += [limit for _, limit, _ in wanted]
        try:
            answers = await self._script(keys=keys, args=args) if keys else []
        except Exception as exc:
            self._owed.update(returned)
            for _, _, answer in wanted:
                if not answer.done():
                    answer.set_exception(exc)
            return
        for (user, _, answer), taken in zip(wanted, answers, strict=True):
            admitted = int(taken) >= 0
            if answer.done():
                # Its request ended meanwhile (cancelled): the slot is not kept.
                if admitted:
                    self.give_back(user)
            else:
                answer.set_result(admitted)

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)
            try:
                await self._beat()
            except Exception as exc:
                log.warning("cannot renew this process's liveness in Redis: %s", exc.__class__.__name__)

    async def _beat(self) -> None:
        ttl_ms = int(self._ttl * 1000)
        await self._each_bucket(lambda pipe, key: pipe.set(key, "1", px=ttl_ms))
        if self._owed:
            owed, self._owed = self._owed, Counter()
            await self._call([], owed)

    async def _each_bucket(self, command: Callable[[Any, str], object]) -> None:
        """Runs `command(client, liveness key)` for this process's liveness
        key of every bucket: one command on one server, a pipeline on a cluster."""
        keys = [self._keys.process_alive(self.process_id, bucket) for bucket in self._keys.buckets()]
        if len(keys) == 1:
            await cast(Awaitable[object], command(self._redis, keys[0]))
            return
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            command(pipe, key)
        await pipe.execute()


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
