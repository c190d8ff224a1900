"""The hub on a real Valkey Cluster: `hub serve` and `hub worker` with
HUB_REDIS_URL naming one node, the Dramatiq broker on a plain server of its
own (HUB_BROKER_URL). Jobs of users whose buckets live on different
primaries run, read and publish as on one server; limits hold across
processes; stalled and held jobs are looked after in every bucket; a
failover and a slot that moves are followed without a restart.

Live delivery on a cluster needs sharded pub/sub in the event bus; these
tests read history by GET and long-poll, which the store alone serves.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from hub.runtime.embedded import free_port
from hub.store import topology, user_queues
from hub.store.buckets import BUCKETS, bucket_of, new_job_id, tag
from hub.store.journal import Journal
from hub.store.keys import KeySpace
from hub.store.settings import Settings
from hub.store.user_queues import UserQueues
from tests.support.http import Api, Response
from tests.support.processes import serve_env
from tests.support.redis_cluster import LocalCluster, Node
from tests.support.tokens import issue_service_token
from tests.support.waiting import eventually

pytestmark = pytest.mark.gen_test(timeout=90)

JOB_ID = re.compile(r"\A[0-9a-f]{32}\Z")
SERVICE = "billing"


def on_cluster(cluster: LocalCluster, broker_url: str, **extra: str) -> dict[str, str]:
    """The environment of a hub process on `cluster`, its broker apart."""
    return {"HUB_REDIS_URL": cluster.url, "HUB_BROKER_URL": broker_url, **extra}


def bucket_key(user: str) -> str:
    """A key (any) of the user's bucket."""
    return "{" + tag(bucket_of(user)) + "}"


def primary_of_user(cluster: LocalCluster, user: str) -> Node:
    return cluster.primary_of(bucket_key(user))


def one_user_per_primary(cluster: LocalCluster, prefix: str) -> list[str]:
    """A user id for each primary, whose bucket that primary serves."""
    found: dict[str, str] = {}
    for n in range(1000):
        user = f"{prefix}{n}"
        found.setdefault(primary_of_user(cluster, user).id, user)
        if len(found) == len(cluster.primaries()):
            return list(found.values())
    raise AssertionError("no user for some primary")


async def job_state(api: Api, job_id: str) -> tuple[int, Any]:
    response = await api.get(f"/api/v1/jobs/{job_id}")
    return response.status, await response.json_body()


async def finished(api: Api, job_id: str, timeout: float = 30) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        status, body = await job_state(api, job_id)
        assert status == 200, body
        return body["data"] if body["data"]["status"] in ("completed", "failed") else None

    return dict(await eventually(check, timeout=timeout, interval=0.1))


async def history(api: Api, job_type: str, job_id: str) -> list[dict[str, Any]]:
    """The job's events from the start, by long-poll."""
    response = await api.get(f"/api/v1/poll/jobs/{job_type}/{job_id}?cursor=0-0")
    assert response.status == 200
    return list((await response.json_body())["events"])


async def open_stream(api: Api) -> Response:
    stream = await api.stream("/api/v1/sse/jobs/my")
    assert stream.status == 200, await stream.body()
    await stream.frame()  # retry
    await stream.frame()  # connected
    return stream


async def test_the_buckets_spread_evenly_over_the_primaries(redis_cluster):
    # Given a cluster whose primaries own equal ranges of slots (as valkey-cli makes them)
    primaries = redis_cluster.primaries()
    # Then each holds a third of the 256 buckets, give or take one
    held = {node.id: 0 for node in primaries}
    for bucket in BUCKETS:
        slot = key_slot(("{" + tag(bucket) + "}").encode())
        held[next(node.id for node in primaries if node.owns(slot))] += 1
    assert all(abs(count - 256 / len(primaries)) <= 1 for count in held.values()), held


