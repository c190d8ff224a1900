"""Hands jobs to the Dramatiq workers through the broker's Redis queue, at
most HUB_JOBS_IN_FLIGHT_PER_USER of one user's jobs at a time (the rest
wait in the hub: see hub.store.user_queues)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import dramatiq

from actors.broker import make_broker
from hub.store import registry, topology
from hub.store.keys import KeySpace
from hub.store.redis_errors import store_errors
from hub.store.registry import JOB_OPTION, JobType
from hub.store.settings import Settings
from hub.store.user_queues import UserQueues


def load_job_types(settings: Settings) -> registry.Registry:
    """The deployment's job types, for a process that enqueues them (`hub
    serve`). Dramatiq's global broker is set to the hub's first: a plain
    `@dramatiq.actor` in an app module then declares itself on the hub's
    Redis, not on a default broker at localhost:6379, and its `send()`
    reaches the hub's workers."""
    dramatiq.set_broker(make_broker(settings))
    return registry.load(settings.app_modules, settings.external_job_types)


class JobDispatcher:
    def __init__(self, settings: Settings) -> None:
        apart = topology.broker_apart(settings.require_redis_url(), settings.broker_url)
        self._broker = make_broker(settings)
        self._limit = settings.jobs_in_flight_per_user
        self._redis: Any = None
        self._queues: UserQueues | None = None
        if self._limit:
            self._redis = topology.sync_client(settings.require_redis_url())
            keys = KeySpace.for_client(settings.namespace, self._redis)
            broker = self._broker.client if apart else None
            self._queues = UserQueues(self._redis, keys, settings.job_ttl_seconds, broker=broker)

    @store_errors
    async def __call__(self, job_type: JobType, job_id: str, owner: str, job_input: dict[str, Any]) -> None:
        actor = job_type.actor
        if actor is None:
            raise ValueError(f"job type {job_type.name!r} is external: its own workers run it")
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=actor.queue_name,
            actor_name=actor.actor_name,
            args=(),
            kwargs=job_input,
            options={JOB_OPTION: {"id": job_id, "owner": owner, "type": job_type.name}},
            message_id=job_id,
        )
        # Dramatiq's Redis broker blocks, and so does this Redis client; keep
        # them off the event loop.
        await asyncio.get_running_loop().run_in_executor(None, self._send, message, owner)

    def _send(self, message: dramatiq.Message[Any], owner: str) -> None:
        if self._queues is None:
            self._broker.enqueue(message)
            return
        # What Dramatiq's enqueue does, but atomically with the user's count
        # (in the script): a message id for its Redis queue, then the message.
        message_id = str(uuid.uuid4())
        message = message.copy(options={"redis_message_id": message_id})
        encoded = message.encode().decode()
        self._queues.submit(owner, message.message_id, message.queue_name, message_id, encoded, self._limit)

    def close(self) -> None:
        self._broker.close()
        if self._redis is not None:
            self._redis.close()
