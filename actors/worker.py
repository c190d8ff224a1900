"""Runs a Dramatiq worker for the hub's actors in this process (`hub worker`)."""

from __future__ import annotations

import importlib
import logging
import signal
import threading

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Retries

from actors.broker import make_broker
from actors.lifecycle import JobLifecycle
from actors.metrics import WorkerMetrics
from hub.store import registry
from hub.store.journal import Journal
from hub.store.settings import Settings
from hub.store.stalls import StallWatcher

log = logging.getLogger("actors.worker")

SHUTDOWN_TIMEOUT_MS = 10_000
IDLE_POLL_MS = 100


class _ResultsArePublished(logging.Filter):
    """Dramatiq warns that an actor's return value is discarded without its
    Results middleware; here the lifecycle middleware publishes it as the
    job's result, so the warning is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Results middleware" not in record.getMessage()


def setup(settings: Settings, job_types: registry.Registry) -> tuple[RedisBroker, WorkerMetrics]:
    """A broker with the lifecycle middleware and the actors of `job_types` declared."""
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
    for actor in job_types.actors():
        declare = dramatiq.actor(
            broker=broker, actor_name=actor.actor_name, queue_name=actor.queue_name, **actor.options
        )
        declare(actor.fn)
    return broker, metrics


def run(settings: Settings, imports: tuple[str, ...] = ()) -> None:
    """Processes jobs until SIGTERM or SIGINT, then finishes in-flight work.

    The job types come from `settings.app_modules` (HUB_APPS); `imports`
    name more modules, imported after the broker is set as Dramatiq's global
    one, so their plain `@dramatiq.actor` functions land on it too. The
    worker consumes every queue an actor of its broker is declared on.
    """
    logging.getLogger("dramatiq.worker.WorkerThread").addFilter(_ResultsArePublished())
    job_types = registry.load(settings.app_modules, settings.external_job_types)
    broker, metrics = setup(settings, job_types)
    if settings.worker_metrics_port:
        metrics.serve(settings.worker_metrics_port)
    dramatiq.set_broker(broker)
    for module in imports:
        importlib.import_module(module)
    broker.emit_after("process_boot")
    queues = {actor.queue_name for actor in broker.actors.values()} | {registry.QUEUE}
    worker = dramatiq.Worker(
        broker,
        queues=queues,
        worker_threads=settings.worker_threads,
        # An idle worker looks at the queue this often (ms): a new job starts
        # within a tenth of a second instead of up to a second.
        worker_timeout=IDLE_POLL_MS,
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    client = redis.Redis.from_url(settings.redis_url or "")
    stalls = StallWatcher(
        redis=client, journal=Journal(client, settings), stall_seconds=settings.job_stall_seconds, job_types=job_types
    )
    worker.start()
    stalls.start()
    log.info(
        "worker ready: %d threads; job types %s; queues %s",
        settings.worker_threads,
        ", ".join(job_types.names()) or "none",
        ", ".join(sorted(queues)),
    )
    stop.wait()
    log.info("worker stopping")
    stalls.stop()
    worker.stop(timeout=SHUTDOWN_TIMEOUT_MS)
    broker.close()
