"""Nchan (the nginx module) as a second peer: its configuration and its
nginx process, for `bench.stack.Stack`.

nginx runs from a folder the benchmark makes (configuration, pid, logs and
temp paths inside it), with one worker process, listening on loopback on a
free port. The master is pinned to the server's core like the hub and the
worker inherits it; the worker is the process measured (CPU time and RSS),
as all connections and all of Nchan's work are its.

Two variants:
- "nchan": Nchan's own store, in nginx's shared memory;
- "nchan-redis": `nchan_redis_pass` to the benchmark's Valkey (Nchan's
  default "distributed" mode: messages stored in Redis, delivered through
  Redis pub/sub to the worker).

Its locations take the hub's URL shapes (`/api/v1/sse/jobs/{type}/{id}` for
EventSource, `/api/v1/poll/jobs/{type}/{id}` for long-poll), with the job id
as the channel id, so the benchmark's clients and paths serve both servers.
Events are published as Nchan's users publish them: an HTTP POST to the
channel's `nchan_publisher` location (`/pub/{id}`), pipelined on one
keep-alive connection, for both variants. Nchan has no supported way to put
a message into Redis around it (its keys and message format are internal),
and its other publisher, a websocket, is bound to one channel per
connection: 10,000 jobs would need 10,000 publisher connections. The
worker's CPU therefore includes reading the POSTs, as the hub's includes
reading Redis pub/sub.

What Nchan does not do that the hub does: verify a token (the clients' JWT is
sent and ignored; `nchan_authorize_request` would cost an HTTP round trip to
an application per connect), check that a job belongs to the user, or offer
a per-user stream (`/my`): the comparison runs on job streams only.
"""

from __future__ import annotations

import grp
import os
import pwd
import resource
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from hub.store.settings import DEFAULT_LONGPOLL_TIMEOUT_SECONDS

#: The two Nchan variants a scenario runs, when Nchan is installed.
VARIANTS = ("nchan", "nchan-redis")
MISSING = "Nchan not installed (apt-get install libnginx-mod-nchan)"
MODULE_FILE = "ngx_nchan_module.so"
#: Where Debian and Ubuntu put dynamic nginx modules.
MODULE_DIRS = ("/usr/lib/nginx/modules", "/usr/share/nginx/modules")
#: nginx is often in an sbin folder that a user's PATH lacks.
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
#: Messages Nchan keeps per channel, for resuming streams (its default is 10).
MESSAGE_BUFFER = 100
#: Requests on the publisher's one keep-alive connection: all of a run's
#: events (nginx closes it after 1,000 by default).
PUBLISHER_REQUESTS = 100_000_000
STATUS_PATH = "/nchan_status"


def nginx_binary() -> str | None:
    search = os.pathsep.join([os.environ.get("PATH", ""), *SBIN_DIRS])
    return shutil.which("nginx", path=search)


def module_path(nginx: str) -> str | None:
    """The Nchan module file: in the modules folder nginx was built with, or
    in the standard Debian ones."""
    try:
        built = subprocess.run([nginx, "-V"], capture_output=True, text=True, timeout=10).stderr
    except (OSError, subprocess.TimeoutExpired):
        built = ""
    folders = [part.split("=", 1)[1] for part in built.split() if part.startswith("--modules-path=")]
    for folder in [*folders, *MODULE_DIRS]:
        candidate = Path(folder) / MODULE_FILE
        if candidate.is_file():
            return str(candidate)
    return None


def missing() -> str | None:
    """Why Nchan cannot run here, or None when it can."""
    nginx = nginx_binary()
    return None if nginx and module_path(nginx) else MISSING


def nginx_version(nginx: str) -> str:
    try:
        out = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=10).stderr
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.strip().rpartition("/")[2]


