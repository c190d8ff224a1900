"""A Valkey for measuring Redis itself (redis-cost): the embedded binary,
set up as `hub up` runs it (append-only file, fsync every second,
noeviction), with its main thread alone on the server's core and its
background work (fsync, append-only file rewrites, which fork) on the load
cores, as a server with cores to spare would run it. Otherwise a rewrite's
child would take the main thread's core whenever the file has doubled."""

from __future__ import annotations

import os
import subprocess

import redis

from bench.system import cpu_sets
from hub.runtime.embedded import free_port, server_binary
from hub.runtime.processes import die_with_parent, stop_process, wait_ready

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def _cpulist(cpus: set[int] | None) -> list[str]:
    return [",".join(str(c) for c in sorted(cpus))] if cpus else []


class Valkey:
    """`with Valkey(folder) as server:` runs it on `server.url` until the block ends."""

    def __init__(self, folder: str, *, appendonly: bool = True) -> None:
        self.folder = folder
        self.appendonly = appendonly
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        server, load = cpu_sets()
        command = [server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.folder]
        command += ["--logfile", os.path.join(self.folder, "valkey.log"), "--save", "", "--daemonize", "no"]
        command += ["--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "everysec"]
        command += ["--maxmemory-policy", "noeviction"]
        if server and load:
            command += ["--server-cpulist", *_cpulist(server)]
            for option in ("--bio-cpulist", "--aof-rewrite-cpulist", "--bgsave-cpulist"):
                command += [option, *_cpulist(load)]
        return command

    def __enter__(self) -> Valkey:
        os.makedirs(self.folder, exist_ok=True)
        self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.exceptions.RedisError:
                return False

        try:
            if not wait_ready(answers, watch=[self.process], timeout=START_TIMEOUT):
                stop_process(self.process, STOP_TIMEOUT)
                raise RuntimeError(f"valkey-server did not start; see {self.folder}/valkey.log")
        finally:
            client.close()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            stop_process(self.process, STOP_TIMEOUT)
