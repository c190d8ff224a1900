"""The load generator: worker processes (bench/worker.py) that hold the
client connections, and the handle the scenarios drive them with.

Several processes, because one may hold only so many sockets (the machine
allows 20,000 open files per process, and `PER_WORKER` stays well below);
all pinned away from the server's core, each measuring its own CPU time so a
saturated load generator shows up in the report instead of passing for a
slow server. Commands and answers travel as dicts over a pipe.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import time
from collections import Counter
from multiprocessing.connection import Connection
from typing import Any

from bench.clients import ClientSpec
from bench.stats import Histogram
from bench.worker import worker_main

#: Connections per load-generator process.
PER_WORKER = 5_000


class BenchError(RuntimeError):
    """The benchmark could not measure what it set out to."""


class LoadGen:
    """The scenario's side: starts the workers, splits the clients among them,
    and sends every command to all of them at once."""

    def __init__(
        self,
        port: int,
        connections: int,
        cpus: set[int] | None,
        host: str = "127.0.0.1",
        *,
        per_worker: int = PER_WORKER,
    ) -> None:
        self.count = max(1, math.ceil(connections / per_worker))
        context = multiprocessing.get_context("spawn")
        self._conns: list[Connection] = []
        self._processes: list[multiprocessing.process.BaseProcess] = []
        try:
            for index in range(self.count):
                ours, theirs = context.Pipe()
                process = context.Process(
                    target=worker_main, args=(theirs, index, cpus, host, port), daemon=True, name=f"bench-load-{index}"
                )
                process.start()
                theirs.close()
                self._conns.append(ours)
                self._processes.append(process)
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes if p.pid is not None]

    def split(self, items: list[Any]) -> list[list[Any]]:
        return [items[i :: self.count] for i in range(self.count)]

    def call(
        self, op: str, budget: float, per_worker: list[dict[str, Any]] | None = None, **common: Any
    ) -> list[dict[str, Any]]:
        """Runs `op` on every worker; each must answer within `budget` seconds."""
        payloads = per_worker or [{} for _ in self._conns]
        for conn, payload in zip(self._conns, payloads, strict=True):
            conn.send({"op": op, **common, **payload})
        replies = []
        deadline = time.monotonic() + budget
        for index, conn in enumerate(self._conns):
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                raise BenchError(f"load generator {index} did not finish {op!r} within {budget:.0f}s")
            try:
                reply = conn.recv()
            except (EOFError, OSError):
                raise BenchError(f"load generator {index} died during {op!r}") from None
            if "error" in reply:
                raise BenchError(f"load generator {index} failed {op!r}:\n{reply['error']}")
            replies.append(reply)
        return replies

    def open_sse(self, specs: list[ClientSpec], timeout: float = 30.0, track_events: bool = False) -> dict[str, Any]:
        # Generous: connects are paced, so 10,000 of them take a while, and
        # on a shared machine the server may get only part of its core.
        budget = timeout + len(specs) / 40
        replies = self.call(
            "open_sse",
            budget,
            [{"specs": part} for part in self.split(specs)],
            timeout=timeout,
            track_events=track_events,
        )
        errors: Counter[str] = Counter()
        for reply in replies:
            errors.update(reply["errors"])
        return {
            "opened": sum(r["opened"] for r in replies),
            "failed": sum(r["failed"] for r in replies),
            "errors": dict(errors),
            "seconds": max(r["seconds"] for r in replies),
        }

    def stats(self, counts: dict[str, int] | None = None, reset: bool = False) -> dict[str, Any]:
        return merge_stats(self.call("stats", 60.0, counts=counts, reset=reset))

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(OSError, ValueError):  # already gone
                conn.send({"op": "exit"})
        for process in self._processes:
            process.join(5)
            if process.is_alive():
                process.terminate()
                process.join(5)
            if process.is_alive():
                process.kill()
                process.join()
        for conn in self._conns:
            conn.close()
        self._conns, self._processes = [], []

    def __enter__(self) -> LoadGen:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def merge_stats(replies: list[dict[str, Any]]) -> dict[str, Any]:
    """One report for all workers: sums, merged histograms, earliest first
    and latest last delivery."""
    latency = Histogram()
    for reply in replies:
        latency.merge(Histogram.from_dict(reply["latency"]))
    merged: dict[str, Any] = {"latency": latency}
    for key in ("deliveries", "bytes_in", "bytes_out", "requests", "keepalives", "cpu_seconds", "streams_open"):
        merged[key] = sum(r[key] for r in replies)
    merged["streams_closed_by_server"] = sum(r["streams_closed_by_server"] for r in replies)
    merged["wall_seconds"] = max(r["wall_seconds"] for r in replies)
    firsts = [r["first_ns"] for r in replies if r["first_ns"] is not None]
    lasts = [r["last_ns"] for r in replies if r["last_ns"] is not None]
    merged["first_ns"] = min(firsts) if firsts else None
    merged["last_ns"] = max(lasts) if lasts else None
    errors: Counter[str] = Counter()
    for reply in replies:
        errors.update(reply["errors"])
    merged["errors"] = dict(errors)
    merged["incomplete_sample"] = [c for r in replies for c in r.get("incomplete_sample", [])][:20]
    for section in ("accounting", "polling"):
        if any(section in r for r in replies):
            total: Counter[str] = Counter()
            for reply in replies:
                total.update(reply.get(section, {}))
            merged[section] = dict(total)
    if any("events" in r for r in replies):
        events: dict[str, list[int]] = {}
        for reply in replies:
            for key, (sent, first, last, count) in reply.get("events", {}).items():
                entry = events.setdefault(key, [sent, first, last, 0])
                entry[1] = min(entry[1], first)
                entry[2] = max(entry[2], last)
                entry[3] += count
        merged["events"] = events
    return merged
