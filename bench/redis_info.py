"""What Redis says about its own work, read from every primary a URL names,
each apart and summed: commands run (INFO commandstats), CPU used (INFO
cpu) and memory (INFO memory), and the difference between two readings.

The URL is any HUB_REDIS_URL: one server, the sentinels of a primary
(`redis+sentinel://`), or a node of a cluster, whose primaries are all read,
and whose replicas' CPU is read too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import redis

from hub.store.topology import Kind, detect, server_client

#: Left out of the counts: the measurement's own commands; those of setting
#: up a connection; the check that a pipeline's script is loaded, which
#: redis-py's pipelines send once per batch and a worker's call does not;
#: and a replica's acknowledgements, once a second whatever is written.
OWN_COMMANDS = frozenset(
    {"info", "ping", "memory|usage", "xlen", "xrevrange", "scan", "unlink", "cluster|nodes", "cluster|slots"}
    | {"client|setinfo", "hello", "select", "auth"}
    | {"script|exists", "script|load"}
    | {"replconf"}
)
#: The append script's calls: one per event.
SCRIPT_CALLS = ("evalsha", "eval")
TIMEOUT = 30.0


@dataclass
class Reading:
    """One moment's counters, summed over the primaries; the lists hold each
    primary's own, in the order of `Primaries.nodes`."""

    at: float
    #: command -> (calls, µs spent in it)
    commands: dict[str, tuple[int, int]] = field(default_factory=dict)
    cpu_seconds: float = 0.0
    node_cpu_seconds: list[float] = field(default_factory=list)
    #: Each primary's main thread, the part that saturates.
    main_thread_cpu_seconds: list[float] = field(default_factory=list)
    #: Each primary's calls of the append script: its events.
    node_script_calls: list[int] = field(default_factory=list)
    #: The replicas' CPU, all together (a cluster's; none read otherwise).
    replica_cpu_seconds: float = 0.0
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
            found = [node for node in cluster.get_primaries() if node.redis_connection]  # type: ignore[no-untyped-call]
            self.nodes: list[redis.Redis] = [node.redis_connection for node in found]
            self._names = [node.name for node in found]
            self._cluster = cluster
        else:
            self.nodes = [server_client(url, socket_timeout=TIMEOUT)]
        #: The replicas the primaries feed, those that answer.
        self.replicas = [replica for node in self.nodes for replica in _replicas_of(node)]
        #: A client that sends each one-key command where its key lives.
        self.keyed: Any = self._cluster if self.kind is Kind.CLUSTER else self.nodes[0]

    def read(self) -> Reading:
        reading = Reading(at=time.monotonic())
        for node in self.nodes:
            info: dict[str, Any] = node.info("everything")
            script_calls = 0
            for key, value in info.items():
                if key.startswith("cmdstat_"):
                    name = key[len("cmdstat_") :]
                    calls, usec = reading.commands.get(name, (0, 0))
                    reading.commands[name] = (calls + int(value["calls"]), usec + int(value["usec"]))
                    script_calls += int(value["calls"]) if name in SCRIPT_CALLS else 0
            reading.node_script_calls.append(script_calls)
            reading.node_cpu_seconds.append(_cpu_seconds(info))
            reading.cpu_seconds += reading.node_cpu_seconds[-1]
            main = float(info.get("used_cpu_sys_main_thread", info["used_cpu_sys"])) + float(
                info.get("used_cpu_user_main_thread", info["used_cpu_user"])
            )
            reading.main_thread_cpu_seconds.append(main)
            reading.used_memory += int(info["used_memory"])
            reading.dataset_memory += int(info.get("used_memory_dataset", info["used_memory"]))
            reading.forks += int(info.get("total_forks", 0))
            reading.aof_delayed_fsync += int(info.get("aof_delayed_fsync", 0))
        reading.replica_cpu_seconds = sum(_cpu_seconds(replica.info("cpu")) for replica in self.replicas)
        return reading

    def primary_of(self, key: str) -> int:
        """The index in `nodes` of the primary that holds `key`."""
        if self.kind is not Kind.CLUSTER:
            return 0
        return self._names.index(self._cluster.get_node_from_key(key).name)  # type: ignore[no-untyped-call]

    def still_primaries(self) -> bool:
        """Whether every node read as a primary still is one (no failover meanwhile)."""
        return all(node.info("replication").get("role") == "master" for node in self.nodes)

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
        for node in [*self.nodes, *self.replicas]:
            node.close()
        if self.kind is Kind.CLUSTER:
            self._cluster.close()


def _replicas_of(primary: redis.Redis) -> list[redis.Redis]:
    """Clients of the replicas that `primary` says it feeds (INFO
    replication), logged in as its own; one that does not answer (its
    address seen from here is not the one it gave) is left out."""
    login = {
        name: value
        for name, value in primary.connection_pool.connection_kwargs.items()
        if name in ("username", "password", "db")
    }
    replicas = []
    for key, value in primary.info("replication").items():
        if not (key.startswith("slave") and isinstance(value, dict)):
            continue
        replica = redis.Redis(
            host=str(value["ip"]), port=int(value["port"]), socket_timeout=TIMEOUT, socket_connect_timeout=2, **login
        )
        try:
            replica.ping()
        except redis.RedisError:
            replica.close()
            continue
        replicas.append(replica)
    return replicas


def _cpu_seconds(info: dict[str, Any]) -> float:
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def main_thread_percents(before: Reading, after: Reading) -> list[float]:
    """Each primary's main thread between two readings, in % of a core."""
    wall = after.at - before.at
    deltas = [b - a for a, b in zip(before.main_thread_cpu_seconds, after.main_thread_cpu_seconds, strict=True)]
    return [round(100 * delta / wall, 1) if wall > 0 else 0.0 for delta in deltas]


def script_calls_between(before: Reading, after: Reading) -> list[int]:
    """Each primary's events between two readings."""
    return [b - a for a, b in zip(before.node_script_calls, after.node_script_calls, strict=True)]


def commands_between(before: Reading, after: Reading) -> dict[str, tuple[int, int]]:
    """Calls and µs of each command between two readings, the measurement's own left out."""
    diff = {}
    for name, (calls, usec) in after.commands.items():
        calls_before, usec_before = before.commands.get(name, (0, 0))
        if calls > calls_before and name not in OWN_COMMANDS:
            diff[name] = (calls - calls_before, usec - usec_before)
    return diff
