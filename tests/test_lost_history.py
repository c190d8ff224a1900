"""When Redis loses the newest events of a stream (a failover to a replica
that had not received them), a client whose cursor names a lost event gets
`reset` and a fresh `initial_status`, never a silent gap, even once newer
events have been appended after the failover. A cursor the hub never handed
out is treated the same way."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hub.errors import StoreUnavailable
from hub.store.events import parse_cursor
from hub.store.settings import Settings
from tests.support.environment import need_redis_server
from tests.support.replication import ReplicatedPair
from tests.support.waiting import eventually

pytestmark = pytest.mark.gen_test(timeout=90)

JOB = "tail"


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[ReplicatedPair]:
    """A primary and its replica behind one address: the hub's Redis here."""
    need_redis_server()
    started = ReplicatedPair(tmp_path).start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def settings(settings_for: Any, pair: ReplicatedPair) -> Settings:
    settings: Settings = settings_for(redis_url=pair.url)
    return settings


async def record(ctx: Any, **change: Any) -> str:
    """One change of the job, as a worker records it; returns its id."""
    ids = await ctx.journal.update(JOB, "alice", "character", **change)
    return str(ids[0].decode())


async def record_after_failover(ctx: Any, **change: Any) -> str:
    """The same, once the store answers again: the first commands after a
    failover may meet connections the failover cut."""

    async def attempt() -> str | None:
        try:
            return await record(ctx, **change)
        except StoreUnavailable:
            return None

    recorded: str = await eventually(attempt, timeout=20)
    return recorded


async def poll(api: Any, path: str, cursor: str) -> dict[str, Any]:
    response = await api.get(f"{path}?cursor={cursor}")
    assert response.status == 200
    body: dict[str, Any] = await response.json_body()
    return body


async def opening(api: Any, path: str, cursor: str) -> list[Any]:
    """The first frames of an SSE stream resumed at `cursor`, up to its first
    state-carrying one."""
    stream = await api.stream(path, last_event_id=cursor)
    assert stream.status == 200
    frames = []
    async with asyncio.timeout(20):  # keepalives alone would keep it waiting
        while (frame := await stream.frame()) is not None:
            if frame.type is not None:
                frames.append(frame)
            if frame.type in ("initial_status", "job_update"):
                break
    stream.close()
    return frames


async def test_a_cursor_lost_in_a_failover_gets_reset_and_fresh_state_never_a_gap(ctx, api, pair):
    alice = api("alice")
    job_path = f"/api/v1/sse/jobs/character/{JOB}"
    kept = [str((await ctx.journal.create(JOB, "alice", "character"))[0].decode())]
    kept.append(await record(ctx, status="active", progress=10, attempt=1))
    await asyncio.to_thread(pair.wait_replicated)

    # A client follows the job live and gets two events the replica never
    # receives.
    live = await alice.stream(job_path, last_event_id=kept[-1])
    assert [frame.type for frame in [await live.frame(), await live.frame()]] == [None, "connected"]
    await asyncio.to_thread(pair.stop_replication)
    lost = [await record(ctx, progress=20), await record(ctx, progress=30)]
    assert [(await live.frame()).id for _ in lost] == lost

    # The primary dies; the replica takes over without them; the job goes on.
    await asyncio.to_thread(pair.fail_over)
    ended = await live.frames_until_end()
    assert [frame.type for frame in ended if frame.type] == [], "the stream ends (bus reset); the client resumes"
    after = await record_after_failover(ctx, progress=40)
    # What the old rule took for "known": a cursor older than the stream's
    # newest entry, though not one of its entries.
    assert parse_cursor(after) > parse_cursor(lost[-1])
    await eventually(lambda: ctx.bus.connected, timeout=20)

    for cursor in (lost[-1], lost[0]):
        frames = await opening(alice, job_path, cursor)
        assert [frame.type for frame in frames] == ["connected", "reset", "initial_status"]
        assert frames[-1].id == after and frames[-1].data["progress"] == 40

    answer = await poll(alice, f"/api/v1/poll/jobs/character/{JOB}", lost[-1])
    assert [event["type"] for event in answer["events"]] == ["reset", "initial_status"]
    assert answer["events"][-1]["progress"] == 40 and answer["cursor"] == after

    mine = await poll(alice, "/api/v1/poll/jobs/my", lost[-1])
    assert [event["type"] for event in mine["events"]] == ["reset", "initial_status"]
    assert mine["events"][-1]["jobId"] == JOB and mine["events"][-1]["progress"] == 40

    # A cursor the replica kept misses nothing: exactly what followed it there.
    resumed = await poll(alice, f"/api/v1/poll/jobs/character/{JOB}", kept[-1])
    assert [(event["type"], event["id"]) for event in resumed["events"]] == [("job_update", after)]
    frames = await opening(alice, job_path, kept[-1])
    assert [(frame.type, frame.id) for frame in frames] == [("connected", None), ("job_update", after)]


async def test_a_cursor_the_hub_never_handed_out_gets_reset(ctx, api):
    first = str((await ctx.journal.create(JOB, "alice", "character"))[0].decode())
    second = await record(ctx, status="active", progress=10, attempt=1)
    await record(ctx, progress=20)
    # Older than the stream's first event, which was never trimmed: the old
    # rule took it for "known" and replayed everything.
    made_up = f"{parse_cursor(first)[0] - 1}-0"
    alice = api("alice")
    job_path = f"/api/v1/sse/jobs/character/{JOB}"
    frames = await opening(alice, job_path, made_up)
    assert [frame.type for frame in frames] == ["connected", "reset", "initial_status"]
    assert frames[-1].data["progress"] == 20

    # The cursors the hub hands out still resume without a reset: an event's
    # id, and the beginning of a user's stream.
    frames = await opening(alice, job_path, first)
    assert [(frame.type, frame.id) for frame in frames] == [("connected", None), ("job_update", second)]
    everything = await poll(alice, "/api/v1/poll/jobs/my", "0-0")
    assert [event["type"] for event in everything["events"]] == ["job_update"] * 3


async def test_a_reset_with_no_open_job_to_report_says_where_the_client_stands(ctx, api):
    await ctx.journal.create(JOB, "alice", "character")
    last = await record(ctx, status="completed", progress=100, result={"ok": True})
    alice = api("alice")
    # No job of alice is open: no `initial_status` follows the reset, so the
    # reset's own id is where she resumes; without it she would send the
    # lost cursor again and be reset again, forever.
    ms, seq = parse_cursor(last)
    stream = await alice.stream("/api/v1/sse/jobs/my", last_event_id=f"{ms}-{seq + 1}")
    async with asyncio.timeout(20):
        while (reset := await stream.frame()) is not None and reset.type != "reset":
            pass
    stream.close()
    assert reset is not None and reset.id == last

    stream = await alice.stream("/api/v1/sse/jobs/my", last_event_id=reset.id)
    created = str((await ctx.journal.create("job-after-reset", "alice", "character"))[0].decode())
    async with asyncio.timeout(20):
        frames = [await stream.frame() for _ in range(3)]
    stream.close()
    assert [(frame.type, frame.id) for frame in frames if frame.type] == [("connected", None), ("job_update", created)]
