"""Which Redis the hub runs on: one server, a primary that Sentinel watches,
or a Cluster.

HUB_REDIS_URL says which. `redis+sentinel://[[user]:password@]host:port[,host:port...]/SERVICE[/DB]`
names the sentinels of a primary; any other URL names a server, which may
turn out to be a node of a cluster: the hub asks it once, at start.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from hub.errors import ConfigError

log = logging.getLogger("hub.store.topology")

SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379
#: Seconds to wait for the server while finding out what it is.
DETECT_TIMEOUT_SECONDS = 5.0
#: How long a starting process waits for its Redis to answer that question.
STARTUP_WAIT_SECONDS = 30.0
#: Times a cluster client tries a command again after a failure that a new
#: view of the cluster may cure (a connection refused or lost, CLUSTERDOWN,
#: a slot not covered); each try first asks the cluster which node serves
#: what. MOVED and ASK redirections are followed within a try, up to 16.
CLUSTER_RETRIES = 3


class Kind(enum.Enum):
    SINGLE = "single"
    SENTINEL = "sentinel"
    CLUSTER = "cluster"


@dataclass(frozen=True)
class SentinelSet:
    """The sentinels watching one primary, and how to log in to it."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def is_sentinel_url(url: str) -> bool:
    return urlsplit(url).scheme == SENTINEL_SCHEME


def parse_sentinel_url(url: str) -> SentinelSet:
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise ConfigError(f"not a {SENTINEL_SCHEME}:// URL")
    credentials, _, hosts = parts.netloc.rpartition("@")
    username, _, password = credentials.partition(":")
    sentinels = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
        host = host.strip("[]")
        if not host:
            raise ConfigError("HUB_REDIS_URL: every sentinel needs a host")
        try:
            sentinels.append((host, int(port) if port else DEFAULT_SENTINEL_PORT))
        except ValueError:
            raise ConfigError(f"HUB_REDIS_URL: {port!r} is not a port") from None
    path = [part for part in parts.path.split("/") if part]
    if not path or len(path) > 2:
        raise ConfigError("HUB_REDIS_URL: a sentinel URL ends with /SERVICE or /SERVICE/DB")
    try:
        db = int(path[1]) if len(path) == 2 else 0
    except ValueError:
        raise ConfigError(f"HUB_REDIS_URL: {path[1]!r} is not a database number") from None
    return SentinelSet(
        sentinels=tuple(sentinels),
        service=unquote(path[0]),
        db=db,
        username=unquote(username) or None,
        password=unquote(password) or None,
    )


def detect(url: str) -> Kind:
    """What `url` names; a cluster node says so in `INFO cluster`."""
    if is_sentinel_url(url):
        parse_sentinel_url(url)
        return Kind.SENTINEL
    client = redis.Redis.from_url(
        url, socket_timeout=DETECT_TIMEOUT_SECONDS, socket_connect_timeout=DETECT_TIMEOUT_SECONDS
    )
    try:
        info = client.info("cluster")
    finally:
        client.close()
    return Kind.CLUSTER if str(info.get("cluster_enabled", 0)) == "1" else Kind.SINGLE


#: What each URL turned out to name, so that a process asks once.
_kinds: dict[str, Kind] = {}


def kind_of(url: str, setting: str = "HUB_REDIS_URL", *, wait_seconds: float = STARTUP_WAIT_SECONDS) -> Kind:
    """`detect`, asked once per URL in a process, waiting up to
    `wait_seconds` for a server that does not answer yet (it may be
    starting too); then a ConfigError naming `setting`."""
    known = _kinds.get(url)
    if known is not None:
        return known
    deadline = time.monotonic() + wait_seconds
    delay = 0.1
    while True:
        try:
            kind = detect(url)
            break
        except (redis.AuthenticationError, redis.ResponseError) as exc:
            raise ConfigError(f"{setting}: the server refused the hub ({type(exc).__name__})") from None
        except redis.RedisError as exc:
            if time.monotonic() + delay > deadline:
                raise ConfigError(
                    f"{setting} does not answer ({type(exc).__name__}); the hub needs it to start"
                ) from None
            log.warning("%s does not answer yet (%s); trying again", setting, type(exc).__name__)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    _kinds[url] = kind
    return kind


def is_cluster_client(client: Any) -> bool:
    return isinstance(client, (redis.RedisCluster, redis.asyncio.RedisCluster))


def _cluster_retry() -> Retry:
    return Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), CLUSTER_RETRIES)


def sync_cluster_client(url: str, **kwargs: Any) -> redis.RedisCluster:
    """A blocking client of the cluster that `url` names a node of. It
    learns the others from that node and follows slots that move and
    replicas that take over without a restart."""
    return redis.RedisCluster.from_url(url, retry=_cluster_retry(), **kwargs)


def async_cluster_client(
    url: str,
    *,
    max_connections: int,
    client_class: type[redis.asyncio.RedisCluster] = redis.asyncio.RedisCluster,
    **kwargs: Any,
) -> redis.asyncio.RedisCluster:
    """An asyncio client of that cluster, with at most `max_connections`
    connections to each node."""
    return client_class.from_url(url, max_connections=max_connections, retry=_cluster_retry(), **kwargs)


def sync_client(url: str, **kwargs: Any) -> redis.Redis | redis.RedisCluster:
    """A blocking client of what `url` names (`kwargs`: connection settings)."""
    if kind_of(url) is Kind.CLUSTER:
        return sync_cluster_client(url, **kwargs)
    return redis.Redis.from_url(url, **kwargs)


def broker_apart(redis_url: str, broker_url: str | None) -> bool:
    """Whether Dramatiq's broker has a Redis of its own (HUB_BROKER_URL,
    another server than HUB_REDIS_URL). Never a cluster: Dramatiq's scripts
    build their keys inside Lua and its queue maintenance runs KEYS, so the
    broker needs one server; a cluster store therefore needs HUB_BROKER_URL."""
    if broker_url and broker_url != redis_url:
        if kind_of(broker_url, "HUB_BROKER_URL") is Kind.CLUSTER:
            raise ConfigError(
                "HUB_BROKER_URL names a Redis Cluster; the job broker needs one server "
                "(a plain Redis, or a redis+sentinel:// URL)"
            )
        return True
    if kind_of(redis_url) is Kind.CLUSTER:
        raise ConfigError(
            "HUB_REDIS_URL names a Redis Cluster: set HUB_BROKER_URL to a plain Redis "
            "(or a redis+sentinel:// URL) for the job broker"
        )
    return False
