"""Files that jobs make (a rendered image, a report), kept in Redis beside
the job for as long as the job, and served to the job's owner."""

from __future__ import annotations

import re
from typing import Any

from hub.store.keys import KeySpace
from hub.store.redis_errors import store_errors

#: A file's name: what a job may save, and what the file routes take.
FILE_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
FILE_NAME = re.compile(rf"\A{FILE_NAME_PATTERN}\Z")
#: One file at most; Redis holds it in memory.
MAX_FILE_BYTES = 8 * 1024 * 1024


def file_url(job_id: str, name: str) -> str:
    return f"/api/v1/jobs/{job_id}/files/{name}"


class JobFiles:
    """A job's files: saved by its worker (with a blocking Redis client),
    read for its owner by the web server (with an asyncio one). A Redis
    failure is StoreUnavailable or StoreFull."""

    def __init__(self, redis: Any, keys: KeySpace) -> None:
        self._redis = redis
        self._keys = keys

    @store_errors
    def save(self, job_id: str, name: str, data: bytes, content_type: str, ttl_seconds: int) -> None:
        """Keeps `data` under `name` for `ttl_seconds`; ValueError for a name
        the file routes would not take, or a file too large."""
        if not FILE_NAME.match(name):
            raise ValueError(f"file name {name!r} must match {FILE_NAME_PATTERN}")
        if len(data) > MAX_FILE_BYTES:
            raise ValueError(f"file {name!r} is larger than {MAX_FILE_BYTES} bytes")
        key = self._keys.job_file(job_id, name)
        pipe = self._redis.pipeline()
        pipe.hset(key, mapping={"data": data, "type": content_type})
        pipe.expire(key, ttl_seconds)
        pipe.execute()

    @store_errors
    async def read(self, job_id: str, name: str) -> tuple[bytes, str] | None:
        """The file's bytes and content type ("" if it has none), or None."""
        data, content_type = await self._redis.hmget(self._keys.job_file(job_id, name), ["data", "type"])
        if data is None:
            return None
        return data, content_type.decode() if isinstance(content_type, bytes) else content_type or ""
