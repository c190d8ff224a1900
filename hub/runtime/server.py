"""Runs the web server (`hub serve`) until SIGTERM, then drains it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time

from redis import Redis as BlockingRedis
from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream

from hub.errors import ConfigError
from hub.runtime import collector
from hub.runtime.ports import listen_error
from hub.store.journal import Journal
from hub.store.registry import Registry
from hub.store.settings import Settings
from hub.store.stalls import StallWatcher
from hub.web.app import REDIS_SOCKET_TIMEOUT, build_context, connect_redis, make_app
from hub.web.dispatch import JobDispatcher

log = logging.getLogger("hub.runtime.server")

MAX_BODY_BYTES = 1024 * 1024
#: Headers up to this size are read (and above 16 KiB refused with JSON);
#: larger ones make the server drop the connection.
MAX_HEADER_BYTES = 64 * 1024
#: Connections the kernel queues before the hub accepts them: a reconnect
#: storm of thousands would otherwise see dropped SYNs and retry for seconds.
LISTEN_BACKLOG = 4096
#: On SIGTERM, open connections get this long to end before they are cut.
DRAIN_SECONDS = 10.0


class HubHTTPServer(HTTPServer):
    """Drops a connection whose sent data the client's machine has not
    acknowledged for `dead_client_ms`: a client that vanished without a FIN
    would otherwise hold its slot until TCP gives up, minutes later."""

    dead_client_ms = 30_000

    def handle_stream(self, stream: IOStream, address: tuple[str, int]) -> None:
        with contextlib.suppress(OSError, AttributeError):
            stream.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, self.dead_client_ms)
        super().handle_stream(stream, address)


async def serve(settings: Settings, *, dev_tokens: bool = False, job_types: Registry | None = None) -> None:
    if not settings.redis_url:
        raise ConfigError("hub serve needs HUB_REDIS_URL (hub up starts an embedded Redis for you)")
    redis = connect_redis(settings.redis_url)
    dispatcher = JobDispatcher(settings)
    ctx = build_context(settings, redis, dispatcher, job_types)
    server = HubHTTPServer(
        make_app(ctx, dev_tokens=dev_tokens),
        xheaders=settings.trust_proxy_headers,
        max_body_size=MAX_BODY_BYTES,
        max_header_size=MAX_HEADER_BYTES,
        # Bounds a slowloris: headers (and idle keep-alive) and body in time.
        idle_connection_timeout=settings.request_timeout_seconds,
        body_timeout=settings.request_timeout_seconds,
    )
    server.dead_client_ms = int(settings.dead_client_seconds * 1000)
    try:
        server.listen(settings.port, settings.host, backlog=LISTEN_BACKLOG)
    except OSError as exc:
        raise listen_error(settings.host, settings.port, exc) from None
    await ctx.start()
    stalls, stalls_redis = watch_stalls(settings, ctx.job_types)
    collector.settle()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("listening on http://%s:%d/", settings.host, settings.port)
    await stop.wait()

    ctx.draining = True
    await asyncio.to_thread(stalls.stop)
    stalls_redis.close()
    log.info("draining %d connection(s)", ctx.connections.total)
    server.stop()
    await ctx.bus.close()  # ends every stream and held poll; clients resume elsewhere
    deadline = time.monotonic() + DRAIN_SECONDS
    while ctx.connections.total and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    try:
        await asyncio.wait_for(server.close_all_connections(), DRAIN_SECONDS)
    except TimeoutError:
        log.warning("some connections did not close in time")
    await ctx.close()
    dispatcher.close()
    await redis.aclose()
    log.info("stopped")


def watch_stalls(settings: Settings, job_types: Registry) -> tuple[StallWatcher, BlockingRedis]:
    """Starts failing stalled jobs (in a thread, with a client of its own).
    The workers do it too, but an external job may have no worker at all:
    its publisher is the app's own."""
    client = BlockingRedis.from_url(
        settings.redis_url or "", socket_timeout=REDIS_SOCKET_TIMEOUT, socket_connect_timeout=REDIS_SOCKET_TIMEOUT
    )
    watcher = StallWatcher(
        redis=client, journal=Journal(client, settings), stall_seconds=settings.job_stall_seconds, job_types=job_types
    )
    watcher.start()
    return watcher, client
