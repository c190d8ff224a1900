"""Fails jobs that stopped moving: a job `active` or `retrying` with no event
for HUB_JOB_STALL_SECONDS (its worker died and nothing redelivered it, or it
hangs), or an `external` job whose publisher went silent (or never started),
is reported `failed` with a clear reason, exactly once.

Every worker and hub process runs a watcher; they may race, but the journal
applies the failure only if the job is still running and has not changed
since it was seen stalled, so each stalled job fails once.

On a Redis Cluster the running jobs are indexed per bucket; a sweep reads
a window of the buckets (`BUCKETS_PER_SWEEP`, in one round trip per node),
so a whole turn takes 256 / 64 = 4 sweeps.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from hub.store.buckets import BucketWalk
from hub.store.journal import Journal, utc_now
from hub.store.redis_errors import store_errors
from hub.store.registry import Registry
from hub.store.sweeper import Sweeper

log = logging.getLogger("hub.store.stalls")

#: Jobs examined per sweep at most.
SWEEP_LIMIT = 100
#: Buckets a sweep reads on a cluster (one, the namespace's, on one server).
BUCKETS_PER_SWEEP = 64


class StallWatcher(Sweeper):
    name = "stall sweep"

    def __init__(
        self, *, redis: Any, journal: Journal, stall_seconds: float, job_types: Registry | None = None
    ) -> None:
        """`job_types` tells external jobs (which get their own reason) apart."""
        self._redis = redis
        self._journal = journal
        self._job_types = job_types if job_types is not None else Registry()
        self._stall_ms = int(stall_seconds * 1000)
        self._actor_reason = f"stalled: no progress for {stall_seconds:g} s (the worker may have died)"
        self._external_reason = f"stalled: no update for {stall_seconds:g} s (its publisher may have stopped)"
        self._walk = BucketWalk(journal.keys.buckets(), BUCKETS_PER_SWEEP)
        super().__init__(max(0.2, min(stall_seconds / 4, 30.0)))

    @store_errors
    def sweep(self) -> int:
        """Fails every job stalled right now; returns how many."""
        cutoff = int(time.time() * 1000) - self._stall_ms
        keys = self._journal.keys
        failed = 0
        for job_id in self._stalled(cutoff):
            owner, job_type = self._redis.hmget(keys.job(job_id), "owner", "type")
            if owner is None or job_type is None:
                self._redis.zrem(keys.running_jobs(keys.job_bucket(job_id)), job_id)  # expired meanwhile
                continue
            reason = self._reason(job_type.decode())
            if self._journal.update(
                job_id,
                owner.decode(),
                job_type.decode(),
                unchanged_since_ms=cutoff,
                status="failed",
                failedReason=reason,
                result={"error": reason},
                completedAt=utc_now(),
            ):
                failed += 1
                log.warning("job %s failed: %s", job_id, reason)
        return failed

    def _stalled(self, cutoff: int) -> list[str]:
        """Ids of jobs (of this sweep's buckets) unchanged since `cutoff`, `SWEEP_LIMIT` at most."""
        window = self._walk.window()
        if len(window) == 1:
            indexes = [
                self._redis.zrangebyscore(self._journal.keys.running_jobs(window[0]), "-inf", cutoff, 0, SWEEP_LIMIT)
            ]
        else:
            pipe = self._redis.pipeline(transaction=False)
            for bucket in window:
                pipe.zrangebyscore(self._journal.keys.running_jobs(bucket), "-inf", cutoff, 0, SWEEP_LIMIT)
            indexes = pipe.execute()
        return [raw.decode() for index in indexes for raw in index][:SWEEP_LIMIT]

    def _reason(self, job_type: str) -> str:
        known = self._job_types.get(job_type)
        return self._external_reason if known is not None and known.external else self._actor_reason
