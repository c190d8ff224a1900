"""One connection manager for both transports: per-user and per-process limits."""

from __future__ import annotations

import pytest

from tests.support.metrics import sample
from tests.support.waiting import eventually

pytestmark = pytest.mark.gen_test(timeout=30)


async def open_stream(client, path: str):
    stream = await client.stream(path)
    assert stream.status == 200
    await stream.frame()  # retry
    await stream.frame()  # connected
    return stream


async def hold_poll(ctx, client, user: str, cursor: str, expected: int):
    sent = await client.send(f"/api/v1/poll/jobs/character/j1?cursor={cursor}")
    await eventually(lambda: ctx.connections.count(user) == expected)
    return sent


async def assert_refused(response, status: int, body: dict) -> None:
    assert response.status == status
    assert int(response.headers["retry-after"]) > 0
    assert response.headers["content-type"].startswith("application/json")
    assert await response.json_body() == body


@pytest.mark.hub_settings(max_connections_per_user=3)
async def test_per_user_limit_counts_streams_and_held_polls_together(ctx, api):
    cursor = (await ctx.journal.create("j1", "alice", "character"))[0].decode()
    alice, bob = api("alice"), api("bob")
    first = await open_stream(alice, "/api/v1/sse/jobs/my")
    second = await open_stream(alice, "/api/v1/sse/jobs/character/j1")
    held = await hold_poll(ctx, alice, "alice", cursor, expected=3)

    over = {"error": "too_many_connections", "limit": 3}
    await assert_refused(await alice.stream("/api/v1/sse/jobs/my"), 429, over)
    await assert_refused(await alice.get(f"/api/v1/poll/jobs/character/j1?cursor={cursor}"), 429, over)
    assert sample(ctx, "hub_connections_rejected_total", reason="user_limit") == 2

    # Another user is unaffected.
    other = await open_stream(bob, "/api/v1/sse/jobs/my")

    # Closing any one frees a slot, whichever transport it was.
    held.abort()
    await eventually(lambda: ctx.connections.count("alice") == 2)
    again = await open_stream(alice, "/api/v1/sse/jobs/my")
    first.close()
    await eventually(lambda: ctx.connections.count("alice") == 2)
    held = await hold_poll(ctx, alice, "alice", cursor, expected=3)

    for connection in (second, again, other, held):
        connection.abort()
    await eventually(lambda: ctx.connections.total == 0)
    for transport in ("sse", "longpoll"):
        assert sample(ctx, "hub_connections", transport=transport) == 0


@pytest.mark.hub_settings(max_connections=2)
async def test_per_process_limit_answers_503(ctx, api):
    await ctx.journal.create("j1", "alice", "character")
    streams = [await open_stream(api(user), "/api/v1/sse/jobs/my") for user in ("alice", "bob")]
    await assert_refused(await api("carol").stream("/api/v1/sse/jobs/my"), 503, {"error": "server_busy"})
    await assert_refused(await api("carol").get("/api/v1/poll/jobs/my?cursor=0-0"), 503, {"error": "server_busy"})
    assert sample(ctx, "hub_connections_rejected_total", reason="server_limit") == 2
    streams[0].close()
    await eventually(lambda: ctx.connections.total == 1)
    streams.append(await open_stream(api("carol"), "/api/v1/sse/jobs/my"))
    for stream in streams[1:]:
        stream.close()
    await eventually(lambda: ctx.connections.total == 0)
