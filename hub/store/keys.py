"""Names of every Redis key and channel, under one namespace.

A namespace keeps several deployments (or test runs) apart on one Redis.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KeySpace:
    namespace: str

    def job(self, job_id: str) -> str:
        """Hash: the job's state (JSON), owner, type, last and terminal event ids."""
        return f"{self.namespace}:job:{job_id}"

    def job_events(self, job_id: str) -> str:
        """Stream: the job's event history; entry ids are the SSE cursors."""
        return f"{self.namespace}:job:{job_id}:events"

    def user_events(self, user_id: str) -> str:
        """Stream: every event of every job of the user, for `/my`."""
        return f"{self.namespace}:user:{user_id}:events"

    def user_open_jobs(self, user_id: str) -> str:
        """Set: the user's jobs that have not finished yet."""
        return f"{self.namespace}:user:{user_id}:open"

    def user_jobs(self, user_id: str) -> str:
        """Sorted set (by member): the user's jobs, newest last, for `GET /api/v1/jobs`.
        Each member is "<creation cursor, zero-padded>:<job id>"."""
        return f"{self.namespace}:user:{user_id}:jobs"

    def job_file(self, job_id: str, name: str) -> str:
        """Hash: a file a job produced ("data", "type"), served to its owner."""
        return f"{self.namespace}:job:{job_id}:file:{name}"

    def running_jobs(self) -> str:
        """Sorted set: jobs that are active or retrying, by last change (ms)."""
        return f"{self.namespace}:running"

    def job_channel(self, job_id: str) -> str:
        return f"{self.namespace}:ch:job:{job_id}"

    def user_channel(self, user_id: str) -> str:
        return f"{self.namespace}:ch:user:{user_id}"

    def user_slots(self, user_id: str) -> str:
        """Hash: the user's open connections, by hub process."""
        return f"{self.namespace}:slots:{user_id}"

    def process_alive(self, process_id: str = "") -> str:
        """String with a TTL: present while the hub process renews it."""
        return f"{self.namespace}:process:{process_id}"

    def ticket(self, digest: str) -> str:
        """String: a short-lived stream ticket (stored by its hash)."""
        return f"{self.namespace}:ticket:{digest}"

    def job_rate(self, user_id: str) -> str:
        """Sorted set: when the user created jobs in the last rate-limit window."""
        return f"{self.namespace}:rate:jobs:{user_id}"

    def ticket_rate(self, user_id: str) -> str:
        """Sorted set: when stream tickets were bought for the user in the last window."""
        return f"{self.namespace}:rate:tickets:{user_id}"

    def user_jobs_in_flight(self, user_id: str) -> str:
        """Hash: the user's jobs in the broker's queue or running (job id ->
        broker queue key and message id), at most HUB_JOBS_IN_FLIGHT_PER_USER."""
        return f"{self.namespace}:user:{user_id}:inflight"

    def user_held_jobs(self, user_id: str) -> str:
        """List: the user's jobs waiting for one of those to end, oldest first
        (each entry holds the broker message to send)."""
        return f"{self.namespace}:user:{user_id}:held"

    def users_with_held_jobs(self) -> str:
        """Set: users whose held list is not empty (swept by the workers)."""
        return f"{self.namespace}:held-users"

    @property
    def dramatiq_namespace(self) -> str:
        return f"{self.namespace}-dramatiq"

    def dramatiq_queue(self, queue_name: str) -> str:
        """List: Dramatiq's Redis queue of message ids (its messages are in the
        hash of the same name + ".msgs"), as Dramatiq's Redis broker names it."""
        return f"{self.dramatiq_namespace}:{queue_name}"
