"""The command line's knobs, with each scenario's defaults for a full run and
for `--quick` (small enough that `tox -e bench` takes a couple of minutes)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Params:
    connections: tuple[int, ...] | None = None
    duration: float | None = None
    rate: float | None = None
    per_job: int | None = None
    quick: bool = False
    #: The hub's web-server processes (HUB_PROCESSES); None: one.
    processes: int | None = None

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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
