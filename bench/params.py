"""The command line's knobs, with each scenario's defaults for a full run and
for `--quick` (small enough that `tox -e bench` takes a couple of minutes)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

_URL_PASSWORD = re.compile(r"(://[^/@:]*:)[^/@]*@")
_QUERY_PASSWORD = re.compile(r"(password=)[^&]*", re.IGNORECASE)


def redacted(text: str) -> str:
    """`text` with the password of any Redis URL in it starred out: URLs go in the run's record."""
    return _QUERY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))


@dataclass(frozen=True)
class Params:
    connections: tuple[int, ...] | None = None
    duration: float | None = None
    rate: float | None = None
    per_job: int | None = None
    quick: bool = False
    #: The hub's web-server processes (HUB_PROCESSES; streams100k: `hub serve`
    #: processes, each on its own port); None: one.
    processes: int | None = None
    #: redis-cost: the Redis to measure (any HUB_REDIS_URL), instead of one of its own.
    redis_url: str | None = None
    #: redis-cost: publisher processes trying to saturate it.
    publishers: int | None = None
    #: redis-cost: the primaries of a local cluster to start and measure (a replica each).
    cluster: int | None = None
    #: redis-cost: its one Valkey gets a replica, as each primary of a cluster has.
    replica: bool = False

    def connection_count(self, full: int, quick: int) -> int:
        """One connection count: the largest given, else the default."""
        return max(self.connections) if self.connections else (quick if self.quick else full)

    def connection_sweep(self, full: list[int], quick: list[int]) -> list[int]:
        return sorted(set(self.connections)) if self.connections else (quick if self.quick else full)

    def seconds(self, full: float, quick: float) -> float:
        return self.duration if self.duration is not None else (quick if self.quick else full)

    def events_per_second(self, full: float, quick: float) -> float:
        return self.rate if self.rate is not None else (quick if self.quick else full)

    def subscribers_per_job(self, default: int = 1) -> int:
        return self.per_job or default

    def process_count(self, full: int, quick: int) -> int:
        return self.processes or (quick if self.quick else full)

    def publisher_count(self, full: int, quick: int) -> int:
        return self.publishers or (quick if self.quick else full)

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        if self.redis_url:
            values["redis_url"] = redacted(self.redis_url)
        return values
