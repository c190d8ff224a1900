"""Keeps one user's backlog from starving the others: at most
HUB_JOBS_IN_FLIGHT_PER_USER of a user's jobs are in the broker's queue or
running at once. The broker's queue is first in, first out, so a user who
queues sixty jobs would otherwise make everyone behind wait for all sixty;
held back here instead, those jobs go to the broker one by one, each as one
of the user's jobs ends, and another user's job waits behind a few of them
at most. The accounting is atomic in Redis (lua/user_queue.lua)."""

from __future__ import annotations

import json
from typing import Any

from hub.store.keys import KeySpace
from hub.store.redis_errors import store_errors
from hub.store.scripts import load_script
from hub.store.sweeper import Sweeper

#: Users whose held jobs one sweep looks at, at most.
SWEEP_USERS = 100


class UserQueues:
    """A user's jobs in flight and held. Works with a blocking or an asyncio
    Redis client (returning awaitables with the latter), like the Journal; a
    Redis failure is StoreUnavailable or StoreFull."""

    def __init__(self, redis: Any, keys: KeySpace, ttl_seconds: int) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl = ttl_seconds
        self._script = redis.register_script(load_script("user_queue.lua"))

    @store_errors
    def submit(self, owner: str, job_id: str, queue_name: str, message_id: str, message: str, limit: int) -> Any:
        """Sends the job's broker message (`message`, encoded, whose broker id
        is `message_id`) to `queue_name` now if fewer than `limit` of the
        owner's jobs are in flight, else holds it until one ends. Returns the
        ids of the jobs sent to the broker."""
        entry = {
            "job": job_id,
            "limit": limit,
            "queue": self._keys.dramatiq_queue(queue_name),
            "rid": message_id,
            "data": message,
        }
        return self._call(owner, json.dumps(entry, separators=(",", ":")), "")

    @store_errors
    def release(self, owner: str, job_id: str = "") -> Any:
        """`job_id` ended (or, without it, look again): sends the owner's next
        held jobs to the broker while there is room. Returns their ids."""
        return self._call(owner, "", job_id)

    @store_errors
    def waiting_users(self) -> Any:
        """Some users with held jobs (up to `SWEEP_USERS`)."""
        return self._redis.srandmember(self._keys.users_with_held_jobs(), SWEEP_USERS)

    def _call(self, owner: str, entry: str, ended: str) -> Any:
        k = self._keys
        keys = [k.user_jobs_in_flight(owner), k.user_held_jobs(owner), k.users_with_held_jobs()]
        return self._script(keys=keys, args=[owner, entry, ended, k.job(""), self._ttl])


class HeldJobsSweeper(Sweeper):
    """Looks again at every user with held jobs, now and then. A job's end
    normally sends its user's next job on its way; this catches the ends
    nobody reported (a job failed as stalled, a worker that died between
    finishing a job and releasing it), so held jobs never wait for ever."""

    name = "held jobs sweep"

    def __init__(self, queues: UserQueues, interval_seconds: float) -> None:
        super().__init__(interval_seconds)
        self._queues = queues

    def sweep(self) -> int:
        """Sends what fits of every waiting user's held jobs; returns how many."""
        sent = 0
        for raw in self._queues.waiting_users():
            user = raw.decode() if isinstance(raw, bytes) else str(raw)
            sent += len(self._queues.release(user))
        return sent
