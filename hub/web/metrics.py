"""The hub's Prometheus metrics, in a registry of their own (one per app).

Labels never carry a user id or a job id: their number would grow without bound.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from hub.store.events import Event
from hub.store.wire import ACTIVE, COMPLETED, FAILED

TRANSPORTS = ("sse", "longpoll")
REJECT_REASONS = ("unauthorized", "forbidden", "not_found", "user_limit", "server_limit")
#: Where a job event came from: `http` is a service publishing an external job's.
EVENT_SOURCES = ("http",)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class HubMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.connections = Gauge("hub_connections", "Open SSE streams and held long-polls.", ["transport"], registry=r)
        self.connections_opened = Counter("hub_connections_opened", "Connections accepted.", ["transport"], registry=r)
        self.connections_rejected = Counter(
            "hub_connections_rejected", "Connections refused, by reason.", ["reason"], registry=r
        )
        self.deliveries = Deliveries()
        r.register(self.deliveries)
        self.redis_reconnects = Counter("hub_redis_reconnects", "Pub/sub reconnections to Redis.", registry=r)
        self.slow_consumers_disconnected = Counter(
            "hub_slow_consumers_disconnected", "Clients dropped because they could not keep up.", registry=r
        )
        self.keepalives = Counter("hub_keepalives_sent", "Keepalive comments written to idle streams.", registry=r)
        self.users_connected = Gauge("hub_users_connected", "Users with at least one open connection.", registry=r)
        self.bus_channels = Gauge("hub_bus_channels", "Redis pub/sub channels this process listens to.", registry=r)
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


class Deliveries(Collector):
    """Every event written to a client, counted in plain numbers that
    Prometheus reads when it collects: a broadcast is thousands of
    deliveries at once, and a metric call with its lock for each was a
    quarter of the broadcast's time. Only the event loop's thread counts."""

    def __init__(self) -> None:
        self.delivered = dict.fromkeys(TRANSPORTS, 0)
        self.replayed = dict.fromkeys(TRANSPORTS, 0)
        #: Deliveries by latency bucket (the last one: beyond the largest bound).
        self._buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self._latency_sum = 0.0

    def sent(self, transport: str, events: Sequence[Event], live: bool, resumed: bool) -> None:
        """Counts events a client has been sent: live ones with their delivery
        time, missed ones as replayed when the client resumed from a cursor."""
        self.delivered[transport] += len(events)
        if not live:
            if resumed:
                self.replayed[transport] += len(events)
            return
        now = time.time()
        for event in events:
            if event.published_at is not None:
                latency = max(0.0, now - event.published_at)
                self._buckets[bisect.bisect_left(LATENCY_BUCKETS, latency)] += 1
                self._latency_sum += latency

    def collect(self) -> Iterator[Metric]:
        delivered = CounterMetricFamily("hub_events_delivered", "Events written to clients.", labels=["transport"])
        replayed = CounterMetricFamily(
            "hub_events_replayed", "Events sent from history on resume.", labels=["transport"]
        )
        for transport in TRANSPORTS:
            delivered.add_metric([transport], self.delivered[transport])
            replayed.add_metric([transport], self.replayed[transport])
        cumulative, total = [], 0
        for bound, count in zip((*map(str, LATENCY_BUCKETS), "+Inf"), self._buckets, strict=True):
            total += count
            cumulative.append((bound, total))
        yield delivered
        yield replayed
        yield HistogramMetricFamily(
            "hub_event_delivery_seconds",
            "Time from the actor's publish to the write on the socket.",
            buckets=cumulative,
            sum_value=self._latency_sum,
        )
