"""Redis's exceptions become the hub's at the store's edge: whoever uses the
store (the web server, the actors, the sweepers) handles `StoreUnavailable`
and `StoreFull`, and never imports redis to tell a failure apart."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar, cast

import redis.exceptions

from hub.errors import StoreError, StoreFull, StoreUnavailable

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


#: Redis failures that pass: the server (or, on a cluster, the node serving
#: a slot) is gone, not there yet, or handing its slots over. A cluster
#: client follows redirections and failovers by itself and raises these only
#: when its retries are spent.
_UNAVAILABLE = (
    redis.exceptions.ConnectionError,  # also MaxConnectionsError, BusyLoadingError
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,  # a write reached a replica: a failover is under way
    redis.exceptions.ClusterError,  # a command's redirections ran out ("TTL exhausted")
    redis.exceptions.ClusterDownError,  # also MasterDownError
    redis.exceptions.TryAgainError,  # a multi-key command during a slot's migration
    redis.exceptions.AskError,  # also MovedError
    redis.exceptions.SlotNotCoveredError,
)


def store_error(exc: BaseException) -> StoreError | None:
    """The hub's error for one of Redis's failures, or None for any other exception."""
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return StoreFull(type(exc).__name__)
    # Exactly the class: no node of the cluster could be reached. Its
    # subclasses are mistakes of the caller (keys of several slots).
    if isinstance(exc, _UNAVAILABLE) or type(exc) is redis.exceptions.RedisClusterException:
        return StoreUnavailable(type(exc).__name__)
    return None


@contextmanager
def translated_errors() -> Iterator[None]:
    """Raises the hub's error for a Redis failure in the block; anything
    else (a script's own error, a bug) goes through unchanged."""
    try:
        yield
    except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException) as exc:
        error = store_error(exc)
        if error is None:
            raise
        # Chained: a worker's traceback still shows what Redis said.
        raise error from exc


def store_errors(method: Callable[P, R]) -> Callable[P, R]:
    """Translates the Redis failures of a store method: raised by the method,
    or by the awaitable it returns (with an asyncio client, or as a coroutine)."""

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        with translated_errors():
            result = method(*args, **kwargs)
        if inspect.isawaitable(result):
            return cast(R, _awaited(result))
        return result

    return call


async def _awaited(pending: Awaitable[T]) -> T:
    with translated_errors():
        return await pending
