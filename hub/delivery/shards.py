"""Sharded pub/sub on a Redis or Valkey Cluster: each channel is subscribed
(SSUBSCRIBE) on the primary that owns its slot, over one connection per
primary that has channels; a connection left without channels is closed.

The slot map comes from CLUSTER SLOTS, asked of any node that answers. It
is read again when a node's connection is lost, when a node refuses a
subscription as not its own (MOVED: the answer says where the slot went,
and the subscription follows it), and when a node drops a channel it held
(its slot moved away, or it became a replica). A channel lost after it was
confirmed is reported (`on_lost`): its subscribers resume from their
cursor, and the node's other channels go on. A subscription not confirmed
yet is not lost but placed again, until the bus stops waiting for it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from redis.crc import key_slot

from hub.delivery.link import DEFAULT_PING_INTERVAL, LinkLost, PubSubLink, SubscriptionRefused
from hub.delivery.pubsub import Target, ask, fixed
from hub.errors import StoreUnavailable

log = logging.getLogger("hub.delivery.shards")

Address = tuple[str, int]
SLOT_COUNT = 16384
#: Seconds a node has to answer CLUSTER SLOTS before the next one is asked.
MAP_TIMEOUT = 2.0
RETRY_DELAY_MIN = 0.05
RETRY_DELAY_MAX = 2.0
#: Redirections followed at once; beyond, the slot map is read first.
MAX_REDIRECTS = 3


@dataclass(eq=False)
class _Subscription:
    channel: str
    slot: int
    #: What the bus waits for.
    confirmed: asyncio.Future[None]
    #: The node asked for it (None: not placed, or its placement undone).
    node: Address | None = None
    #: Whether the node confirmed it (from then on, losing it is reported).
    held: bool = False
    task: asyncio.Task[None] | None = None


@dataclass(eq=False)
class _Node:
    address: Address
    link: PubSubLink
    channels: set[str] = field(default_factory=set)


class ShardedLinks:
    """The bus's pub/sub in a cluster; the same face as one PubSubLink."""

    def __init__(
        self,
        seed: Target,
        *,
        on_message: Callable[[str, bytes], None],
        on_lost: Callable[[tuple[str, ...]], None],
        on_reconnect: Callable[[], None],
        ping_interval: float = DEFAULT_PING_INTERVAL,
    ) -> None:
        self._seed = seed
        self._on_message = on_message
        self._on_lost = on_lost
        self._on_reconnect = on_reconnect
        self._ping_interval = ping_interval
        #: The owner of each slot (None while a slot has none).
        self._owners: list[Address | None] | None = None
        #: Every node the map names, replicas too: where to read it next time.
        self._addresses: list[Address] = []
        self._map_current = False
        #: Something changed since the map was read (a node lost, a channel
        #: dropped): new subscriptions wait for the next reading, so that
        #: none goes to a primary that just became a replica.
        self._map_stale = False
        self._map_known = asyncio.Event()
        self._map_wanted = asyncio.Event()
        self._map_waiters: list[asyncio.Future[None]] = []
        self._recovering = False
        self._nodes: dict[Address, _Node] = {}
        self._subscriptions: dict[str, _Subscription] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._mapper: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        """Whether the slot map is known and its last reading succeeded (a
        node whose connection is lost is dropped at once, its channels with it)."""
        return self._map_current

    def start(self) -> None:
        self._mapper = asyncio.create_task(self._keep_map(), name="cluster-slot-map")
        self._map_wanted.set()

    async def close(self) -> None:
        if self._mapper is not None:
            self._mapper.cancel()
        for subscription in self._subscriptions.values():
            self._abandon(subscription)
        self._subscriptions.clear()
        nodes, self._nodes = list(self._nodes.values()), {}
        closing = [node.link.close() for node in nodes]
        await asyncio.gather(*closing, *self._tasks, return_exceptions=True)
        if self._mapper is not None:
            await asyncio.gather(self._mapper, return_exceptions=True)
            self._mapper = None

    async def wait_connected(self, timeout: float) -> None:
        await asyncio.wait_for(self._map_known.wait(), timeout)

    def subscribe(self, channel: str) -> asyncio.Future[None]:
        """Subscribes `channel` on the primary of its slot; the future
        resolves once that node confirms it."""
        if self._owners is None:
            raise LinkLost("the event bus has not read the cluster's slot map yet")
        if channel in self._subscriptions:
            self.unsubscribe(channel)
        loop = asyncio.get_running_loop()
        subscription = _Subscription(channel, key_slot(channel.encode()), loop.create_future())
        self._subscriptions[channel] = subscription
        subscription.task = self._spawn(self._place(subscription))
        return subscription.confirmed

    def unsubscribe(self, channel: str) -> None:
        subscription = self._subscriptions.pop(channel, None)
        if subscription is None:
            return
        self._abandon(subscription)
        node = self._nodes.get(subscription.node) if subscription.node else None
        subscription.node = None
        if node is None or channel not in node.channels:
            return
        node.channels.discard(channel)
        if node.channels:
            node.link.unsubscribe(channel)
        else:
            self._retire(node)  # closing the connection unsubscribes too

    # -- placing subscriptions ------------------------------------------------

    async def _place(self, subscription: _Subscription) -> None:
        """Subscribes on the slot's owner, following redirections and
        reading the map again after a failure, until confirmed (or cancelled
        by `unsubscribe`)."""
        delay = RETRY_DELAY_MIN
        redirects = 0
        while True:
            if self._map_stale:
                await self._read_map()
            assert self._owners is not None
            address = self._owners[subscription.slot]
            elsewhere = await self._attempt(subscription, address) if address else None
            if subscription.held:
                return
            if elsewhere is not None and redirects < MAX_REDIRECTS:
                redirects += 1
                self._owners[subscription.slot] = elsewhere
                self._map_wanted.set()
                continue
            await self._read_map()
            redirects = 0
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, RETRY_DELAY_MAX)

    async def _attempt(self, subscription: _Subscription, address: Address) -> Address | None:
        """Subscribes on `address`; if the node says the slot is another's,
        returns that one."""
        if address not in self._nodes:
            # A replica takes sharded subscriptions too (and gets the
            # messages only while it replicates): a node the map may name
            # from an old view says itself whether the slot is its own.
            owner = await self._owner_by_its_own_account(address, subscription.slot)
            if owner != address:
                return owner
        node = self._node(address)
        node.channels.add(subscription.channel)
        subscription.node = address
        try:
            await node.link.subscribe(subscription.channel)
        except LinkLost as exc:
            self._leave(subscription)
            log.debug("subscribing %s on %s:%d failed: %s", subscription.channel, *address, exc)
            return _redirection(exc, address)
        if subscription.node != address:
            # The node dropped it, or its connection went, before this task
            # woke up: it is not held after all.
            return None
        subscription.held = True
        subscription.task = None
        if not subscription.confirmed.done():
            subscription.confirmed.set_result(None)
        return None

    async def _owner_by_its_own_account(self, address: Address, slot: int) -> Address | None:
        host, port = address
        try:
            reply = await ask(self._target(address), "CLUSTER", "SLOTS", timeout=MAP_TIMEOUT)
            owners, _ = _slot_map(reply, host)
        except Exception as exc:  # down, or refusing: the map is read again
            log.debug("%s:%d did not tell its slots: %s", host, port, exc)
            return None
        return owners[slot]

    def _node(self, address: Address) -> _Node:
        node = self._nodes.get(address)
        if node is None:
            link = PubSubLink(
                fixed(self._target(address)),
                on_message=self._on_message,
                on_lost=lambda channels: self._lost(created, channels),
                on_reconnect=lambda: None,
                ping_interval=self._ping_interval,
                sharded=True,
            )
            created = node = self._nodes[address] = _Node(address, link)
            link.start()
        return node

    def _target(self, address: Address) -> Target:
        """A node, reached as the URL says (TLS, user and password)."""
        host, port = address
        return replace(self._seed, host=host, port=port, path=None)

    def _leave(self, subscription: _Subscription) -> None:
        """Undoes a placement the node did not confirm."""
        node = self._nodes.get(subscription.node) if subscription.node else None
        subscription.node = None
        if node is not None:
            node.channels.discard(subscription.channel)
            if not node.channels:
                self._retire(node)

    def _lost(self, node: _Node, channels: tuple[str, ...] | None) -> None:
        """A node's connection ended (`channels` None), or the node dropped
        these channels."""
        if channels is None:
            if self._nodes.get(node.address) is node:
                del self._nodes[node.address]
            self._recovering = True
            channels = tuple(node.channels)
        gone = []
        for channel in channels:
            if channel not in node.channels:
                continue
            node.channels.discard(channel)
            subscription = self._subscriptions.get(channel)
            if subscription is None or subscription.node != node.address:
                continue
            subscription.node = None
            if subscription.held:
                del self._subscriptions[channel]
                gone.append(channel)
            # else its task finds it unplaced and places it again
        self._map_stale = True
        self._map_wanted.set()
        if not node.channels and self._nodes.get(node.address) is node:
            self._retire(node)
        if gone:
            self._on_lost(tuple(gone))

    def _retire(self, node: _Node) -> None:
        if self._nodes.get(node.address) is node:
            del self._nodes[node.address]
        self._spawn(node.link.close())

    def _abandon(self, subscription: _Subscription) -> None:
        if subscription.task is not None:
            subscription.task.cancel()
            subscription.task = None
        if not subscription.confirmed.done():
            subscription.confirmed.set_exception(LinkLost("the subscription was given up"))
            subscription.confirmed.exception()  # retrieved: nobody may wait for it any more

    def _spawn(self, work: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- the slot map ---------------------------------------------------------

    async def _read_map(self) -> None:
        """Returns after a reading of the map that began after this call."""
        done = asyncio.get_running_loop().create_future()
        self._map_waiters.append(done)
        self._map_wanted.set()
        await done

    async def _keep_map(self) -> None:
        delay = RETRY_DELAY_MIN
        while True:
            await self._map_wanted.wait()
            self._map_wanted.clear()
            waiters, self._map_waiters = self._map_waiters, []
            self._map_stale = False
            try:
                await self._load_map()
            except StoreUnavailable as exc:
                if delay == RETRY_DELAY_MIN:  # the first failure in a row
                    log.warning("cannot read the cluster's slot map (%s); retrying", exc)
                self._map_current = False
                self._recovering = True
            else:
                self._map_current = True
                self._map_known.set()
                delay = RETRY_DELAY_MIN
                if self._recovering:
                    self._recovering = False
                    self._on_reconnect()
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            if not self._map_current:
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, RETRY_DELAY_MAX)
                self._map_wanted.set()

    async def _load_map(self) -> None:
        known = [self._target(address) for address in self._addresses]
        random.shuffle(known)
        failures = []
        for target in [*known, self._seed]:
            try:
                reply = await ask(target, "CLUSTER", "SLOTS", timeout=MAP_TIMEOUT)
                owners, addresses = _slot_map(reply, target.host)
            except Exception as exc:  # a node down, refusing, or not of a cluster: ask the next
                failures.append(exc.__class__.__name__)
                continue
            if addresses:
                self._owners, self._addresses = owners, addresses
                return
        raise StoreUnavailable(f"no node of the cluster told its slots ({', '.join(failures) or 'none known'})")


