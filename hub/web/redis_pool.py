"""The hub's Redis connection pool: requests that find every connection busy
wait in line, in order, and are refused only when Redis stops answering.

redis-py's BlockingConnectionPool gives a connection handed back to whoever
asks first, while the waiter it woke is still on its way; that waiter then
goes back to the end of the line, and each waiter is refused once its own
wait passes a fixed time. In a reconnect storm (thousands of requests, each
needing a few commands in turn) the oldest waiters were overtaken again and
again and refused although Redis answered all along; every refused client
came back later and made the line longer, and the storm never ended.

Here a connection handed back goes to the first in line, and the line is
refused as a whole only when no connection has come back from a command
for `stall_seconds`: a long line that moves is load, not a failure.

The line is ordered by when each request (its asyncio task) first asked
for a connection, not by when it asked this time: a request half way
through its commands goes before one that has not started, so that requests
finish in the order they came, one after the other, instead of all of them
together at the end of a storm, past their clients' patience. A task that
works for others (a batch of their commands) takes the place of the oldest
of them (`act_for`).

Behind a Sentinel set (OrderedSentinelConnectionPool) the line is the same;
each new connection asks the sentinels where the primary is.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
import weakref
from contextvars import ContextVar
from typing import Any

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError

from hub.web.stall_watch import StallWatch

#: The task that first asked for a connection in this context, and when. A
#: context is copied into the tasks and callbacks started from it: there the
#: task is another one, and its own first request starts a place of its own.
_PLACE: ContextVar[tuple[weakref.ref[asyncio.Task[Any]] | None, float]] = ContextVar("place_in_redis_line")


def place_in_line() -> float:
    """The current task's place in line for Redis connections: when it first
    asked for one (now, if it never did)."""
    task = asyncio.current_task()
    owner, since = _PLACE.get((None, 0.0))
    if task is None or owner is None or owner() is not task:
        since = time.monotonic()
        _PLACE.set((weakref.ref(task) if task is not None else None, since))
    return since


def act_for(place: float) -> None:
    """The current task runs commands on behalf of requests whose oldest
    first asked at `place`: it waits in line where they would."""
    task = asyncio.current_task()
    _PLACE.set((weakref.ref(task) if task is not None else None, place))


class OrderedConnectionPool(ConnectionPool):
    """At most `max_connections` connections; see the module's docstring."""

    def __init__(self, *args: Any, stall_seconds: float, **kwargs: Any) -> None:
        # Positional arguments for the pool underneath: a sentinel pool
        # takes its service and sentinels so.
        super().__init__(*args, **kwargs)
        #: Waiting requests: (place in line, arrival, turn), a heap.
        self._line: list[tuple[float, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()
        #: Turns handed out whose connection has not been taken yet: they
        #: count as busy, so that nobody overtakes the task that holds one.
        self._granted = 0
        self._stall = StallWatch(stall_seconds, line_empty=lambda: not self._line, fail_line=self._fail_line)

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        place = place_in_line()  # even when nobody waits: a line may form before its next command
        if self._line or self._busy():
            await self._wait_turn(place)
        else:
            self._granted += 1
        try:
            connection: AbstractConnection = await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        finally:
            self._granted -= 1
            self._pass_turns()
        return connection

    async def release(self, connection: AbstractConnection) -> None:
        # redis-py disconnects a connection whose command failed (a timeout,
        # a reset) before handing it back: only a connected one shows that
        # Redis answers.
        if connection.is_connected:
            self._stall.answered()
        await super().release(connection)
        self._pass_turns()

    @property
    def waiting(self) -> int:
        """Requests in line for a connection (some may have given up)."""
        return len(self._line)

    def _busy(self) -> bool:
        return len(self._in_use_connections) + self._granted >= self.max_connections

    async def _wait_turn(self, place: float) -> None:
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not self._line:
            self._stall.line_forms()
        heapq.heappush(self._line, (place, next(self._arrivals), turn))
        self._pass_turns()  # a free connection, behind waiters that gave up
        self._stall.watch()
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                # The turn came just as this request ended: the next one takes it.
                self._granted -= 1
                self._pass_turns()
            raise

    def _pass_turns(self) -> None:
        while self._line and not self._busy():
            _, _, turn = heapq.heappop(self._line)
            if not turn.done():
                self._granted += 1
                turn.set_result(None)

    def _fail_line(self, message: str) -> None:
        line, self._line = self._line, []
        for _, _, turn in line:
            if not turn.done():
                turn.set_exception(RedisConnectionError(message))


class OrderedSentinelConnectionPool(OrderedConnectionPool, SentinelConnectionPool):
    """The same line, in front of connections to whichever node the
    sentinels name primary when each connection opens.

    A demoted primary still answers reads, from a past the new primary may
    not share. redis-py drops a connection to it when a write gets READONLY,
    and the pool's idle ones when a new connection finds the primary moved;
    a connection busy at that moment is dropped here, as it comes back."""

    async def release(self, connection: AbstractConnection) -> None:
        primary = self.master_address
        address = (getattr(connection, "host", None), getattr(connection, "port", None))
        if primary is not None and address != primary:
            await connection.disconnect()
        await super().release(connection)
