"""A Valkey Cluster for measuring Redis itself (redis-cost --cluster P): the
tests' LocalCluster (P primaries, a replica each, on loopback), set up as
bench/valkey.py sets up one server: append-only file, fsync every second,
noeviction; the primaries' main threads on the server's core, and all else
(their background threads and forks, and the replicas whole) on the load
cores, with the publishers. So the primaries get the core that one server
gets in the default run, and the two runs differ in the number of primaries
only."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench.system import cpu_sets

#: The cluster needs at least three primaries (`valkey-cli --cluster create`).
MIN_PRIMARIES = 3
#: Milliseconds a node may be silent before its replica takes over: Redis's
#: default. The tests' second would fail over primaries that saturated
#: publishers starve, and a new primary lacks the append script.
NODE_TIMEOUT_MS = 15_000


def _cpulist(cpus: set[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def _config() -> list[str]:
    lines = ["appendonly yes", "appendfsync everysec", "maxmemory-policy noeviction"]
    lines += [f"cluster-node-timeout {NODE_TIMEOUT_MS}"]
    server, load = cpu_sets()
    if server and load:
        lines.append(f"server-cpulist {_cpulist(server)}")
        lines += [f"{name} {_cpulist(load)}" for name in ("bio-cpulist", "aof-rewrite-cpulist", "bgsave-cpulist")]
    return lines


def _pin_whole(pid: int, cpus: set[int]) -> None:
    """Every thread of `pid` (the main thread's own setting binds it alone)."""
    for thread in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(thread), cpus)


@contextlib.contextmanager
def local_cluster(primaries: int) -> Iterator[str]:
    """Runs the cluster until the block ends; yields a node's URL."""
    if primaries < MIN_PRIMARIES:
        raise ValueError(f"a cluster has at least {MIN_PRIMARIES} primaries")
    # The tests' cluster: the benchmark runs from the source tree, as they do.
    from tests.support.redis_cluster import LocalCluster

    folder = Path(tempfile.mkdtemp(prefix="bench-redis-cluster-"))
    cluster = LocalCluster(folder, primaries=primaries, replicas=1, config=_config())
    try:
        cluster.start()
        load = cpu_sets()[1]
        if load:
            replica_ports = {node.port for node in cluster.nodes() if not node.is_primary}
            for port in replica_ports:
                _pin_whole(cluster.processes[port].pid, load)
        yield cluster.url
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)
