"""The bus's connection to Redis pub/sub, kept alive.

It subscribes and unsubscribes channels, hands every message over as soon
as it is parsed, and reconnects when the connection is lost. A connection
may die without a word, so liveness is checked with pings: no answer within
one interval counts as a loss. A loss drops every subscription, so the
owner is told (`on_lost`) and subscribes again what it still needs. Where
to connect is asked anew each time (after a failover: the new primary).

In a cluster (`sharded=True`) one link is one connection to one node, for
sharded pub/sub (SSUBSCRIBE): it is not replaced when lost (the node may be
gone; `ShardedLinks` decides where to go next), channels asked for before
it is up are subscribed once it is, and the node may refuse a subscription
(its slot is elsewhere) or drop one it held (its slot moved away, or the
node became a replica): the owner hears of each such channel.
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

from hub.delivery.pubsub import PubSubConnection, Resolver, open_pubsub
from hub.errors import StoreUnavailable

log = logging.getLogger("hub.delivery.link")

#: Seconds between pings on an idle pub/sub connection.
DEFAULT_PING_INTERVAL = 2.0
#: Seconds to wait for Redis to confirm a subscription.
SUBSCRIBE_TIMEOUT = 5.0
RECONNECT_DELAY_MIN = 0.05
RECONNECT_DELAY_MAX = 5.0

#: Told which channels are gone: None for the connection and everything on
#: it, else the channels the server dropped (sharded links only).
OnLost = Callable[[tuple[str, ...] | None], None]

#: What follows each SUNSUBSCRIBE on a sharded link (as `PING <this>`): its
#: answer closes that unsubscription, whatever came before it (see
#: `_on_sharded_reply`).
_UNSUBSCRIBED_MARK = b"hub:unsubscribed"
_SUBSCRIBE, _UNSUBSCRIBE = "s", "u"


class LinkLost(StoreUnavailable):
    """The pub/sub connection was lost or replaced; its subscriptions are gone."""


class SubscriptionRefused(LinkLost):
    """The node answered a subscription with an error (e.g. `MOVED ...`)."""

    def __init__(self, error: str) -> None:
        super().__init__(f"Redis refused the subscription: {error}")
        #: Redis's own words.
        self.error = error


class PubSubLink:
    def __init__(
        self,
        resolve: Resolver,
        *,
        on_message: Callable[[str, bytes], None],
        on_lost: OnLost,
        on_reconnect: Callable[[], None],
        ping_interval: float = DEFAULT_PING_INTERVAL,
        sharded: bool = False,
    ) -> None:
        self._resolve = resolve
        self._where = ""
        self._on_message = on_message
        self._on_lost = on_lost
        self._on_reconnect = on_reconnect
        self._ping_interval = ping_interval
        self._sharded = sharded
        self._on_reply = self._on_sharded_reply if sharded else self._on_plain_reply
        self._connection: PubSubConnection | None = None
        self._connected = asyncio.Event()
        # Futures waiting for Redis to confirm a SUBSCRIBE, oldest first.
        self._confirmations: dict[str, deque[asyncio.Future[None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ever_connected = False
        # Sharded only: channels asked for before the connection was up;
        # the commands sent whose answer is still to come, oldest first.
        self._queued: list[str] = []
        self._awaiting: deque[tuple[str, str]] = deque()
        self._ended = False

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pubsub-link")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._ended = True
        self._fail_confirmations()

    async def wait_connected(self, timeout: float) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    def subscribe(self, channel: str) -> asyncio.Future[None]:
        """Asks Redis for `channel`; the future resolves once Redis delivers
        its messages (LinkLost if the connection goes first)."""
        if self._sharded and not self._connected.is_set() and not self._ended:
            confirmed = asyncio.get_running_loop().create_future()
            self._queued.append(channel)
            self._confirmations.setdefault(channel, deque()).append(confirmed)
            return confirmed
        connection = self._live_connection()
        confirmed = asyncio.get_running_loop().create_future()
        try:
            self._send_subscribe(connection, channel)
        except ConnectionError as exc:
            raise LinkLost(f"cannot subscribe: {exc}") from None
        self._confirmations.setdefault(channel, deque()).append(confirmed)
        return confirmed

    def unsubscribe(self, channel: str) -> None:
        if self._sharded and channel in self._queued:
            self._queued.remove(channel)
            self._fail_first_confirmation(channel, LinkLost("unsubscribed"))
            return
        if self._connection is None or not self._connected.is_set():
            return  # the loss already dropped it
        try:
            if self._sharded:
                self._connection.send("SUNSUBSCRIBE", channel)
                self._connection.send("PING", _UNSUBSCRIBED_MARK)
                self._awaiting.append((_UNSUBSCRIBE, channel))
            else:
                self._connection.send("UNSUBSCRIBE", channel)
        except ConnectionError:  # a dead connection is noticed and replaced by _run
            log.debug("unsubscribe from %s failed", channel, exc_info=True)

    def _send_subscribe(self, connection: PubSubConnection, channel: str) -> None:
        if self._sharded:
            connection.send("SSUBSCRIBE", channel)
            self._awaiting.append((_SUBSCRIBE, channel))
        else:
            connection.send("SUBSCRIBE", channel)

    def _live_connection(self) -> PubSubConnection:
        if self._connection is None or not self._connected.is_set():
            raise LinkLost("the event bus is not connected to Redis")
        return self._connection

    async def _run(self) -> None:
        delay = RECONNECT_DELAY_MIN
        while True:
            served = False
            try:
                served = await self._serve_one_connection()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._sharded:
                    log.warning("Redis pub/sub connection to %s lost (%s)", self._where, exc.__class__.__name__)
                else:
                    log.warning("Redis pub/sub connection lost (%s); reconnecting", exc.__class__.__name__)
            if self._sharded:
                # Where to go next is the owner's decision.
                self._ended = True
            self._fail_confirmations()
            self._on_lost(None)
            if self._ended:
                return
            delay = RECONNECT_DELAY_MIN if served else min(delay * 2, RECONNECT_DELAY_MAX)
            # Jitter spreads the reconnects of many hub processes.
            await asyncio.sleep(delay * (0.5 + random.random()))

    async def _serve_one_connection(self) -> bool:
        """Connects and serves until the connection ends (raising why);
        False if it could not connect at all."""
        async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
            target = await self._resolve()
        self._where = f"{target.host}:{target.port}"
        connection = await open_pubsub(target, self._on_reply, SUBSCRIBE_TIMEOUT)
        try:
            self._connection = connection
            self._connected.set()
            if self._ever_connected:
                self._on_reconnect()
            self._ever_connected = True
            queued, self._queued = self._queued, []
            for channel in queued:
                self._send_subscribe(connection, channel)
            await self._watch(connection)
        finally:
            self._connected.clear()
            self._connection = None
            connection.close()
        return True

    async def _watch(self, connection: PubSubConnection) -> None:
        """Pings an idle connection; raises when it ends or stops answering."""
        pinged_at: float | None = None
        while not connection.closed.done():
            # Wakes only to check liveness: messages are handled as they arrive.
            await asyncio.wait({connection.closed}, timeout=self._ping_interval)
            if connection.closed.done():
                break
            if pinged_at is not None and connection.last_received < pinged_at:
                raise LinkLost("no answer to ping")
            if time.monotonic() - connection.last_received >= self._ping_interval:
                pinged_at = time.monotonic()
                connection.send("PING")
            else:
                pinged_at = None
        connection.closed.result()  # raises why the connection ended

    def _on_plain_reply(self, reply: Any) -> None:
        """One reply from Redis, as soon as it is parsed (raising drops the
        connection)."""
        if not isinstance(reply, list):
            if isinstance(reply, hiredis.ReplyError):
                raise LinkLost(f"Redis refused a pub/sub command: {reply}")
            return  # PONG, when no channel is subscribed
        kind = reply[0]
        if kind == b"message":
            self._on_message(reply[1].decode(), reply[2])
        elif kind == b"subscribe":
            self._confirm(reply[1].decode())

    def _on_sharded_reply(self, reply: Any) -> None:
        """One reply on a sharded link. Each SSUBSCRIBE is answered once, by
        its confirmation or an error. An SUNSUBSCRIBE is answered by an
        `sunsubscribe` or an error, but the node also sends `sunsubscribe`
        unasked when it drops a channel; the two cannot be told apart, so the
        mark pinged after each SUNSUBSCRIBE closes it: until then, anything
        about that channel is about its unsubscription."""
        if isinstance(reply, list):
            kind = reply[0]
            if kind == b"smessage":
                self._on_message(reply[1].decode(), reply[2])
            elif kind == b"ssubscribe":
                channel = reply[1].decode()
                if not self._awaiting or self._awaiting[0] != (_SUBSCRIBE, channel):
                    raise LinkLost("a subscription nobody asked for")
                self._awaiting.popleft()
                self._confirm(channel)
            elif kind == b"sunsubscribe":
                channel = reply[1].decode()
                if not self._awaiting or self._awaiting[0] != (_UNSUBSCRIBE, channel):
                    self._on_lost((channel,))  # the node dropped it
            elif kind == b"pong":
                self._on_pong(reply[1])
            return
        if isinstance(reply, hiredis.ReplyError):
            if not self._awaiting:
                raise LinkLost(f"Redis refused a pub/sub command: {reply}")
            command, channel = self._awaiting[0]
            if command == _SUBSCRIBE:
                self._awaiting.popleft()
                self._fail_first_confirmation(channel, SubscriptionRefused(str(reply)))
            return  # an unsubscription refused: the node holds no such channel
        self._on_pong(reply)  # "PONG", or the mark, when nothing is subscribed

    def _on_pong(self, payload: bytes) -> None:
        if payload != _UNSUBSCRIBED_MARK:
            return  # a liveness ping's
        if not self._awaiting or self._awaiting[0][0] != _UNSUBSCRIBE:
            raise LinkLost("pub/sub replies out of step")
        self._awaiting.popleft()

    def _confirm(self, channel: str) -> None:
        waiting = self._confirmations.get(channel)
        if not waiting:
            raise LinkLost("a subscription nobody asked for")
        future = waiting.popleft()
        if not waiting:
            del self._confirmations[channel]
        if not future.done():
            future.set_result(None)

    def _fail_first_confirmation(self, channel: str, error: LinkLost) -> None:
        waiting = self._confirmations.get(channel)
        if not waiting:
            return
        future = waiting.popleft()
        if not waiting:
            del self._confirmations[channel]
        if not future.done():
            future.set_exception(error)
            future.exception()  # retrieved: its subscriber may be gone

    def _fail_confirmations(self) -> None:
        for waiting in self._confirmations.values():
            for future in waiting:
                if not future.done():
                    future.set_exception(LinkLost("the pub/sub connection was lost"))
                    future.exception()  # retrieved: the subscriber may be gone
        self._confirmations.clear()
        self._queued.clear()
        self._awaiting.clear()
