"""Buckets: how a Redis Cluster's hash slots are shared out among users.

On a cluster every key a Lua script touches must live in one hash slot. A
job's script touches the job's keys and its owner's keys together, so both
carry the same hash tag: the owner's bucket, the first two hex digits of
the SHA-1 of the owner's id (256 buckets). A job id starts with its owner's
bucket, so any key of a job (and of its owner) can be named from the job id
alone: a service reads a job by id without knowing whose it is.

256 buckets are 256 hash slots: spread over up to a few dozen primaries,
each primary holds a fair share of them; far beyond that some primaries get
noticeably more buckets than others.
"""

from __future__ import annotations

import hashlib
import random
import re
import secrets
from functools import lru_cache

#: Every bucket, "00" to "ff".
BUCKETS = tuple(f"{n:02x}" for n in range(256))

#: A job id the hub makes: 32 lowercase hex digits, its owner's bucket first.
_JOB_ID = re.compile(r"\A[0-9a-f]{32}\Z")


@lru_cache(maxsize=65_536)
def bucket_of(name: str) -> str:
    """The bucket of a user (by id), or of anything else named by text."""
    return hashlib.sha1(name.encode("utf-8")).hexdigest()[:2]


def new_job_id(owner: str) -> str:
    """A fresh job id: the owner's bucket, then 120 random bits."""
    return bucket_of(owner) + secrets.token_hex(15)


def job_bucket(job_id: str) -> str:
    """The bucket of a job, read from its id. An id the hub did not make
    (not 32 hex digits) gets the bucket of its own text: nothing is ever
    stored there, so such a job reads as unknown."""
    if _JOB_ID.match(job_id):
        return job_id[:2]
    return bucket_of(job_id)


class BucketWalk:
    """Visits `buckets` a window at a time, round and round, from a random
    start (so that several processes sweeping the same buckets do not all
    look at the same ones first)."""

    def __init__(self, buckets: tuple[str, ...], per_visit: int) -> None:
        self._buckets = buckets
        self._size = max(1, min(per_visit, len(buckets)))
        self._next = random.randrange(len(buckets))

    def window(self) -> list[str]:
        """The next `per_visit` buckets."""
        count = len(self._buckets)
        chosen = [self._buckets[(self._next + i) % count] for i in range(self._size)]
        self._next = (self._next + self._size) % count
        return chosen
