"""Job failures as users see them: retries are announced, and a job that
runs out of retries fails exactly once, with its reason."""

from __future__ import annotations

import json
import time

import pytest

from actors.lifecycle import AGE_LIMIT_REASON, UNEXPECTED_REASON
from hub.store.registry import QUEUE
from tests.support.jobs import enqueue_job
from tests.support.waiting import eventually

pytestmark = pytest.mark.gen_test(timeout=60)


async def test_actor_failing_until_retries_run_out_fails_exactly_once(ctx, api, settings, worker, sync_redis):
    worker("tests.flaky_actors")
    await ctx.journal.create("doomed", "alice", "character")
    stream = await api("alice").stream("/api/v1/sse/jobs/character/doomed")
    enqueue_job(settings, "always_fails", "doomed", "alice")
    frames = await stream.frames_until_end()
    updates = frames[2:]
    statuses = [f.data["status"] for f in updates]
    # max_retries=2: three attempts, two announced retries, one failure.
    assert statuses.count("retrying") == 2
    assert statuses.count("failed") == 1 and statuses[-1] == "failed"
    assert [f.data["attempt"] for f in updates if f.data.get("step") == "started"] == [1, 2, 3]
    # Users read the exception's class, never its text (the worker logs that).
    reason = f"Boom: {UNEXPECTED_REASON}"
    failed = updates[-1].data
    assert failed["failedReason"] == reason
    assert failed["result"] == {"error": reason}
    assert [f.data["failedReason"] for f in updates if f.data["status"] == "retrying"] == [reason, reason]
    assert not any("the model refused" in json.dumps(f.data) for f in updates)

    # Dramatiq has dead-lettered the message: nothing more will run, and
    # history holds that one failure and nothing after it.
    dead_letters = f"{settings.namespace}-dramatiq:{QUEUE}.XQ"
    await eventually(lambda: sync_redis.zcard(dead_letters) == 1)
    history = await ctx.redis.xrange(ctx.keys.job_events("doomed"))
    assert [b'"status":"failed"' in fields[b"d"] for _, fields in history].count(True) == 1
    assert history[-1][1][b"f"] == b"1"


async def test_a_job_older_than_its_age_limit_fails_once_without_running(ctx, settings, worker):
    worker("tests.flaky_actors")
    await ctx.journal.create("stale", "alice", "character")
    an_hour_ago = int(time.time() * 1000) - 3_600_000
    enqueue_job(settings, "always_fails", "stale", "alice", options={"max_age": 60_000}, message_timestamp=an_hour_ago)

    async def failed() -> bool:
        job = await ctx.history.job("stale")
        return job is not None and job.state["status"] == "failed"

    await eventually(failed)
    job = await ctx.history.job("stale")
    assert job.state["failedReason"] == AGE_LIMIT_REASON
    history = [fields[b"d"] for _, fields in await ctx.redis.xrange(ctx.keys.job_events("stale"))]
    assert [b'"status":"failed"' in event for event in history].count(True) == 1
    assert not any(b'"status":"active"' in event for event in history), "it never ran"


async def test_a_finished_job_ignores_late_reports(ctx):
    await ctx.journal.create("done", "alice", "character")
    assert await ctx.journal.update("done", "alice", "character", status="completed", progress=100, result={})
    assert await ctx.journal.update("done", "alice", "character", status="failed", failedReason="late") is None
    assert await ctx.journal.update("done", "alice", "character", progress=50) is None
    job = await ctx.history.job("done")
    assert job.state["status"] == "completed" and job.state["progress"] == 100


async def test_progress_never_goes_down_within_an_attempt(ctx):
    await ctx.journal.create("p", "alice", "character")
    await ctx.journal.update("p", "alice", "character", status="active", progress=0, attempt=1)
    await ctx.journal.update("p", "alice", "character", progress=60)
    await ctx.journal.update("p", "alice", "character", progress=30)
    assert (await ctx.history.job("p")).state["progress"] == 60
    # A new attempt starts over.
    await ctx.journal.update("p", "alice", "character", status="active", progress=0, attempt=2)
    assert (await ctx.history.job("p")).state["progress"] == 0
