"""Runs a Dramatiq worker for the hub's actors in this process (`hub worker`)."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Retries

from actors.broker import make_broker
from actors.lifecycle import JobLifecycle
from actors.metrics import WorkerMetrics
from hub.errors import ConfigError
from hub.store import registry, topology
from hub.store.journal import Journal
from hub.store.keys import KeySpace
from hub.store.settings import Settings
from hub.store.stalls import StallWatcher
from hub.store.user_queues import HeldJobsSweeper, UserQueues

log = logging.getLogger("actors.worker")

SHUTDOWN_TIMEOUT_MS = 10_000
IDLE_POLL_MS = 100
#: How often held jobs whose release nobody reported are looked at again.
HELD_JOBS_SWEEP_SECONDS = 2.0


class _ResultsArePublished(logging.Filter):
    """Dramatiq warns that an actor's return value is discarded without its
    Results middleware; here the lifecycle middleware publishes it as the
    job's result, so the warning is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Results middleware" not in record.getMessage()


def equip(broker: RedisBroker, settings: Settings, store: Any) -> WorkerMetrics:
    """Adds the metrics and lifecycle middleware to `broker` (with `store`, a
    blocking client of the hub's Redis) and declares the hub's queue."""
    metrics = WorkerMetrics()
    # Before Retries, like the lifecycle: Dramatiq runs after-hooks in reverse,
    # so both see whether Retries gave a failed attempt another chance.
    broker.add_middleware(metrics, before=Retries)
    lifecycle = JobLifecycle(
        redis=store, settings=settings, on_published=metrics.count_event, queues=user_queues(settings, store, broker)
    )
    lifecycle.install(broker)
    # Always consumed, even with no job type here: a hub job for an actor
    # this worker lacks then fails with its reason instead of waiting.
    broker.declare_queue(registry.QUEUE)
    return metrics


def user_queues(settings: Settings, store: Any, broker: RedisBroker) -> UserQueues:
    """The users' queues, sending to `broker`'s Redis when it is not the store's."""
    apart = topology.broker_apart(settings.require_redis_url(), settings.broker_url)
    keys = KeySpace.for_client(settings.namespace, store)
    return UserQueues(store, keys, settings.job_ttl_seconds, broker=broker.client if apart else None)


def declare(broker: RedisBroker, job_types: registry.Registry) -> None:
    """Declares the actor of every job type of `job_types` on `broker`."""
    for job in job_types.with_actors():
        actor = job.actor
        assert actor is not None
        existing = broker.actors.get(actor.actor_name)
        if existing is not None:
            if actor.fn not in (existing.fn, getattr(existing.fn, "__wrapped__", None)):
                raise ConfigError(
                    f"HUB_APPS: another @dramatiq.actor is named {actor.actor_name!r}, "
                    f"the actor name of job type {job.name!r}"
                )
            # The app stacked @job_type on @dramatiq.actor, which declared it
            # on import: it is declared again with the job type's options.
            del broker.actors[actor.actor_name]
        dramatiq.actor(broker=broker, actor_name=actor.actor_name, queue_name=actor.queue_name, **actor.options)(
            actor.fn
        )


def import_actors(broker: RedisBroker, job_types: registry.Registry, modules: tuple[str, ...]) -> None:
    """Imports the `--import` modules of plain Dramatiq actors (Dramatiq's
    global broker is `broker` by now, so their actors land on it; Dramatiq
    refuses one named like an actor already declared). Refuses a module
    that defines a job type HUB_APPS lacks: the hub would never enqueue it."""
    source = "hub worker --import"
    for name in modules:
        module = registry.import_module(name, source)
        for job in registry.job_types_in(module):
            if job_types.get(job.name) is not job:
                raise ConfigError(
                    f"{source} {name}: it defines job type {job.name!r}; job types go in HUB_APPS, "
                    "--import is for plain Dramatiq actors"
                )


def run(settings: Settings, imports: tuple[str, ...] = ()) -> None:
    """Processes jobs until SIGTERM or SIGINT, then finishes in-flight work.

    The job types come from `settings.app_modules` (HUB_APPS), loaded
    first, after the hub's broker is set as Dramatiq's global one (so an
    app's plain `@dramatiq.actor` lands on it, not on a default broker);
    `imports` name modules of plain Dramatiq actors. The worker consumes
    the hub's queue and every queue an actor of its broker is declared on.
    """
    broker = make_broker(settings)
    dramatiq.set_broker(broker)
    job_types = registry.load(settings.app_modules, settings.external_job_types)
    # After the apps: a bad app is reported first, even with Redis away.
    client = topology.sync_client(settings.require_redis_url())
    metrics = equip(broker, settings, client)
    declare(broker, job_types)
    import_actors(broker, job_types, imports)

    logging.getLogger("dramatiq.worker.WorkerThread").addFilter(_ResultsArePublished())
    if settings.worker_metrics_port:
        metrics.serve(settings.worker_metrics_port, settings.host)
    broker.emit_after("process_boot")
    queues = set(broker.get_declared_queues())
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
    stalls = StallWatcher(
        redis=client, journal=Journal(client, settings), stall_seconds=settings.job_stall_seconds, job_types=job_types
    )
    held = HeldJobsSweeper(user_queues(settings, client, broker), HELD_JOBS_SWEEP_SECONDS)
    worker.start()
    stalls.start()
    held.start()
    log.info("worker ready: %d threads; %s", settings.worker_threads, describe(broker, job_types))
    stop.wait()
    log.info("worker stopping")
    stalls.stop()
    held.stop()
    worker.stop(timeout=SHUTDOWN_TIMEOUT_MS)
    broker.close()


def describe(broker: RedisBroker, job_types: registry.Registry) -> str:
    """What this worker runs: its job types (by actor), its other actors, the queues it consumes."""
    typed = {job.actor.actor_name: job.name for job in job_types.with_actors() if job.actor is not None}
    runs = [f"{name} (actor {actor})" for actor, name in typed.items()]
    others = sorted(set(broker.actors) - set(typed))
    return "job types: {}; other actors: {}; queues: {}".format(
        ", ".join(runs) or "none", ", ".join(others) or "none", ", ".join(sorted(broker.get_declared_queues()))
    )
