"""The hub's Prometheus metrics, in a registry of their own (one per app).

Labels never carry a user id or a job id: their number would grow without bound.

When several web-server processes share a port (HUB_PROCESSES), a scrape
reaches one of them but must show them all: each process then writes its
values to files in PROMETHEUS_MULTIPROC_DIR (prometheus-client's
multiprocess mode, chosen by that variable when the library is imported)
and `/metrics` adds up every process's files.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import os
import time
from collections.abc import Iterator, Sequence
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from hub.store.events import Event
from hub.store.wire import ACTIVE, COMPLETED, FAILED

TRANSPORTS = ("sse", "longpoll")
REJECT_REASONS = ("unauthorized", "forbidden", "not_found", "user_limit", "server_limit")
#: Where a job event came from: `http` is a service publishing an external job's.
EVENT_SOURCES = ("http",)
COALESCED_HELP = "Queued progress updates a newer update of the same job replaced before a slow client got them."
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


#: Where the processes of one server write their metrics (set by the parent
#: process for its children; unset: this process's own values are shown).
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: A gauge of several processes is the sum over the living ones: a process
#: that died takes its connections with it.
LIVE_SUM: Final = "livesum"


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROCESS_DIR_ENV) or None


class HubMetrics:
    """`registry` is what /metrics shows: this process's metrics, or, in
    multiprocess mode, those of every process of the server."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        shared = multiprocess_dir()
        # In multiprocess mode every value is written to this process's files
        # as it changes; the registry reads all processes' files instead.
        r = None if shared else self.registry
        if shared:
            MultiProcessCollector(self.registry, path=shared)  # type: ignore[no-untyped-call]
        self.connections = Gauge(
            "hub_connections",
            "Open SSE streams and held long-polls.",
            ["transport"],
            registry=r,
            multiprocess_mode=LIVE_SUM,
        )
        self.connections_opened = Counter("hub_connections_opened", "Connections accepted.", ["transport"], registry=r)
        self.connections_rejected = Counter(
            "hub_connections_rejected", "Connections refused, by reason.", ["reason"], registry=r
        )
        self.deliveries = SharedDeliveries() if shared else Deliveries()
        if not shared:
            self.registry.register(self.deliveries)
        self.redis_reconnects = Counter("hub_redis_reconnects", "Pub/sub reconnections to Redis.", registry=r)
        self.slow_consumers_disconnected = Counter(
            "hub_slow_consumers_disconnected", "Clients dropped because they could not keep up.", registry=r
        )
        self.keepalives = Counter("hub_keepalives_sent", "Keepalive comments written to idle streams.", registry=r)
        # Over several processes: a user connected to two of them counts twice.
        self.users_connected = Gauge(
            "hub_users_connected", "Users with at least one open connection.", registry=r, multiprocess_mode=LIVE_SUM
        )
        self.bus_channels = Gauge(
            "hub_bus_channels", "Redis pub/sub channels the process listens to.", registry=r, multiprocess_mode=LIVE_SUM
        )
        self.bus_messages = Counter("hub_bus_messages", "Pub/sub messages received from Redis.", registry=r)
        self.jobs_created = Counter("hub_jobs_created", "Jobs accepted through the API.", ["type"], registry=r)
        self.events_published = Counter(
            "hub_events_published",
            "Job events this process recorded, by source and status.",
            ["source", "status"],
            registry=r,
        )
        self.events_unreplicated = Counter(
            "hub_events_unreplicated",
            "Events fewer replicas than HUB_REDIS_WAIT_REPLICAS confirmed in time (recorded all the same).",
            registry=r,
        )
        for transport in TRANSPORTS:
            self.connections.labels(transport)
            self.connections_opened.labels(transport)
        for reason in REJECT_REASONS:
            self.connections_rejected.labels(reason)
        for source in EVENT_SOURCES:
            for status in (ACTIVE, COMPLETED, FAILED):
                self.events_published.labels(source, status)

    def flush(self) -> None:
        """Writes out what is counted but not yet written (multiprocess
        mode), as a process does before it exits."""
        if isinstance(self.deliveries, SharedDeliveries):
            self.deliveries.write()


