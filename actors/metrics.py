"""Prometheus metrics of a worker process, served on HUB_WORKER_METRICS_PORT.

Counted by a Dramatiq middleware, so every actor is measured, hub job or not.
Labels carry the actor name (a fixed, small set), never a job or user id.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from dramatiq import Broker, Middleware
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

log = logging.getLogger("actors.metrics")

#: The `actor` label of a job whose actor this worker does not declare.
UNDECLARED = "(undeclared)"
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class WorkerMetrics(Middleware):
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.started = Counter("hub_worker_jobs_started", "Attempts started.", ["actor"], registry=r)
        self.completed = Counter("hub_worker_jobs_completed", "Jobs completed.", ["actor"], registry=r)
        self.retried = Counter("hub_worker_jobs_retried", "Failed attempts to be retried.", ["actor"], registry=r)
        self.failed = Counter("hub_worker_jobs_failed", "Jobs failed for good.", ["actor"], registry=r)
        self.events_published = Counter(
            "hub_worker_events_published", "Job events published to Redis, by status.", ["status"], registry=r
        )
        self.duration = Histogram(
            "hub_worker_job_duration_seconds", "Time one attempt ran.", ["actor"], buckets=DURATION_BUCKETS, registry=r
        )
        self._started_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def serve(self, port: int, host: str) -> None:
        """Starts the /metrics endpoint on `host` (HUB_HOST's interface, like
        the web server's: not every interface); a busy port is logged, not fatal."""
        try:
            start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            log.error("worker metrics not served: port %d: %s", port, exc.strerror)
            return
        log.info("worker metrics on http://%s:%d/metrics", host, port)

    def before_process_message(self, broker: Broker, message: Any) -> None:
        self.started.labels(message.actor_name).inc()
        with self._lock:
            self._started_at[message.message_id] = time.monotonic()

    def after_process_message(self, broker: Broker, message: Any, *, result: Any = None, exception: Any = None) -> None:
        with self._lock:
            started = self._started_at.pop(message.message_id, None)
        if started is not None:
            self.duration.labels(message.actor_name).observe(time.monotonic() - started)
        if exception is None:
            self.completed.labels(message.actor_name).inc()
        elif not message.failed:
            self.retried.labels(message.actor_name).inc()

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        with self._lock:
            self._started_at.pop(message.message_id, None)

    def after_nack(self, broker: Broker, message: Any) -> None:
        # A message for an actor nobody declares is nacked too; its name is
        # whatever the sender wrote, so it must not become a label value.
        actor = message.actor_name if message.actor_name in broker.actors else UNDECLARED
        self.failed.labels(actor).inc()

    def count_event(self, status: str) -> None:
        self.events_published.labels(status).inc()