def _slot_map(reply: Any, asked_host: str) -> tuple[list[Address | None], list[Address]]:
    """CLUSTER SLOTS as the owner of each slot, and every node it names.
    Each entry is [first slot, last slot, primary, replica...], each node
    [endpoint, port, id, ...]; an endpoint left empty or "?" is the host
    that was asked."""
    owners: list[Address | None] = [None] * SLOT_COUNT
    addresses: set[Address] = set()
    for first, last, primary, *replicas in reply:
        owner = _address(primary, asked_host)
        owners[int(first) : int(last) + 1] = [owner] * (int(last) - int(first) + 1)
        addresses.add(owner)
        addresses.update(_address(replica, asked_host) for replica in replicas)
    return owners, sorted(addresses)


def _address(node: list[Any], asked_host: str) -> Address:
    endpoint = node[0].decode() if isinstance(node[0], bytes) else node[0]
    return (endpoint if endpoint and endpoint != "?" else asked_host), int(node[1])


def _redirection(exc: LinkLost, asked: Address) -> Address | None:
    """Where a `MOVED <slot> <host>:<port>` refusal points, if it is one."""
    if not isinstance(exc, SubscriptionRefused):
        return None
    words = exc.error.split()
    if len(words) != 3 or words[0] != "MOVED":
        return None
    host, _, port = words[2].rpartition(":")
    try:
        return (host or asked[0]), int(port)
    except ValueError:
        return None
