"""Runs the web server (`hub serve`) until SIGTERM, then drains it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from tornado import httputil
from tornado.http1connection import HTTP1Connection
from tornado.httpserver import HTTPServer
from tornado.ioloop import PeriodicCallback
from tornado.iostream import IOStream

from hub.runtime import collector
from hub.runtime.accept_gate import AcceptGate, connection_cap
from hub.runtime.lingering import LingeringIOStream
from hub.runtime.ports import listen_error
from hub.runtime.request_guard import RequestGuard
from hub.store import topology
from hub.store.journal import Journal
from hub.store.registry import Registry
from hub.store.settings import Settings
from hub.store.stalls import StallWatcher
from hub.web.app import REDIS_POOL_SIZE, REDIS_SOCKET_TIMEOUT, build_context, connect_redis, make_app
from hub.web.dispatch import JobDispatcher
from hub.web.handlers.base import MAX_JSON_BODY, cors_headers
from hub.web.metrics import multiprocess_dir

log = logging.getLogger("hub.runtime.server")

#: Headers up to this size are read (and above 16 KiB refused with JSON);
#: larger ones make the server drop the connection.
MAX_HEADER_BYTES = 64 * 1024
#: Reads from a client (and the pieces a body is handed over in).
READ_CHUNK_BYTES = 16 * 1024
#: Connections the kernel queues before the hub accepts them: a reconnect
#: storm of thousands would otherwise see dropped SYNs and retry for seconds.
LISTEN_BACKLOG = 4096
#: Files kept free for everything but client connections: Redis (the pool,
#: pub/sub, the stall watcher, the broker's connections in executor threads),
#: the listening socket, files being served, the process's own.
RESERVED_FILES = REDIS_POOL_SIZE + 64
#: On SIGTERM, open connections get this long to end before they are cut.
DRAIN_SECONDS = 10.0
#: With several processes, a scrape reaches one of them: each one updates
#: its count of pub/sub channels this often (alone, it does so when scraped).
CHANNELS_EVERY_MS = 1_000


class HubHTTPServer(HTTPServer):
    """Tornado's HTTP server, with three guards. It drops a connection whose
    sent data the client's machine has not acknowledged for `dead_client_ms`
    (a client that vanished without a FIN would otherwise hold its slot
    until TCP gives up, minutes later). It accepts at most `connection_cap`
    connections (AcceptGate). And it refuses a body it must not read from
    the request's headers (RequestGuard)."""

    dead_client_ms = 30_000
    connection_cap = 1_000_000
    file_limit = 1_000_000
    cors_origins: tuple[str, ...] = ()

    def initialize(self, *args: Any, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self._gate: AcceptGate | None = None
        #: Connections whose next request is not in yet (nothing sent, or its
        #: headers or body still on their way), longest-waiting first.
        self._idle: OrderedDict[object, LingeringIOStream] = OrderedDict()

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        if self._gate is None:
            self._gate = AcceptGate(
                limit=self.connection_cap, file_limit=self.file_limit, on_accept=self._accepted, make_room=self._evict
            )
        for sock in sockets:
            self._gate.add_socket(sock)

    def stop(self) -> None:
        if self._gate is not None:
            self._gate.close()
        super().stop()

    def _accepted(self, connection: socket.socket, address: Any) -> None:
        assert self._gate is not None
        stream = LingeringIOStream(
            connection,
            on_closed=self._gate.released,
            max_buffer_size=self.max_buffer_size,
            read_chunk_size=self.read_chunk_size,
        )
        try:
            self.handle_stream(stream, address)
        except Exception:
            log.exception("could not serve a new connection")
            stream.abandon()

    def _evict(self) -> bool:
        """Closes the connection that has waited longest for its request."""
        while self._idle:
            _, stream = self._idle.popitem(last=False)
            if not stream.closed():
                stream.abandon()
                return True
        return False

    def handle_stream(self, stream: IOStream, address: tuple[str, int]) -> None:
        with contextlib.suppress(OSError, AttributeError):
            stream.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, self.dead_client_ms)
        super().handle_stream(stream, address)

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        inner = super().start_request(server_conn, request_conn)
        assert isinstance(request_conn, HTTP1Connection)
        if isinstance(request_conn.stream, LingeringIOStream) and self._gate is not None:
            self._idle[server_conn] = request_conn.stream
            self._gate.idle_connection()
        return RequestGuard(
            inner,
            request_conn,
            max_body=MAX_JSON_BODY,
            cors=lambda origin: cors_headers(origin, self.cors_origins),
            on_received=lambda: self._busy(server_conn),
        )

    def _busy(self, server_conn: object) -> None:
        # Its request is in: from now on the application answers it. Until
        # then (headers or a body still on their way) it may make room.
        self._idle.pop(server_conn, None)

    def on_close(self, server_conn: object) -> None:
        super().on_close(server_conn)
        self._idle.pop(server_conn, None)


