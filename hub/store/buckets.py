"""Buckets: how a Redis Cluster's hash slots are shared out among users.

On a cluster every key a Lua script touches must live in one hash slot. A
job's script touches the job's keys and its owner's keys together, so both
carry the same hash tag: that of the owner's bucket, the first two hex
digits of the SHA-1 of the owner's id (256 buckets). A job id starts with
its owner's bucket, so any key of a job (and of its owner) can be named from
the job id alone: a service reads a job by id without knowing whose it is.

Bucket n's tag puts its keys in slots 64n to 64n + 63 (`tag`), so that the
buckets lie evenly over the slots: primaries that own equal ranges of slots
(as `valkey-cli --cluster create` and `--cluster rebalance` make them) hold
equal numbers of buckets, 256 / P each, give or take one. The two hex digits
alone would hash anywhere: with 16 such primaries, some would hold 10
buckets and others 23.
"""

from __future__ import annotations

import binascii
import hashlib
import random
import re
import secrets
from functools import cache

#: Every bucket, "00" to "ff".
BUCKETS = tuple(f"{n:02x}" for n in range(256))
#: A Redis Cluster's hash slots, and how many each bucket's range holds.
HASH_SLOTS = 16384
SLOTS_PER_BUCKET = HASH_SLOTS // len(BUCKETS)

#: A job id the hub makes: 32 lowercase hex digits, its owner's bucket first.
_JOB_ID = re.compile(r"\A[0-9a-f]{32}\Z")


def bucket_of(name: str) -> str:
    """The bucket of a user (by id), or of anything else named by text."""
    return hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:2]


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


def tag(bucket: str) -> str:
    """The hash tag of a bucket's keys: "<bucket>.<k>", with the smallest k
    that puts it in the bucket's own range of slots (e.g. "00.441")."""
    return _tags()[bucket]


@cache
def _tags() -> dict[str, str]:
    # About 200 tries per bucket: a tenth of a second, once per process.
    tags = {}
    for number, bucket in enumerate(BUCKETS):
        k = 0
        while slot_of(f"{bucket}.{k}") // SLOTS_PER_BUCKET != number:
            k += 1
        tags[bucket] = f"{bucket}.{k}"
    return tags


def slot_of(hash_tag: str) -> int:
    """The cluster's hash slot of a key tagged `{hash_tag}` (CRC16, as Redis computes it)."""
    return binascii.crc_hqx(hash_tag.encode("utf-8"), 0) % HASH_SLOTS


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
