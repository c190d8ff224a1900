"""What Redis says about its own work, read from every primary a URL names
and summed: commands run (INFO commandstats), CPU used (INFO cpu) and memory
(INFO memory), and the difference between two readings.

The URL is any HUB_REDIS_URL: one server, the sentinels of a primary
(`redis+sentinel://`), or a node of a cluster, whose primaries are all read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import redis

from hub.store.topology import Kind, detect, sync_client

#: Left out of the counts: the measurement's own commands; those of setting
#: up a connection; and the check that a pipeline's script is loaded, which
#: redis-py's pipelines send once per batch and a worker's call does not.
OWN_COMMANDS = frozenset(
    {"info", "ping", "memory|usage", "xlen", "xrevrange", "scan", "unlink", "cluster|nodes", "cluster|slots"}
    | {"client|setinfo", "hello", "select", "auth"}
    | {"script|exists", "script|load"}
)
TIMEOUT = 30.0


@dataclass
class Reading:
    """One moment's counters, summed over the primaries."""

    at: float
    #: command -> (calls, µs spent in it)
    commands: dict[str, tuple[int, int]] = field(default_factory=dict)
    cpu_seconds: float = 0.0
    #: Each primary's main thread, the part that saturates.
    main_thread_cpu_seconds: list[float] = field(default_factory=list)
    used_memory: int = 0
    #: used_memory less Redis's own overhead (client and replication
    #: buffers among it): what the data takes.
    dataset_memory: int = 0
    forks: int = 0
    #: Times an fsync of the append-only file was put off: the disk lagged.
    aof_delayed_fsync: int = 0


class Primaries:
    """Clients of the primaries `url` names: the hub's own kind of client
    for a server or a sentinel set, or one per primary of a cluster."""

    def __init__(self, url: str) -> None:
        self.kind = detect(url)
        self.url = url
        if self.kind is Kind.CLUSTER:
            cluster = redis.RedisCluster.from_url(url, socket_timeout=TIMEOUT)
            self.nodes: list[redis.Redis] = [
                node.redis_connection
                for node in cluster.get_primaries()  # type: ignore[no-untyped-call]
                if node.redis_connection
            ]
            self._cluster = cluster
        else:
            self.nodes = [sync_client(url, socket_timeout=TIMEOUT)]
        #: A client that sends each one-key command where its key lives.
        self.keyed: Any = self._cluster if self.kind is Kind.CLUSTER else self.nodes[0]

    def read(self) -> Reading:
        reading = Reading(at=time.monotonic())
        for node in self.nodes:
            info: dict[str, Any] = node.info("everything")
            for key, value in info.items():
                if key.startswith("cmdstat_"):
                    name = key[len("cmdstat_") :]
                    calls, usec = reading.commands.get(name, (0, 0))
                    reading.commands[name] = (calls + int(value["calls"]), usec + int(value["usec"]))
            reading.cpu_seconds += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
            main = float(info.get("used_cpu_sys_main_thread", info["used_cpu_sys"])) + float(
                info.get("used_cpu_user_main_thread", info["used_cpu_user"])
            )
            reading.main_thread_cpu_seconds.append(main)
            reading.used_memory += int(info["used_memory"])
            reading.dataset_memory += int(info.get("used_memory_dataset", info["used_memory"]))
            reading.forks += int(info.get("total_forks", 0))
            reading.aof_delayed_fsync += int(info.get("aof_delayed_fsync", 0))
        return reading

    def version(self) -> str | None:
        info: dict[str, Any] = self.nodes[0].info("server")
        return info.get("valkey_version") or info.get("redis_version")

    def memory_usage(self, key: str) -> int:
        """Bytes `key` takes, counted in full (every entry of a stream)."""
        return int(self.keyed.memory_usage(key, samples=0) or 0)

    def delete_namespace(self, namespace: str) -> int:
        """Removes every key under `namespace`, on every primary."""
        removed = 0
        for node in self.nodes:
            # One key per UNLINK: a cluster takes several only when they share a slot.
            pipeline = node.pipeline(transaction=False)
            for key in node.scan_iter(match=f"{namespace}:*", count=1_000):
                pipeline.unlink(key)
                if len(pipeline) >= 500:
                    removed += sum(pipeline.execute())
            removed += sum(pipeline.execute())
        return removed

    def close(self) -> None:
        for node in self.nodes:
            node.close()
        if self.kind is Kind.CLUSTER:
            self._cluster.close()


def busiest_main_thread_percent(before: Reading, after: Reading) -> float:
    """The busiest primary's main thread between two readings, in % of a core."""
    wall = after.at - before.at
    deltas = [b - a for a, b in zip(before.main_thread_cpu_seconds, after.main_thread_cpu_seconds, strict=True)]
    return round(100 * max(deltas, default=0.0) / wall, 1) if wall > 0 else 0.0


def commands_between(before: Reading, after: Reading) -> dict[str, tuple[int, int]]:
    """Calls and µs of each command between two readings, the measurement's own left out."""
    diff = {}
    for name, (calls, usec) in after.commands.items():
        calls_before, usec_before = before.commands.get(name, (0, 0))
        if calls > calls_before and name not in OWN_COMMANDS:
            diff[name] = (calls - calls_before, usec - usec_before)
    return diff
