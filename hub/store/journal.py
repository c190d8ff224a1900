"""Records job state changes: one atomic Redis script call per change.

Used by the hub (job creation) with an asyncio client and by the actors
(progress, lifecycle) with a blocking client; it does not care which.

With HUB_REDIS_WAIT_REPLICAS, an append returns once that many replicas hold
it: the script and a WAIT go out together on one connection, so the WAIT
covers that very write. A replica that does not answer within
`WAIT_TIMEOUT_MS` does not fail the append: it is already recorded and
published on the primary, and a publisher told otherwise would send it
again. The shortfall is logged and counted (`on_unreplicated`) instead; the
event is then only as safe as asynchronous replication makes it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis.asyncio

from hub.errors import ConfigError
from hub.store.keys import KeySpace
from hub.store.redis_errors import store_errors
from hub.store.scripts import load_script
from hub.store.settings import Settings
from hub.store.wire import QUEUED, STATUSES

log = logging.getLogger("hub.store.journal")

#: How long an append waits for HUB_REDIS_WAIT_REPLICAS replicas to confirm
#: it. A healthy replica nearby confirms within a millisecond; the bound is
#: what each append costs while a replica is missing (after a failover, until
#: the old primary is back as a replica).
WAIT_TIMEOUT_MS = 100
#: A missing replica is logged at most this often (it is counted every time).
UNREPLICATED_LOG_SECONDS = 10.0


def utc_now() -> str:
    """ISO-8601 UTC with milliseconds, the format of every time the hub emits."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Journal:
    """Appends job events. Returns awaitables when given an asyncio Redis
    client. A Redis failure is StoreUnavailable or StoreFull."""

    def __init__(self, redis: Any, settings: Settings, *, on_unreplicated: Callable[[], None] | None = None) -> None:
        self.keys = KeySpace.for_client(settings.namespace, redis)
        if self.keys.cluster and settings.redis_wait_replicas:
            # The WAIT must follow the script on its node's connection, which
            # a cluster client does not hand out.
            raise ConfigError("HUB_REDIS_WAIT_REPLICAS is not supported on a Redis Cluster: set it to 0")
        self._settings = settings
        self._redis = redis
        self._append = redis.register_script(load_script("append_event.lua"))
        # On a cluster, sharded pub/sub: a message stays on the shard that
        # owns its channel's slot instead of going to every node.
        self._publish = "SPUBLISH" if self.keys.cluster else "PUBLISH"
        self._on_unreplicated = on_unreplicated or (lambda: None)
        self._unreplicated_logged_at = float("-inf")

    @store_errors
    def create(
        self,
        job_id: str,
        owner: str,
        job_type: str,
        *,
        job_input: dict[str, Any] | None = None,
        external: bool = False,
    ) -> Any:
        """Records a new `queued` job. An `external` job is watched for stalls
        from now on: nothing else will tell if its publisher never starts."""
        now = utc_now()
        state = {
            "jobId": job_id,
            "type": job_type,
            "status": QUEUED,
            "progress": 0,
            "createdAt": now,
            "timestamp": now,
        }
        extra = [json.dumps(job_input or {}, separators=(",", ":"), ensure_ascii=False), "1" if external else "0"]
        return self._call(job_id, owner, job_type, state, create=True, extra=extra)

    @store_errors
    def update(
        self, job_id: str, owner: str, job_type: str, *, unchanged_since_ms: int | None = None, **patch: Any
    ) -> Any:
        """Applies `patch` (status, progress, step, result, ...) to the job.

        The result is None when the job is unknown, already finished, or (with
        `unchanged_since_ms`) has changed since that time.
        """
        status = patch.get("status")
        if status is not None and status not in STATUSES:
            raise ValueError(f"unknown job status {status!r}")
        patch.setdefault("timestamp", utc_now())
        return self._call(job_id, owner, job_type, patch, create=False, unchanged_since_ms=unchanged_since_ms)

    @store_errors
    def next_attempt(self, job_id: str) -> Any:
        """Counts one more attempt at the job (a retry, or a redelivery after a
        worker died) and returns its number."""
        return self._redis.hincrby(self.keys.job(job_id), "attempts", 1)

    def _call(
        self,
        job_id: str,
        owner: str,
        job_type: str,
        patch: dict[str, Any],
        *,
        create: bool,
        unchanged_since_ms: int | None = None,
        extra: list[str] | None = None,
    ) -> Any:
        k = self.keys
        bucket = k.job_bucket(job_id)
        if bucket != k.user_bucket(owner):
            # One script, one hash slot: a job's id names its owner's bucket.
            raise ValueError(f"job {job_id!r} is not in the bucket of its owner")
        keys = [
            k.job(job_id),
            k.job_events(job_id),
            k.user_events(owner),
            k.user_open_jobs(owner),
            k.job_channel(job_id),
            k.user_channel(owner),
            k.running_jobs(bucket),
            k.user_jobs(owner),
        ]
        args = [
            json.dumps(patch, separators=(",", ":")),
            repr(time.time()),
            self._settings.job_history,
            self._settings.user_history,
            self._settings.job_ttl_seconds,
            "1" if create else "0",
            owner,
            job_type,
            job_id,
            "" if unchanged_since_ms is None else unchanged_since_ms,
            self._publish,
            *(extra or []),
        ]
        replicas = self._settings.redis_wait_replicas
        if not replicas:
            return self._append(keys=keys, args=args)
        if isinstance(self._redis, redis.asyncio.Redis):
            return self._append_replicated_async(keys, args, replicas)
        with self._redis.pipeline(transaction=False) as pipe:
            self._append(keys=keys, args=args, client=pipe)
            pipe.wait(replicas, WAIT_TIMEOUT_MS)
            recorded, acknowledged = pipe.execute()
        self._check_replicas(acknowledged, replicas)
        return recorded

    async def _append_replicated_async(self, keys: list[str], args: list[Any], replicas: int) -> Any:
        async with self._redis.pipeline(transaction=False) as pipe:
            await self._append(keys=keys, args=args, client=pipe)
            pipe.wait(replicas, WAIT_TIMEOUT_MS)
            recorded, acknowledged = await pipe.execute()
        self._check_replicas(acknowledged, replicas)
        return recorded

    def _check_replicas(self, acknowledged: int, wanted: int) -> None:
        if acknowledged >= wanted:
            return
        self._on_unreplicated()
        now = time.monotonic()
        if now - self._unreplicated_logged_at >= UNREPLICATED_LOG_SECONDS:
            self._unreplicated_logged_at = now
            log.warning(
                "an event reached %d of the %d replicas HUB_REDIS_WAIT_REPLICAS asks for within %d ms;"
                " it stands, replicated asynchronously (logged at most every %gs)",
                acknowledged,
                wanted,
                WAIT_TIMEOUT_MS,
                UNREPLICATED_LOG_SECONDS,
            )
