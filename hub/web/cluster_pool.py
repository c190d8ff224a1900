"""The hub's client of a Redis Cluster: commands wait in line for a connection.

redis-py's asyncio cluster client keeps a pool per node and refuses a
command at once (MaxConnectionsError) when that node's pool is full: in a
burst, a reconnect storm say, it would refuse requests while Redis answers
all along. Here at most `size` commands (or pipelines) run at once, so no
node ever needs more than `size` connections; the others wait in line,
first come first served, and the line is refused as a whole only when no
command has come back for `stall_seconds` (Redis stopped answering), as the
one server's pool does (`redis_pool.py`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, cast

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterPipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from hub.store import topology
from hub.web.stall_watch import StallWatch

#: Set while the current task holds a turn: a command it runs on the way (a
#: pipeline retrying one of its commands) does not queue behind itself.
_HOLDING: ContextVar[bool] = ContextVar("holding_a_redis_turn", default=False)


class CommandLine:
    """At most `size` commands at once; see the module's docstring."""

    def __init__(self, size: int, stall_seconds: float) -> None:
        self._free = size
        self._line: deque[asyncio.Future[None]] = deque()
        self._stall = StallWatch(stall_seconds, line_empty=lambda: not self._line, fail_line=self._fail_line)

    @property
    def waiting(self) -> int:
        return len(self._line)

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        if _HOLDING.get():
            yield
            return
        await self._acquire()
        holding = _HOLDING.set(True)
        answered = False
        try:
            yield
            answered = True
        except (RedisConnectionError, RedisTimeoutError):
            raise
        except RedisError:
            answered = True  # an error reply is an answer
            raise
        finally:
            _HOLDING.reset(holding)
            self._release(answered)

    async def _acquire(self) -> None:
        if self._free > 0 and not self._line:
            self._free -= 1
            return
        if not self._line:
            self._stall.line_forms()
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._line.append(turn)
        self._stall.watch()
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release(answered=False)  # the turn came as the request ended
            raise

    def _release(self, answered: bool) -> None:
        if answered:
            self._stall.answered()
        while self._line:
            turn = self._line.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self._free += 1

    def _fail_line(self, message: str) -> None:
        line, self._line = self._line, deque()
        for turn in line:
            if not turn.done():
                turn.set_exception(RedisConnectionError(message))


class LinedRedisCluster(RedisCluster):
    """redis-py's asyncio cluster client whose commands and pipelines wait in `line`."""

    line: CommandLine

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.line.turn():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            raise RedisClusterException("shard_hint is deprecated in cluster mode")
        # redis-py declares an attribute abstract that its pipelines set at run time.
        return _LinedPipeline(self, transaction)  # type: ignore[abstract]


class _LinedPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        client = cast(LinedRedisCluster, self.cluster_client)
        async with client.line.turn():
            return await super().execute(raise_on_error, allow_redirections)


def connect_cluster(url: str, *, size: int, stall_seconds: float, socket_timeout: float) -> Redis:
    """The process's client of the cluster that `url` names a node of: at
    most `size` connections to each node, commands in line."""
    client = topology.async_cluster_client(
        url,
        max_connections=size,
        client_class=LinedRedisCluster,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
    )
    assert isinstance(client, LinedRedisCluster)
    client.line = CommandLine(size, stall_seconds)
    # Typed as the one server's client: the hub's store code uses the
    # commands both clients share.
    return cast(Redis, client)
