"""The Dramatiq broker, on the same Redis as the hub, under the hub's namespace."""

from __future__ import annotations

from dramatiq.brokers.redis import RedisBroker

from hub.store.keys import KeySpace
from hub.store.settings import Settings


def make_broker(settings: Settings) -> RedisBroker:
    return RedisBroker(  # type: ignore[no-untyped-call]
        url=settings.require_redis_url(),
        namespace=KeySpace(settings.namespace).dramatiq_namespace,
        heartbeat_timeout=int(settings.worker_heartbeat_seconds * 1000),
        maintenance_chance=settings.worker_maintenance_chance,
    )
