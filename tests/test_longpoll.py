"""Long-poll: the same events and cursors as SSE, for clients that cannot stream."""

from __future__ import annotations

import time

import pytest

from tests.support.metrics import sample
from tests.support.waiting import eventually

pytestmark = pytest.mark.gen_test(timeout=60)


async def poll(client, path: str, cursor: str | None = None):
    query = f"?cursor={cursor}" if cursor else ""
    response = await client.get(path + query)
    if response.status == 204:
        return 204, None
    return response.status, await response.json_body()


async def test_a_whole_job_followed_by_long_poll_alone(api, worker):
    worker()
    alice = api("alice")
    job_id = await alice.create_character("Lin")
    path = f"/api/v1/poll/jobs/character/{job_id}"
    status, first = await poll(alice, path)
    assert status == 200
    assert [e["type"] for e in first["events"]] == ["initial_status"]
    assert first["cursor"] == first["events"][0]["id"]
    events, cursor, polls = [], first["cursor"], 0
    while not events or events[-1]["status"] not in ("completed", "failed"):
        status, batch = await poll(alice, path, cursor)
        polls += 1
        assert status == 200 and batch["events"], "a held poll answers only when something is new"
        assert batch["cursor"] == batch["events"][-1]["id"]
        events += batch["events"]
        cursor = batch["cursor"]
    assert all(e["type"] == "job_update" for e in events)
    ids = [e["id"] for e in events]
    assert len(set(ids)) == len(ids)
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress)
    assert [e["status"] for e in events].count("completed") == 1
    assert events[-1]["result"]["name"] == "Lin"
    # Polling again from the terminal event: the stream is over.
    assert (await poll(alice, path, cursor))[0] == 204


async def test_switching_between_sse_and_long_poll_mid_job_loses_nothing(ctx, api):
    alice = api("alice")
    journal = ctx.journal
    published = [(await journal.create("sw", "alice", "character"))[0].decode()]

    async def publish(progress: int, status: str = "active") -> None:
        extra = {"result": {}} if status == "completed" else {}
        ids = await journal.update("sw", "alice", "character", status=status, progress=progress, **extra)
        published.append(ids[0].decode())

    received: list[str] = []
    await publish(10)
    # 1. SSE from the start, then the connection drops.
    stream = await alice.stream("/api/v1/sse/jobs/character/sw")
    await stream.frame(), await stream.frame()
    initial = await stream.frame()
    received.append(initial.id)
    await publish(20)
    received.append((await stream.frame()).id)
    stream.abort()

    # 2. Long-poll resumes from the SSE cursor, while events keep coming.
    await publish(30)
    await publish(40)
    status, batch = await poll(alice, "/api/v1/poll/jobs/character/sw", received[-1])
    assert status == 200
    received += [e["id"] for e in batch["events"]]
    assert batch["cursor"] == received[-1]

    # 3. Back to SSE with the long-poll cursor.
    await publish(50)
    stream = await alice.stream("/api/v1/sse/jobs/character/sw", last_event_id=batch["cursor"])
    await publish(100, "completed")
    received += [f.id for f in (await stream.frames_until_end())[2:]]

    assert received == published[1:], "every event exactly once, in order, across transports"


@pytest.mark.hub_settings(longpoll_timeout_seconds=0.5)
async def test_an_empty_hold_ends_after_the_timeout_with_the_same_cursor(ctx, api):
    cursor = (await ctx.journal.create("quiet", "alice", "character"))[0].decode()
    started = time.monotonic()
    status, batch = await poll(api("alice"), "/api/v1/poll/jobs/character/quiet", cursor)
    held = time.monotonic() - started
    assert status == 200 and batch == {"events": [], "cursor": cursor}
    assert held >= 0.5
    print(f"held for {held:.3f}s (HUB_LONGPOLL_TIMEOUT_SECONDS=0.5)")


async def test_a_client_hanging_up_during_the_hold_frees_its_slot(ctx, api):
    cursor = (await ctx.journal.create("held", "alice", "character"))[0].decode()
    response = await api("alice").send(f"/api/v1/poll/jobs/character/held?cursor={cursor}")
    await eventually(lambda: ctx.connections.count("alice") == 1)
    assert sample(ctx, "hub_connections", transport="longpoll") == 1
    response.abort()
    await eventually(lambda: ctx.connections.count("alice") == 0)
    await eventually(lambda: ctx.bus.channel_count == 0)
    assert sample(ctx, "hub_connections", transport="longpoll") == 0


async def test_my_long_poll_starts_from_the_beginning_for_a_new_user(ctx, api):
    alice = api("alice")
    status, batch = await poll(alice, "/api/v1/poll/jobs/my")
    assert (status, batch) == (200, {"events": [], "cursor": "0-0"})
    await ctx.journal.create("n1", "alice", "media")
    status, batch = await poll(alice, "/api/v1/poll/jobs/my", batch["cursor"])
    assert [(e["jobId"], e["status"]) for e in batch["events"]] == [("n1", "queued")]


async def test_my_long_poll_snapshot_lists_unfinished_jobs(ctx, api):
    await ctx.journal.create("a", "alice", "character")
    await ctx.journal.create("b", "alice", "media")
    await ctx.journal.update("b", "alice", "media", status="completed", progress=100, result={})
    status, batch = await poll(api("alice"), "/api/v1/poll/jobs/my")
    assert status == 200
    assert [(e["type"], e["jobId"]) for e in batch["events"]] == [("initial_status", "a")]
    head = (await ctx.redis.xrevrange(ctx.keys.user_events("alice"), count=1))[0][0].decode()
    assert batch["cursor"] == head


async def test_malformed_cursor_is_400(ctx, api):
    await ctx.journal.create("c", "alice", "character")
    status, body = await poll(api("alice"), "/api/v1/poll/jobs/character/c", "abc")
    assert status == 400 and body["error"] == "bad_request"
