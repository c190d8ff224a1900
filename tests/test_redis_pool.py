"""The hub's Redis pool under more requests than connections: served in
order, never refused while Redis answers, refused when it stops."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
import redis.exceptions
from redis.asyncio import BlockingConnectionPool, Redis

from hub.web.redis_pool import OrderedConnectionPool, act_for, place_in_line

pytestmark = pytest.mark.gen_test(timeout=30)


async def slow_command(client: Redis, key: str, seconds: float) -> None:
    """A command Redis answers only after `seconds` (BLPOP on an empty list)."""
    assert await client.blpop([key], timeout=seconds) is None


async def served(tasks: list[asyncio.Task[None]]) -> list[str]:
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    return ["ok" if outcome is None else type(outcome).__name__ for outcome in outcomes]


@contextlib.asynccontextmanager
async def ordered(redis_url: str, connections: int, stall: float) -> AsyncIterator[Redis]:
    pool = OrderedConnectionPool.from_url(redis_url, max_connections=connections, stall_seconds=stall)
    client = Redis(connection_pool=pool)
    try:
        yield client
    finally:
        await client.aclose()


async def test_a_long_line_that_moves_is_served_however_long_it_waits(redis_url, namespace):
    # Given 2 connections and 30 commands of 0.1 s each: the last waits ~1.5 s,
    # five times the 0.3 s a stalled Redis is given.
    async with ordered(redis_url, connections=2, stall=0.3) as client:
        started = time.monotonic()
        tasks = [asyncio.create_task(slow_command(client, f"{namespace}:empty", 0.1)) for _ in range(30)]
        assert await served(tasks) == ["ok"] * 30
        assert time.monotonic() - started > 1.0

    # redis-py's own blocking pool, with the same bound on each wait, refuses the end of the line.
    blocking = Redis(connection_pool=BlockingConnectionPool.from_url(redis_url, max_connections=2, timeout=0.3))
    try:
        tasks = [asyncio.create_task(slow_command(blocking, f"{namespace}:empty", 0.1)) for _ in range(30)]
        assert "ConnectionError" in await served(tasks)
    finally:
        await blocking.aclose()


async def test_connections_go_to_the_waiters_in_the_order_they_came(redis_url, namespace):
    async with ordered(redis_url, connections=1, stall=10) as client:
        pool = client.connection_pool
        held = await pool.get_connection()
        order: list[int] = []

        async def command(n: int) -> None:
            await client.incr(f"{namespace}:n")
            order.append(n)

        first = [asyncio.create_task(command(n)) for n in range(5)]
        await asyncio.sleep(0)  # all five are in line
        await pool.release(held)
        # Newcomers while the line is served do not overtake it.
        later = [asyncio.create_task(command(n)) for n in range(5, 8)]
        await asyncio.gather(*first, *later)
        assert order == list(range(8))


async def test_a_request_half_way_through_its_commands_goes_before_new_ones(redis_url, namespace):
    async with ordered(redis_url, connections=1, stall=10) as client:
        pool = client.connection_pool
        order: list[str] = []
        half_way = asyncio.Event()

        async def earlier_request() -> None:
            await client.incr(f"{namespace}:n")  # its first command, while nobody waits
            await half_way.wait()
            await client.incr(f"{namespace}:n")
            order.append("earlier")

        async def new_request(name: str) -> None:
            await client.incr(f"{namespace}:n")
            order.append(name)

        earlier = asyncio.create_task(earlier_request())
        while not await client.get(f"{namespace}:n"):
            await asyncio.sleep(0.01)
        held = await pool.get_connection()
        new = [asyncio.create_task(new_request(name)) for name in ("new1", "new2")]
        await asyncio.sleep(0)
        half_way.set()
        while pool.waiting < 3:
            await asyncio.sleep(0.01)
        await pool.release(held)
        await asyncio.gather(earlier, *new)
        assert order == ["earlier", "new1", "new2"]


async def test_a_task_working_for_older_requests_takes_their_place(redis_url, namespace):
    async with ordered(redis_url, connections=1, stall=10) as client:
        pool = client.connection_pool
        order: list[str] = []
        old_place = place_in_line()  # this request came first

        async def command(name: str, place: float | None = None) -> None:
            if place is not None:
                act_for(place)
            await client.incr(f"{namespace}:n")
            order.append(name)

        held = await pool.get_connection()
        new = asyncio.create_task(command("new"))
        await asyncio.sleep(0)
        batch = asyncio.create_task(command("batch for the old request", old_place))
        while pool.waiting < 2:
            await asyncio.sleep(0.01)
        await pool.release(held)
        await asyncio.gather(new, batch)
        assert order == ["batch for the old request", "new"]


async def test_requests_in_line_are_refused_when_redis_stops_answering(redis_url):
    async with ordered(redis_url, connections=2, stall=0.5) as client:
        pool = client.connection_pool
        # Every connection is stuck in a command that never comes back.
        stuck = [await pool.get_connection() for _ in range(2)]
        started = time.monotonic()
        tasks = [asyncio.create_task(client.ping()) for _ in range(3)]
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        waited = time.monotonic() - started
        assert all(isinstance(o, redis.exceptions.ConnectionError) for o in outcomes), outcomes
        assert 0.4 < waited < 3
        assert "answered nothing" in str(outcomes[0])
        for connection in stuck:
            await pool.release(connection)
        assert await client.ping() is True, "the pool serves again once Redis answers"


async def test_requests_that_give_up_in_line_pass_their_turn_on(redis_url, namespace):
    async with ordered(redis_url, connections=1, stall=10) as client:
        pool = client.connection_pool
        held = await pool.get_connection()
        gone = [asyncio.create_task(client.incr(f"{namespace}:n")) for _ in range(3)]
        kept = asyncio.create_task(client.incr(f"{namespace}:n"))
        await asyncio.sleep(0)
        for task in gone:
            task.cancel()
        await pool.release(held)
        assert await asyncio.wait_for(kept, 5) == 1
        # A turn handed over just as its request ended is not lost either.
        held = await pool.get_connection()
        late = asyncio.create_task(client.incr(f"{namespace}:n"))
        after = asyncio.create_task(client.incr(f"{namespace}:n"))
        await asyncio.sleep(0)
        await pool.release(held)  # `late` has its turn but has not run yet
        late.cancel()
        assert await asyncio.wait_for(after, 5) == 2
        assert pool.waiting == 0
