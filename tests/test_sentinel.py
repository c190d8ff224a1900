"""Redis Sentinel under the hub (HUB_REDIS_URL=redis+sentinel://...): every
Redis client of the hub and its workers follows the primary the sentinels
name, a demoted primary is left at once, HUB_REDIS_WAIT_REPLICAS waits for
a replica, the broker may live on another Redis (HUB_BROKER_URL), and a
failover under load costs a client a reconnect, or a `reset` where history
was lost: never a silent gap, never a duplicate.

The failover test publishes events of external jobs through the service
API, each with its sequence number in `step`, and notes which publishes
were acknowledged (200). Clients follow each job's stream and each user's
`/my` on both hubs, reconnecting with Last-Event-ID as a browser does. At
the end the new primary holds each stream's final history H. What a client
got, in order across its reconnects, must obey this rule:

- It splits into segments at each `{"type":"reset"}` (and where a fresh
  state follows updates: a new connection without a cursor). A segment
  opens with the state it starts from, its `initial_status` events, whose
  id is the point of the stream that state was taken at (its anchor); a
  client's first segment without one starts at the stream's beginning.
- In a segment, the ids of the updates strictly increase and all come after
  the anchor: nothing twice, nothing out of order.
- The updates that H holds are exactly H's entries right after the anchor,
  from the first one on, without a hole: nothing skipped silently.
- Updates H lacks were seen live before the failover lost them (so was an
  anchor H lacks). The client may have had them, but must not go on as if
  they had happened: a reset comes before its next update.
- An `initial_status` whose anchor H holds shows the job's state there (its
  last `step`): the fresh state is the real one.
- No entry of H comes in two segments, and the last segment reaches H's end.

Figures (printed): acknowledged publishes H lacks (lost), how long clients
heard nothing around the failover, and for how long publishing failed.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from hub.errors import StoreUnavailable
from hub.store import topology
from hub.store.journal import WAIT_TIMEOUT_MS, Journal
from hub.store.keys import KeySpace
from hub.store.settings import Settings
from hub.web.redis_pool import OrderedSentinelConnectionPool
from tests.support.continuity import Entry, Watch, check, follow
from tests.support.environment import need_redis_server
from tests.support.feeds import (
    Clients,
    Feed,
    create_character,
    final_histories,
    final_history,
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
from tests.support.redis_sentinel import SERVICE, SentinelSet
from tests.support.sse import Frame
from tests.support.tokens import SECRET, issue_service_token
from tests.support.waiting import eventually

pytestmark = pytest.mark.gen_test(timeout=120)

PASSWORD = "sentinel-and-data-p@ss"
FEED = "feed"
#: Events each job publishes before the primary dies, and after a new one is up.
EVENTS_BEFORE, EVENTS_AFTER = 10, 10
#: Events acknowledged while replication is cut, in the lagging-replica case.
EVENTS_UNREPLICATED = 5


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    need_redis_server()
    started = SentinelSet(tmp_path / "sentinel", password=PASSWORD).start()
    yield started
    started.stop()


def settings_on(sentinels: SentinelSet, namespace: str, **overrides: Any) -> Settings:
    return Settings(redis_url=sentinels.url(), namespace=namespace, jwt_secret=SECRET, **overrides)


def demote_primary(sentinels: SentinelSet) -> tuple[str, int]:
    """Makes the replica primary and the primary its replica by hand, and
    points the sentinels at the new one: the old primary's clients keep
    their connections (no failover told them). Returns the new address."""
    old = sentinels.primary_address()
    new = next(node.address for node in sentinels.data_nodes if node.address != old)
    with redis.Redis(*new, password=PASSWORD) as client:
        client.execute_command("REPLICAOF", "NO", "ONE")
    with redis.Redis(*old, password=PASSWORD) as client:
        client.execute_command("REPLICAOF", *new)
    for sentinel in sentinels.sentinels:
        with redis.Redis(*sentinel.address, password=PASSWORD) as client:
            client.execute_command("SENTINEL", "REMOVE", SERVICE)
            client.execute_command("SENTINEL", "MONITOR", SERVICE, *new, 2)
            client.execute_command("SENTINEL", "SET", SERVICE, "auth-pass", PASSWORD)
    assert sentinels.primary_address() == new
    return new


def names_connected(address: tuple[str, int], name: str) -> int:
    """How many connections named `name` the node at `address` has."""
    with redis.Redis(*address, password=PASSWORD) as client:
        return sum(1 for entry in client.client_list() if entry.get("name") == name)


async def test_every_client_follows_a_demoted_primary_at_its_first_readonly_answer(sentinels, namespace):
    # Given the hub's kind of asyncio client (several pooled connections)
    # and a worker's blocking client, both on the sentinel URL
    settings = settings_on(sentinels, namespace)
    hub_client = topology.async_client(
        sentinels.url(), pool_class=OrderedSentinelConnectionPool, stall_seconds=5, client_name="hub"
    )
    blocking = topology.sync_client(sentinels.url(), client_name="worker")
    hub_journal, journal = Journal(hub_client, settings), Journal(blocking, settings)
    await hub_journal.create("j1", "ann", FEED, external=True)
    journal.update("j1", "ann", FEED, status="active", step="1")
    await asyncio.gather(*(hub_client.blpop([f"{namespace}:nothing"], timeout=0.05) for _ in range(3)))
    old = sentinels.primary_address()
    assert names_connected(old, "hub") >= 3 and names_connected(old, "worker") == 1
    busy = await hub_client.connection_pool.get_connection()  # one in use throughout

    # When the primary becomes a replica behind their backs
    new = demote_primary(sentinels)

    # Then each client's next write fails (READONLY counts as a lost
    # connection), the one after lands on the new primary, and the hub's
    # pool lets go of every connection to the old one (the busy one too)
    with pytest.raises(StoreUnavailable):
        await hub_journal.update("j1", "ann", FEED, status="active", step="2")
    assert await hub_journal.update("j1", "ann", FEED, status="active", step="3")
    with pytest.raises(StoreUnavailable):
        journal.update("j1", "ann", FEED, status="active", step="4")
    assert journal.update("j1", "ann", FEED, status="active", step="5")
    await hub_client.connection_pool.release(busy)
    await asyncio.gather(*(hub_client.blpop([f"{namespace}:nothing"], timeout=0.05) for _ in range(3)))
    assert names_connected(old, "hub") == 0 and names_connected(old, "worker") == 0
    assert names_connected(new, "hub") >= 1 and names_connected(new, "worker") == 1
    with redis.Redis(*new, password=PASSWORD) as client:
        steps = [entry.data.get("step") for entry in final_history(client, KeySpace(namespace).job_events("j1"))]
    assert steps[-2:] == ["3", "5"] and "2" not in steps and "4" not in steps
    await hub_client.aclose()
    blocking.close()


def test_an_append_returns_once_a_replica_holds_it_and_stands_when_none_does(sentinels, namespace):
    # Given appends that wait for one replica
    short: list[int] = []
    client = topology.sync_client(sentinels.url())
    journal = Journal(
        client, settings_on(sentinels, namespace, redis_wait_replicas=1), on_unreplicated=lambda: short.append(1)
    )
    replica = next(node for node in sentinels.data_nodes if node.address != sentinels.primary_address())
    stream = KeySpace(namespace).job_events("j1")

    # When the replica answers, each append is on it by the time it returns
    with redis.Redis(*replica.address, password=PASSWORD) as on_replica:
        for step in range(20):
            ids = (
                journal.create("j1", "ann", FEED, external=True)
                if step == 0
                else journal.update("j1", "ann", FEED, status="active", step=str(step))
            )
            assert on_replica.xrange(stream, min=ids[0], max=ids[0]), "WAIT returned before the replica had it"
    assert short == []

    # When replication stalls, an append waits WAIT_TIMEOUT_MS, is counted as
    # unreplicated, and stands (it is recorded and published on the primary)
    sentinels.stall_replication()
    started = time.monotonic()
    ids = journal.update("j1", "ann", FEED, status="active", step="late")
    assert time.monotonic() - started >= WAIT_TIMEOUT_MS / 1000 * 0.9
    assert short == [1]
    assert client.xrange(stream, min=ids[0], max=ids[0])
    client.close()


async def test_the_broker_may_live_on_a_redis_of_its_own(sentinels, hub_process, worker, settings, token, redis_url):
    # Given a hub and a worker on the sentinel set, with the broker on a plain
    # server (and the users' queues counted apart from it)
    env = {"HUB_REDIS_URL": sentinels.url(), "HUB_BROKER_URL": redis_url, "HUB_JOBS_IN_FLIGHT_PER_USER": "1"}
    hub = hub_process(**env)
    worker(**env)

    # When a user starts a job
    job_id = await create_character(hub.url, token("ann"))

    # Then the worker takes it from the broker's server, and its events reach the user
    watch = Watch(hub.url, f"/api/v1/sse/jobs/character/{job_id}", token("ann"))
    await asyncio.wait_for(follow(watch), 30)
    last = watch.frames[-1]
    assert last is not None and last.data["status"] == "completed"
    broker_keys = f"{KeySpace(settings.namespace).dramatiq_namespace}*"
    with redis.Redis.from_url(redis_url) as plain, sentinels.primary_client() as primary:
        assert plain.keys(broker_keys) and not primary.keys(broker_keys)
        assert primary.exists(KeySpace(settings.namespace).job(job_id)) and not plain.keys(f"{settings.namespace}:*")


def test_the_rule_catches_a_gap_a_repeat_and_lost_history_without_a_reset():
    history = [Entry(f"{n}-0", {"jobId": "j", "step": str(n)}) for n in (1, 2, 3, 5, 6)]

    def frame(kind: str, n: int) -> Frame:
        return Frame({"type": kind, "jobId": "j", "step": str(n)}, f"{n}-0")

    whole = [frame("initial_status", 1), frame("job_update", 2), frame("job_update", 3)]
    assert check([*whole, frame("job_update", 5), frame("job_update", 6)], history).violations == []
    assert check([*whole, frame("job_update", 6)], history).violations, "5 was skipped"
    assert check([*whole, frame("job_update", 3), frame("job_update", 5), frame("job_update", 6)], history).violations
    assert check(whole, history).violations, "the client stopped before the end"
    # 4 was lost in a failover: a reset and a fresh state after it are right...
    reset = check([*whole, frame("job_update", 4), None, frame("initial_status", 5), frame("job_update", 6)], history)
    assert reset.violations == [] and reset.unreset == [] and reset.lost_seen == 1
    # ...going on as if it had happened is not, nor is a fresh state that is not the real one
    assert check([*whole, frame("job_update", 4), frame("job_update", 5), frame("job_update", 6)], history).unreset
    stale = [*whole, None, Frame({"type": "initial_status", "jobId": "j", "step": "2"}, "5-0"), frame("job_update", 6)]
    assert check(stale, history).violations


@dataclass(frozen=True)
class Case:
    #: Replication is cut before the kill: the failover loses what followed.
    lost_writes: bool = False
    #: Publishing stops at the kill and resumes once every client is back:
    #: clients resume from cursors newer than anything the new primary has.
    quiet_failover: bool = False
    wait_replicas: int = 0


CASES = {
    "crash": Case(),
    "lost-writes-clients-first": Case(lost_writes=True, quiet_failover=True),
    "lost-writes-under-load": Case(lost_writes=True),
    "crash-wait-1-replica": Case(wait_replicas=1),
}


@pytest.mark.hub_settings(external_job_types=(FEED,))
@pytest.mark.parametrize("name", list(CASES))
async def test_a_failover_under_load_costs_a_client_a_reconnect_never_an_event_silently(
    sentinels, hub_process, worker, settings, token, tmp_path, name
):
    case = CASES[name]
    # Given two hubs and a worker on the sentinel URL
    env = {
        "HUB_REDIS_URL": sentinels.url(),
        "HUB_SSE_RETRY_MS": "250",
        "HUB_REDIS_WAIT_REPLICAS": str(case.wait_replicas),
    }
    hubs = [hub_process(output=tmp_path / f"hub-{i}.log", **env) for i in range(2)]
    urls = [hub.url for hub in hubs]
    worker(output=tmp_path / "worker.log", HUB_REDIS_URL=sentinels.url(), HUB_JOB_STEP_SECONDS="0.3")
    service = issue_service_token(settings, "feeder")

    # and two users with two external jobs each, a third with a character job
    feeds: list[Feed] = []
    for owner in ("ann", "ann", "bob", "bob"):
        status, body = await Api(urls[0], service).post("/api/v1/jobs", {"type": FEED, "owner": owner})
        assert status == 202, body
        feeds.append(Feed(body["jobId"], owner))
    characters = [await create_character(urls[1], token("cid"))]

    # and clients on both hubs: every job's stream and each user's /my,
    # while every external job publishes an event every PUBLISH_INTERVAL
    clients = Clients()
    try:
        for feed in feeds:
            for url in urls:
                clients.jobs.append(Watch(url, f"/api/v1/sse/jobs/{FEED}/{feed.job_id}", token(feed.owner)))
        clients.jobs.append(Watch(urls[1], f"/api/v1/sse/jobs/character/{characters[0]}", token("cid")))
        clients.mine = [
            (user, Watch(url, "/api/v1/sse/jobs/my", token(user))) for user in ("ann", "bob") for url in urls
        ]
        for watch in clients.every():
            clients.follow(watch)
        publishing = [clients.start(publish(feed, urls, service, clients)) for feed in feeds]
        await eventually(lambda: all(len(f.acknowledged) >= EVENTS_BEFORE for f in feeds), timeout=30)
        if case.quiet_failover:
            # Nothing may write to the new primary before the clients are back.
            await eventually(lambda: clients.jobs[-1].ended, timeout=30)
        if case.lost_writes:
            sentinels.stall_replication()
            counts = [len(f.acknowledged) for f in feeds]
            await eventually(
                lambda: all(len(f.acknowledged) >= n + EVENTS_UNREPLICATED for f, n in zip(feeds, counts, strict=True)),
                timeout=30,
            )
        unreplicated = sum([await asyncio.to_thread(hub.metric, "hub_events_unreplicated_total") for hub in hubs])

        # When the primary dies under load and the sentinels promote the replica
        if case.quiet_failover:
            clients.publishing.clear()
        connects = [watch.connects for watch in clients.every()]
        killed_at = time.monotonic()
        old = sentinels.kill_primary()
        await asyncio.to_thread(sentinels.wait_promoted, old)
        promoted_at = time.monotonic()
        if case.quiet_failover:
            await eventually(
                lambda: all(w.connects > n or w.ended for w, n in zip(clients.every(), connects, strict=True)), 30
            )
            clients.publishing.set()
        await eventually(lambda: all(f.acknowledged_since(promoted_at) >= EVENTS_AFTER for f in feeds), timeout=30)
        characters.append(await follow_new_character(clients, urls[0], token("cid")))
        published_until = await wind_down(clients, publishing, feeds, urls, service)

        # Then every client of a job reaches its end, and every /my client
        # the end of its user's history
        keys = KeySpace(settings.namespace)
        histories = await until_every_end(clients, lambda: read_histories(sentinels, keys, clients))
    finally:
        await clients.cancel()

    # and what every client got obeys the rule (see the module's docstring)
    verdicts = verdicts_of(clients, histories)
    violations = {name: v.violations for name, v in verdicts.items() if v.violations}
    assert not violations, violations

    # and the worker followed the new primary: the job sent after the
    # failover completes; the one before it ends either way
    ends = [histories[f"/api/v1/sse/jobs/character/{job_id}"][-1].data for job_id in characters]
    assert ends[0]["status"] in TERMINAL and ends[1]["status"] == "completed", ends

    # Figures
    kept = {f.job_id: steps_of(histories[f"/api/v1/sse/jobs/{FEED}/{f.job_id}"]) for f in feeds}
    lost = sum(len(set(f.acknowledged) - kept[f.job_id]) for f in feeds)
    silences = [
        w.longest_silence(killed_at, published_until)
        for w in clients.every()
        if w.path.endswith("my") or FEED in w.path
    ]
    resets = sum(v.resets for v in verdicts.values())
    unreset = {name: v.unreset for name, v in verdicts.items() if v.unreset}
    print(
        f"\n[{name}] promoted after {promoted_at - killed_at:.1f}s; "
        f"publishing failed for {max(publish_outage(f, killed_at) for f in feeds):.1f}s; "
        f"acknowledged {sum(len(f.acknowledged) for f in feeds)}, lost {lost}, "
        f"recorded though refused {sum(len(set(f.refused) & kept[f.job_id]) for f in feeds)}, "
        f"unreplicated before the kill {unreplicated:g}; "
        f"clients silent: median {statistics.median(silences):.1f}s, max {max(silences):.1f}s; "
        f"resets {resets}; lost events clients had seen {sum(v.lost_seen for v in verdicts.values())}; "
        f"clients that went on past lost events without a reset {len(unreset)}"
    )
    assert max(silences) < 30
    if case.lost_writes:
        assert lost >= EVENTS_UNREPLICATED * len(feeds) // 2, "cut replication lost events"
    if case.quiet_failover:
        assert resets, "clients back from lost history were reset"
    if case.wait_replicas:
        assert lost <= unreplicated, "an event a replica confirmed was lost"
    assert not unreset, f"lost history without a reset: {unreset}"


def read_histories(sentinels: SentinelSet, keys: KeySpace, clients: Clients) -> dict[str, list[Entry]]:
    """Each followed stream's final history, from the new primary, by path
    (`/my of USER` for a user's)."""
    with sentinels.primary_client() as client:
        return final_histories(client, keys, clients)
