"""The process-wide event bus: one Redis pub/sub connection fans events out
to every local subscriber.

A channel is subscribed in Redis when its first local subscriber arrives and
unsubscribed when its last one leaves. `subscribe` returns only once Redis has
confirmed the subscription, so a caller that reads history afterwards cannot
miss an event published in between.

The connection (hub.delivery.pubsub) hands each message over as it is parsed, and the
bus fans it out in the same call. A connection may die without a word, so the
bus checks liveness itself with pings and treats any surprise as a reset:
every local subscriber is closed and resumes from its cursor, which history
still has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import hiredis

from hub.delivery.pubsub import PubSubConnection, open_pubsub, parse_url
from hub.delivery.subscriber import CloseReason, Subscriber
from hub.errors import StoreUnavailable
from hub.store.events import Event

log = logging.getLogger("hub.delivery.bus")

#: Seconds between pings on an idle pub/sub connection.
DEFAULT_PING_INTERVAL = 2.0
#: Seconds to wait for Redis to confirm a subscription.
SUBSCRIBE_TIMEOUT = 5.0
RECONNECT_DELAY_MIN = 0.05
RECONNECT_DELAY_MAX = 5.0


class BusReset(Exception):
    """The pub/sub connection was lost or replaced; subscriptions are gone."""


class EventBus:
    def __init__(
        self,
        redis_url: str,
        *,
        ping_interval: float = DEFAULT_PING_INTERVAL,
        on_reconnect: Callable[[], None] | None = None,
        on_event: Callable[[int], None] | None = None,
    ) -> None:
        # Parsed now, so that a URL the bus cannot use stops the hub at start.
        self._target = parse_url(redis_url)
        self._ping_interval = ping_interval
        self._on_reconnect = on_reconnect or (lambda: None)
        self._on_event = on_event or (lambda fanout: None)
        # Each channel's local subscribers: one subscriber alone (the common
        # case, a job followed by one stream) or a set of them. A set per
        # channel would cost a couple of hundred bytes per connection.
        self._channels: dict[str, Subscriber | set[Subscriber]] = {}
        # Futures waiting for Redis to confirm a SUBSCRIBE, oldest first.
        self._confirmations: dict[str, deque[asyncio.Future[None]]] = {}
        # Channels whose SUBSCRIBE Redis has not confirmed yet.
        self._ready: dict[str, asyncio.Future[None]] = {}
        self._pubsub: PubSubConnection | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ever_connected = False
        self._session_connected = False

    @property
    def channel_count(self) -> int:
        return len(self._channels)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-bus")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._reset(CloseReason.SHUTDOWN)

    async def wait_connected(self, timeout: float) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def subscribe(self, channel: str, subscriber: Subscriber) -> None:
        """Adds `subscriber` to `channel`; returns once Redis delivers to it."""
        if not self._connected.is_set() or self._pubsub is None:
            raise StoreUnavailable("event bus is not connected to Redis")
        present = self._channels.get(channel)
        if present is None:
            self._channels[channel] = subscriber
            confirmed = asyncio.get_running_loop().create_future()
            self._confirmations.setdefault(channel, deque()).append(confirmed)
            self._ready[channel] = confirmed
            try:
                self._pubsub.send("SUBSCRIBE", channel)
            except Exception as exc:
                self._discard(channel, subscriber)
                raise StoreUnavailable(f"cannot subscribe: {exc}") from None
        elif isinstance(present, set):
            present.add(subscriber)
        else:
            self._channels[channel] = {present, subscriber}
        ready = self._ready.get(channel)
        if ready is None:
            return  # confirmed long ago
        try:
            await asyncio.wait_for(asyncio.shield(ready), SUBSCRIBE_TIMEOUT)
        except (TimeoutError, BusReset):
            self._discard(channel, subscriber)
            raise StoreUnavailable("Redis did not confirm the subscription") from None
        except BaseException:  # cancelled: the caller will not unsubscribe
            self._discard(channel, subscriber)
            raise

    def unsubscribe(self, channel: str, subscriber: Subscriber) -> None:
        self._discard(channel, subscriber)

    def _discard(self, channel: str, subscriber: Subscriber) -> None:
        present = self._channels.get(channel)
        if isinstance(present, set):
            present.discard(subscriber)
            if present:
                return
        elif present is not subscriber:
            return
        del self._channels[channel]
        self._ready.pop(channel, None)
        if self._pubsub is not None and self._connected.is_set():
            try:
                self._pubsub.send("UNSUBSCRIBE", channel)
            except Exception:  # a dead connection is noticed and reset by _run
                log.debug("unsubscribe from %s failed", channel, exc_info=True)

    async def _run(self) -> None:
        delay = RECONNECT_DELAY_MIN
        while True:
            self._session_connected = False
            try:
                await self._serve_connection()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("Redis pub/sub connection lost (%s); reconnecting", exc.__class__.__name__)
            self._reset(CloseReason.BUS_RESET)
            delay = RECONNECT_DELAY_MIN if self._session_connected else min(delay * 2, RECONNECT_DELAY_MAX)
            # Jitter spreads the reconnects of many hub processes.
            await asyncio.sleep(delay * (0.5 + random.random()))

    async def _serve_connection(self) -> None:
        pubsub = await open_pubsub(self._target, self._on_reply, SUBSCRIBE_TIMEOUT)
        try:
            self._pubsub = pubsub
            self._connected.set()
            self._session_connected = True
            if self._ever_connected:
                self._on_reconnect()
            self._ever_connected = True
            pinged_at: float | None = None
            while not pubsub.closed.done():
                # Wakes only to check liveness: messages are handled as they arrive.
                await asyncio.wait({pubsub.closed}, timeout=self._ping_interval)
                if pubsub.closed.done():
                    break
                if pinged_at is not None and pubsub.last_received < pinged_at:
                    raise BusReset("no answer to ping")
                if time.monotonic() - pubsub.last_received >= self._ping_interval:
                    pinged_at = time.monotonic()
                    pubsub.send("PING")
                else:
                    pinged_at = None
            pubsub.closed.result()  # raises why the connection ended
        finally:
            self._connected.clear()
            self._pubsub = None
            pubsub.close()

    def _on_reply(self, reply: Any) -> None:
        """One reply from Redis, as soon as it is parsed (raises BusReset to
        drop the connection)."""
        if not isinstance(reply, list):
            if isinstance(reply, hiredis.ReplyError):
                raise BusReset(f"Redis refused a pub/sub command: {reply}")
            return  # PONG, when no channel is subscribed
        kind = reply[0]
        if kind == b"message":
            channel = reply[1].decode()
            present = self._channels.get(channel)
            if present is None:
                return
            try:
                event = Event.from_message(reply[2])  # parsed once for all subscribers
            except Exception:
                # Not the hub's: someone else published on its channel.
                log.warning("dropped a malformed message on %s", channel)
                return
            if isinstance(present, set):
                for subscriber in tuple(present):
                    self._push(subscriber, event)
                self._on_event(len(present))
            else:
                self._push(present, event)
                self._on_event(1)
        elif kind == b"subscribe":
            channel = reply[1].decode()
            waiting = self._confirmations.get(channel)
            if not waiting:
                raise BusReset("a subscription nobody asked for")
            future = waiting.popleft()
            if not waiting:
                del self._confirmations[channel]
            if self._ready.get(channel) is future:
                del self._ready[channel]
            if not future.done():
                future.set_result(None)

    @staticmethod
    def _push(subscriber: Subscriber, event: Event) -> None:
        """One subscriber's surprise must not reset the bus for all the others."""
        try:
            subscriber.push(event)
        except Exception:
            log.exception("delivering an event failed; that client is dropped")
            subscriber.close(CloseReason.CLIENT_GONE)

    def _reset(self, reason: str) -> None:
        for present in self._channels.values():
            for subscriber in present if isinstance(present, set) else (present,):
                subscriber.close(reason)
        self._channels.clear()
        self._ready.clear()
        for waiting in self._confirmations.values():
            for future in waiting:
                if not future.done():
                    future.set_exception(BusReset())
                    future.exception()  # mark retrieved: subscribe() may be gone
        self._confirmations.clear()
