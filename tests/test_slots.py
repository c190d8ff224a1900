"""Per-user connection slots: admissions that arrive together go to Redis
together, and the limit stays exact however many arrive at once, on however
many processes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hub.delivery.connections import UserSlots
from hub.store.keys import KeySpace
from tests.support.waiting import eventually

pytestmark = pytest.mark.gen_test(timeout=30)


def count_calls(slots: UserSlots) -> list[int]:
    """Spies on the slots' script: one entry (the keys it got) per Redis call."""
    calls: list[int] = []
    script = slots._script

    async def spy(*, keys: list[str], args: list[Any]) -> Any:
        calls.append(len(keys))
        return await script(keys=keys, args=args)

    slots._script = spy  # type: ignore[assignment]
    return calls


@pytest.mark.hub_settings(max_connections_per_user=4)
async def test_streams_opened_at_once_by_one_user_get_exactly_the_limit(ctx, api):
    alice = api("alice")
    streams = await asyncio.gather(*(alice.stream("/api/v1/sse/jobs/my") for _ in range(12)))
    statuses = sorted(stream.status for stream in streams)
    assert statuses == [200] * 4 + [429] * 8
    for stream in streams:
        stream.close()
    await eventually(lambda: ctx.connections.total == 0)
    again = await alice.stream("/api/v1/sse/jobs/my")
    assert again.status == 200, "every slot came back"
    again.close()


async def test_admissions_on_two_processes_at_once_admit_exactly_the_limit(ctx, settings):
    keys = KeySpace(settings.namespace)
    other = UserSlots(ctx.redis, keys, ttl=settings.process_ttl_seconds)
    await other.start()
    try:
        here = [ctx.slots.take("alice", 5) for _ in range(20)]
        there = [other.take("alice", 5) for _ in range(20)]
        admitted = await asyncio.gather(*here, *there)
        assert admitted.count(True) == 5
        # And once more when some are given back, now and later.
        for _ in range(2):
            ctx.slots.give_back("alice")
        admitted = await asyncio.gather(*(other.take("alice", 5) for _ in range(10)))
        assert admitted.count(True) == 2
    finally:
        await other.close()


async def test_admissions_and_departures_of_one_moment_share_one_redis_call(ctx):
    calls = count_calls(ctx.slots)
    admitted = await asyncio.gather(*(ctx.slots.take(f"user{n}", 3) for n in range(50)))
    assert admitted == [True] * 50
    assert calls == [50], "one call for fifty admissions"
    for n in range(50):
        ctx.slots.give_back(f"user{n}")
    # Given back in the same call as the next admissions.
    assert await ctx.slots.take("user0", 1) is True
    assert calls == [50, 51]


async def test_a_request_that_ends_while_its_slot_is_taken_gives_it_back(ctx, sync_redis, settings):
    calls = count_calls(ctx.slots)
    waiting = asyncio.ensure_future(ctx.slots.take("alice", 1))
    await asyncio.sleep(0)  # it wants its slot; the call goes out on the loop's next turn
    await asyncio.sleep(0)
    waiting.cancel()
    slots_key = KeySpace(settings.namespace).user_slots("alice")
    await eventually(lambda: len(calls) == 2 and not sync_redis.hgetall(slots_key))
    assert calls == [1, 1], "taken in Redis, then given back"
    assert await ctx.slots.take("alice", 1) is True, "the slot was not kept by the request that left"
