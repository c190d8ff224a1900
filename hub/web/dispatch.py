"""Hands jobs to the Dramatiq workers through the broker's Redis queue."""

from __future__ import annotations

import asyncio
from typing import Any

import dramatiq

from actors.broker import make_broker
from hub.store import registry
from hub.store.registry import JOB_OPTION, JobType
from hub.store.settings import Settings


def load_job_types(settings: Settings) -> registry.Registry:
    """The deployment's job types, for a process that enqueues them (`hub
    serve`). Dramatiq's global broker is set to the hub's first: a plain
    `@dramatiq.actor` in an app module then declares itself on the hub's
    Redis, not on a default broker at localhost:6379, and its `send()`
    reaches the hub's workers."""
    if settings.redis_url:
        dramatiq.set_broker(make_broker(settings))
    return registry.load(settings.app_modules, settings.external_job_types)


class JobDispatcher:
    def __init__(self, settings: Settings) -> None:
        self._broker = make_broker(settings)

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
        # Dramatiq's Redis broker blocks; keep it off the event loop.
        await asyncio.get_running_loop().run_in_executor(None, self._broker.enqueue, message)

    def close(self) -> None:
        self._broker.close()
