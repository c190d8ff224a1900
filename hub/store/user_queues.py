"""Keeps one user's backlog from starving the others: at most
HUB_JOBS_IN_FLIGHT_PER_USER of a user's jobs are in the broker's queue or
running at once. The broker's queue is first in, first out, so a user who
queues sixty jobs would otherwise make everyone behind wait for all sixty;
held back here instead, those jobs go to the broker one by one, each as one
of the user's jobs ends, and another user's job waits behind a few of them
at most. The accounting is atomic in Redis (lua/user_queue.lua).

When the broker shares the hub's Redis, the script sends the messages
itself, atomically with the count. When it does not (a Redis Cluster, or
HUB_BROKER_URL), the script counts and says what to send, and this module
sends it to the broker's Redis and looks there for messages that went
missing; a message it could not send is sent again by a later call, once
`UNSENT_GRACE_SECONDS` have passed.
"""

from __future__ import annotations

import json
import time
from typing import Any

from hub.store.buckets import BucketWalk
from hub.store.keys import KeySpace
from hub.store.redis_errors import store_errors
from hub.store.scripts import load_script
from hub.store.sweeper import Sweeper

#: Users whose held jobs one sweep looks at, at most.
SWEEP_USERS = 100
#: Buckets a sweep looks into on a cluster (one round trip per node).
BUCKETS_PER_SWEEP = 64
#: A message the script handed out this long ago and that the broker lacks
#: was never sent (its sender died or failed): it is sent again.
UNSENT_GRACE_SECONDS = 30.0


class UserQueues:
    """A user's jobs in flight and held. Works with a blocking or an asyncio
    Redis client (returning awaitables with the latter), like the Journal; a
    Redis failure is StoreUnavailable or StoreFull.

    `broker` is a blocking client of the broker's Redis when that is not
    the store's (required on a cluster); the store's client must then be a
    blocking one too."""

    def __init__(self, redis: Any, keys: KeySpace, ttl_seconds: int, *, broker: Any = None) -> None:
        if keys.cluster and broker is None:
            raise ValueError("on a Redis Cluster the broker's Redis is another one: pass its client")
        self._redis = redis
        self._keys = keys
        self._ttl = ttl_seconds
        self._broker = broker
        self._script = redis.register_script(load_script("user_queue.lua"))
        self._walk = BucketWalk(keys.buckets(), BUCKETS_PER_SWEEP)

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
        encoded = json.dumps(entry, separators=(",", ":"))
        if self._broker is None:
            return self._call(owner, encoded, "")
        return self._send(self._call(owner, encoded, "", lost=""))

    @store_errors
    def release(self, owner: str, job_id: str = "") -> Any:
        """`job_id` ended (or, without it, look again): sends the owner's next
        held jobs to the broker while there is room. Returns their ids."""
        if self._broker is None:
            return self._call(owner, "", job_id)
        return self._send(self._call(owner, "", job_id, lost=self._lost(owner)))

    @store_errors
    def waiting_users(self) -> Any:
        """Some users with held jobs (up to `SWEEP_USERS`), of this sweep's buckets."""
        window = self._walk.window()
        if len(window) == 1:
            return self._redis.srandmember(self._keys.users_with_held_jobs(window[0]), SWEEP_USERS)
        pipe = self._redis.pipeline(transaction=False)
        for bucket in window:
            pipe.srandmember(self._keys.users_with_held_jobs(bucket), SWEEP_USERS)
        return [user for users in pipe.execute() for user in users][:SWEEP_USERS]

    def _call(self, owner: str, entry: str, ended: str, *, lost: str | None = None) -> Any:
        k = self._keys
        keys = [k.user_jobs_in_flight(owner), k.user_held_jobs(owner), k.users_with_held_jobs(k.user_bucket(owner))]
        args: list[str | int] = [owner, entry, ended, k.job_prefix(owner), self._ttl]
        if lost is None:
            args.append("here")
        else:
            args += ["apart", lost, int(time.time() * 1000)]
        return self._script(keys=keys, args=args)

    def _lost(self, owner: str) -> str:
        """The owner's queued jobs, handed out longer than the grace ago,
        whose messages the broker does not hold (space-separated)."""
        in_flight: dict[bytes, bytes] = self._redis.hgetall(self._keys.user_jobs_in_flight(owner))
        due = int((time.time() - UNSENT_GRACE_SECONDS) * 1000)
        checked = []
        for job, where in in_flight.items():
            queue, rid, sent, *_ = [*where.split(b"\t", 3), b""]
            if sent and int(sent) <= due:
                checked.append((job, queue, rid))
        if not checked:
            return ""
        pipe = self._broker.pipeline(transaction=False)
        for _, queue, rid in checked:
            pipe.hexists(queue + b".msgs", rid)
        found = pipe.execute()
        return " ".join(job.decode() for (job, _, _), there in zip(checked, found, strict=True) if not there)

    def _send(self, sends: list[Any]) -> list[str]:
        """Sends what the script handed out, as Dramatiq's Redis broker
        enqueues: the message under its id, then the id on the queue."""
        sent = []
        for i in range(0, len(sends), 4):
            job, queue, rid, data = sends[i : i + 4]
            pipe = self._broker.pipeline(transaction=True)
            pipe.hset(_text(queue) + ".msgs", rid, data)
            pipe.rpush(queue, rid)
            pipe.execute()
            sent.append(_text(job))
        return sent


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


class HeldJobsSweeper(Sweeper):
    """Looks again at every user with held jobs, now and then. A job's end
    normally sends its user's next job on its way; this catches the ends
    nobody reported (a job failed as stalled, a worker that died between
    finishing a job and releasing it), so held jobs never wait for ever.
    With the broker apart it also sends again what a sender failed to send."""

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
