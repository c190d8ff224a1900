"""Endpoints for operators: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hub.delivery.bus import EventBus
from hub.web.handlers.base import BaseHandler, Gate
from hub.web.metrics import HubMetrics

#: Seconds /readyz waits for Redis before calling it down.
READY_TIMEOUT = 1.0


class HealthHandler(BaseHandler):
    def initialize(self, gate: Gate) -> None:
        pass

    def get(self) -> None:
        self.write_json({"status": "ok"})


class ReadyHandler(BaseHandler):
    def initialize(self, gate: Gate, ping: Callable[[], Awaitable[Any]], bus: EventBus) -> None:
        self.ping = ping
        self.bus = bus

    async def get(self) -> None:
        try:
            await asyncio.wait_for(self.ping(), READY_TIMEOUT)
            redis_ok = True
        except Exception:
            redis_ok = False
        bus_ok = self.bus.connected
        if redis_ok and bus_ok:
            self.write_json({"status": "ready"})
        else:
            self.set_header("Retry-After", "2")
            self.write_json(
                {"error": "unavailable", "message": "Redis is not answering", "redis": redis_ok, "pubsub": bus_ok},
                status=503,
            )


class MetricsHandler(BaseHandler):
    def initialize(self, gate: Gate, metrics: HubMetrics, bus: EventBus) -> None:
        self.metrics = metrics
        self.bus = bus

    def get(self) -> None:
        self.metrics.bus_channels.set(self.bus.channel_count)
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(self.metrics.registry))
