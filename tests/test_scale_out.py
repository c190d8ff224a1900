"""Several hub processes and workers on one Redis, no sticky sessions: the
same events with the same cursors everywhere, and per-user limits that hold
across processes."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.request

import pytest

from tests.support.http import request
from tests.support.resuming import follow
from tests.support.waiting import eventually

pytestmark = pytest.mark.gen_test(timeout=120)


def create_job(hub_url: str, token: str) -> str:
    body = json.dumps({"name": "Shared"}).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with urllib.request.urlopen(urllib.request.Request(hub_url + "/api/v1/characters", body, headers)) as answer:
        return str(json.load(answer)["jobId"])


async def long_poll_all(hub_url: str, path: str, token: str) -> list[dict]:
    events: list[dict] = []
    cursor = None
    while not events or events[-1].get("status") not in ("completed", "failed"):
        query = f"?cursor={cursor}" if cursor else ""
        response = await request(hub_url + path + query, headers={"Authorization": f"Bearer {token}"})
        assert response.status == 200
        batch = await response.json_body()
        events += batch["events"]
        cursor = batch["cursor"]
    return events


@pytest.mark.hub_settings(job_step_seconds=0.2)
async def test_clients_on_different_processes_see_the_same_events(hub_process, worker, token):
    a, b = hub_process(), hub_process()
    worker(), worker()
    user = token("alice")
    job_id = create_job(a.url, user)
    sse, polled = await asyncio.gather(
        follow([a.url], f"/api/v1/sse/jobs/character/{job_id}", user),
        long_poll_all(b.url, f"/api/v1/poll/jobs/character/{job_id}", user),
    )
    # Each started at its own moment: compare from the later start on.
    sse_events = {e.id: e.data for e in sse.events}
    poll_events = {e["id"]: {k: v for k, v in e.items() if k != "id"} for e in polled}
    common = sorted(set(sse_events) & set(poll_events))
    assert common and common[-1] == max(sse_events) == max(poll_events), "both end on the same terminal event"
    for event_id in common:
        if sse_events[event_id]["type"] == poll_events[event_id]["type"]:
            assert sse_events[event_id] == poll_events[event_id]
    later_start = max(min(sse_events), min(poll_events))
    assert [i for i in sorted(sse_events) if i > later_start] == [i for i in sorted(poll_events) if i > later_start]


@pytest.mark.hub_settings(job_step_seconds=0.3)
async def test_a_client_moves_between_processes_mid_job_without_loss(hub_process, worker, token, settings, sync_redis):
    a, b = hub_process(), hub_process()
    worker()
    user = token("alice")
    job_id = create_job(a.url, user)
    hubs = [a.url, b.url]

    def hop(frame, seen):
        # Hang up after every event; the next connection goes to the other process.
        raise ConnectionResetError("moving on")

    seen = await follow(hubs, f"/api/v1/sse/jobs/character/{job_id}", user, on_event=hop)
    assert seen.connects >= 3
    history = [i.decode() for i, _ in sync_redis.xrange(f"{settings.namespace}:job:{job_id}:events")]
    assert seen.ids == history[history.index(seen.ids[0]) :]


async def open_my_stream(hub_url: str, token: str):
    stream = await request(hub_url + "/api/v1/sse/jobs/my", headers={"Authorization": f"Bearer {token}"})
    if stream.status == 200:
        await stream.frame()  # retry
        await stream.frame()  # connected
    return stream


async def test_the_per_user_limit_holds_across_processes_and_a_crash_frees_slots(hub_process, token):
    limits = {"HUB_MAX_CONNECTIONS_PER_USER": "2", "HUB_PROCESS_TTL_SECONDS": "2"}
    a, b = hub_process(**limits), hub_process(**limits)
    user = token("alice")
    on_a = await open_my_stream(a.url, user)
    on_b = await open_my_stream(b.url, user)
    assert (on_a.status, on_b.status) == (200, 200)
    for hub in (a, b):
        refused = await open_my_stream(hub.url, user)
        assert refused.status == 429, "2 processes do not make 2 x the limit"
        assert await refused.json_body() == {"error": "too_many_connections", "limit": 2}
    other = await open_my_stream(a.url, token("bob"))
    assert other.status == 200, "another user is unaffected"

    a.process.send_signal(signal.SIGKILL)  # a crash: its slots are never given back
    a.process.wait()
    crashed_at = time.monotonic()

    async def slot_free() -> bool:
        stream = await open_my_stream(b.url, user)
        if stream.status == 200:
            stream.close()
            return True
        return False

    await eventually(slot_free, timeout=15, interval=0.2)
    print(f"slots of a crashed process released after {time.monotonic() - crashed_at:.2f}s (ttl 2 s)")
    for stream in (on_a, on_b, other):
        stream.close()


async def test_a_burst_of_connections_waits_for_redis_instead_of_being_refused(hub_process, token):
    # More simultaneous streams than the process has Redis connections: a
    # reconnect storm after a deploy looks like this.
    hub = hub_process()
    burst = 300
    started = time.monotonic()
    streams = await asyncio.gather(*(open_my_stream(hub.url, token(f"user{n}")) for n in range(burst)))
    print(f"{burst} streams opened at once in {time.monotonic() - started:.2f}s")
    statuses = [stream.status for stream in streams]
    for stream in streams:
        stream.close()
    assert statuses == [200] * burst, {status: statuses.count(status) for status in set(statuses)}
