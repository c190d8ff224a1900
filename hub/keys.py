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

    def media(self, job_id: str) -> str:
        """String: the rendered image of a media job."""
        return f"{self.namespace}:media:{job_id}"

    def job_channel(self, job_id: str) -> str:
        return f"{self.namespace}:ch:job:{job_id}"

    def user_channel(self, user_id: str) -> str:
        return f"{self.namespace}:ch:user:{user_id}"

    @property
    def dramatiq_namespace(self) -> str:
        return f"{self.namespace}-dramatiq"
