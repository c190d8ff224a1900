"""Every setting of the hub and its workers, read once into one frozen object.

Values come from the environment; `HUB_CONFIG_FILE` may name a `KEY=VALUE`
file (see `config/hub.env.example`) whose values apply where the
environment does not set the same key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from hub.errors import ConfigError
from hub.store.registry import EXAMPLES_MODULE

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8088
DEFAULT_NAMESPACE = "hub"
DEFAULT_MAX_CONNECTIONS_PER_USER = 10
DEFAULT_MAX_CONNECTIONS = 20_000
DEFAULT_KEEPALIVE_SECONDS = 15.0
DEFAULT_LONGPOLL_TIMEOUT_SECONDS = 25.0
#: Events kept per job stream; a job reports a few dozen at most.
DEFAULT_JOB_HISTORY = 1_000
#: Events kept per user stream (`/my`); older cursors get a `reset`.
DEFAULT_USER_HISTORY = 10_000
#: Job state, history and images expire this long after their last change.
DEFAULT_JOB_TTL_SECONDS = 7 * 24 * 3600
#: Seconds each actor step takes, standing in for a remote model call.
DEFAULT_JOB_STEP_SECONDS = 0.6
DEFAULT_JWT_LEEWAY_SECONDS = 5.0
DEFAULT_SSE_RETRY_MS = 3_000
#: A write that the client does not take within this time drops the client.
DEFAULT_WRITE_TIMEOUT_SECONDS = 10.0
#: Live events waiting for one slow client before it is disconnected.
DEFAULT_SUBSCRIBER_QUEUE = 1_000
DEFAULT_REQUEST_TIMEOUT_SECONDS = 30.0
DEFAULT_DEAD_CLIENT_SECONDS = 30.0
DEFAULT_WORKER_METRICS_PORT = 9191
DEFAULT_PROCESS_TTL_SECONDS = 15.0
DEFAULT_JOB_RATE_PER_MINUTE = 60
#: A user's jobs in the broker's queue or running at once; the rest wait in
#: the hub, so one user's backlog never delays another user's job for long.
DEFAULT_JOBS_IN_FLIGHT_PER_USER = 4
DEFAULT_JOB_STALL_SECONDS = 600.0
DEFAULT_WORKER_HEARTBEAT_SECONDS = 60.0
DEFAULT_WORKER_MAINTENANCE_CHANCE = 1_000
#: Memory the server `hub up` embeds may use; full, it refuses writes
#: (noeviction) instead of silently dropping history.
DEFAULT_EMBEDDED_MAXMEMORY = "256mb"
#: HS256 signs with SHA-256: a shorter key is weaker than the signature (RFC 7518 3.2).
MIN_JWT_SECRET_BYTES = 32
_MEMORY_SIZE = re.compile(r"\A[0-9]+(?:b|k|kb|m|mb|g|gb)?\Z", re.IGNORECASE)


@dataclass(frozen=True, kw_only=True)
class Settings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    redis_url: str | None = None
    #: The Dramatiq broker's Redis, when it is not HUB_REDIS_URL.
    broker_url: str | None = None
    #: Web-server processes sharing the port (0: one per core; unset: 1 for
    #: `hub serve`, one per core for `hub up`).
    processes: int | None = None
    #: Replicas that must hold an event before publishing it returns (Redis
    #: WAIT; 0: do not wait).
    redis_wait_replicas: int = 0
    namespace: str = DEFAULT_NAMESPACE
    jwt_secret: str | None = field(default=None, repr=False)
    jwt_public_key: str | None = None
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway_seconds: float = DEFAULT_JWT_LEEWAY_SECONDS
    max_connections_per_user: int = DEFAULT_MAX_CONNECTIONS_PER_USER
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS
    longpoll_timeout_seconds: float = DEFAULT_LONGPOLL_TIMEOUT_SECONDS
    cors_origins: tuple[str, ...] = ()
    #: Jobs one user may start per minute (all hub processes together).
    job_rate_per_minute: int = DEFAULT_JOB_RATE_PER_MINUTE
    #: A user's jobs queued in the broker or running at once (0: no limit).
    jobs_in_flight_per_user: int = DEFAULT_JOBS_IN_FLIGHT_PER_USER
    #: A hub process that stops renewing its liveness in Redis for this long
    #: (it crashed) no longer counts against its users' connection limits.
    process_ttl_seconds: float = DEFAULT_PROCESS_TTL_SECONDS
    #: Take the client's address from X-Real-IP / X-Forwarded-For: only
    #: behind a proxy that sets them, or clients could claim any address.
    trust_proxy_headers: bool = False
    job_history: int = DEFAULT_JOB_HISTORY
    user_history: int = DEFAULT_USER_HISTORY
    job_ttl_seconds: int = DEFAULT_JOB_TTL_SECONDS
    job_step_seconds: float = DEFAULT_JOB_STEP_SECONDS
    sse_retry_ms: int = DEFAULT_SSE_RETRY_MS
    write_timeout_seconds: float = DEFAULT_WRITE_TIMEOUT_SECONDS
    subscriber_queue: int = DEFAULT_SUBSCRIBER_QUEUE
    #: A client must send its request headers and body within this time.
    request_timeout_seconds: float = DEFAULT_REQUEST_TIMEOUT_SECONDS
    #: Data a client's machine has not acknowledged for this long means the
    #: client vanished (no FIN ever comes): the connection is dropped.
    dead_client_seconds: float = DEFAULT_DEAD_CLIENT_SECONDS
    worker_threads: int = 4
    #: A running job with no event for this long is failed as stalled.
    job_stall_seconds: float = DEFAULT_JOB_STALL_SECONDS
    #: A worker silent this long is taken for dead and its jobs redelivered.
    worker_heartbeat_seconds: float = DEFAULT_WORKER_HEARTBEAT_SECONDS
    #: Per million broker commands, how many also look for dead workers'
    #: messages to redeliver (Dramatiq's queue maintenance).
    worker_maintenance_chance: int = DEFAULT_WORKER_MAINTENANCE_CHANCE
    #: Python modules of the app that register job types (and their actors).
    apps: tuple[str, ...] = ()
    #: Job types whose progress the app's own workers publish over HTTP.
    external_job_types: tuple[str, ...] = ()
    #: Registers the example job types of `actors.examples` and their demo.
    example_jobs: bool = True
    #: Where a worker serves its Prometheus metrics; 0 turns them off.
    worker_metrics_port: int = DEFAULT_WORKER_METRICS_PORT
    #: `maxmemory` of the server `hub up` embeds (Valkey's units: 256mb, 1gb; 0 = no bound).
    embedded_maxmemory: str = DEFAULT_EMBEDDED_MAXMEMORY

    def require_redis_url(self) -> str:
        """HUB_REDIS_URL, for whatever needs Redis: everything but `hub up`
        (which starts one when it is unset) and `hub token`."""
        if not self.redis_url:
            raise ConfigError("HUB_REDIS_URL is not set (hub up starts an embedded Redis for you)")
        return self.redis_url

    def require_broker_url(self) -> str:
        """HUB_BROKER_URL, or HUB_REDIS_URL when it is unset."""
        return self.broker_url or self.require_redis_url()

    @property
    def app_modules(self) -> tuple[str, ...]:
        """The modules that register this deployment's job types."""
        return ((EXAMPLES_MODULE,) if self.example_jobs else ()) + self.apps

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        config_file = env.get("HUB_CONFIG_FILE")
        if config_file:
            env = {**read_env_file(config_file), **env}
        values: dict[str, Any] = {}
        for setting in fields(cls):
            raw = env.get("HUB_" + setting.name.upper())
            if raw is None or raw == "":
                continue
            values[setting.name] = _convert(setting.name, setting.type, raw)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        positive = {
            "max_connections_per_user": self.max_connections_per_user,
            "max_connections": self.max_connections,
            "keepalive_seconds": self.keepalive_seconds,
            "longpoll_timeout_seconds": self.longpoll_timeout_seconds,
            "job_history": self.job_history,
            "user_history": self.user_history,
            "job_ttl_seconds": self.job_ttl_seconds,
            "write_timeout_seconds": self.write_timeout_seconds,
            "subscriber_queue": self.subscriber_queue,
            "process_ttl_seconds": self.process_ttl_seconds,
            "job_rate_per_minute": self.job_rate_per_minute,
            "job_stall_seconds": self.job_stall_seconds,
            "request_timeout_seconds": self.request_timeout_seconds,
            "dead_client_seconds": self.dead_client_seconds,
            "worker_heartbeat_seconds": self.worker_heartbeat_seconds,
            "worker_threads": self.worker_threads,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"HUB_{name.upper()} must be greater than 0")
        if self.jobs_in_flight_per_user < 0:
            raise ConfigError("HUB_JOBS_IN_FLIGHT_PER_USER cannot be negative (0: no limit)")
        if self.job_step_seconds < 0 or self.jwt_leeway_seconds < 0:
            raise ConfigError("HUB_JOB_STEP_SECONDS and HUB_JWT_LEEWAY_SECONDS cannot be negative")
        if self.processes is not None and self.processes < 0:
            raise ConfigError("HUB_PROCESSES cannot be negative (0: one per core)")
        if self.redis_wait_replicas < 0:
            raise ConfigError("HUB_REDIS_WAIT_REPLICAS cannot be negative (0: do not wait)")
        if not 0 < self.port < 65536:
            raise ConfigError("HUB_PORT must be between 1 and 65535")
        if not 0 <= self.worker_metrics_port < 65536:
            raise ConfigError("HUB_WORKER_METRICS_PORT must be between 0 (off) and 65535")
        if not self.namespace.replace("-", "").replace("_", "").isalnum():
            raise ConfigError("HUB_NAMESPACE may hold letters, digits, '-' and '_' only")
        if "none" in (alg.lower() for alg in self.jwt_algorithms):
            raise ConfigError("HUB_JWT_ALGORITHMS cannot include 'none'")
        if self.jwt_public_key and any(a.startswith("HS") for a in self.jwt_algorithms):
            raise ConfigError("with HUB_JWT_PUBLIC_KEY, HUB_JWT_ALGORITHMS must be asymmetric (RS*/ES*/PS*)")
        if not self.jwt_public_key and any(not a.startswith("HS") for a in self.jwt_algorithms):
            # A shared secret cannot check RS/ES/PS signatures: refuse the mix
            # at start instead of failing every such token later.
            raise ConfigError("HUB_JWT_ALGORITHMS other than HS* need HUB_JWT_PUBLIC_KEY")
        if self.jwt_secret is not None and len(self.jwt_secret.encode()) < MIN_JWT_SECRET_BYTES:
            raise ConfigError(
                f"HUB_JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes long (HS256 needs a 256-bit key)"
            )
        if not _MEMORY_SIZE.match(self.embedded_maxmemory):
            raise ConfigError("HUB_EMBEDDED_MAXMEMORY must be a size such as 256mb or 1gb (0: no bound)")


def read_env_file(path: str) -> dict[str, str]:
    values: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read HUB_CONFIG_FILE {path!r}: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE")
        values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def _convert(name: str, kind: Any, raw: str) -> Any:
    env_name = "HUB_" + name.upper()
    try:
        if kind in ("int", int, "int | None"):
            return int(raw)
        if kind in ("float", float):
            return float(raw)
        if kind in ("bool", bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if "tuple" in str(kind):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if name == "jwt_public_key" and not raw.lstrip().startswith("-----"):
            # A path to a PEM file is friendlier in an environment than the PEM itself.
            with open(raw, encoding="utf-8") as handle:
                return handle.read()
        return raw
    except OSError as exc:
        raise ConfigError(f"{env_name}: cannot read {raw!r}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"{env_name}={raw!r} is not a valid {kind}") from None
