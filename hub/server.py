"""Runs the web server (`hub serve`) until SIGTERM, then drains it."""

from __future__ import annotations

import asyncio
import logging
import signal
import time

from redis.asyncio import Redis
from tornado.httpserver import HTTPServer

from hub.app import build_context, make_app
from hub.dispatch import JobDispatcher
from hub.errors import ConfigError
from hub.settings import Settings

log = logging.getLogger("hub.server")

MAX_BODY_BYTES = 1024 * 1024
MAX_HEADER_BYTES = 16 * 1024
#: A client must send its request headers (and body) within this many seconds.
REQUEST_READ_TIMEOUT = 30.0
#: On SIGTERM, open connections get this long to end before they are cut.
DRAIN_SECONDS = 10.0
REDIS_SOCKET_TIMEOUT = 5.0


async def serve(settings: Settings, *, dev_tokens: bool = False) -> None:
    if not settings.redis_url:
        raise ConfigError("hub serve needs HUB_REDIS_URL (hub up starts an embedded Redis for you)")
    redis = Redis.from_url(
        settings.redis_url, socket_timeout=REDIS_SOCKET_TIMEOUT, socket_connect_timeout=REDIS_SOCKET_TIMEOUT
    )
    dispatcher = JobDispatcher(settings)
    ctx = build_context(settings, redis, dispatcher)
    server = HTTPServer(
        make_app(ctx, dev_tokens=dev_tokens),
        xheaders=settings.trust_proxy_headers,
        max_body_size=MAX_BODY_BYTES,
        max_header_size=MAX_HEADER_BYTES,
        idle_connection_timeout=REQUEST_READ_TIMEOUT,
        body_timeout=REQUEST_READ_TIMEOUT,
    )
    server.listen(settings.port, settings.host)
    ctx.bus.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("listening on http://%s:%d/", settings.host, settings.port)
    await stop.wait()

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
    dispatcher.close()
    await redis.aclose()
    log.info("stopped")
