"""The event bus's own Redis connection: the URLs it understands, and
authentication against a real server (with a user of its own, made for the
test, so nothing else on the shared server changes)."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest

from hub.delivery.bus import EventBus
from hub.delivery.pubsub import open_pubsub, parse_url
from hub.delivery.reasons import CloseReason
from hub.errors import ConfigError
from hub.store.wire import Message
from tests.support.metrics import sample
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import eventually

pytestmark = pytest.mark.gen_test(timeout=30)


def test_urls_the_hub_takes_are_understood():
    plain = parse_url("redis://127.0.0.1:6380/2")
    assert (plain.host, plain.port, plain.password, plain.tls) == ("127.0.0.1", 6380, None, None)
    assert parse_url("redis://redis.internal").port == 6379
    secret = parse_url("redis://app:p%40ss%3Aword@redis.internal:6379/0")
    assert (secret.username, secret.password) == ("app", "p@ss:word")
    assert parse_url("redis://:only-a-password@h").password == "only-a-password"
    assert parse_url("redis://:only-a-password@h").username is None
    assert parse_url("redis://:@h").password is None  # no AUTH at all, as redis-py reads it
    tls = parse_url("rediss://h:6390")
    assert isinstance(tls.tls, ssl.SSLContext) and tls.tls.verify_mode == ssl.CERT_REQUIRED
    unverified = parse_url("rediss://h?ssl_cert_reqs=none").tls
    assert unverified is not None and unverified.verify_mode == ssl.CERT_NONE
    optional = parse_url("rediss://h?ssl_cert_reqs=optional").tls
    assert optional is not None and optional.verify_mode == ssl.CERT_OPTIONAL and optional.check_hostname
    socket = parse_url("unix://:pw@/run/redis/redis.sock")
    assert (socket.path, socket.password) == ("/run/redis/redis.sock", "pw")
    for bad in ("http://h:6379", "redis://h:notaport", "unix://"):
        with pytest.raises(ConfigError):
            parse_url(bad)


@pytest.fixture
def bus_user(sync_redis, namespace) -> Any:
    """A Redis user allowed pub/sub and PING only, removed after the test."""
    name = f"bus-{namespace}"
    rules = ("on", ">right-password", "resetchannels", "&*", "+@pubsub", "+ping")
    sync_redis.execute_command("ACL", "SETUSER", name, *rules)
    yield name
    sync_redis.execute_command("ACL", "DELUSER", name)


async def test_a_user_with_a_password_subscribes_and_gets_messages(redis_url, bus_user, ctx, namespace):
    host_port = redis_url.split("://", 1)[1].split("/", 1)[0]
    replies: list[Any] = []
    arrived = asyncio.Event()

    def on_reply(reply: Any) -> None:
        replies.append(reply)
        arrived.set()

    target = parse_url(f"redis://{bus_user}:right-password@{host_port}/0")
    connection = await open_pubsub(target, on_reply, timeout=5)
    try:
        channel = f"{namespace}:check"
        connection.send("SUBSCRIBE", channel)
        while not any(r[0] == b"subscribe" for r in replies if isinstance(r, list)):
            arrived.clear()
            await asyncio.wait_for(arrived.wait(), 5)
        await ctx.redis.publish(channel, "hello")
        while [b"message", channel.encode(), b"hello"] not in replies:
            arrived.clear()
            await asyncio.wait_for(arrived.wait(), 5)
    finally:
        connection.close()
    assert [b"message", channel.encode(), b"hello"] in replies


async def test_a_wrong_password_is_refused_in_redis_words_without_the_password(redis_url, bus_user):
    host_port = redis_url.split("://", 1)[1].split("/", 1)[0]
    with pytest.raises(ConnectionError) as refused:
        await open_pubsub(parse_url(f"redis://{bus_user}:not-the-password@{host_port}"), lambda r: None, timeout=5)
    assert "WRONGPASS" in str(refused.value) or "invalid" in str(refused.value).lower()
    assert "not-the-password" not in str(refused.value)


async def test_a_malformed_message_on_a_hub_channel_is_dropped_and_streams_go_on(ctx, api):
    job_id = "garbled"
    await ctx.journal.create(job_id, "alice", "character")
    stream = await stream_past_its_state(api, job_id)
    reconnects = sample(ctx, "hub_redis_reconnects_total")
    # Someone else's message on the job's channel: not in the hub's format.
    await ctx.redis.publish(ctx.keys.job_channel(job_id), b"\xff not an event")
    await ctx.redis.publish(ctx.keys.job_channel(job_id), b"1-x\n0\n0\n{}")
    update_id = (await ctx.journal.update(job_id, "alice", "character", status="active", progress=10))[0].decode()
    frame = await stream.frame()
    assert frame is not None and frame.id == update_id, "the stream goes on, not reset"
    assert ctx.bus.connected and sample(ctx, "hub_redis_reconnects_total") == reconnects
    stream.close()


class Recorder:
    """A bus member that keeps what reaches it."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.closed: str | None = None

    def push(self, event: Any) -> None:
        self.events.append(event)

    def close(self, reason: str) -> None:
        self.closed = reason


async def test_a_pubsub_connection_that_goes_silent_is_noticed_and_replaced(redis_url, ctx, namespace):
    # The bus reaches Redis through a proxy that can stop forwarding without
    # closing anything: a connection dead without a word.
    port = int(redis_url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    with TcpProxy(port) as proxy:
        reconnects: list[None] = []
        bus = EventBus(f"redis://127.0.0.1:{proxy.port}/0", on_reconnect=lambda: reconnects.append(None))
        bus.start()
        try:
            await bus.wait_connected(10)
            member, channel = Recorder(), f"{namespace}:silent"
            await bus.subscribe(channel, member)
            assert proxy.stall() == 1
            # Its pings go unanswered: the bus gives up on it, tells the
            # member (which resumes from history), and connects anew.
            await eventually(lambda: member.closed == CloseReason.BUS_RESET, timeout=20)
            await eventually(lambda: bus.connected and reconnects, timeout=20)
            again = Recorder()
            await bus.subscribe(channel, again)
            await ctx.redis.publish(channel, Message("5-0", 0.0, False, '{"n":1}').encode())
            await eventually(lambda: [e.id for e in again.events] == ["5-0"])
        finally:
            await bus.close()


async def test_a_late_copy_of_an_event_the_client_has_is_not_sent_again(ctx, api):
    job_id = "twice"
    await ctx.journal.create(job_id, "alice", "character")
    stream = await stream_past_its_state(api, job_id)
    sent = (await ctx.journal.update(job_id, "alice", "character", status="active", progress=10))[0].decode()
    assert (await stream.frame()).id == sent
    # The same event again on the channel, as a late or repeated delivery would bring it.
    copy = Message(sent, 0.0, False, '{"type":"job_update","jobId":"twice","status":"active","progress":10}')
    await ctx.redis.publish(ctx.keys.job_channel(job_id), copy.encode())
    following = (await ctx.journal.update(job_id, "alice", "character", status="active", progress=20))[0].decode()
    assert (await stream.frame()).id == following, "the copy is not sent again"
    stream.close()


async def stream_past_its_state(api: Any, job_id: str) -> Any:
    """alice's stream of the job, read up to its initial state: what follows is live."""
    stream = await api("alice").stream(f"/api/v1/sse/jobs/character/{job_id}")
    first = await stream.frame()
    while first is not None and first.type != "initial_status":
        first = await stream.frame()
    return stream
