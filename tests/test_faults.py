"""Faults injected for real, against real processes: a Redis restart, a hub
deploy, a killed worker, exhausted limits. Each costs a client at most a
reconnect, never an event."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.error
import urllib.request

import pytest

from hub.runtime.embedded import EmbeddedRedis
from tests.support.http import bearer, send
from tests.support.jobs import enqueue_job
from tests.support.metrics import sample
from tests.support.resuming import follow
from tests.support.waiting import eventually

pytestmark = pytest.mark.gen_test(timeout=120)


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=3) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


def create_job(hub_url: str, token: str, name: str = "Fault") -> str:
    body = json.dumps({"name": name}).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with urllib.request.urlopen(urllib.request.Request(hub_url + "/api/v1/characters", body, headers)) as answer:
        return str(json.load(answer)["jobId"])


def stream_ids(redis_client, key: str) -> list[str]:
    return [entry_id.decode() for entry_id, _ in redis_client.xrange(key)]


def assert_exactly_once(seen, history: list[str]) -> None:
    ids = seen.ids
    assert len(ids) == len(set(ids)), "no event twice"
    assert ids == history[history.index(ids[0]) :], "no event lost"
    assert [e.data["status"] for e in seen.events].count("completed") == 1


@pytest.mark.parametrize("how", ["graceful", "crash"])
async def test_redis_restart_mid_job(hub_process, worker, settings, token, tmp_path, how):
    import redis as redis_lib

    redis = EmbeddedRedis(str(tmp_path / "redis")).start()
    try:
        hub = hub_process(HUB_REDIS_URL=redis.url)
        worker(HUB_REDIS_URL=redis.url, HUB_JOB_STEP_SECONDS="0.4")
        user = token("alice")
        job_id = create_job(hub.url, user)
        restarted = []

        def restart_once(frame, seen):
            if not restarted and frame.data.get("progress", 0) > 0:
                restarted.append(time.monotonic())
                redis.stop() if how == "graceful" else redis.kill()
                redis.start()

        seen = await follow([hub.url], f"/api/v1/sse/jobs/character/{job_id}", user, on_event=restart_once)
        assert restarted, "Redis was restarted mid-job"
        assert seen.connects >= 2, "the stream was resumed after the restart"
        client = redis_lib.Redis.from_url(redis.url)
        history = stream_ids(client, f"{settings.namespace}:job:{job_id}:events")
        if how == "graceful" or seen.resets == 0:
            # Persisted history (AOF): every event, exactly once.
            assert_exactly_once(seen, history)
        else:
            # A crash may lose the last second of writes: the client is told (reset), never a silent gap.
            assert seen.final.data["status"] == "completed"
        await eventually(lambda: hub.metric("hub_redis_reconnects_total") >= 1)
        assert status_of(hub.url + "/readyz") == 200
        print(f"{how} restart: reconnects={seen.connects - 1} refusals={seen.refusals} resets={seen.resets}")
    finally:
        redis.stop()


async def test_readyz_is_503_while_redis_is_down(hub_process, tmp_path):
    redis = EmbeddedRedis(str(tmp_path / "redis")).start()
    try:
        hub = hub_process(HUB_REDIS_URL=redis.url)
        redis.stop()
        await eventually(lambda: status_of(hub.url + "/readyz") == 503)
        down_at = time.monotonic()
        redis.start()
        await eventually(lambda: status_of(hub.url + "/readyz") == 200, timeout=30)
        print(f"ready again {time.monotonic() - down_at:.2f}s after Redis came back")
    finally:
        redis.stop()


async def test_deploy_drains_and_clients_resume_on_another_process(hub_process, worker, token, settings, sync_redis):
    old, new = hub_process(), hub_process()
    worker(HUB_JOB_STEP_SECONDS="0.3")
    user = token("alice")
    job_id = create_job(old.url, user)

    stopped = {}

    def deploy_once(frame, seen):
        if not stopped and frame.data.get("progress", 0) > 0:
            stopped["at"] = time.monotonic()
            old.process.send_signal(signal.SIGTERM)

    seen = await follow([old.url, new.url], f"/api/v1/sse/jobs/character/{job_id}", user, on_event=deploy_once)
    assert stopped and seen.connects >= 2
    assert any(500 <= retry <= 5000 for retry in seen.retries_announced[1:]), "told to come back, with jitter"
    assert old.process.wait(15) == 0, "the old process exited by itself, cleanly"
    assert_exactly_once(seen, stream_ids(sync_redis, f"{settings.namespace}:job:{job_id}:events"))


async def test_sigterm_answers_held_long_polls(hub_process, token, settings, sync_redis):
    from hub.store.journal import Journal

    hub = hub_process()
    cursor = Journal(sync_redis, settings).create("held", "alice", "character")[0].decode()
    sent = await send(hub.url + f"/api/v1/poll/jobs/character/held?cursor={cursor}", headers=bearer(token("alice")))
    await eventually(lambda: hub.metric("hub_connections", transport="longpoll") == 1)
    started = time.monotonic()
    hub.process.send_signal(signal.SIGTERM)
    response = await sent.response()
    assert response.status == 200
    assert await response.json_body() == {"events": [], "cursor": cursor}
    assert hub.process.wait(15) == 0
    print(f"held poll answered and process gone {time.monotonic() - started:.2f}s after SIGTERM")


@pytest.mark.hub_settings(job_step_seconds=0.4)
async def test_worker_killed_mid_job_is_redelivered_and_finishes(hub_process, worker, token, settings, sync_redis):
    fast_redelivery = {"HUB_WORKER_HEARTBEAT_SECONDS": "2", "HUB_WORKER_MAINTENANCE_CHANCE": "1000000"}
    hub = hub_process()
    doomed = worker(**fast_redelivery)
    user = token("alice")
    job_id = create_job(hub.url, user)
    killed = []

    async def kill_then_replace(frame, seen):
        if not killed and frame.data.get("progress", 0) >= 20:
            doomed.kill()  # SIGKILL: no goodbye, the message stays unacknowledged
            doomed.wait()
            killed.append(frame.data["progress"])
            worker(**fast_redelivery)

    seen = await follow([hub.url], f"/api/v1/sse/jobs/character/{job_id}", user, on_event=kill_then_replace, timeout=90)
    assert killed
    assert seen.final.data["status"] == "completed"
    started = [e.data["attempt"] for e in seen.events if e.data.get("step") == "started"]
    assert started == [1, 2], "the redelivery is a new attempt, starting at 0%"
    assert_exactly_once(seen, stream_ids(sync_redis, f"{settings.namespace}:job:{job_id}:events"))


@pytest.mark.hub_settings(job_step_seconds=0.4)
async def test_a_job_left_active_by_a_dead_worker_fails_as_stalled_once(
    hub_process, worker, token, settings, sync_redis
):
    no_redelivery = {"HUB_WORKER_HEARTBEAT_SECONDS": "600", "HUB_JOB_STALL_SECONDS": "2"}
    hub = hub_process()
    doomed = worker(**no_redelivery)
    user = token("alice")
    job_id = create_job(hub.url, user)

    async def kill_then_watch(frame, seen):
        if frame.data.get("progress", 0) >= 20 and doomed.poll() is None:
            doomed.kill()
            doomed.wait()
            worker(**no_redelivery)  # its stall watcher notices

    seen = await follow([hub.url], f"/api/v1/sse/jobs/character/{job_id}", user, on_event=kill_then_watch, timeout=60)
    final = seen.final.data
    assert final["status"] == "failed"
    assert final["failedReason"].startswith("stalled: no progress for 2 s")
    assert final["result"] == {"error": final["failedReason"]}
    history = sync_redis.xrange(f"{settings.namespace}:job:{job_id}:events")
    assert [b'"status":"failed"' in fields[b"d"] for _, fields in history].count(True) == 1


async def test_time_limit_fails_the_job_once_with_the_reason(ctx, api, settings, worker):
    worker("tests.flaky_actors")
    await ctx.journal.create("slow", "alice", "character")
    stream = await api("alice").stream("/api/v1/sse/jobs/character/slow")
    enqueue_job(settings, "too_slow", "slow", "alice")
    updates = (await stream.frames_until_end())[2:]
    assert [f.data["status"] for f in updates].count("failed") == 1
    assert updates[-1].data["failedReason"].startswith("TimeLimitExceeded")


async def test_age_limit_fails_the_job_once_with_the_reason(ctx, api, settings, worker):
    worker("tests.flaky_actors")
    await ctx.journal.create("stale", "alice", "character")
    stream = await api("alice").stream("/api/v1/sse/jobs/character/stale")
    an_hour_ago = int(time.time() * 1000) - 3_600_000
    enqueue_job(settings, "always_fails", "stale", "alice", message_timestamp=an_hour_ago, options={"max_age": 60_000})
    updates = [f for f in await stream.frames_until_end() if f.type == "job_update"]
    assert [f.data["status"] for f in updates] == ["failed"], "never started, failed once"
    assert "age limit" in updates[-1].data["failedReason"]


async def test_a_pubsub_connection_killed_under_the_hub_is_noticed_and_nothing_is_lost(ctx, api, hub_url):
    """Redis drops the hub's pub/sub connection (as a failover or a proxy
    would): the bus notices on its own, and clients lose nothing."""
    await ctx.journal.create("kept", "alice", "character")
    alice = api("alice")
    seen_ids: list[str] = []
    stream = await alice.stream("/api/v1/sse/jobs/character/kept")
    for _ in range(3):
        frame = await stream.frame()
        if frame.id:
            seen_ids.append(frame.id)
    await ctx.redis.client_kill_filter(_type="pubsub")
    published = [
        (await ctx.journal.update("kept", "alice", "character", status="active", progress=p))[0].decode()
        for p in (10, 20)
    ]
    # The stream ends (or carries the events live); either way a resume has everything.
    while (frame := await stream.frame()) is not None:
        if frame.id:
            seen_ids.append(frame.id)
    # A client resumes as any SSE client would (the hub may say 503 for a moment).
    resuming = asyncio.create_task(
        follow([hub_url], "/api/v1/sse/jobs/character/kept", alice.token, last_event_id=seen_ids[-1])
    )
    await ctx.journal.update("kept", "alice", "character", status="completed", progress=100, result={})
    seen_ids += (await resuming).ids
    history = [i.decode() for i, _ in await ctx.redis.xrange(ctx.keys.job_events("kept"))]
    assert seen_ids == history[history.index(seen_ids[0]) :], "no gap, no duplicate"
    assert set(published) <= set(seen_ids)
    await eventually(lambda: sample(ctx, "hub_redis_reconnects_total") >= 1)


@pytest.mark.parametrize("draining", [True, False])
async def test_a_request_cut_short_by_the_process_exiting_gets_503_not_500(ctx, api, draining):
    # When the process exits after its drain, the event loop cancels the
    # requests still running, and Tornado answers each with send_error(500).
    # A hub that is draining says 503 instead: the client should retry.
    cursor = (await ctx.journal.create("cut", "alice", "character"))[0].decode()
    sent = await api("alice").send(f"/api/v1/poll/jobs/character/cut?cursor={cursor}")
    await eventually(lambda: ctx.connections.total == 1)  # the poll is held
    ctx.draining = draining
    running = [t for t in asyncio.all_tasks() if "RequestHandler._execute" in repr(t.get_coro())]
    assert len(running) == 1
    running[0].cancel()
    response = await sent.response()
    body = await response.json_body()
    if draining:
        assert response.status == 503 and body["error"] == "unavailable"
        assert int(response.headers["retry-after"]) > 0
    else:
        assert response.status == 500 and body["error"] == "internal_error"