async def test_jobs_of_users_on_every_primary_run_and_read_as_on_one_server(
    redis_cluster, redis_url, hub_process, worker, token, namespace
):
    # Given a hub and a worker on the cluster, and a user whose bucket is on each primary
    env = on_cluster(redis_cluster, redis_url)
    hub = hub_process(**env)
    worker(**env)
    users = one_user_per_primary(redis_cluster, "ada")
    assert len(users) == 3

    # When each starts a job
    jobs = {}
    for user in users:
        status, body = await Api(hub.url, token(user)).post(
            "/api/v1/jobs", {"type": "character", "input": {"name": user}}
        )
        assert status == 202, body
        jobs[user] = body["jobId"]

    # Then each job id is the hub's 32 hex digits, opening with its owner's bucket
    for user, job_id in jobs.items():
        assert JOB_ID.match(job_id) and job_id[:2] == bucket_of(user), job_id
    # and its keys live with the owner's on the primary that serves the bucket
    keys = KeySpace(namespace, cluster=True)
    for user, job_id in jobs.items():
        with redis_cluster.client(primary_of_user(redis_cluster, user).port) as node:
            assert node.exists(keys.job(job_id), keys.user_events(user)) == 2

    # And every job runs to completion, and reads as on one server
    for user, job_id in jobs.items():
        api = Api(hub.url, token(user))
        state = await finished(api, job_id)
        assert state["status"] == "completed" and state["progress"] == 100, state
        listed = await (await api.get("/api/v1/jobs")).json_body()
        assert [job["jobId"] for job in listed["data"]] == [job_id]
        events = await history(api, "character", job_id)
        statuses = [event["status"] for event in events]
        assert statuses[0] == "queued" and statuses[-1] == "completed" and "active" in statuses, statuses
        assert [event["id"] for event in events] == sorted(event["id"] for event in events)
    # and nobody else reads them
    stranger = Api(hub.url, token("mallory"))
    assert (await job_state(stranger, jobs[users[0]]))[0] == 404


@pytest.mark.hub_settings(external_job_types=("report",))
async def test_a_service_publishes_an_external_job_and_ids_the_hub_did_not_make_are_unknown(
    redis_cluster, redis_url, hub_process, token, settings
):
    hub = hub_process(**on_cluster(redis_cluster, redis_url))
    service = Api(hub.url, issue_service_token(settings, SERVICE))
    owners = one_user_per_primary(redis_cluster, "bea")

    for owner in owners:
        # Given an external job a service created for a user
        status, created = await service.post("/api/v1/jobs", {"type": "report", "owner": owner})
        assert status == 202, created
        job_id = created["jobId"]
        # which the owner's `/my` snapshot shows while it is open
        api = Api(hub.url, token(owner))
        snapshot = await (await api.get("/api/v1/poll/jobs/my")).json_body()
        assert [(event["type"], event["jobId"]) for event in snapshot["events"]] == [("initial_status", job_id)]
        # When the service publishes its progress and its end, by the job's id alone
        for update in ({"status": "active", "progress": 40, "step": "half"}, {"status": "completed", "result": {}}):
            status, answer = await service.post(f"/api/v1/jobs/{job_id}/events", update)
            assert status == 200, answer
        # Then the owner reads the finished job and its whole history
        status, body = await job_state(api, job_id)
        assert status == 200 and body["data"]["status"] == "completed", body
        assert [event["status"] for event in await history(api, "report", job_id)] == ["queued", "active", "completed"]
        # and a publish after the end is refused as on one server
        status, answer = await service.post(f"/api/v1/jobs/{job_id}/events", {"status": "active"})
        assert (status, answer["error"]) == (409, "job_finished")

    # An id the hub did not make (an older hub's, say) names no job on a cluster
    for unknown in ("job-1", "5f2c", "0" * 32):
        status, body = await job_state(service, unknown)
        assert (status, body["error"]) == (404, "not_found"), body
        status, body = await service.post(f"/api/v1/jobs/{unknown}/events", {"status": "active"})
        assert status == 404, body


async def test_connection_and_job_rate_limits_hold_across_two_hub_processes(
    redis_cluster, redis_url, hub_process, token
):
    # Given two hub processes on the cluster, two streams and three jobs a minute per user
    env = on_cluster(
        redis_cluster,
        redis_url,
        HUB_MAX_CONNECTIONS_PER_USER="2",
        HUB_JOB_RATE_PER_MINUTE="3",
        HUB_PROCESS_TTL_SECONDS="1",
    )
    first, second = hub_process(**env), hub_process(**env)
    user = "cleo"
    on_first, on_second = Api(first.url, token(user)), Api(second.url, token(user))

    # When the user opens one stream on each, then a third on either
    streams = [await open_stream(on_first), await open_stream(on_second)]
    # Then the third is refused on both
    for api in (on_first, on_second):
        refused = await api.stream("/api/v1/sse/jobs/my")
        assert refused.status == 429
        assert await refused.json_body() == {"error": "too_many_connections", "limit": 2}
    # and another user (another bucket) is not
    other = await open_stream(Api(second.url, token("dora")))
    other.close()

    # When one stream closes, its slot is free on the other process
    streams[0].close()

    async def admitted_on_second() -> Response | None:
        stream = await on_second.stream("/api/v1/sse/jobs/my")
        return stream if stream.status == 200 else None

    streams[0] = await eventually(admitted_on_second, timeout=10, interval=0.1)

    # (the second holds both now: the first refuses a third)
    refused = await on_first.stream("/api/v1/sse/jobs/my")
    assert refused.status == 429

    # Jobs: three in any minute, across both processes
    new_job = {"type": "character", "input": {"name": "Cleo"}}
    for api in (on_first, on_first, on_second):
        status, body = await api.post("/api/v1/jobs", new_job)
        assert status == 202, body
    for api in (on_first, on_second):
        status, body = await api.post("/api/v1/jobs", new_job)
        assert (status, body["error"]) == (429, "rate_limited"), body
    for stream in streams:
        stream.close()


