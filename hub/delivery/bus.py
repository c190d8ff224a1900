"""The process-wide event bus: Redis pub/sub in, every local subscriber out.

A channel is subscribed in Redis when its first local subscriber arrives
and unsubscribed when its last one leaves. `subscribe` returns only once
Redis has confirmed the subscription, so a caller that reads history
afterwards cannot miss an event published in between.

Each message is parsed once and handed to the channel's subscribers within
the call that read it. When the Redis connection is lost, every subscriber
is closed: it resumes from its cursor, which history still has.

On a Redis Cluster the channels are sharded (`ShardedLinks`): a node's
connection lost, or a channel the node drops, closes the subscribers of
those channels only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from hub.delivery.channels import Channels
from hub.delivery.link import SUBSCRIBE_TIMEOUT, LinkLost, PubSubLink
from hub.delivery.pubsub import parse_url, resolver
from hub.delivery.reasons import CloseReason
from hub.delivery.shards import ShardedLinks
from hub.errors import StoreUnavailable
from hub.store.events import Event
from hub.store.topology import Kind

log = logging.getLogger("hub.delivery.bus")


class Member(Protocol):
    """What the bus needs of a subscriber."""

    def push(self, event: Event) -> None: ...

    def close(self, reason: str) -> None: ...


class Link(Protocol):
    """What the bus needs of its pub/sub: one PubSubLink, or ShardedLinks."""

    @property
    def connected(self) -> bool: ...

    def start(self) -> None: ...

    async def close(self) -> None: ...

    async def wait_connected(self, timeout: float) -> None: ...

    def subscribe(self, channel: str) -> asyncio.Future[None]: ...

    def unsubscribe(self, channel: str) -> None: ...


class EventBus:
    def __init__(
        self,
        redis_url: str,
        *,
        kind: Kind = Kind.SINGLE,
        on_reconnect: Callable[[], None] | None = None,
        on_event: Callable[[int], None] | None = None,
    ) -> None:
        self._channels: Channels[Member] = Channels()
        # Channels whose SUBSCRIBE Redis has not confirmed yet.
        self._unconfirmed: dict[str, asyncio.Future[None]] = {}
        self._on_event = on_event or (lambda fanout: None)
        # The URL is parsed now, so that one the bus cannot use stops the hub at start.
        self._link: Link
        if kind is Kind.CLUSTER:
            self._link = ShardedLinks(
                parse_url(redis_url),
                on_message=self._fan_out,
                on_lost=self._close_channels,
                on_reconnect=on_reconnect or (lambda: None),
            )
        else:
            self._link = PubSubLink(
                resolver(redis_url),
                on_message=self._fan_out,
                on_lost=lambda channels: self._close_all(CloseReason.BUS_RESET),
                on_reconnect=on_reconnect or (lambda: None),
            )

    @property
    def channel_count(self) -> int:
        return len(self._channels)

    @property
    def connected(self) -> bool:
        return self._link.connected

    def start(self) -> None:
        self._link.start()

    async def close(self) -> None:
        await self._link.close()
        self._close_all(CloseReason.SHUTDOWN)

    async def wait_connected(self, timeout: float) -> None:
        await self._link.wait_connected(timeout)

    async def subscribe(self, channel: str, member: Member) -> None:
        """Adds `member` to `channel`; returns once Redis delivers to it."""
        if self._channels.add(channel, member):
            try:
                self._unconfirmed[channel] = self._link.subscribe(channel)
            except StoreUnavailable:
                self._channels.remove(channel, member)
                raise
        confirmed = self._unconfirmed.get(channel)
        if confirmed is None:
            return  # confirmed long ago
        try:
            await asyncio.wait_for(asyncio.shield(confirmed), SUBSCRIBE_TIMEOUT)
        except (TimeoutError, LinkLost):
            self.unsubscribe(channel, member)
            raise StoreUnavailable("Redis did not confirm the subscription") from None
        except BaseException:  # cancelled: the caller will not unsubscribe
            self.unsubscribe(channel, member)
            raise
        if self._unconfirmed.get(channel) is confirmed:
            del self._unconfirmed[channel]

    def unsubscribe(self, channel: str, member: Member) -> None:
        if self._channels.remove(channel, member):
            self._unconfirmed.pop(channel, None)
            self._link.unsubscribe(channel)

    def _fan_out(self, channel: str, message: bytes) -> None:
        members = self._channels.members(channel)
        if not members:
            return
        try:
            event = Event.from_message(message)
        except Exception:
            # Not the hub's: someone else published on its channel.
            log.warning("dropped a malformed message on %s", channel)
            return
        for member in members:
            try:
                member.push(event)
            except Exception:  # one subscriber's surprise must not reach the others
                log.exception("delivering an event failed; that client is dropped")
                member.close(CloseReason.CLIENT_GONE)
        self._on_event(len(members))

    def _close_channels(self, channels: tuple[str, ...]) -> None:
        """These channels' subscriptions are gone: their subscribers resume
        from their cursor; other channels go on."""
        for channel in channels:
            self._unconfirmed.pop(channel, None)
            members = self._channels.members(channel)
            for member in members:
                self._channels.remove(channel, member)
            for member in members:
                member.close(CloseReason.BUS_RESET)

    def _close_all(self, reason: str) -> None:
        self._unconfirmed.clear()
        for member in self._channels.clear():
            member.close(reason)
