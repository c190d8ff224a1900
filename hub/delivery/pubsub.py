"""The event bus's connection to Redis: pub/sub only, lean on purpose.

redis-py reads each pub/sub message through a chain of coroutines, and at a
few thousand events a second that alone was the largest part of the hub's
CPU. This connection is an asyncio protocol instead: the event loop hands it
whatever the socket received, hiredis parses it in C, and every reply goes to
the bus within the same call. It speaks only what the bus needs (AUTH, PING,
SUBSCRIBE, UNSUBSCRIBE, in a cluster SSUBSCRIBE, SUNSUBSCRIBE and CLUSTER
SLOTS, in RESP2) and understands the URLs the hub takes:
`redis://[[user]:password@]host[:port][/db]`, the same with `rediss://` for
TLS (`?ssl_cert_reqs=none` to skip verification, `?ssl_ca_certs=PATH` for a
private CA, `?ssl_certfile=PATH&ssl_keyfile=PATH` for a client certificate)
and `unix://[[user]:password@]/path/to/socket`. Pub/sub ignores the database
number. A `redis+sentinel://` URL names no server but the sentinels that know
which one is primary: `resolver` asks them at every (re)connect.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

from hub.errors import ConfigError
from hub.store import topology

DEFAULT_PORT = 6379

#: Called with each reply as it is parsed: a list for pub/sub pushes, bytes
#: for a simple reply, hiredis.ReplyError for an error. May raise to drop
#: the connection.
OnReply = Callable[[Any], None]


@dataclass(frozen=True)
class Target:
    """Where the bus connects, and as whom."""

    host: str = "localhost"
    port: int = DEFAULT_PORT
    path: str | None = None
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None


def parse_url(url: str) -> Target:
    parts = urlsplit(url)
    username = unquote(parts.username) if parts.username else None
    # An empty password ("redis://:@host") is none at all, as redis-py reads it.
    password = unquote(parts.password) if parts.password else None
    if parts.scheme == "unix":
        if not parts.path:
            raise ConfigError("HUB_REDIS_URL: a unix:// URL needs the socket's path")
        return Target(path=parts.path, username=username, password=password)
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigError("HUB_REDIS_URL must start with redis://, rediss:// or unix://")
    tls = None
    if parts.scheme == "rediss":
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        tls = ssl.create_default_context(cafile=query.get("ssl_ca_certs"))
        if "ssl_certfile" in query:
            tls.load_cert_chain(query["ssl_certfile"], query.get("ssl_keyfile"))
        requirement = query.get("ssl_cert_reqs", "required").lower()
        if requirement == "none":
            tls.check_hostname = False
            tls.verify_mode = ssl.CERT_NONE
        elif requirement == "optional":
            tls.verify_mode = ssl.CERT_OPTIONAL
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ConfigError("HUB_REDIS_URL has an invalid port") from None
    return Target(host=parts.hostname or "localhost", port=port, username=username, password=password, tls=tls)


#: Where the bus connects now; asked at every (re)connect.
Resolver = Callable[[], Awaitable[Target]]


def resolver(url: str) -> Resolver:
    """The bus's target for `url`: always the same server, or whichever node
    the sentinels of a `redis+sentinel://` URL name primary (logging in with
    the URL's user and password). The URL is checked now."""
    if topology.is_sentinel_url(url):
        sentinels = topology.parse_sentinel_url(url)

        async def primary() -> Target:
            host, port = await topology.primary_address(sentinels)
            return Target(host=host, port=port, username=sentinels.username, password=sentinels.password)

        return primary
    return fixed(parse_url(url))


def fixed(target: Target) -> Resolver:
    """Always `target`."""

    async def same() -> Target:
        return target

    return same


def encode_command(*parts: str | bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        raw = part.encode() if isinstance(part, str) else part
        out.append(b"$%d\r\n%b\r\n" % (len(raw), raw))
    return b"".join(out)


class PubSubConnection(asyncio.Protocol):
    def __init__(self, on_reply: OnReply) -> None:
        self._on_reply = on_reply
        self._parser = hiredis.Reader()
        self._transport: asyncio.Transport | None = None
        #: Resolves (with the reason as its exception) when the connection ends.
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: When Redis last sent anything (time.monotonic()).
        self.last_received = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self.last_received = time.monotonic()
        try:
            self._parser.feed(data)
            while (reply := self._parser.gets()) is not False:
                self._on_reply(reply)
        except Exception as exc:  # a garbled stream, or a reply the bus will not take
            self._end(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(exc or ConnectionError("Redis closed the pub/sub connection"))

    def reply_to(self, on_reply: OnReply) -> None:
        self._on_reply = on_reply

    def send(self, *parts: str | bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise ConnectionError("the pub/sub connection is closed")
        self._transport.write(encode_command(*parts))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._end(ConnectionError("closed"))

    def _end(self, exc: BaseException) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()
        if not self.closed.done():
            self.closed.set_exception(exc)
            self.closed.exception()  # retrieved: whoever waits sees it; nobody must


async def open_pubsub(target: Target, on_reply: OnReply, timeout: float) -> PubSubConnection:
    """Connects, authenticates and checks that Redis answers; then every
    reply goes to `on_reply`."""
    loop = asyncio.get_running_loop()
    answered: asyncio.Future[None] = loop.create_future()

    def handshake(reply: Any) -> None:
        if answered.done():
            return
        if isinstance(reply, hiredis.ReplyError):
            # Redis's own words ("WRONGPASS ...", "NOAUTH ..."): never the secret.
            answered.set_exception(ConnectionError(f"Redis refused the pub/sub connection: {reply}"))
        elif reply == b"PONG":
            answered.set_result(None)

    connection = PubSubConnection(handshake)
    async with asyncio.timeout(timeout):
        if target.path is not None:
            await loop.create_unix_connection(lambda: connection, target.path)
        else:
            await loop.create_connection(lambda: connection, target.host, target.port, ssl=target.tls)
        try:
            if target.password is not None:
                credentials = (target.username, target.password) if target.username else (target.password,)
                connection.send("AUTH", *credentials)
            connection.send("PING")
            await asyncio.wait((answered, connection.closed), return_when=asyncio.FIRST_COMPLETED)
            if not answered.done():
                connection.closed.result()  # raises why it closed
            answered.result()
        except BaseException:
            connection.close()
            raise
    connection.reply_to(on_reply)
    return connection


async def ask(target: Target, *command: str, timeout: float) -> Any:
    """Sends one command on a connection of its own and returns the answer
    (ConnectionError if Redis refuses it, TimeoutError if it does not answer)."""
    answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def on_reply(reply: Any) -> None:
        if not answer.done():
            answer.set_result(reply)

    connection = await open_pubsub(target, on_reply, timeout)
    try:
        connection.send(*command)
        await asyncio.wait((answer, connection.closed), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if not answer.done():
            if connection.closed.done():
                connection.closed.result()  # raises why it closed
            raise TimeoutError(f"no answer to {command[0]}")
        reply = answer.result()
    finally:
        connection.close()
    if isinstance(reply, hiredis.ReplyError):
        raise ConnectionError(f"Redis refused {command[0]}: {reply}")
    return reply
