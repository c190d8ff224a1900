"""Builds the hub: its context (Redis, bus, history, limits, metrics) and
its Tornado application. One factory, no module-level state."""

from __future__ import annotations

import os
import re
from importlib import resources
from typing import Any

import tornado.web
from redis.asyncio import Redis

from hub.delivery.bus import EventBus
from hub.delivery.clock import Clock
from hub.delivery.connections import ConnectionManager, UserSlots
from hub.store import registry, topology
from hub.store.files import FILE_NAME_PATTERN, JobFiles
from hub.store.history import History
from hub.store.journal import Journal
from hub.store.keys import KeySpace
from hub.store.settings import Settings
from hub.web.access_log import AccessLog
from hub.web.auth import TokenVerifier
from hub.web.cluster_pool import connect_cluster
from hub.web.context import HubContext
from hub.web.handlers.base import Gate, NotFoundHandler
from hub.web.handlers.dev import DevTokenHandler
from hub.web.handlers.generic_jobs import JobHandler, JobsHandler, JobTypesHandler
from hub.web.handlers.jobs import CreateJobHandler, Enqueue, JobFileHandler, JobStarter, JobStatusHandler
from hub.web.handlers.ops import HealthHandler, MetricsHandler, ReadyHandler
from hub.web.handlers.poll import PollHandler
from hub.web.handlers.publish import JobEventsHandler
from hub.web.handlers.sse import SSEHandler
from hub.web.handlers.static import CorsStaticFileHandler
from hub.web.handlers.subscription import Streams
from hub.web.handlers.tickets import TicketHandler
from hub.web.metrics import HubMetrics
from hub.web.rate_limit import JobRateLimit
from hub.web.redis_pool import OrderedConnectionPool, OrderedSentinelConnectionPool
from hub.web.tickets import Tickets

JOB_ID = r"([^/]+)"
#: Any name a job type may have; the handler looks it up in the registry.
JOB_TYPE = r"([a-z][a-z0-9_-]{0,31})"
FILE_NAME = f"({FILE_NAME_PATTERN})"


#: Redis connections one hub process uses at most (the pub/sub one aside).
REDIS_POOL_SIZE = 64
#: Requests waiting for a free Redis connection get a 503 once no command
#: has come back from Redis for this long (however long the line).
REDIS_POOL_WAIT_SECONDS = 10.0
REDIS_SOCKET_TIMEOUT = 5.0


def connect_redis(url: str) -> Redis:
    """The process's Redis client. Its pool makes a burst of requests (a
    reconnect storm) wait for a connection, in order, instead of being refused.
    On a Redis Cluster: a cluster client, with a pool of that size per node."""
    if not topology.is_sentinel_url(url) and topology.kind_of(url) is topology.Kind.CLUSTER:
        return connect_cluster(
            url, size=REDIS_POOL_SIZE, stall_seconds=REDIS_POOL_WAIT_SECONDS, socket_timeout=REDIS_SOCKET_TIMEOUT
        )
    return topology.async_client(
        url,
        pool_class=OrderedSentinelConnectionPool if topology.is_sentinel_url(url) else OrderedConnectionPool,
        max_connections=REDIS_POOL_SIZE,
        stall_seconds=REDIS_POOL_WAIT_SECONDS,
        socket_timeout=REDIS_SOCKET_TIMEOUT,
        socket_connect_timeout=REDIS_SOCKET_TIMEOUT,
    )


def build_context(
    settings: Settings, redis: Redis, enqueue: Enqueue, job_types: registry.Registry | None = None
) -> HubContext:
    """The hub's context; `job_types` default to those of the settings' apps."""
    if job_types is None:
        job_types = registry.load(settings.app_modules, settings.external_job_types)
    metrics = HubMetrics()
    keys = KeySpace.for_client(settings.namespace, redis)
    slots = UserSlots(redis, keys, ttl=settings.process_ttl_seconds)
    bus = EventBus(
        settings.require_redis_url(),
        kind=topology.detect(settings.require_redis_url()),
        on_reconnect=metrics.redis_reconnects.inc,
        on_event=lambda fanout: metrics.bus_messages.inc(),
    )
    return HubContext(
        settings=settings,
        redis=redis,
        keys=keys,
        journal=Journal(redis, settings, on_unreplicated=metrics.events_unreplicated.inc),
        history=History(redis, keys),
        bus=bus,
        connections=ConnectionManager(
            max_per_user=settings.max_connections_per_user,
            max_total=settings.max_connections,
            metrics=metrics,
            slots=slots,
        ),
        metrics=metrics,
        verifier=TokenVerifier(settings),
        enqueue=enqueue,
        slots=slots,
        tickets=Tickets(redis, keys),
        job_rate=JobRateLimit(redis, keys, settings.job_rate_per_minute),
        clock=Clock(
            keepalive_seconds=settings.keepalive_seconds,
            write_timeout_seconds=settings.write_timeout_seconds,
            on_keepalive=metrics.keepalives.inc,
        ),
        job_types=job_types,
    )


