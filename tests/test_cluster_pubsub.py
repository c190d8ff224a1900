"""The event bus on a real Valkey Cluster (3 primaries, a replica each):
each channel is subscribed (sharded) on the primary that owns its slot, over
connections to those primaries only; a failover, a killed primary or a
migrated slot closes the subscribers of the channels that moved (they resume
from their cursor) and no others, and subscribing again works without a
restart. The cluster is started once for the module; each test picks its
nodes from the cluster as it then is."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from hub.delivery.bus import EventBus
from hub.delivery.reasons import CloseReason
from hub.store.topology import Kind, detect
from hub.store.wire import Message
from tests.support.environment import need
from tests.support.redis_cluster import LocalCluster, Node, have_cluster_binaries
from tests.support.waiting import eventually

pytestmark = pytest.mark.gen_test(timeout=90)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    need(have_cluster_binaries(), "no valkey-server/valkey-cli to build a cluster from")
    started = LocalCluster(tmp_path_factory.mktemp("cluster")).start()
    try:
        yield started
    finally:
        started.stop()


class Recorder:
    """A bus member that keeps the ids of what reaches it, and why it closed."""

    def __init__(self) -> None:
        self.ids: list[str | None] = []
        self.closed: str | None = None

    def push(self, event: Any) -> None:
        self.ids.append(event.id)

    def close(self, reason: str) -> None:
        self.closed = reason


@contextlib.asynccontextmanager
async def cluster_bus(cluster: LocalCluster) -> AsyncIterator[EventBus]:
    bus = EventBus(cluster.url, kind=detect(cluster.url))
    bus.start()
    try:
        await bus.wait_connected(10)
        yield bus
    finally:
        await bus.close()


def channels_by_primary(cluster: LocalCluster, namespace: str, per_primary: int = 1) -> dict[str, list[str]]:
    """Job channels (hash-tagged as the hub's are) whose slots belong to each
    primary, by node id."""
    primaries = cluster.primaries()
    found: dict[str, list[str]] = {node.id: [] for node in primaries}
    number = 0
    while any(len(channels) < per_primary for channels in found.values()):
        channel = f"{namespace}:{{b{number}}}:ch:job:{number}"
        owner = next(node for node in primaries if node.owns(key_slot(channel.encode())))
        if len(found[owner.id]) < per_primary:
            found[owner.id].append(channel)
        number += 1
    return found


async def publish(cluster: LocalCluster, channel: str, event_id: str) -> None:
    """SPUBLISH of an event in the hub's format, as the append script does."""
    data = json.dumps({"type": "job_update", "status": "active", "progress": 10})
    message = Message(event_id, 0.0, False, data).encode()

    def send() -> None:
        client = redis.RedisCluster.from_url(cluster.url)
        try:
            client.spublish(channel, message)
        finally:
            client.close()

    await asyncio.to_thread(send)


def bus_connections(cluster: LocalCluster, node: Node) -> int:
    """The bus's connections to `node`: clients that name no library (redis-py
    does) and are no replication link."""
    with cluster.client(node.port) as client:
        return sum(
            1 for entry in client.client_list() if not entry.get("lib-name") and not set(entry["flags"]) & {"S", "M"}
        )


async def subscribe_all(bus: EventBus, channels: list[str]) -> dict[str, Recorder]:
    members = {channel: Recorder() for channel in channels}
    for channel, member in members.items():
        await bus.subscribe(channel, member)
    return members


async def check_streaming(cluster: LocalCluster, members: dict[str, Recorder], event_id: str) -> None:
    """Each of `members` gets a new event on its channel, and is still open."""
    for channel in members:
        await publish(cluster, channel, event_id)
    await eventually(lambda: all(member.ids[-1:] == [event_id] for member in members.values()))
    assert all(member.closed is None for member in members.values())


def every_channel(channels: dict[str, list[str]]) -> list[str]:
    return [channel for found in channels.values() for channel in found]


def apart(members: dict[str, Recorder], channel: str) -> dict[str, Recorder]:
    """`members` but `channel`'s: those a fault on its node must not touch."""
    return {other: member for other, member in members.items() if other != channel}


async def one_primary_apart(
    cluster: LocalCluster, namespace: str, bus: EventBus
) -> tuple[dict[str, Recorder], Node, str, dict[str, Recorder]]:
    """A channel of each primary, subscribed; a primary with a replica to
    take over from it, its channel, and the members of the others."""
    channels = channels_by_primary(cluster, namespace)
    members = await subscribe_all(bus, every_channel(channels))
    node = with_replica(cluster)
    (channel,) = channels[node.id]
    return members, node, channel, apart(members, channel)


def with_replica(cluster: LocalCluster) -> Node:
    """A primary that has a live replica to take over from it."""
    for node in cluster.primaries():
        try:
            cluster.replica_of(node)
        except StopIteration:
            continue
        return node
    raise AssertionError("no primary has a replica left")


async def test_a_cluster_url_is_detected_and_channels_on_every_primary_get_their_events(cluster, namespace):
    assert detect(cluster.url) is Kind.CLUSTER
    primaries = cluster.primaries()
    channels = channels_by_primary(cluster, namespace, per_primary=2)
    async with cluster_bus(cluster) as bus:
        first, *others = primaries
        members = await subscribe_all(bus, channels[first.id])
        # Only the primary whose slots hold subscribed channels is connected.
        await eventually(lambda: [bus_connections(cluster, node) for node in primaries] == [1, 0, 0])
        for node in others:
            members.update(await subscribe_all(bus, channels[node.id]))
        await eventually(lambda: [bus_connections(cluster, node) for node in primaries] == [1, 1, 1])
        assert bus.connected and bus.channel_count == 6

        for number, channel in enumerate(members, start=1):
            await publish(cluster, channel, f"{number}-0")
        expected = {channel: [f"{number}-0"] for number, channel in enumerate(members, start=1)}
        await eventually(lambda: {channel: member.ids for channel, member in members.items()} == expected)

        # Leaving a channel stops its events; its primary's other channel goes on.
        left, stays = channels[first.id]
        bus.unsubscribe(left, members[left])
        await check_streaming(cluster, {stays: members[stays]}, "7-0")
        await publish(cluster, left, "8-0")
        await check_streaming(cluster, {stays: members[stays]}, "9-0")
        assert members[left].ids == ["1-0"]
    # Closing the bus closes its connections.
    await eventually(lambda: all(bus_connections(cluster, node) == 0 for node in primaries))


async def test_a_failover_closes_the_channels_of_that_primary_only_and_they_follow_it(cluster, namespace):
    async with cluster_bus(cluster) as bus:
        members, old, moved, others = await one_primary_apart(cluster, namespace, bus)

        promoted = await asyncio.to_thread(cluster.failover, old)

        await eventually(lambda: members[moved].closed == CloseReason.BUS_RESET, timeout=20)
        await check_streaming(cluster, others, "2-0")
        # The same channel again: on the new primary, without a restart.
        again = Recorder()
        await bus.subscribe(moved, again)
        await publish(cluster, moved, "3-0")
        await eventually(lambda: again.ids == ["3-0"])
        await eventually(lambda: bus_connections(cluster, promoted) == 1 and bus_connections(cluster, old) == 0)
        assert members[moved].ids == [] and bus.connected


async def test_a_killed_primary_closes_its_channels_only_and_its_replica_takes_them(cluster, namespace):
    async with cluster_bus(cluster) as bus:
        members, victim, lost, others = await one_primary_apart(cluster, namespace, bus)

        promoted = await asyncio.to_thread(cluster.kill, victim)

        # The connection died with the process: its channel's subscriber was
        # closed, the others never noticed.
        await eventually(lambda: members[lost].closed == CloseReason.BUS_RESET)
        await check_streaming(cluster, others, "2-0")
        again = Recorder()
        await bus.subscribe(lost, again)
        await publish(cluster, lost, "3-0")
        await eventually(lambda: again.ids == ["3-0"])
        await eventually(lambda: bus_connections(cluster, promoted) == 1)
        await eventually(lambda: bus.connected)


async def test_a_migrated_slot_closes_its_channel_only_and_a_stale_map_is_corrected(cluster, namespace):
    channels = channels_by_primary(cluster, namespace, per_primary=3)
    source, target, _ = cluster.primaries()
    moving, staying, unsubscribed = channels[source.id]
    async with cluster_bus(cluster) as bus:
        members = await subscribe_all(bus, [moving, staying, *channels[target.id][:1]])

        await asyncio.to_thread(cluster.migrate, [key_slot(moving.encode())], target)

        await eventually(lambda: members[moving].closed == CloseReason.BUS_RESET, timeout=20)
        others = apart(members, moving)
        await check_streaming(cluster, others, "2-0")
        again = Recorder()
        await bus.subscribe(moving, again)
        await publish(cluster, moving, "3-0")
        await eventually(lambda: again.ids == ["3-0"])

        # A slot moved while nothing of it was subscribed: the bus's map is
        # out of date, the old owner answers MOVED, and the subscription
        # follows it without failing.
        await asyncio.to_thread(cluster.migrate, [key_slot(unsubscribed.encode())], target)
        late = Recorder()
        await bus.subscribe(unsubscribed, late)
        await publish(cluster, unsubscribed, "4-0")
        await eventually(lambda: late.ids == ["4-0"])
        assert all(member.closed is None for member in others.values())


async def test_unsubscribing_everything_closes_every_node_connection(cluster, namespace):
    channels = channels_by_primary(cluster, namespace)
    primaries = cluster.primaries()
    async with cluster_bus(cluster) as bus:
        members = await subscribe_all(bus, every_channel(channels))
        await eventually(lambda: all(bus_connections(cluster, node) == 1 for node in primaries))
        for channel, member in members.items():
            bus.unsubscribe(channel, member)
        await eventually(lambda: all(bus_connections(cluster, node) == 0 for node in primaries))
        assert bus.connected and bus.channel_count == 0
        # And back: a connection is made again when a channel needs it.
        again = await subscribe_all(bus, channels[primaries[0].id])
        await check_streaming(cluster, again, "5-0")