async def serve(
    settings: Settings, *, dev_tokens: bool = False, job_types: Registry | None = None, shared_port: bool = False
) -> None:
    """Serves until SIGTERM or SIGINT, then drains. `shared_port`: one of
    several processes on the port (hub/runtime/server_group.py), each
    binding it with SO_REUSEPORT."""
    redis = connect_redis(settings.require_redis_url())
    dispatcher = JobDispatcher(settings)
    ctx = build_context(settings, redis, dispatcher, job_types)
    server = HubHTTPServer(
        make_app(ctx, dev_tokens=dev_tokens),
        xheaders=settings.trust_proxy_headers,
        # Nothing is buffered beyond the largest body the hub takes; a larger
        # one announced by its length is refused before it is read (RequestGuard).
        max_body_size=MAX_JSON_BODY,
        max_header_size=MAX_HEADER_BYTES,
        # What one read from a client's socket takes at most (and so holds,
        # per connection, while it is handled): requests are small.
        chunk_size=READ_CHUNK_BYTES,
        # Bounds a slowloris: headers (and idle keep-alive) and body in time.
        idle_connection_timeout=settings.request_timeout_seconds,
        body_timeout=settings.request_timeout_seconds,
    )
    server.dead_client_ms = int(settings.dead_client_seconds * 1000)
    server.cors_origins = settings.cors_origins
    server.connection_cap, server.file_limit = connection_cap(RESERVED_FILES)
    if settings.max_connections > server.connection_cap:
        log.warning(
            "HUB_MAX_CONNECTIONS is %d, but the open-file limit (%d) allows %d connections: raise ulimit -n",
            settings.max_connections,
            server.file_limit,
            server.connection_cap,
        )
    try:
        server.listen(settings.port, settings.host, backlog=LISTEN_BACKLOG, reuse_port=shared_port)
    except OSError as exc:
        raise listen_error(settings.host, settings.port, exc) from None
    await ctx.start()
    stalls, stalls_redis = watch_stalls(settings, ctx.job_types)
    channels = PeriodicCallback(lambda: ctx.metrics.bus_channels.set(ctx.bus.channel_count), CHANNELS_EVERY_MS)
    if multiprocess_dir():
        channels.start()
    collector.settle()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("listening on http://%s:%d/", settings.host, settings.port)
    await stop.wait()

    ctx.draining = True
    channels.stop()
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
    await ctx.slots.close()  # the bus, the context's other half, closed first
    dispatcher.close()
    await redis.aclose()
    ctx.metrics.flush()
    log.info("stopped")


def watch_stalls(settings: Settings, job_types: Registry) -> tuple[StallWatcher, Any]:
    """Starts failing stalled jobs (in a thread, with a client of its own).
    The workers do it too, but an external job may have no worker at all:
    its publisher is the app's own."""
    client = topology.sync_client(
        settings.require_redis_url(), socket_timeout=REDIS_SOCKET_TIMEOUT, socket_connect_timeout=REDIS_SOCKET_TIMEOUT
    )
    watcher = StallWatcher(
        redis=client, journal=Journal(client, settings), stall_seconds=settings.job_stall_seconds, job_types=job_types
    )
    watcher.start()
    return watcher, client
