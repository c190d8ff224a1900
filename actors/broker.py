"""The Dramatiq broker, on HUB_BROKER_URL (HUB_REDIS_URL unless set; a
Redis Cluster needs it: see `hub.store.topology.broker_apart`), under the
hub's namespace."""

from __future__ import annotations

from dramatiq.brokers.redis import RedisBroker

from hub.store import topology
from hub.store.keys import KeySpace
from hub.store.settings import Settings


def make_broker(settings: Settings) -> RedisBroker:
    return RedisBroker(  # type: ignore[no-untyped-call]
        # Never a cluster (refused at start), so not asked: no Redis is
        # needed until the broker is used.
        client=topology.server_client(settings.require_broker_url()),
        namespace=KeySpace(settings.namespace).dramatiq_namespace,
        heartbeat_timeout=int(settings.worker_heartbeat_seconds * 1000),
        maintenance_chance=settings.worker_maintenance_chance,
    )