class NchanServer:
    """One nginx with Nchan: writes its configuration into `folder`, gives
    the command that runs it in the foreground, and reads its state."""

    def __init__(
        self, folder: str, port: int, *, connections: int, keepalive_seconds: float, redis_url: str | None
    ) -> None:
        nginx = nginx_binary()
        module = module_path(nginx) if nginx else None
        if nginx is None or module is None:
            raise RuntimeError(MISSING)
        self.nginx, self.module = nginx, module
        self.folder = folder
        self.port = port
        self.connections = connections
        self.keepalive_seconds = keepalive_seconds
        self.redis_url = redis_url
        self.conf_path = os.path.join(folder, "nginx.conf")
        self.log_path = os.path.join(folder, "error.log")

    @property
    def store(self) -> str:
        return "redis" if self.redis_url else "memory"

    def command(self) -> list[str]:
        Path(self.conf_path).write_text(self.config(), encoding="utf-8")
        return [self.nginx, "-p", self.folder, "-c", self.conf_path, "-e", self.log_path, "-g", "daemon off;"]

    def config(self) -> str:
        folder = self.folder
        # Every connection is a file in the worker; it may open as many as the
        # benchmark may (its hard limit), and nginx must not refuse below that.
        files = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        worker_connections = min(self.connections + 1_000, files - 100)
        temp = "\n".join(
            f"  {kind}_temp_path {folder}/{kind}-temp;" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        redis_upstream = f"  upstream valkey {{ nchan_redis_server {self.redis_url}; }}\n" if self.redis_url else ""
        # In each location: Nchan does not pass a server's to its locations.
        redis = "\n      nchan_redis_pass valkey;" if self.redis_url else ""
        return f"""load_module {self.module};
{self._user()}worker_processes 1;
worker_rlimit_nofile {files};
pid {folder}/nginx.pid;
error_log {self.log_path} warn;
events {{ worker_connections {worker_connections}; }}
http {{
  access_log off;
{temp}
  nchan_message_buffer_length {MESSAGE_BUFFER};
{redis_upstream}  server {{
    listen 127.0.0.1:{self.port};
    nchan_subscriber_first_message oldest;
    location ~ ^/api/v1/sse/jobs/[^/]+/([^/]+)$ {{
      nchan_subscriber eventsource;
      nchan_channel_id $1;{redis}
      nchan_eventsource_ping_interval {max(1, round(self.keepalive_seconds))};
      nchan_eventsource_ping_event "";
    }}
    location ~ ^/api/v1/poll/jobs/[^/]+/([^/]+)$ {{
      nchan_subscriber longpoll;
      nchan_channel_id $1;{redis}
      nchan_subscriber_timeout {round(DEFAULT_LONGPOLL_TIMEOUT_SECONDS)};
    }}
    location ~ ^/pub/([^/]+)$ {{
      nchan_publisher http;
      nchan_channel_id $1;{redis}
      keepalive_requests {PUBLISHER_REQUESTS};
    }}
    location = {STATUS_PATH} {{ nchan_stub_status; }}
  }}
}}
"""

    @staticmethod
    def _user() -> str:
        # Started by root, nginx's worker would become "nobody", which may
        # not write the benchmark's folder: it stays the benchmark's user.
        if os.geteuid() != 0:
            return ""
        return f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};\n"

    def status(self) -> dict[str, str]:
        """`nchan_stub_status`: channels, subscribers, Redis commands pending..."""
        url = f"http://127.0.0.1:{self.port}{STATUS_PATH}"
        with urllib.request.urlopen(url, timeout=2) as answer:
            text = answer.read(16_384).decode()
        return {name.strip(): value.strip() for name, _, value in (line.partition(":") for line in text.splitlines())}

    def ready(self) -> bool:
        try:
            status = self.status()
        except (urllib.error.URLError, OSError):
            return False
        return self.redis_url is None or int(status.get("redis connected servers", "0")) > 0

    def subscribed(self, subscribers: int) -> bool:
        """Whether Nchan counts at least this many subscribers, with no Redis
        command of theirs (SUBSCRIBE) still pending."""
        status = self.status()
        pending = int(status.get("redis pending commands", "0"))
        if self.redis_url and subscribers and int(status.get("total redis commands sent", "0")) == 0:
            raise RuntimeError(f"Nchan has subscribers but sent Redis nothing: it is not using Redis ({status})")
        return int(status.get("subscribers", "0")) >= subscribers and pending == 0

    @staticmethod
    def worker_pid(master: int) -> int | None:
        """The worker: the master's one child."""
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text(encoding="ascii", errors="replace")
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                return int(entry.name)
        return None

    def describe(self) -> dict[str, str | int | float]:
        """For the report, once ready: what ran and how it was set up."""
        return {
            "nginx": nginx_version(self.nginx),
            "nchan": self.status().get("nchan version", ""),
            "store": self.store,
            "worker_processes": 1,
            "message_buffer_length": MESSAGE_BUFFER,
            "eventsource_ping_interval": max(1, round(self.keepalive_seconds)),
            "longpoll_subscriber_timeout": round(DEFAULT_LONGPOLL_TIMEOUT_SECONDS),
        }
