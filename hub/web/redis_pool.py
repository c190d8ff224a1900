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
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError


class OrderedConnectionPool(ConnectionPool):
    """At most `max_connections` connections; see the module's docstring."""

    def __init__(self, *, stall_seconds: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stall_seconds = stall_seconds
        self._line: deque[asyncio.Future[None]] = deque()
        #: Turns handed out whose connection has not been taken yet: they
        #: count as busy, so that nobody overtakes the task that holds one.
        self._granted = 0
        #: When a connection last came back from a command that Redis answered.
        self._answered_at = time.monotonic()
        self._watch: asyncio.TimerHandle | None = None

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        if self._line or self._busy():
            await self._wait_turn()
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
            self._answered_at = time.monotonic()
        await super().release(connection)
        self._pass_turns()

    @property
    def waiting(self) -> int:
        """Requests in line for a connection (some may have given up)."""
        return len(self._line)

    def _busy(self) -> bool:
        return len(self._in_use_connections) + self._granted >= self.max_connections

    async def _wait_turn(self) -> None:
        turn = asyncio.get_running_loop().create_future()
        if not self._line:
            # A new line: its wait is measured from now, not from the last
            # answer before a quiet spell.
            self._answered_at = max(self._answered_at, time.monotonic())
        self._line.append(turn)
        self._pass_turns()  # a free connection, behind waiters that gave up
        self._keep_watch()
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
            turn = self._line.popleft()
            if not turn.done():
                self._granted += 1
                turn.set_result(None)

    def _keep_watch(self) -> None:
        if self._watch is None:
            due = self._answered_at + self._stall_seconds - time.monotonic()
            self._watch = asyncio.get_running_loop().call_later(max(0.0, due), self._check_stall)

    def _check_stall(self) -> None:
        self._watch = None
        if not self._line:
            return
        if time.monotonic() - self._answered_at < self._stall_seconds:
            self._keep_watch()
            return
        message = f"no connection available: Redis has answered nothing for {self._stall_seconds:g}s"
        while self._line:
            turn = self._line.popleft()
            if not turn.done():
                turn.set_exception(RedisConnectionError(message))
