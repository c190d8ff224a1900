"""Resuming a stream by cursor: exactly the rest, 204 after the end, `reset`
when history no longer reaches back, and no loss or duplicate when an event
is published while history is being replayed."""

from __future__ import annotations

import pytest

from hub.store.history import History
from hub.store.journal import Journal
from tests.support.waiting import eventually

pytestmark = pytest.mark.gen_test(timeout=60)


async def make_job(ctx, owner: str = "alice", steps: int = 5, journal=None) -> tuple[str, list[str]]:
    """A character job that went through `steps` progress reports and
    completed, published exactly as a worker publishes. Returns the job id
    and the ids of all its events."""
    journal = journal or ctx.journal
    job_id = f"job{steps}x{owner}"
    ids = [(await journal.create(job_id, owner, "character"))[0]]
    ids.append((await journal.update(job_id, owner, "character", status="active", progress=0, attempt=1))[0])
    for step in range(1, steps + 1):
        ids.append((await journal.update(job_id, owner, "character", status="active", progress=step * 10))[0])
    final = await journal.update(job_id, owner, "character", status="completed", progress=100, result={"ok": True})
    ids.append(final[0])
    return job_id, [i.decode() for i in ids]


async def test_resume_mid_stream_gets_exactly_the_rest(ctx, api):
    job_id, ids = await make_job(ctx)
    alice = api("alice")
    cursor = ids[3]
    stream = await alice.stream(f"/api/v1/sse/jobs/character/{job_id}", last_event_id=cursor)
    frames = await stream.frames_until_end()
    assert frames[1].type == "connected"
    assert [f.id for f in frames[2:]] == ids[4:]
    assert frames[-1].data["status"] == "completed"

    # The query parameter works like the header (for clients that cannot set one).
    stream = await alice.get(f"/api/v1/sse/jobs/character/{job_id}?lastEventId={cursor}")
    assert [f.id for f in (await stream.frames_until_end())[2:]] == ids[4:]


async def test_reconnect_at_the_terminal_event_gets_204(ctx, api):
    job_id, ids = await make_job(ctx)
    response = await api("alice").stream(f"/api/v1/sse/jobs/character/{job_id}", last_event_id=ids[-1])
    assert response.status == 204
    assert await response.body() == b""


async def test_a_finished_job_streams_its_final_state_once_then_ends(ctx, api):
    job_id, ids = await make_job(ctx)
    frames = await (await api("alice").stream(f"/api/v1/sse/jobs/character/{job_id}")).frames_until_end()
    assert [f.type for f in frames[1:]] == ["connected", "initial_status"]
    assert frames[2].id == ids[-1] and frames[2].data["status"] == "completed"


async def test_an_evicted_cursor_gets_reset_then_fresh_state(ctx, settings_for, api):
    # History keeps 3 events per job here; the job has 8.
    short_history = Journal(ctx.redis, settings_for(job_history=3))
    job_id, ids = await make_job(ctx, journal=short_history)
    kept = [i.decode() for i, _ in await ctx.redis.xrange(ctx.keys.job_events(job_id))]
    assert kept == ids[-3:]
    stream = await api("alice").stream(f"/api/v1/sse/jobs/character/{job_id}", last_event_id=ids[0])
    frames = await stream.frames_until_end()
    assert [f.type for f in frames[1:]] == ["connected", "reset", "initial_status"]
    assert frames[3].data["status"] == "completed" and frames[3].id == ids[-1]


async def test_a_cursor_newer_than_history_gets_reset(ctx, api):
    await ctx.journal.create("fresh", "alice", "character")
    stream = await api("alice").stream("/api/v1/sse/jobs/character/fresh", last_event_id="99999999999999-0")
    frames = [await stream.frame() for _ in range(4)]
    assert [f.type for f in frames[1:]] == ["connected", "reset", "initial_status"]
    stream.close()


async def test_malformed_cursor_is_a_400(ctx, api):
    job_id, _ = await make_job(ctx)
    response = await api("alice").stream(f"/api/v1/sse/jobs/character/{job_id}", last_event_id="yesterday")
    assert response.status == 400
    assert (await response.json_body())["error"] == "bad_request"


@pytest.mark.parametrize("published", ["before_history_read", "after_history_read"])
async def test_event_published_during_replay_is_delivered_exactly_once(ctx, api, monkeypatch, published):
    owner = "alice"
    await ctx.journal.create("race", owner, "character")
    await ctx.journal.update("race", owner, "character", status="active", progress=10, attempt=1)
    first = [i.decode() for i, _ in await ctx.redis.xrange(ctx.keys.job_events("race"))]

    real_after = History.after
    injected: list[str] = []

    async def after_with_race(self, stream, cursor, limit=None):
        # The subscription is live by now: whichever side of the history
        # read the event lands on, the client must get it once.
        if published == "before_history_read":
            injected.append((await ctx.journal.update("race", owner, "character", progress=50))[0].decode())
        events = await real_after(self, stream, cursor, limit)
        if published == "after_history_read":
            injected.append((await ctx.journal.update("race", owner, "character", progress=50))[0].decode())
        return events

    monkeypatch.setattr(History, "after", after_with_race)
    stream = await api(owner).stream("/api/v1/sse/jobs/character/race", last_event_id=first[0])
    assert (await stream.frame()).retry == 3000
    assert (await stream.frame()).type == "connected"
    replayed = await stream.frame()
    assert replayed.id == first[1]
    raced = await stream.frame()
    assert raced.id == injected[0] and raced.data["progress"] == 50

    await ctx.journal.update("race", owner, "character", status="completed", progress=100, result={})
    rest = await stream.frames_until_end()
    assert [f.data["status"] for f in rest] == ["completed"]
    all_ids = [i.decode() for i, _ in await ctx.redis.xrange(ctx.keys.job_events("race"))]
    assert [replayed.id, raced.id, rest[0].id] == all_ids[1:]


async def test_my_stream_resumes_across_jobs(ctx, api):
    await make_job(ctx, steps=2)
    _, ids = await make_job(ctx, steps=3)
    user_ids = [i.decode() for i, _ in await ctx.redis.xrange(ctx.keys.user_events("alice"))]
    cursor = user_ids[4]
    stream = await api("alice").stream("/api/v1/sse/jobs/my", last_event_id=cursor)
    assert (await stream.frame()).retry
    assert (await stream.frame()).type == "connected"
    got = [(await stream.frame()).id for _ in user_ids[5:]]
    assert got == user_ids[5:]
    # A job's own cursor means the same point in time on /my.
    assert set(ids) <= set(user_ids)
    stream.close()
    await eventually(lambda: ctx.connections.total == 0)
