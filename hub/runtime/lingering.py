"""Closing a connection without destroying the answer on its way.

A socket closed while the client is still sending (a body the hub refused)
answers the next segment with a reset, and a reset can make the client's
machine drop the answer before the client has read it. So such a socket
first sends its FIN after the answer, then reads and drops what still comes
for a moment, and only then closes: what web servers call a lingering close.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
from collections.abc import Callable
from typing import Any

from tornado.ioloop import IOLoop
from tornado.iostream import IOStream

#: How long, and how much, a closing connection is drained at most.
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024
_READ = 16 * 1024


class LingeringIOStream(IOStream):
    """An IOStream that lingers on close when the client's data is waiting
    unread (or always, after `close_gently`), and says when its socket is
    really closed (`on_closed`: the accept cap counts sockets, not streams)."""

    def __init__(self, sock: socket.socket, *, on_closed: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(sock, **kwargs)
        self._on_closed = on_closed
        self._linger: bool | None = None  # None: when data is waiting

    def close_gently(self) -> None:
        """Closes after an answer to a client that may still be sending."""
        self._linger = True
        self.close()

    def abandon(self) -> None:
        """Closes at once: nobody is owed an answer."""
        self._linger = False
        self.close()

    def close_fd(self) -> None:
        sock = self.socket
        self.socket = None  # type: ignore[assignment]
        linger = self._linger
        if linger is None:
            linger = self._read_buffer_size > 0 or _unread(sock) > 0
        if linger:
            _Lingerer(sock, self._on_closed).start()
        else:
            sock.close()
            self._on_closed()


def close_gently(stream: IOStream) -> None:
    if isinstance(stream, LingeringIOStream):
        stream.close_gently()
    else:
        stream.close()


def _unread(sock: socket.socket) -> int:
    try:
        return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0])
    except OSError:
        return 0


class _Lingerer:
    def __init__(self, sock: socket.socket, on_closed: Callable[[], None]) -> None:
        self._sock = sock
        self._on_closed = on_closed
        self._loop = IOLoop.current()
        self._dropped = 0
        self._timer: object | None = None
        self._done = False

    def start(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_WR)
            self._loop.add_handler(self._sock, self._readable, IOLoop.READ)
        except (OSError, ValueError):
            self._finish(registered=False)
            return
        self._timer = self._loop.call_later(LINGER_SECONDS, self._finish)

    def _readable(self, _sock: Any, _events: int) -> None:
        try:
            while data := self._sock.recv(_READ):
                self._dropped += len(data)
                if self._dropped >= LINGER_BYTES:
                    break
        except BlockingIOError:
            return
        except OSError:
            pass
        self._finish()  # the client closed, reset, or sent too much

    def _finish(self, registered: bool = True) -> None:
        if self._done:
            return
        self._done = True
        if self._timer is not None:
            self._loop.remove_timeout(self._timer)
        if registered:
            self._loop.remove_handler(self._sock)
        self._sock.close()
        self._on_closed()
