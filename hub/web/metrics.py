"""The hub's Prometheus metrics, in a registry of their own (one per app).

Labels never carry a user id or a job id: their number would grow without bound.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
        self.events_delivered = Counter("hub_events_delivered", "Events written to clients.", ["transport"], registry=r)
        self.events_replayed = Counter(
            "hub_events_replayed", "Events sent from history on resume.", ["transport"], registry=r
        )
        self.delivery_seconds = Histogram(
            "hub_event_delivery_seconds",
            "Time from the actor's publish to the write on the socket.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
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
        for transport in TRANSPORTS:
            self.connections.labels(transport)
            self.connections_opened.labels(transport)
        # Bound once: looking a child up by its labels costs more than the
        # increment itself, and these count every delivery.
        self.delivered = {t: self.events_delivered.labels(t) for t in TRANSPORTS}
        self.replayed = {t: self.events_replayed.labels(t) for t in TRANSPORTS}
        for reason in REJECT_REASONS:
            self.connections_rejected.labels(reason)
        for source in EVENT_SOURCES:
            for status in (ACTIVE, COMPLETED, FAILED):
                self.events_published.labels(source, status)
