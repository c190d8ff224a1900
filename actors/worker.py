"""Runs a Dramatiq worker for the hub's actors in this process (`hub worker`)."""

from __future__ import annotations

import importlib
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Retries

from actors import catalog
from actors.broker import make_broker
from actors.examples.characters import create_character
from actors.examples.images import generate_image
from actors.lifecycle import JobLifecycle
from actors.metrics import WorkerMetrics
from hub.store.stalls import StallWatcher
from hub.store.journal import Journal
from hub.store.settings import Settings

log = logging.getLogger("actors.worker")

#: Retries after the first failed attempt, and the backoff between them.
MAX_RETRIES = 3
MIN_BACKOFF_MS = 500
MAX_BACKOFF_MS = 10_000
#: No attempt may run longer than this.
TIME_LIMIT_MS = 5 * 60 * 1000
SHUTDOWN_TIMEOUT_MS = 10_000
IDLE_POLL_MS = 100

FUNCTIONS: dict[str, Callable[..., Any]] = {
    catalog.ACTORS["character"]: create_character,
    catalog.ACTORS["media"]: generate_image,
}


class _ResultsArePublished(logging.Filter):
    """Dramatiq warns that an actor's return value is discarded without its
    Results middleware; here the lifecycle middleware publishes it as the
    job's result, so the warning is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Results middleware" not in record.getMessage()


def setup(settings: Settings) -> tuple[RedisBroker, WorkerMetrics]:
    """A broker with the lifecycle middleware and the hub's actors declared."""
    broker = make_broker(settings)
    assert settings.redis_url
    metrics = WorkerMetrics()
    # Before Retries, like the lifecycle: Dramatiq runs after-hooks in reverse,
    # so both see whether Retries gave a failed attempt another chance.
    broker.add_middleware(metrics, before=Retries)
    lifecycle = JobLifecycle(
        redis=redis.Redis.from_url(settings.redis_url), settings=settings, on_published=metrics.count_event
    )
    lifecycle.install(broker)
    for name, function in FUNCTIONS.items():
        declare = dramatiq.actor(
            broker=broker,
            actor_name=name,
            queue_name=catalog.QUEUE,
            max_retries=MAX_RETRIES,
            min_backoff=MIN_BACKOFF_MS,
            max_backoff=MAX_BACKOFF_MS,
            time_limit=TIME_LIMIT_MS,
        )
        declare(function)
    return broker, metrics


def run(settings: Settings, imports: tuple[str, ...] = ()) -> None:
    """Processes jobs until SIGTERM or SIGINT, then finishes in-flight work.

    `imports` name modules of more actors: imported after the broker is set
    as Dramatiq's global one, their `@dramatiq.actor` functions land on it and
    may call `actors.progress.report`.
    """
    logging.getLogger("dramatiq.worker.WorkerThread").addFilter(_ResultsArePublished())
    broker, metrics = setup(settings)
    if settings.worker_metrics_port:
        metrics.serve(settings.worker_metrics_port)
    dramatiq.set_broker(broker)
    for module in imports:
        importlib.import_module(module)
    broker.emit_after("process_boot")
    worker = dramatiq.Worker(
        broker,
        queues={catalog.QUEUE},
        worker_threads=settings.worker_threads,
        # An idle worker looks at the queue this often (ms): a new job starts
        # within a tenth of a second instead of up to a second.
        worker_timeout=IDLE_POLL_MS,
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    client = redis.Redis.from_url(settings.redis_url or "")
    stalls = StallWatcher(redis=client, journal=Journal(client, settings), stall_seconds=settings.job_stall_seconds)
    worker.start()
    stalls.start()
    log.info("worker ready: %d threads on queue %s", settings.worker_threads, catalog.QUEUE)
    stop.wait()
    log.info("worker stopping")
    stalls.stop()
    worker.stop(timeout=SHUTDOWN_TIMEOUT_MS)
    broker.close()
