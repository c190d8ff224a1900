"""Fairness and exposure: the job rate limit is a sliding window, one user
cannot starve another in the queue, users see a safe `failedReason`, and
stream tickets are single-use (unless bound to one stream) and rate-limited.

Time is driven through the limiter's clock, never slept on."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from hub.errors import RateLimited
from hub.web import rate_limit
from tests.support.environment import ROOT, need
from tests.support.http import request
from tests.support.waiting import eventually

pytestmark = pytest.mark.gen_test(timeout=90)

TICKETS = "/api/v1/sse/tickets"
#: A minute boundary of the fake clock: a fixed window would reset here.
BOUNDARY = 1_800_000_000.0


class FakeClock:
    """Stands in for the `time` module the limiter reads its clock from."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock(BOUNDARY)
    monkeypatch.setattr(rate_limit, "time", fake)
    return fake


async def post_json(url: str, auth: dict[str, str], body: Any) -> tuple[int, dict[str, str], Any]:
    response = await request(url, "POST", {**auth, "Content-Type": "application/json"}, json.dumps(body).encode())
    return response.status, response.headers, await response.json_body()


# 1. The job rate limit is a sliding window -------------------------------------------


@pytest.mark.hub_settings(job_rate_per_minute=5)
async def test_a_burst_across_a_minute_boundary_is_refused_and_retry_after_says_when(ctx, api, hub_url, clock):
    alice = api("alice")
    create = hub_url + "/api/v1/characters"
    clock.now = BOUNDARY - 0.5
    for _ in range(5):
        assert (await post_json(create, alice.auth(), {"name": "Ada"}))[0] == 202

    # One second later, in the next minute: a fixed window would take 5 more.
    clock.now = BOUNDARY + 0.5
    status, headers, body = await post_json(create, alice.auth(), {"name": "Ada"})
    assert status == 429, body
    assert body == {"error": "rate_limited", "message": body["message"], "limit": 5} and body["message"]
    retry_after = int(headers["retry-after"])
    assert retry_after == 59  # the first of the five leaves the window at BOUNDARY + 59.5

    # Retry-After is when the next job is allowed: not a second earlier.
    clock.now = BOUNDARY + 0.5 + retry_after - 1
    assert (await post_json(create, alice.auth(), {"name": "Ada"}))[0] == 429
    clock.now = BOUNDARY + 0.5 + retry_after
    assert (await post_json(create, alice.auth(), {"name": "Ada"}))[0] == 202
    # Another user was never held back.
    assert (await api("bob").post("/api/v1/characters", {"name": "Bo"}))[0] == 202


