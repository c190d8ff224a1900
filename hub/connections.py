"""The connection manager: every open SSE stream and held long-poll, with
its user and transport. The one place that enforces connection limits and
keeps the connection metrics, so counts stay paired whichever way a
connection ends."""

from __future__ import annotations

from collections import Counter

from hub.errors import ServerBusy, TooManyConnections
from hub.metrics import HubMetrics

#: Seconds a refused client is told to wait before it tries again.
RETRY_AFTER_SECONDS = 5


class Lease:
    """One admitted connection. Releasing twice is harmless."""

    __slots__ = ("_manager", "released", "transport", "user")

    def __init__(self, manager: ConnectionManager, user: str, transport: str) -> None:
        self._manager = manager
        self.user = user
        self.transport = transport
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._manager._release(self)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class ConnectionManager:
    def __init__(self, *, max_per_user: int, max_total: int, metrics: HubMetrics) -> None:
        self._max_per_user = max_per_user
        self._max_total = max_total
        self._metrics = metrics
        self._per_user: Counter[str] = Counter()
        self._total = 0

    @property
    def total(self) -> int:
        return self._total

    def count(self, user: str) -> int:
        return self._per_user[user]

    def acquire(self, user: str, transport: str) -> Lease:
        if self._total >= self._max_total:
            self._metrics.connections_rejected.labels("server_limit").inc()
            raise ServerBusy(retry_after=RETRY_AFTER_SECONDS)
        if self._per_user[user] >= self._max_per_user:
            self._metrics.connections_rejected.labels("user_limit").inc()
            raise TooManyConnections(limit=self._max_per_user, retry_after=RETRY_AFTER_SECONDS)
        if self._per_user[user] == 0:
            self._metrics.users_connected.inc()
        self._per_user[user] += 1
        self._total += 1
        self._metrics.connections.labels(transport).inc()
        self._metrics.connections_opened.labels(transport).inc()
        return Lease(self, user, transport)

    def _release(self, lease: Lease) -> None:
        self._per_user[lease.user] -= 1
        if self._per_user[lease.user] <= 0:
            del self._per_user[lease.user]
            self._metrics.users_connected.dec()
        self._total -= 1
        self._metrics.connections.labels(lease.transport).dec()