class Deliveries(Collector):
    """Every event written to a client (and every one a slow client was
    spared: see `collapsed`), counted in plain numbers that Prometheus reads
    when it collects: a broadcast is thousands of deliveries at once, and a
    metric call with its lock for each was a quarter of the broadcast's
    time. Only the event loop's thread counts."""

    def __init__(self) -> None:
        self.delivered = dict.fromkeys(TRANSPORTS, 0)
        self.replayed = dict.fromkeys(TRANSPORTS, 0)
        self.coalesced = dict.fromkeys(TRANSPORTS, 0)
        #: `collapsed` for each transport, one function shared by all its clients.
        self.collapse_counters = {transport: functools.partial(self.collapsed, transport) for transport in TRANSPORTS}
        #: Deliveries by latency bucket (the last one: beyond the largest bound).
        self._buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self._latency_sum = 0.0
        #: Whether the counts will be written out without being asked (here:
        #: nothing is written, they are read when collected).
        self._write_scheduled = True

    def sent(self, transport: str, events: Sequence[Event], live: bool, resumed: bool) -> None:
        """Counts events a client has been sent: live ones with their delivery
        time, missed ones as replayed when the client resumed from a cursor."""
        self.delivered[transport] += len(events)
        if live:
            now = time.time()
            for event in events:
                if event.published_at is not None:
                    latency = max(0.0, now - event.published_at)
                    self._buckets[bisect.bisect_left(LATENCY_BUCKETS, latency)] += 1
                    self._latency_sum += latency
        elif resumed:
            self.replayed[transport] += len(events)
        if not self._write_scheduled:
            self._schedule_write()

    def collapsed(self, transport: str) -> None:
        """Counts one queued progress update that a newer one of the same
        job replaced before the client was sent it."""
        self.coalesced[transport] += 1
        if not self._write_scheduled:
            self._schedule_write()

    def _schedule_write(self) -> None:
        """Has the counts written out soon, where they are read from."""

    def collect(self) -> Iterator[Metric]:
        delivered = CounterMetricFamily("hub_events_delivered", "Events written to clients.", labels=["transport"])
        replayed = CounterMetricFamily(
            "hub_events_replayed", "Events sent from history on resume.", labels=["transport"]
        )
        coalesced = CounterMetricFamily("hub_events_coalesced", COALESCED_HELP, labels=["transport"])
        for transport in TRANSPORTS:
            delivered.add_metric([transport], self.delivered[transport])
            replayed.add_metric([transport], self.replayed[transport])
            coalesced.add_metric([transport], self.coalesced[transport])
        cumulative, total = [], 0
        for bound, count in zip((*map(str, LATENCY_BUCKETS), "+Inf"), self._buckets, strict=True):
            total += count
            cumulative.append((bound, total))
        yield delivered
        yield replayed
        yield coalesced
        yield HistogramMetricFamily(
            "hub_event_delivery_seconds",
            "Time from the actor's publish to the write on the socket.",
            buckets=cumulative,
            sum_value=self._latency_sum,
        )


class SharedDeliveries(Deliveries):
    """Deliveries in multiprocess mode: the same plain tallies, added to the
    process's metric files once per turn of the event loop (a fan-out's
    thousands of deliveries in one write) rather than once per delivery."""

    def __init__(self) -> None:
        super().__init__()
        self._delivered = Counter("hub_events_delivered", "Events written to clients.", ["transport"], registry=None)
        self._replayed = Counter(
            "hub_events_replayed", "Events sent from history on resume.", ["transport"], registry=None
        )
        self._coalesced = Counter("hub_events_coalesced", COALESCED_HELP, ["transport"], registry=None)
        self._latency = BatchedHistogram(
            "hub_event_delivery_seconds",
            "Time from the actor's publish to the write on the socket.",
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        for transport in TRANSPORTS:
            self._delivered.labels(transport)
            self._replayed.labels(transport)
            self._coalesced.labels(transport)
        #: What the files hold already.
        self._written_delivered = dict.fromkeys(TRANSPORTS, 0)
        self._written_replayed = dict.fromkeys(TRANSPORTS, 0)
        self._written_coalesced = dict.fromkeys(TRANSPORTS, 0)
        self._written_buckets = [0] * len(self._buckets)
        self._written_sum = 0.0
        self._write_scheduled = False

    def _schedule_write(self) -> None:
        self._write_scheduled = True
        try:
            asyncio.get_running_loop().call_soon(self.write)
        except RuntimeError:  # no event loop: at once
            self.write()

    def write(self) -> None:
        """Adds what was counted since the last write to the process's files."""
        self._write_scheduled = False
        for transport in TRANSPORTS:
            delivered = self.delivered[transport] - self._written_delivered[transport]
            if delivered:
                self._delivered.labels(transport).inc(delivered)
                self._written_delivered[transport] += delivered
            replayed = self.replayed[transport] - self._written_replayed[transport]
            if replayed:
                self._replayed.labels(transport).inc(replayed)
                self._written_replayed[transport] += replayed
            coalesced = self.coalesced[transport] - self._written_coalesced[transport]
            if coalesced:
                self._coalesced.labels(transport).inc(coalesced)
                self._written_coalesced[transport] += coalesced
        counts = [now - before for now, before in zip(self._buckets, self._written_buckets, strict=True)]
        if any(counts):
            self._latency.observe_counts(counts, self._latency_sum - self._written_sum)
            self._written_buckets = list(self._buckets)
            self._written_sum = self._latency_sum


class BatchedHistogram(Histogram):
    """A histogram that takes many observations at once, by bucket."""

    def observe_counts(self, counts: Sequence[int], total: float) -> None:
        """Adds `counts[i]` observations to the i-th bucket (the last: beyond
        the largest bound) and `total` to their sum, as that many `observe`
        calls would. prometheus-client has no public call for it; its
        buckets are kept uncumulated, one value per bucket, in both modes."""
        buckets = self._buckets
        if len(counts) != len(buckets):
            raise ValueError(f"{len(counts)} counts for {len(buckets)} buckets")
        for bucket, count in zip(buckets, counts, strict=True):
            if count:
                bucket.inc(count)
        self._sum.inc(total)
