"""Names of every Redis key and channel, under one namespace.

A namespace keeps several deployments (or test runs) apart on one Redis.

On a Redis Cluster (`cluster=True`) every key of a user, and every key of
that user's jobs, carries the user's bucket's hash tag
(`hub:{b7.252}:job:<id>`, `hub:{b7.252}:user:<user>:events`; see
`hub.store.buckets`), so that each Lua script touches one hash slot; what
is namespace-wide on one server (the running-jobs index, the users with
held jobs) is one key per bucket. On one server the names are as they
always were.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hub.store import buckets
from hub.store.topology import is_cluster_client


@dataclass(frozen=True)
class KeySpace:
    namespace: str
    #: Keys carry their bucket's hash tag: the store is a Redis Cluster.
    cluster: bool = False

    def __post_init__(self) -> None:
        if self.cluster:
            buckets.tag(buckets.BUCKETS[0])  # the tags, worked out now rather than on a first request

    @classmethod
    def for_client(cls, namespace: str, redis: Any) -> KeySpace:
        """The key space of the store `redis` is a client of."""
        return cls(namespace, cluster=is_cluster_client(redis))

    # -- buckets --------------------------------------------------------------

    def buckets(self) -> tuple[str, ...]:
        """The buckets of the per-bucket keys: every one on a cluster, else
        the one bucket "" (the namespace-wide key)."""
        return buckets.BUCKETS if self.cluster else ("",)

    def job_bucket(self, job_id: str) -> str:
        return buckets.job_bucket(job_id) if self.cluster else ""

    def user_bucket(self, user_id: str) -> str:
        return buckets.bucket_of(user_id) if self.cluster else ""

    def _in(self, bucket: str) -> str:
        return f"{self.namespace}:{{{buckets.tag(bucket)}}}" if self.cluster else self.namespace

    def _of_job(self, job_id: str) -> str:
        return self._in(buckets.job_bucket(job_id)) if self.cluster else self.namespace

    def _of_user(self, user_id: str) -> str:
        return self._in(buckets.bucket_of(user_id)) if self.cluster else self.namespace

    # -- jobs -----------------------------------------------------------------

    def job(self, job_id: str) -> str:
        """Hash: the job's state (JSON), owner, type, last and terminal event ids."""
        return f"{self._of_job(job_id)}:job:{job_id}"

    def job_prefix(self, owner: str) -> str:
        """The start of the hash key of every job of `owner` (a script appends the id)."""
        return f"{self._of_user(owner)}:job:"

    def job_events(self, job_id: str) -> str:
        """Stream: the job's event history; entry ids are the SSE cursors."""
        return f"{self._of_job(job_id)}:job:{job_id}:events"

    def job_file(self, job_id: str, name: str) -> str:
        """Hash: a file a job produced ("data", "type"), served to its owner."""
        return f"{self._of_job(job_id)}:job:{job_id}:file:{name}"

    def job_channel(self, job_id: str) -> str:
        return f"{self._of_job(job_id)}:ch:job:{job_id}"

    def running_jobs(self, bucket: str = "") -> str:
        """Sorted set: jobs (of the bucket) that are active or retrying, by last change (ms)."""
        return f"{self._in(bucket)}:running"

    # -- users ----------------------------------------------------------------

    def user_events(self, user_id: str) -> str:
        """Stream: every event of every job of the user, for `/my`."""
        return f"{self._of_user(user_id)}:user:{user_id}:events"

    def user_open_jobs(self, user_id: str) -> str:
        """Set: the user's jobs that have not finished yet."""
        return f"{self._of_user(user_id)}:user:{user_id}:open"

    def user_jobs(self, user_id: str) -> str:
        """Sorted set (by member): the user's jobs, newest last, for `GET /api/v1/jobs`.
        Each member is "<creation cursor, zero-padded>:<job id>"."""
        return f"{self._of_user(user_id)}:user:{user_id}:jobs"

    def user_channel(self, user_id: str) -> str:
        return f"{self._of_user(user_id)}:ch:user:{user_id}"

    def user_slots(self, user_id: str) -> str:
        """Hash: the user's open connections, by hub process."""
        return f"{self._of_user(user_id)}:slots:{user_id}"

    def job_rate(self, user_id: str) -> str:
        """Sorted set: when the user created jobs in the last rate-limit window."""
        return f"{self._of_user(user_id)}:rate:jobs:{user_id}"

    def ticket_rate(self, user_id: str) -> str:
        """Sorted set: when stream tickets were bought for the user in the last window."""
        return f"{self._of_user(user_id)}:rate:tickets:{user_id}"

    def user_jobs_in_flight(self, user_id: str) -> str:
        """Hash: the user's jobs in the broker's queue or running (job id ->
        broker queue key and message id), at most HUB_JOBS_IN_FLIGHT_PER_USER."""
        return f"{self._of_user(user_id)}:user:{user_id}:inflight"

    def user_held_jobs(self, user_id: str) -> str:
        """List: the user's jobs waiting for one of those to end, oldest first
        (each entry holds the broker message to send)."""
        return f"{self._of_user(user_id)}:user:{user_id}:held"

    def users_with_held_jobs(self, bucket: str = "") -> str:
        """Set: users (of the bucket) whose held list is not empty (swept by the workers)."""
        return f"{self._in(bucket)}:held-users"

    # -- processes and tickets ------------------------------------------------

    def process_alive(self, process_id: str = "", bucket: str = "") -> str:
        """String with a TTL: present while the hub process renews it. On a
        cluster each bucket has its own, next to the slot hashes that name
        the process."""
        return f"{self._in(bucket)}:process:{process_id}"

    def ticket(self, digest: str) -> str:
        """String: a short-lived stream ticket (stored by its hash)."""
        return f"{self.namespace}:ticket:{digest}"

    # -- the broker -----------------------------------------------------------

    @property
    def dramatiq_namespace(self) -> str:
        return f"{self.namespace}-dramatiq"

    def dramatiq_queue(self, queue_name: str) -> str:
        """List: Dramatiq's Redis queue of message ids (its messages are in the
        hash of the same name + ".msgs"), as Dramatiq's Redis broker names it."""
        return f"{self.dramatiq_namespace}:{queue_name}"
