"""How many connections a process accepts: fewer than its open-file limit.

Accepting past that limit fails with EMFILE, and the listening socket, still
readable, makes the event loop retry at once, forever: a core at 100 % and a
traceback per attempt. The gate stops listening before that (the kernel
keeps new connections in the listen backlog meanwhile), makes room by
closing the connection that has waited longest without sending a request
(a keep-alive client between requests, or one that never sends anything),
and says so in the log once per interval, not once per connection.
"""

from __future__ import annotations

import logging
import resource
import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from tornado.ioloop import IOLoop

from hub.errors import ConfigError

log = logging.getLogger("hub.runtime.accept")

#: Connections accepted per wake-up, so that serving them gets the loop too.
ACCEPT_BATCH = 32
#: After an accept failed for want of a file (or memory), the next try waits this long.
RETRY_SECONDS = 0.5
#: The log says how things stand at most this often.
LOG_INTERVAL_SECONDS = 10.0
#: Fewer connections than this is not a server.
MIN_CONNECTIONS = 16
#: The soft limit is raised towards the hard one, but no further than this.
MAX_FILE_LIMIT = 1 << 20


def connection_cap(reserved: int) -> tuple[int, int]:
    """The connections a process may accept, and its open-file limit, which
    is first raised to the hard limit (as Go and nginx let one do): every
    open connection is a file. `reserved` files stay free for everything
    else (Redis connections, the listening socket, files it serves)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MAX_FILE_LIMIT if hard == resource.RLIM_INFINITY else min(hard, MAX_FILE_LIMIT)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass  # kept as it was
    limit = MAX_FILE_LIMIT if soft == resource.RLIM_INFINITY else soft
    cap = limit - reserved
    if cap < MIN_CONNECTIONS:
        raise ConfigError(
            f"the open-file limit (ulimit -n) is {limit}: the hub keeps {reserved} files for Redis and"
            f" itself, and needs room for {MIN_CONNECTIONS} connections at least;"
            f" raise it to {reserved + MIN_CONNECTIONS} or more"
        )
    return cap, limit


class AcceptGate:
    """Accepts connections on listening sockets while fewer than `limit` are
    open. `make_room` closes one idle connection, if there is one (True);
    `released` must be called whenever an accepted connection's socket is
    really closed."""

    def __init__(
        self,
        *,
        limit: int,
        file_limit: int,
        on_accept: Callable[[socket.socket, Any], None],
        make_room: Callable[[], bool],
    ) -> None:
        self.limit = limit
        self.file_limit = file_limit
        self.open = 0
        self._on_accept = on_accept
        self._make_room = make_room
        self._loop = IOLoop.current()
        self._sockets: list[socket.socket] = []
        self._listening = False
        self._full = False
        self._retry: object | None = None
        self._closed = False
        self._events: Counter[str] = Counter()
        self._logged_at = float("-inf")
        self._report: object | None = None

    def add_socket(self, sock: socket.socket) -> None:
        self._sockets.append(sock)
        if not (self._full or self._retry is not None or self._closed):
            self._loop.add_handler(sock, self._accept, IOLoop.READ)
            self._listening = True

    def close(self) -> None:
        """Stops accepting for good and closes the listening sockets."""
        self._listen(False)
        self._closed = True
        for timer in (self._retry, self._report):
            if timer is not None:
                self._loop.remove_timeout(timer)
        for sock in self._sockets:
            sock.close()
        self._sockets = []

    def released(self) -> None:
        self.open -= 1
        if self._full and self.open < self.limit:
            self._resume()

    def idle_connection(self) -> None:
        """A connection now waits for a request: one more that can make room."""
        if self._full:
            self._resume()

    def _accept(self, sock: socket.socket, _events: int) -> None:
        for _ in range(ACCEPT_BATCH):
            if self.open >= self.limit:
                if not self._make_room():
                    self._pause_while_full()
                    return
                self._note("idle connection(s) closed to make room")
            try:
                connection, address = sock.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                # EMFILE, ENFILE, ENOBUFS, ENOMEM: this process (or the
                # machine) is out of something; retrying at once would spin.
                self._pause_after_error(exc)
                return
            self.open += 1
            self._on_accept(connection, address)

    def _pause_while_full(self) -> None:
        self._full = True
        self._listen(False)
        self._note("pause(s) with every connection busy (new ones waited in the listen backlog)")

    def _pause_after_error(self, exc: OSError) -> None:
        self._listen(False)
        self._note(f"failed accept(s) ({exc.strerror or exc})")
        if self._retry is None:
            self._retry = self._loop.call_later(RETRY_SECONDS, self._resume)

    def _resume(self) -> None:
        self._full = False
        self._retry = None
        if not self._closed:
            self._listen(True)

    def _listen(self, on: bool) -> None:
        if on == self._listening:
            return
        for sock in self._sockets:
            if on:
                self._loop.add_handler(sock, self._accept, IOLoop.READ)
            else:
                self._loop.remove_handler(sock)
        self._listening = on

    def _note(self, event: str) -> None:
        # Counted, and reported together at most once per interval: a flood
        # must not become a flood of log lines.
        self._events[event] += 1
        if self._report is None:
            delay = max(0.0, self._logged_at + LOG_INTERVAL_SECONDS - time.monotonic())
            self._report = self._loop.call_later(delay, self._log)

    def _log(self) -> None:
        self._report = None
        happened = ", ".join(f"{count} {event}" for event, count in self._events.items())
        log.warning(
            "at the connection cap (%d of %d open, open-file limit %d): %s since this was last logged."
            " If this is load rather than an attack, raise the open-file limit (ulimit -n) or add processes",
            self.open,
            self.limit,
            self.file_limit,
            happened,
        )
        self._events.clear()
        self._logged_at = time.monotonic()
