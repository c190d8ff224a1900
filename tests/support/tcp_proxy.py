"""A TCP forwarder between a client and the hub that a test can break on
purpose: cut every open connection (as a network drop or a proxy restart
would), hold new connections back for a while, or stall open ones so that
they go silent without closing (a dead peer). It keeps listening throughout,
so a client can always reconnect.

It runs its own asyncio loop in a daemon thread, so blocking clients in the
test's thread and subprocesses can both use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

_READ_SIZE = 64 * 1024
_CALL_TIMEOUT = 10.0


@dataclass(eq=False)
class _Link:
    """One client connection and, once made, its connection to the target."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    stalled: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        # abort() rather than close(): a reset, with nothing flushed, as when
        # a connection really breaks.
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self._target = (target_host, target_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._gate: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        #: Connections accepted since the start: a client's reconnects show here.
        self.accepted = 0
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._start)
        return self

    def cut(self, *, hold: bool = False) -> int:
        """Resets every open connection; returns how many there were. With
        `hold`, connections made from now on wait until release(), so a test
        knows that whatever it does meanwhile happens while the client is
        disconnected."""
        return self._call(lambda: self._cut(hold))

    def release(self) -> None:
        self._call(self._release)

    def retarget(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        """Connections made from now on go to another server (a failover
        behind one address); open ones stay where they are until cut()."""
        self._target = (target_host, target_port)

    def stall(self) -> int:
        """Open connections stop forwarding in both directions but stay open:
        the client hears nothing more, not even a close. New connections work."""
        return self._call(self._stall)

    @property
    def open_connections(self) -> int:
        return self._call(self._count)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._stop)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_CALL_TIMEOUT)
        self._loop.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _call(self, make: Callable[[], Awaitable[T]]) -> T:
        """Runs a coroutine on the proxy's loop and waits for its result."""

        async def run() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(_CALL_TIMEOUT)

    async def _start(self) -> None:
        self._gate = asyncio.Event()
        self._gate.set()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _cut(self, hold: bool) -> int:
        assert self._gate is not None
        if hold:
            self._gate.clear()
        links = list(self._links)
        for link in links:
            link.abort()
        return len(links)

    async def _release(self) -> None:
        assert self._gate is not None
        self._gate.set()

    async def _stall(self) -> int:
        for link in self._links:
            link.stalled = True
        return len(self._links)

    async def _count(self) -> int:
        return len(self._links)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.abort()
        if self._gate is not None:
            self._gate.set()
        # Let every connection's handler finish before the loop stops under it.
        others = self._handlers - {asyncio.current_task()}
        if others:
            await asyncio.wait(others, timeout=_CALL_TIMEOUT / 2)

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
            handler.add_done_callback(self._handlers.discard)
        link = _Link(client_writer)
        self._links.add(link)
        try:
            assert self._gate is not None
            await self._gate.wait()
            if client_writer.transport.is_closing():
                return
            upstream_reader, link.upstream = await asyncio.open_connection(*self._target)
            await self._pump_both(link, client_reader, upstream_reader)
        except OSError:
            pass
        finally:
            self._links.discard(link)
            link.abort()

    async def _pump_both(
        self, link: _Link, client_reader: asyncio.StreamReader, upstream_reader: asyncio.StreamReader
    ) -> None:
        assert link.upstream is not None
        link.tasks = [
            asyncio.create_task(_pump(link, client_reader, link.upstream)),
            asyncio.create_task(_pump(link, upstream_reader, link.client)),
        ]
        # When either side is done, the connection is over for both.
        await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in link.tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*link.tasks, return_exceptions=True)


async def _pump(link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(_READ_SIZE):
            if link.stalled:
                continue  # swallowed: the other side hears nothing
            writer.write(data)
            await writer.drain()
