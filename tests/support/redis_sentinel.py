"""A Redis Sentinel set of real valkey-server processes for tests: a
primary, one replica and three sentinels on free loopback ports, in a
directory of their own. A test kills the primary (as a crash would) and
waits for the sentinels to promote the replica.

The sentinels take a primary for dead after `down_after_ms` without an
answer; with the short defaults here a failover takes a few seconds.

The replica reaches the primary through a TCP proxy, so that a test can
stall replication (`stall_replication`): what the primary writes from then
on never reaches the replica, as when a crash takes a replication backlog
with it, and a failover then loses those writes for sure.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar, cast
from urllib.parse import quote

import redis

from hub.runtime.embedded import answers_on, free_port, server_binary
from hub.runtime.processes import die_with_parent, stop_process
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_for

SERVICE = "hubprimary"
SENTINELS = 3
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
DEFAULT_DOWN_AFTER_MS = 1_000
DEFAULT_FAILOVER_TIMEOUT_MS = 5_000
#: Attempts at a free port, should another process take it first.
PORT_ATTEMPTS = 5

Address = tuple[str, int]
T = TypeVar("T")


class Node:
    """One valkey-server process (data node or sentinel)."""

    def __init__(self, directory: Path, name: str, lines: list[str], *, sentinel: bool = False) -> None:
        self.directory = directory / name
        self.name = name
        self.lines = lines
        self.sentinel = sentinel
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> Address:
        return ("127.0.0.1", self.port)

    @property
    def log_path(self) -> Path:
        return self.directory / "valkey.log"

    def start(self, password: str | None, port: int | None = None) -> None:
        """Starts on `port`, or on a free port (another one if it is taken meanwhile)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(1 if port else PORT_ATTEMPTS):
            self.port = port or free_port()
            if self._try_start(password):
                return
        raise RuntimeError(f"{self.name} did not start; see {self.log_path}")

    def _try_start(self, password: str | None) -> bool:
        config = self.directory / "valkey.conf"
        # Sentinel rewrites its config file as the set changes: it must be writable.
        config.write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    "bind 127.0.0.1",
                    f"dir {self.directory}",
                    f"logfile {self.log_path}",
                    "daemonize no",
                    *self.lines,
                ]
            )
            + "\n"
        )
        command = [server_binary(), str(config)] + (["--sentinel"] if self.sentinel else [])
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent, start_new_session=True
        )
        if answers_on(self.port, self.process, password, START_TIMEOUT):
            return True
        self.stop()
        return False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no goodbye, nothing flushed, as a crash."""
        if self.running:
            assert self.process is not None
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, STOP_TIMEOUT)


class SentinelSet:
    """A primary, a replica and three sentinels; `start()` returns once the
    sentinels know the primary, its replica and each other (only then can
    they fail over)."""

    def __init__(
        self,
        directory: Path,
        *,
        password: str | None = None,
        down_after_ms: int = DEFAULT_DOWN_AFTER_MS,
        failover_timeout_ms: int = DEFAULT_FAILOVER_TIMEOUT_MS,
    ) -> None:
        self.directory = directory
        self.password = password
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        # No pause before a full sync (Valkey waits 5 s for more replicas by default).
        data = ['save ""', "appendonly no", "maxmemory-policy noeviction", "repl-diskless-sync-delay 0"]
        if password is not None:
            data += [f"requirepass {password}", f"masterauth {password}"]
        self.data_config = data
        self.data_nodes: list[Node] = []
        self.sentinels: list[Node] = []
        self._replication: TcpProxy | None = None

    def start(self) -> SentinelSet:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        primary = Node(self.directory, "data-0", self.data_config)
        primary.start(self.password)
        self._replication = TcpProxy(primary.port).start()
        replica = Node(self.directory, "data-1", [*self.data_config, f"replicaof 127.0.0.1 {self._replication.port}"])
        replica.start(self.password)
        self.data_nodes = [primary, replica]
        self._wait(lambda: self._in_sync(replica), "the replica did not sync with the primary")
        lines = [
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary.port} 2",
            f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}",
            f"sentinel failover-timeout {SERVICE} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {SERVICE} 1",
        ]
        if self.password is not None:
            # The same password guards the sentinels and the data nodes, as
            # the hub's sentinel URL assumes.
            lines += [f"sentinel auth-pass {SERVICE} {self.password}", f"requirepass {self.password}"]
        # Each sentinel is told of the replica and of the others up front:
        # found on their own (hello messages, INFO), they take seconds more.
        ids = [secrets.token_hex(20) for _ in range(SENTINELS)]
        ports = self._free_ports(SENTINELS)
        self.sentinels = []
        for i, (myid, port) in enumerate(zip(ids, ports, strict=True)):
            known = [
                f"sentinel known-sentinel {SERVICE} 127.0.0.1 {other_port} {other_id}"
                for other_id, other_port in zip(ids, ports, strict=True)
                if other_id != myid
            ]
            own = [f"sentinel myid {myid}", f"sentinel known-replica {SERVICE} 127.0.0.1 {replica.port}"]
            node = Node(self.directory, f"sentinel-{i}", [*lines, *own, *known], sentinel=True)
            node.start(self.password, port)
            self.sentinels.append(node)
        self._wait(self._sentinels_ready, "the sentinels did not find each other and the replica")

    def stop(self) -> None:
        for node in [*self.sentinels, *self.data_nodes]:
            node.stop()
        if self._replication is not None:
            self._replication.stop()

    def stall_replication(self) -> None:
        """From now on the replica hears nothing from the first primary, and
        does not know it: what the primary writes is lost in a failover."""
        assert self._replication is not None
        assert self._replication.stall() == 1, "the replica is not connected"

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"{host}:{port}" for host, port in (s.address for s in self.sentinels))
        credentials = f":{quote(self.password, safe='')}@" if self.password is not None else ""
        return f"redis+sentinel://{credentials}{hosts}/{SERVICE}/{db}"

    def primary_address(self) -> Address:
        """Where the sentinels say the primary is (the first that answers)."""
        for sentinel in self.sentinels:
            if not sentinel.running:
                continue
            try:
                with self._client(sentinel) as client:
                    answer = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
            except redis.exceptions.RedisError:
                continue
            if answer:
                return (_text(answer[0]), int(answer[1]))
        raise AssertionError("no sentinel answers")

    def node_at(self, address: Address) -> Node:
        return next(node for node in self.data_nodes if node.address == address)

    def primary_client(self) -> redis.Redis:
        """A client of the node that is primary now."""
        host, port = self.primary_address()
        return redis.Redis(host=host, port=port, password=self.password, socket_timeout=5)

    def kill_primary(self) -> Address:
        """kill -9 of the primary; returns its address."""
        address = self.primary_address()
        self.node_at(address).kill()
        return address

    def wait_promoted(self, old: Address, timeout: float = 30.0) -> Address:
        """Waits until every sentinel names another primary than `old` and
        that node says it is one; returns its address."""

        def promoted() -> Address | None:
            answers = set()
            for sentinel in self.sentinels:
                with self._client(sentinel) as client:
                    answer = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
                answers.add((_text(answer[0]), int(answer[1])))
            if len(answers) != 1 or old in answers:
                return None
            new = answers.pop()
            with self._client(self.node_at(new)) as client:
                role = client.execute_command("ROLE")
            return new if _text(role[0]) == "master" else None

        return self._wait(promoted, f"no replica was promoted within {timeout}s", timeout)

    @staticmethod
    def _free_ports(count: int) -> list[int]:
        ports: set[int] = set()
        while len(ports) < count:
            ports.add(free_port())
        return list(ports)

    def _in_sync(self, replica: Node) -> bool:
        with self._client(replica) as client:
            info = client.info("replication")
        return bool(info.get("master_link_status") == "up")

    def _sentinels_ready(self) -> bool:
        for sentinel in self.sentinels:
            with self._client(sentinel) as client:
                state = client.sentinel_master(SERVICE)
            if int(state["num-other-sentinels"]) < len(self.sentinels) - 1 or int(state["num-slaves"]) < 1:
                return False
        return True

    def _client(self, node: Node) -> redis.Redis:
        return redis.Redis(port=node.port, password=self.password, socket_timeout=2, socket_connect_timeout=2)

    def _wait(self, check: Callable[[], T], failure: str, timeout: float = START_TIMEOUT) -> T:
        """Polls `check` (a Redis error counts as not yet) until it returns
        something truthy, and returns that."""

        def attempt() -> T | None:
            try:
                return check()
            except redis.exceptions.RedisError:
                return None

        try:
            return cast(T, wait_for(attempt, timeout))
        except AssertionError:
            raise AssertionError(failure) from None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
