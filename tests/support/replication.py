"""A primary with one replica, both real valkey-servers, behind one address
(a proxy, as a floating address or a service name would be): the test can
stop replication, so that the replica misses the primary's newest writes, and
then fail over to it, which loses them, as asynchronous replication can."""

from __future__ import annotations

import contextlib
from pathlib import Path

import redis

from hub.runtime.embedded import EmbeddedRedis
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_for

SYNC_TIMEOUT = 15.0


class ReplicatedPair:
    def __init__(self, base_dir: Path) -> None:
        self.primary = EmbeddedRedis(str(base_dir / "primary"))
        self.replica = EmbeddedRedis(str(base_dir / "replica"))
        self.proxy: TcpProxy | None = None

    def start(self) -> ReplicatedPair:
        self.primary.start()
        self.replica.start()
        with self._client(self.primary) as primary:
            primary.config_set("repl-diskless-sync-delay", 0)  # no wait for more replicas
        with self._client(self.replica) as replica:
            replica.replicaof("127.0.0.1", self.primary.port)
        wait_for(self._linked, timeout=SYNC_TIMEOUT)
        self.proxy = TcpProxy(self._port(self.primary)).start()
        return self

    def stop(self) -> None:
        self.primary.stop()
        self.replica.stop()
        if self.proxy is not None:
            # The servers gone, the connections through the proxy end too.
            with contextlib.suppress(AssertionError):
                wait_for(lambda: self.proxy is not None and self.proxy.open_connections == 0, timeout=5)
            self.proxy.stop()

    @property
    def url(self) -> str:
        """The one address clients use: whichever server is primary."""
        assert self.proxy is not None
        return f"redis://127.0.0.1:{self.proxy.port}/0"

    def wait_replicated(self) -> None:
        """Returns once the replica holds every write made so far."""
        with self._client(self.primary) as primary:
            acknowledged = primary.execute_command("WAIT", 1, int(SYNC_TIMEOUT * 1000))
        assert acknowledged == 1, "the replica did not catch up"

    def stop_replication(self) -> None:
        """The replica stops following (REPLICAOF NO ONE): from now on the
        primary's writes reach the primary only, as with a replica that lags."""
        with self._client(self.replica) as replica:
            replica.replicaof("NO", "ONE")

    def fail_over(self) -> None:
        """The primary dies (kill -9) and the replica serves at the address;
        connections open through it are cut, as a failover cuts them."""
        assert self.proxy is not None
        self.primary.kill()
        self.proxy.retarget(self._port(self.replica))
        self.proxy.cut()

    def _linked(self) -> bool:
        with self._client(self.replica) as replica:
            info = replica.info("replication")
        return info.get("master_link_status") == "up" and not info.get("master_sync_in_progress")

    @staticmethod
    def _client(server: EmbeddedRedis) -> redis.Redis:
        return redis.Redis(port=ReplicatedPair._port(server), socket_timeout=5, socket_connect_timeout=5)

    @staticmethod
    def _port(server: EmbeddedRedis) -> int:
        assert server.port is not None
        return server.port
