"""A client that goes away leaves nothing behind: no connection slot, no
local subscriber, no Redis subscription."""

from __future__ import annotations

import pytest

from tests.support.metrics import sample
from tests.support.waiting import eventually

pytestmark = pytest.mark.gen_test(timeout=30)


async def redis_subscribers(ctx, channel: str) -> int:
    counts = await ctx.redis.pubsub_numsub(channel)
    return int(counts[0][1])


@pytest.mark.parametrize("hang_up", ["close", "abort"])
async def test_client_hanging_up_mid_stream_is_cleaned_up(ctx, api, hang_up):
    await ctx.journal.create("j1", "alice", "character")
    channel = ctx.keys.job_channel("j1")
    streams = [await api("alice").stream("/api/v1/sse/jobs/character/j1") for _ in range(2)]
    for stream in streams:
        assert (await stream.frame()).retry
        assert (await stream.frame()).type == "connected"
        assert (await stream.frame()).type == "initial_status"
    assert ctx.connections.total == 2
    assert ctx.bus.channel_count == 1
    assert await redis_subscribers(ctx, channel) == 1, "one Redis subscription per process, not per client"

    first, second = streams
    getattr(first, hang_up)()
    await eventually(lambda: ctx.connections.total == 1)
    assert ctx.bus.channel_count == 1

    # The remaining client still gets live events.
    await ctx.journal.update("j1", "alice", "character", status="active", progress=40)
    assert (await second.frame()).data["progress"] == 40

    getattr(second, hang_up)()
    await eventually(lambda: ctx.connections.total == 0)
    assert ctx.bus.channel_count == 0
    await eventually(lambda: _zero(ctx, channel))
    assert sample(ctx, "hub_connections", transport="sse") == 0


async def _zero(ctx, channel: str) -> bool:
    return await redis_subscribers(ctx, channel) == 0


async def test_stream_that_ends_with_its_job_releases_everything(ctx, api):
    await ctx.journal.create("j2", "alice", "character")
    stream = await api("alice").stream("/api/v1/sse/jobs/character/j2")
    for _ in range(3):
        await stream.frame()
    await ctx.journal.update("j2", "alice", "character", status="failed", failedReason="boom", result={"error": "boom"})
    frames = await stream.frames_until_end()
    assert [f.data["status"] for f in frames] == ["failed"]
    assert frames[0].data["failedReason"] == "boom" and frames[0].data["result"]["error"] == "boom"
    await eventually(lambda: ctx.connections.total == 0 and ctx.bus.channel_count == 0)