async def test_a_crashed_hub_process_stops_counting_against_the_limit(redis_cluster, redis_url, hub_process, token):
    # Given two hub processes, and a user holding both of its slots on the first
    env = on_cluster(redis_cluster, redis_url, HUB_MAX_CONNECTIONS_PER_USER="2", HUB_PROCESS_TTL_SECONDS="1")
    first, second = hub_process(**env), hub_process(**env)
    user = "edna"
    held = [await open_stream(Api(first.url, token(user))) for _ in range(2)]
    on_second = Api(second.url, token(user))
    assert (await on_second.stream("/api/v1/sse/jobs/my")).status == 429

    # When the first process is killed (its slots are never given back)
    first.process.kill()
    first.process.wait(10)

    # Then the second admits the user once the first's liveness has expired
    async def admitted() -> Response | None:
        stream = await on_second.stream("/api/v1/sse/jobs/my")
        return stream if stream.status == 200 else None

    stream = await eventually(admitted, timeout=10, interval=0.2)
    stream.close()
    for connection in held:
        connection.abort()


@pytest.mark.hub_settings(external_job_types=("report",))
async def test_stalled_external_jobs_fail_in_every_bucket(redis_cluster, redis_url, hub_process, token, settings):
    # Given a hub whose stall watcher fails jobs silent for a second
    hub = hub_process(**on_cluster(redis_cluster, redis_url, HUB_JOB_STALL_SECONDS="1"))
    service = Api(hub.url, issue_service_token(settings, SERVICE))
    owners = one_user_per_primary(redis_cluster, "fay")

    # When external jobs of users on every primary never hear from their publisher
    jobs = {}
    for owner in owners:
        status, created = await service.post("/api/v1/jobs", {"type": "report", "owner": owner})
        assert status == 202, created
        jobs[owner] = created["jobId"]

    # Then each fails as stalled, once
    for owner, job_id in jobs.items():
        api = Api(hub.url, token(owner))
        state = await finished(api, job_id, timeout=15)
        assert state["status"] == "failed" and state["failedReason"].startswith("stalled"), state
        statuses = [event["status"] for event in await history(api, "report", job_id)]
        assert statuses == ["queued", "failed"], statuses


async def test_held_jobs_go_to_the_workers_one_at_a_time(
    redis_cluster, redis_url, hub_process, worker, token, namespace
):
    # Given one job in flight per user, and jobs that take a while
    env = on_cluster(redis_cluster, redis_url, HUB_JOBS_IN_FLIGHT_PER_USER="1")
    hub = hub_process(**env)
    worker(**env, HUB_JOB_STEP_SECONDS="0.2")
    user = "gus"
    api = Api(hub.url, token(user))

    # When the user starts three jobs at once
    ids = []
    for n in range(3):
        status, body = await api.post("/api/v1/jobs", {"type": "character", "input": {"name": f"n{n}"}})
        assert status == 202, body
        ids.append(body["jobId"])

    # Then two of them wait in the hub, in the user's slot of the cluster
    held_key = KeySpace(namespace, cluster=True).user_held_jobs(user)
    node = redis.RedisCluster.from_url(redis_cluster.url)
    try:
        assert node.llen(held_key) == 2
    finally:
        node.close()
    # and all three run, one after the other, in order
    states = [await finished(api, job_id) for job_id in ids]
    assert [state["status"] for state in states] == ["completed"] * 3, states
    for before, after in itertools.pairwise(states):
        assert after["startedAt"] >= before["completedAt"], (before, after)