def make_app(ctx: HubContext, *, dev_tokens: bool = False) -> tornado.web.Application:
    """The application; `dev_tokens` adds the development token endpoint
    (`hub up` only: it hands a token to anyone who asks)."""
    settings = ctx.settings
    gate = Gate(
        verifier=ctx.verifier, tickets=ctx.tickets, cors_origins=settings.cors_origins, draining=lambda: ctx.draining
    )
    c: dict[str, Any] = {"gate": gate}
    starter = JobStarter(
        journal=ctx.journal, enqueue=ctx.enqueue, job_rate=ctx.job_rate, jobs_created=ctx.metrics.jobs_created
    )
    files = {**c, "history": ctx.history, "files": JobFiles(ctx.redis, ctx.keys)}
    streams = {
        **c,
        "streams": Streams(
            connections=ctx.connections,
            bus=ctx.bus,
            history=ctx.history,
            keys=ctx.keys,
            metrics=ctx.metrics,
            clock=ctx.clock,
            subscriber_queue=settings.subscriber_queue,
            sse_retry_ms=settings.sse_retry_ms,
            longpoll_timeout_seconds=settings.longpoll_timeout_seconds,
        ),
    }
    routes: list[Any] = []
    for job_type in ctx.job_types.with_seed_paths():
        seed = job_type.seed_paths
        assert seed is not None
        routes += [
            (re.escape(seed.create), CreateJobHandler, {**c, "starter": starter, "job_type": job_type}),
            (
                rf"/api/v1/{re.escape(seed.segment)}/jobs/{JOB_ID}",
                JobStatusHandler,
                {**c, "history": ctx.history, "job_type": job_type},
            ),
            (rf"/api/v1/{re.escape(seed.segment)}/jobs/{JOB_ID}/{FILE_NAME}", JobFileHandler, files),
        ]
    routes += [
        (
            r"/api/v1/jobs",
            JobsHandler,
            {**c, "starter": starter, "history": ctx.history, "job_types": ctx.job_types},
        ),
        (rf"/api/v1/jobs/{JOB_ID}", JobHandler, {**c, "history": ctx.history}),
        (
            rf"/api/v1/jobs/{JOB_ID}/events",
            JobEventsHandler,
            {
                **c,
                "history": ctx.history,
                "journal": ctx.journal,
                "job_types": ctx.job_types,
                "published": ctx.metrics.events_published,
            },
        ),
        (r"/api/v1/job-types", JobTypesHandler, {**c, "job_types": ctx.job_types}),
        (rf"/api/v1/jobs/{JOB_ID}/files/{FILE_NAME}", JobFileHandler, files),
        (r"/api/v1/sse/tickets", TicketHandler, c),
        (r"/api/v1/sse/jobs/my", SSEHandler, streams),
        (rf"/api/v1/sse/jobs/{JOB_TYPE}/{JOB_ID}", SSEHandler, streams),
        (r"/api/v1/poll/jobs/my", PollHandler, streams),
        (rf"/api/v1/poll/jobs/{JOB_TYPE}/{JOB_ID}", PollHandler, streams),
        (r"/healthz", HealthHandler, c),
        (r"/readyz", ReadyHandler, {**c, "ping": ctx.redis.ping, "bus": ctx.bus}),
        (r"/metrics", MetricsHandler, {**c, "metrics": ctx.metrics, "bus": ctx.bus}),
        (r"/()", tornado.web.StaticFileHandler, {"path": static_dir(), "default_filename": "index.html"}),
        # The JavaScript client is one file shared with clients/js (a link in a
        # source checkout), served from wherever it really is.
        (
            r"/static/(hub-client\.js|shared-connection\.js)",
            CorsStaticFileHandler,
            {"path": js_client_dir(), "cors_origins": settings.cors_origins},
        ),
        (r"/static/(.*)", tornado.web.StaticFileHandler, {"path": static_dir()}),
    ]
    if dev_tokens:
        routes.append((r"/api/v1/dev/token", DevTokenHandler, {**c, "settings": settings}))
    return tornado.web.Application(
        routes,
        default_handler_class=NotFoundHandler,
        default_handler_args=c,
        log_function=AccessLog().log_request,
        compress_response=False,
    )


def static_dir() -> str:
    return str(resources.files("hub.web").joinpath("static"))


def js_client_dir() -> str:
    return os.path.dirname(os.path.realpath(os.path.join(static_dir(), "hub-client.js")))