@pytest.mark.hub_settings(job_rate_per_minute=7)
async def test_no_sixty_second_span_holds_more_than_the_limit(ctx, clock):
    """A user who asks every 0.7 s for 3.5 minutes: count every 60 s span."""
    limit, window = 7, 60.0
    accepted: list[float] = []
    for step in range(300):
        clock.now = BOUNDARY - 30 + step * 0.7
        try:
            await ctx.job_rate.check("alice")
        except RateLimited as refused:
            assert 1 <= refused.retry_after <= 60
        else:
            accepted.append(clock.now)
    busiest = max(sum(1 for t in accepted if start <= t < start + window) for start in accepted)
    print(f"\naccepted {len(accepted)} of 300 in {300 * 0.7:.0f} s; busiest 60 s span: {busiest} (limit {limit})")
    assert busiest == limit
    # Refusals do not count: the user gets the full limit in each minute.
    assert len(accepted) >= limit * int(300 * 0.7 // window)


# 2. One user cannot starve another in the queue --------------------------------------


def first_time(sync_redis: Any, namespace: str, job_id: str, status: str) -> float | None:
    """When the job first had `status` (its event's publish time), if it has."""
    for _, fields in sync_redis.xrange(f"{namespace}:job:{job_id}:events"):
        if json.loads(fields[b"d"])["status"] == status:
            return float(fields[b"t"])
    return None


@pytest.mark.hub_settings(job_step_seconds=0.05, job_rate_per_minute=60, jobs_in_flight_per_user=2)
async def test_a_user_at_the_rate_limit_does_not_starve_another(ctx, api, settings, worker, sync_redis):
    worker(HUB_WORKER_THREADS="2")
    alice, bob = api("alice"), api("bob")
    hog = [await alice.create_character(f"Ada {i}") for i in range(settings.job_rate_per_minute)]
    assert (await alice.post("/api/v1/characters", {"name": "one more"}))[0] == 429
    theirs = await bob.create_character("Bo")

    ns = settings.namespace
    started = await eventually(lambda: first_time(sync_redis, ns, theirs, "active"), timeout=60)
    created = first_time(sync_redis, ns, theirs, "queued")
    assert created is not None
    overtook = [j for j in hog if created < (first_time(sync_redis, ns, j, "active") or float("inf")) < started]
    waiting = sum(1 for j in hog if first_time(sync_redis, ns, j, "active") is None)
    print(
        f"\nbob waited {started - created:.2f} s; {len(overtook)} of alice's jobs started meanwhile; "
        f"{waiting} of hers still queued when his started"
    )
    # Bob's job waits behind the jobs alice already had in flight, and no more.
    assert len(overtook) <= settings.jobs_in_flight_per_user
    assert waiting > 0, "alice still had jobs queued: bob really went ahead of them"


def job_interval(sync_redis: Any, namespace: str, job_id: str) -> tuple[float, float] | None:
    start = first_time(sync_redis, namespace, job_id, "active")
    end = first_time(sync_redis, namespace, job_id, "completed") or first_time(sync_redis, namespace, job_id, "failed")
    return (start, end) if start is not None and end is not None else None


def assert_one_at_a_time(intervals: list[tuple[float, float]]) -> None:
    ordered = sorted(intervals)
    for (_, end), (start, _) in itertools.pairwise(ordered):
        assert start >= end, f"two of the user's jobs ran at once: {ordered}"


@pytest.mark.hub_settings(job_step_seconds=0.3, jobs_in_flight_per_user=1)
async def test_a_redelivered_job_counts_once_and_the_next_waits_for_it(ctx, api, settings, worker, sync_redis):
    fast_redelivery = {"HUB_WORKER_HEARTBEAT_SECONDS": "2", "HUB_WORKER_MAINTENANCE_CHANCE": "1000000"}
    doomed = worker(**fast_redelivery)
    alice = api("alice")
    jobs = [await alice.create_character(f"Ada {i}") for i in range(3)]
    ns = settings.namespace
    await eventually(lambda: first_time(sync_redis, ns, jobs[0], "active"), timeout=30)
    doomed.kill()  # SIGKILL: the message stays unacknowledged and is redelivered
    doomed.wait()
    worker(**fast_redelivery)

    intervals = await eventually(
        lambda: all(job_interval(sync_redis, ns, j) for j in jobs) and [job_interval(sync_redis, ns, j) for j in jobs],
        timeout=60,
    )
    states = [(await ctx.history.job(j)).state for j in jobs]
    assert [s["status"] for s in states] == ["completed"] * 3
    assert states[0]["attempt"] == 2, "the first job was redelivered"
    assert_one_at_a_time(intervals)
    assert not sync_redis.exists(f"{ns}:user:alice:inflight")
    assert sync_redis.llen(f"{ns}:user:alice:held") == 0


@pytest.mark.hub_settings(job_step_seconds=0.3, jobs_in_flight_per_user=1)
async def test_a_job_failed_as_stalled_frees_its_users_slot(ctx, api, settings, worker, sync_redis):
    no_redelivery = {"HUB_WORKER_HEARTBEAT_SECONDS": "600", "HUB_JOB_STALL_SECONDS": "2"}
    doomed = worker(**no_redelivery)
    alice = api("alice")
    lost, nxt = await alice.create_character("Lost"), await alice.create_character("Next")
    ns = settings.namespace
    await eventually(lambda: first_time(sync_redis, ns, lost, "active"), timeout=30)
    doomed.kill()
    doomed.wait()
    worker(**no_redelivery)  # its stall watcher fails the lost job; the next one must then run

    await eventually(lambda: first_time(sync_redis, ns, nxt, "completed"), timeout=60)
    assert (await ctx.history.job(lost)).state["failedReason"].startswith("stalled")


# 3. failedReason is safe to show; the worker's log has the detail --------------------


async def job_frames(api: Any, ctx: Any, job_id: str) -> list[dict[str, Any]]:
    stream = await api("alice").stream(f"/api/v1/sse/jobs/character/{job_id}")
    frames = await stream.frames_until_end()
    return [f.data for f in frames if f.type in ("initial_status", "job_update")]


async def test_an_exceptions_text_never_reaches_users_but_the_worker_log_has_it(
    ctx, api, settings, worker, tmp_path: Path
):
    from tests.support.jobs import enqueue_job

    log = tmp_path / "worker.log"
    worker("tests.flaky_actors", output=log)
    await ctx.journal.create("leaky", "alice", "character")
    enqueue_job(settings, "leaks_secrets", "leaky", "alice")
    frames = await job_frames(api, ctx, "leaky")
    statuses = [f["status"] for f in frames]
    assert statuses.count("retrying") == 1 and statuses[-1] == "failed"

    reasons = [f["failedReason"] for f in frames if "failedReason" in f]
    state = (await ctx.history.job("leaky")).state
    shown = json.dumps([frames, state])
    assert "hunter2" not in shown and "/srv/x" not in shown, shown
    assert reasons == ["RuntimeError: the job failed unexpectedly (the worker's log has the details)"] * 2
    assert state["result"] == {"error": reasons[-1]}

    def logged() -> list[str]:
        return [
            line for line in log.read_text().splitlines() if "password=hunter2 at /srv/x" in line and "leaky" in line
        ]

    lines = await eventually(logged)
    assert any("actors.lifecycle" in line for line in lines), lines


async def test_job_failed_shows_its_message_and_is_not_retried(ctx, api, settings, worker):
    from tests.support.jobs import enqueue_job

    worker("tests.flaky_actors")
    await ctx.journal.create("quota", "alice", "character")
    enqueue_job(settings, "refuses_on_purpose", "quota", "alice")
    frames = await job_frames(api, ctx, "quota")
    assert [f["status"] for f in frames] == ["queued", "active", "active", "failed"], "never retried"
    assert frames[-1]["failedReason"] == "quota exceeded"
    assert frames[-1]["result"] == {"error": "quota exceeded"}


# 4. Tickets: unbound ones open one stream once; minting is rate-limited --------------


async def mint(hub_url: str, auth: dict[str, str], body: Any = None) -> tuple[int, dict[str, str], Any]:
    return await post_json(hub_url + TICKETS, auth, {} if body is None else body)


async def status_of(url: str) -> int:
    response = await request(url)
    status = response.status
    response.close()
    return status


async def test_an_unbound_ticket_opens_one_stream_once(ctx, api, hub_url):
    await ctx.journal.create("mine", "alice", "character")
    alice = api("alice")
    status, _, body = await mint(hub_url, alice.auth())
    assert status == 201, body
    ticket = body["ticket"]
    assert await status_of(f"{hub_url}/api/v1/sse/jobs/my?ticket={ticket}") == 200
    for path in ("/api/v1/sse/jobs/my", "/api/v1/poll/jobs/my", "/api/v1/sse/jobs/character/mine"):
        again = await request(f"{hub_url}{path}?ticket={ticket}")
        assert again.status == 401, path
        assert (await again.json_body())["error"] == "unauthorized"


async def test_one_unbound_ticket_sent_many_times_at_once_opens_one_stream(ctx, api, hub_url):
    await ctx.journal.create("mine", "alice", "character")
    ticket = (await mint(hub_url, api("alice").auth()))[2]["ticket"]
    urls = [f"{hub_url}/api/v1/poll/jobs/character/mine?ticket={ticket}"] * 10
    statuses = await asyncio.gather(*(status_of(url) for url in urls))
    assert sorted(statuses) == [200] + [401] * 9


async def test_a_bound_ticket_reopens_its_stream_within_its_minute(ctx, api, hub_url):
    await ctx.journal.create("mine", "alice", "character")
    await ctx.journal.create("other", "alice", "character")
    status, _, body = await mint(hub_url, api("alice").auth(), {"path": "/api/v1/sse/jobs/character/mine"})
    assert status == 201, body
    ticket = body["ticket"]
    # As native EventSource does when it reconnects: the same URL again.
    for path in ("sse", "sse", "poll", "sse"):
        assert await status_of(f"{hub_url}/api/v1/{path}/jobs/character/mine?ticket={ticket}") == 200, path
    assert await status_of(f"{hub_url}/api/v1/sse/jobs/character/other?ticket={ticket}") == 401
    assert await status_of(f"{hub_url}/api/v1/sse/jobs/my?ticket={ticket}") == 401


async def test_minting_tickets_is_rate_limited_per_user(ctx, api, hub_url, clock):
    alice, bob = api("alice"), api("bob")
    for _ in range(30):
        assert (await mint(hub_url, alice.auth()))[0] == 201
    status, headers, body = await mint(hub_url, alice.auth(), {"path": "/api/v1/sse/jobs/my"})
    assert status == 429, body
    assert body == {"error": "rate_limited", "message": body["message"], "limit": 30}
    assert "ticket" in body["message"]
    assert headers["retry-after"] == "60"
    assert (await mint(hub_url, bob.auth()))[0] == 201
    clock.now += 60
    assert (await mint(hub_url, alice.auth()))[0] == 201


async def test_the_ticket_limit_is_separate_from_the_job_limit(ctx, api, hub_url, clock):
    alice = api("alice")
    for _ in range(30):
        assert (await mint(hub_url, alice.auth()))[0] == 201
    assert (await alice.post("/api/v1/characters", {"name": "Ada"}))[0] == 202


async def test_the_javascript_clients_eventsource_reconnects_with_its_ticket(ctx, token, hub_url, sync_redis):
    """The JavaScript client's `auth: 'ticket'` buys a ticket bound to its
    stream: when the hub ends the stream (here: its pub/sub connection is
    cut), EventSource reconnects with the same URL, and is let in."""
    node = shutil.which("node")
    need(node is not None, "node is not installed")
    need((ROOT / "clients/js/node_modules/eventsource").is_dir(), "run `npm ci --prefix clients/js` first")
    await ctx.journal.create("j1", "alice", "character")
    env = dict(os.environ, HUB_URL=hub_url, HUB_TOKEN=token("alice"), JOB_TYPE="character", JOB_ID="j1")
    script = str(ROOT / "tests/node/follow_with_ticket.mjs")
    client = await asyncio.create_subprocess_exec(node, script, env=env, stdout=asyncio.subprocess.PIPE)
    assert client.stdout is not None
    seen: list[dict[str, Any]] = []

    async def until(wanted: dict[str, Any], count: int = 1) -> None:
        while sum(1 for line in seen if wanted.items() <= line.items()) < count:
            raw = await asyncio.wait_for(client.stdout.readline(), 10)
            assert raw, f"the client ended: {seen}"
            seen.append(json.loads(raw))
            assert "error" not in seen[-1], seen

    try:
        await until({"event": "initial_status"})
        for connection in sync_redis.client_list():
            if int(connection.get("sub", 0)) or int(connection.get("psub", 0)):
                sync_redis.client_kill_filter(_id=connection["id"])
        await until({"event": "connected"}, count=2)
        await ctx.journal.update("j1", "alice", "character", status="active", progress=50)
        await ctx.journal.update("j1", "alice", "character", status="completed", progress=100, result={})
        await until({"final": "completed"})
    finally:
        if client.returncode is None:
            client.kill()
        await client.wait()
    requests = [line for line in seen if "request" in line]
    assert [r["request"] for r in requests] == ["/api/v1/sse/jobs/character/j1"] * 2
    assert [r["ticket"] for r in requests] == [0, 0], "the same ticket, both times"
    assert [line["progress"] for line in seen if line.get("event") == "job_update"] == [50, 100]