async def test_what_a_cluster_cannot_do_is_refused_at_start(redis_cluster, redis_url, settings: Settings):
    base = {**serve_env(settings, free_port()), "HUB_REDIS_URL": redis_cluster.url}
    base.pop("HUB_BROKER_URL", None)
    refusals = {
        "HUB_REDIS_URL names a Redis Cluster: set HUB_BROKER_URL": {},
        "HUB_BROKER_URL names a Redis Cluster": {"HUB_BROKER_URL": redis_cluster.url.replace("/0", "")},
        "HUB_REDIS_WAIT_REPLICAS is not supported on a Redis Cluster": {
            "HUB_BROKER_URL": redis_url,
            "HUB_REDIS_WAIT_REPLICAS": "1",
        },
    }
    for command in ("serve", "worker"):
        for message, extra in refusals.items():
            result = subprocess.run(
                [sys.executable, "-m", "hub", command],
                env={**base, **extra},
                capture_output=True,
                text=True,
                timeout=60,
            )
            print(f"\nhub {command} {extra}: exit {result.returncode}: {result.stderr.strip()}")
            assert result.returncode == 2, result.stderr
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"hub: {message}"), lines


async def test_a_failover_and_a_moved_slot_are_followed_without_a_restart(
    redis_cluster, redis_url, hub_process, worker, token
):
    # Given a hub and a worker on the cluster, and a user's finished job
    env = on_cluster(redis_cluster, redis_url)
    hub = hub_process(**env)
    worker(**env)
    user = "hal"
    api = Api(hub.url, token(user))

    async def run_one() -> str:
        status, body = await api.post("/api/v1/jobs", {"type": "character", "input": {"name": "Hal"}})
        assert status == 202, body
        assert (await finished(api, body["jobId"]))["status"] == "completed"
        return str(body["jobId"])

    done = [await run_one()]

    # When the primary of the user's bucket hands over to its replica
    old = primary_of_user(redis_cluster, user)
    new = redis_cluster.failover(old)
    assert primary_of_user(redis_cluster, user).id == new.id != old.id
    # Then the same processes run and read the user's jobs (a request during
    # the switch may get 503; none after it)
    done.append(await run_one())

    # When the bucket's slot moves to another primary, keys and all
    target = next(node for node in redis_cluster.primaries() if node.id != new.id)
    slot = key_slot(bucket_key(user).encode())
    redis_cluster.migrate([slot], target)
    assert primary_of_user(redis_cluster, user).id == target.id
    # Then they follow it there
    done.append(await run_one())
    listed = await (await api.get("/api/v1/jobs")).json_body()
    assert [job["jobId"] for job in listed["data"]] == done[::-1]


async def test_a_message_that_never_reached_the_broker_is_sent_again(redis_cluster, redis_url, namespace, monkeypatch):
    # Given a user's job handed to the broker through the user's queue
    store = topology.sync_cluster_client(redis_cluster.url)
    broker = redis.Redis.from_url(redis_url)
    try:
        settings = Settings(redis_url=redis_cluster.url, broker_url=redis_url, namespace=namespace)
        journal = Journal(store, settings)
        queues = UserQueues(store, journal.keys, 60, broker=broker)
        user, job_id, message = "ivy", new_job_id("ivy"), '{"job": 1}'
        journal.create(job_id, user, "character")
        assert queues.submit(user, job_id, "default", "m1", message, 1) == [job_id]
        queue = journal.keys.dramatiq_queue("default")
        assert broker.lrange(queue, 0, -1) == [b"m1"]

        # When its message is gone before any worker took it (its sender
        # died before sending, or the broker lost it), and the grace passed
        broker.delete(queue, queue + ".msgs")
        assert queues.release(user) == [], "not within the grace"
        monkeypatch.setattr(user_queues, "UNSENT_GRACE_SECONDS", 0)
        # Then the next look sends it again, once
        assert queues.release(user) == [job_id]
        assert broker.lrange(queue, 0, -1) == [b"m1"]
        assert broker.hget(queue + ".msgs", "m1") == message.encode()

        # And once a worker runs it, nothing is sent again, and the user is no longer swept
        journal.update(job_id, user, "character", status="active")
        broker.delete(queue, queue + ".msgs")
        assert queues.release(user) == []
        assert broker.llen(queue) == 0
        assert user.encode() not in store.smembers(journal.keys.users_with_held_jobs(journal.keys.user_bucket(user)))
    finally:
        store.close()
        broker.close()
