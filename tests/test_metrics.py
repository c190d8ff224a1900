"""What operators see on /metrics: connection gauges that always return to
zero, refusals, deliveries and latency, and the workers' own metrics."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hub.runtime.embedded import free_port
from tests.support.http import request
from tests.support.jobs import enqueue_job
from tests.support.waiting import eventually

pytestmark = pytest.mark.gen_test(timeout=60)


def parse(text: str) -> dict[str, object]:
    """Every sample by (name, sorted labels), and every family's type."""
    samples: dict[str, object] = {}
    for family in text_string_to_metric_families(text):
        samples[f"TYPE {family.name}"] = family.type
        for sample in family.samples:
            key = sample.name + "".join(f" {k}={v}" for k, v in sorted(sample.labels.items()))
            samples[key] = sample.value
    return samples


async def scrape(hub_url: str) -> dict[str, object]:
    response = await request(hub_url + "/metrics")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse((await response.body()).decode())


async def test_connection_gauges_return_to_zero_by_every_path(ctx, api, hub_url):
    cursor = (await ctx.journal.create("job", "alice", "character"))[0].decode()
    await ctx.journal.create("other", "alice", "character")
    alice = api("alice")

    async def sse(path: str):
        stream = await alice.stream(path)
        await stream.frame(), await stream.frame()
        return stream

    closed_by_client = await sse("/api/v1/sse/jobs/my")
    vanished = await sse("/api/v1/sse/jobs/my")
    ends_with_job = await sse("/api/v1/sse/jobs/character/job")
    cut_by_shutdown = await sse("/api/v1/sse/jobs/character/other")
    answered_poll = await alice.send(f"/api/v1/poll/jobs/character/job?cursor={cursor}")
    abandoned_poll = await alice.send(f"/api/v1/poll/jobs/character/job?cursor={cursor}")
    await eventually(lambda: ctx.connections.total == 6)
    await request(hub_url + "/api/v1/sse/jobs/my")  # no token: refused

    m = await scrape(hub_url)
    assert (m["hub_connections transport=sse"], m["hub_connections transport=longpoll"]) == (4.0, 2.0)
    assert m["hub_connections_opened_total transport=sse"] == 4.0
    assert m["hub_connections_opened_total transport=longpoll"] == 2.0
    assert m["hub_connections_rejected_total reason=unauthorized"] == 1.0
    assert m["hub_users_connected"] == 1.0
    assert m["TYPE hub_connections"] == "gauge"
    assert m["TYPE hub_connections_opened"] == "counter"
    assert m["TYPE hub_event_delivery_seconds"] == "histogram"

    closed_by_client.close()
    vanished.abort()
    abandoned_poll.abort()
    await eventually(lambda: ctx.connections.total == 3)
    await ctx.journal.update("job", "alice", "character", status="completed", progress=100, result={})
    assert [f.data["status"] for f in (await ends_with_job.frames_until_end())[1:]] == ["completed"]
    assert [e["status"] for e in (await (await answered_poll.response()).json_body())["events"]] == ["completed"]
    await eventually(lambda: ctx.connections.total == 1)

    await ctx.bus.close()  # what SIGTERM does: every stream is ended
    frames = await cut_by_shutdown.frames_until_end()
    assert frames and frames[-1].retry is not None, "told when to come back"
    await eventually(lambda: ctx.connections.total == 0)

    m = await scrape(hub_url)
    assert (m["hub_connections transport=sse"], m["hub_connections transport=longpoll"]) == (0.0, 0.0)
    assert m["hub_users_connected"] == 0.0
    assert m["hub_events_delivered_total transport=sse"] >= 1.0
    assert m["hub_events_delivered_total transport=longpoll"] == 1.0
    assert m["hub_event_delivery_seconds_count"] >= 2.0
    assert 0 < m["hub_event_delivery_seconds_sum"] < 10
    for name in ("hub_redis_reconnects_total", "hub_slow_consumers_disconnected_total", "hub_keepalives_sent_total"):
        assert name in m


@pytest.mark.hub_settings(keepalive_seconds=0.2)
async def test_idle_streams_get_keepalives(ctx, api, hub_url):
    await ctx.journal.create("idle", "alice", "character")
    stream = await api("alice").stream("/api/v1/sse/jobs/character/idle")
    for _ in range(3):
        await stream.frame()
    assert await stream.comment() == "keepalive"
    # The stream is still live after keepalives.
    await ctx.journal.update("idle", "alice", "character", status="active", progress=1)
    assert (await stream.frame()).data["progress"] == 1
    stream.close()
    assert (await scrape(hub_url))["hub_keepalives_sent_total"] >= 1.0


async def test_workers_expose_job_metrics(ctx, api, settings, worker):
    port = free_port()
    worker("tests.flaky_actors", HUB_WORKER_METRICS_PORT=str(port))
    alice = api("alice")
    job_id = await alice.create_character("Mo")
    await (await alice.stream(f"/api/v1/sse/jobs/character/{job_id}")).frames_until_end()
    await ctx.journal.create("doomed", "alice", "character")
    doomed = await alice.stream("/api/v1/sse/jobs/character/doomed")
    enqueue_job(settings, "always_fails", "doomed", "alice")
    await doomed.frames_until_end()

    def worker_metrics() -> dict[str, object] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
                m = parse(answer.read().decode())
        except (urllib.error.URLError, OSError):
            return None
        return m if m.get("hub_worker_jobs_failed_total actor=always_fails") == 1.0 else None

    m = await eventually(worker_metrics, timeout=20)
    assert m["hub_worker_jobs_started_total actor=create_character"] == 1.0
    assert m["hub_worker_jobs_completed_total actor=create_character"] == 1.0
    assert m["hub_worker_jobs_started_total actor=always_fails"] == 3.0
    assert m["hub_worker_jobs_retried_total actor=always_fails"] == 2.0
    assert m["hub_worker_job_duration_seconds_count actor=create_character"] == 1.0
    assert m["hub_worker_events_published_total status=active"] >= 5.0
    assert m["hub_worker_events_published_total status=completed"] == 1.0
    assert m["hub_worker_events_published_total status=failed"] == 1.0
