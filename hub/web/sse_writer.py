"""The SSE transport's writer, and the one place that handles a connection
taken over from Tornado (`RequestHandler.detach()`).

Once a stream's request is authenticated and its first page read, the
handler hands the connection over and is gone: what stays per client is
this writer, its subscriber and the socket. The writer sends the response
head itself, frames the body (chunked for HTTP/1.1, as is for HTTP/1.0,
where the body ends when the connection does) and ends the response as the
subscriber's close reason calls for.

Events are written straight to the socket while Tornado's buffer is empty,
which keeps their order and spares the futures and callbacks of a write
through Tornado; what the kernel does not take goes to Tornado's buffer,
and the subscriber is told when it has drained.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence

from tornado.httputil import format_timestamp
from tornado.iostream import IOStream, SSLIOStream, StreamClosedError

from hub.delivery.reasons import CloseReason
from hub.delivery.subscriber import Subscriber
from hub.store.events import KEEPALIVE_FRAME, Event, http_chunk, retry_frame

#: After a shutdown or a Redis reconnect, clients are told to come back within
#: this many ms, spread at random so that thousands do not arrive at once.
RECONNECT_SPREAD_MS = (500, 5_000)
#: A client may not send more than this once its stream has begun (it has
#: nothing to say): beyond, the connection is cut.
MAX_READ_BUFFER = 64 * 1024
#: How long the last words of a stream may take before the connection is cut.
END_SECONDS = 5.0
_LAST_CHUNK = b"0\r\n\r\n"

TOKEN_EXPIRED = Event.make(
    {"type": "token_expired", "message": "your token has expired; reconnect with a fresh one to resume"}
)


def response_head(headers: list[tuple[str, str]], chunked: bool) -> bytes:
    lines = ["HTTP/1.1 200 OK", f"Date: {format_timestamp(time.time())}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    # The connection is not reused after a stream: it ends with the stream.
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class SSEWriter:
    __slots__ = ("_chunked", "_direct", "_head", "_stream", "_subscriber", "_written")

    def __init__(
        self, stream: IOStream, *, chunked: bool, headers: list[tuple[str, str]], first: bytes, subscriber: Subscriber
    ) -> None:
        self._stream = stream
        self._chunked = chunked
        #: The response's head and the stream's first frames: `start` sends them.
        self._head: bytes | None = response_head(headers, chunked) + self._frame(first)
        #: Whether the socket can be written directly: not through TLS.
        self._direct = not isinstance(stream, SSLIOStream)
        self._subscriber = subscriber
        #: Tornado's future for the newest write it buffered, while one is pending.
        self._written: asyncio.Future[None] | None = None
        stream.max_buffer_size = MAX_READ_BUFFER
        stream.set_close_callback(self._gone)

    def start(self) -> bool:
        head, self._head = self._head or b"", None
        return self._send(head, framed=True)

    def write(self, events: Sequence[Event]) -> bool:
        if len(events) == 1:
            event = events[0]
            return self._send(event.chunk() if self._chunked else event.frame, framed=True)
        return self._send(b"".join(event.frame for event in events))

    def keepalive(self) -> None:
        self._send(KEEPALIVE_FRAME)

    def end(self, reason: str) -> None:
        if reason in (CloseReason.SLOW, CloseReason.CLIENT_GONE):
            self._stream.close()  # abort: no terminating chunk, the client sees the cut
            return
        if reason == CloseReason.TOKEN_EXPIRED:
            last = TOKEN_EXPIRED.frame
        elif reason in (CloseReason.BUS_RESET, CloseReason.SHUTDOWN):
            # Ends normally, so EventSource reconnects with its Last-Event-ID,
            # after a random delay, so thousands of clients do not come at once.
            last = retry_frame(random.randint(*RECONNECT_SPREAD_MS))
        else:
            last = b""
        data = (self._frame(last) if last else b"") + (_LAST_CHUNK if self._chunked else b"")
        if not self._send(data, framed=True) and self._written is not None:
            # Closed once the client has it, or after END_SECONDS if it never takes it.
            timer = asyncio.get_running_loop().call_later(END_SECONDS, self._stream.close)
            self._written.add_done_callback(lambda _: self._close(timer))
        else:
            self._stream.close()

    def _close(self, timer: asyncio.TimerHandle) -> None:
        timer.cancel()
        self._stream.close()

    def _frame(self, data: bytes) -> bytes:
        return http_chunk(data) if self._chunked and data else data

    def _send(self, data: bytes, framed: bool = False) -> bool:
        """Writes `data` now, or what the kernel did not take through
        Tornado's buffer: True if all of it is written."""
        stream = self._stream
        if not framed:
            data = self._frame(data)
        sent = 0
        try:
            if stream.closed():
                raise StreamClosedError()
            if self._direct and self._written is None:
                # With Tornado's buffer empty, writing past it keeps the order.
                try:
                    sent = stream.socket.send(data)
                except BlockingIOError:
                    sent = 0
            if sent == len(data):
                return True
            written = stream.write(memoryview(data)[sent:])
        except (OSError, StreamClosedError):
            self._subscriber.close(CloseReason.CLIENT_GONE)
            return True  # nothing to wait for: the subscriber is closed
        self._written = written
        written.add_done_callback(self._drained)
        return False

    def _drained(self, written: asyncio.Future[None]) -> None:
        failed = written.cancelled() or written.exception() is not None
        if written is not self._written:
            return  # an earlier write: the newest one decides
        self._written = None
        if failed:
            self._subscriber.close(CloseReason.CLIENT_GONE)
        else:
            self._subscriber.drained()

    def _gone(self) -> None:
        self._subscriber.close(CloseReason.CLIENT_GONE)
