"""Which Redis the hub runs on: one server, a primary that Sentinel watches,
or a Cluster.

HUB_REDIS_URL says which. `redis+sentinel://[[user]:password@]host:port[,host:port...]/SERVICE[/DB]`
names the sentinels of a primary; any other URL names a server, which may
turn out to be a node of a cluster: the hub asks it once, at start.

Every part of the hub gets its Redis clients here. A sentinel URL's user and
password log in to the sentinels and to the data nodes alike. A client of a
sentinel set asks the sentinels where the primary is whenever it opens a
connection; a connection that finds a replica where the primary was (it
answers READONLY) is dropped and its command fails, so the next one asks
again (redis-py's sentinel connections do this). A cluster's client learns
the other nodes from the one the URL names, and follows moved slots and
promoted replicas by itself.
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
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelConnectionPool
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from hub.errors import ConfigError

log = logging.getLogger("hub.store.topology")

SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379
#: Seconds to wait for the server while finding out what it is.
DETECT_TIMEOUT_SECONDS = 5.0
#: Seconds to wait for a sentinel's answer (unless the client's own socket
#: timeouts say otherwise).
SENTINEL_TIMEOUT_SECONDS = 5.0
#: How long a starting process waits for its Redis to say what it is.
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


def async_client(
    url: str, *, pool_class: type[redis.asyncio.ConnectionPool] | None = None, **options: Any
) -> redis.asyncio.Redis:
    """An asyncio client of the primary `url` names. `options` go to its
    connection pool (max_connections, socket timeouts...). `pool_class`, if
    given, must fit the URL: a subclass of redis-py's asyncio ConnectionPool
    for a server, of its asyncio SentinelConnectionPool for a sentinel set."""
    if not is_sentinel_url(url):
        pool = (pool_class or redis.asyncio.ConnectionPool).from_url(url, **options)
        return redis.asyncio.Redis(connection_pool=pool)
    if pool_class is not None and not issubclass(pool_class, AsyncSentinelConnectionPool):
        raise TypeError(f"{pool_class.__name__} cannot serve a sentinel set")
    found = parse_sentinel_url(url)
    manager = AsyncSentinel(  # type: ignore[no-untyped-call]
        found.sentinels, sentinel_kwargs=_sentinel_options(found, options), **_node_login(found)
    )
    client: redis.asyncio.Redis = manager.master_for(
        found.service, connection_pool_class=pool_class or AsyncSentinelConnectionPool, **options
    )
    return client


def sync_client(url: str, **options: Any) -> redis.Redis | redis.RedisCluster:
    """A blocking client of what `url` names: a cluster's, or a primary's
    (`server_client`); `options` as for redis.Redis."""
    if not is_sentinel_url(url) and kind_of(url) is Kind.CLUSTER:
        return sync_cluster_client(url, **options)
    return server_client(url, **options)


def server_client(url: str, **options: Any) -> redis.Redis:
    """A blocking client of the primary `url` names, a server or a sentinel
    set's, without asking whether it is a cluster node."""
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **options)
    found = parse_sentinel_url(url)
    manager = Sentinel(  # type: ignore[no-untyped-call]
        found.sentinels, sentinel_kwargs=_sentinel_options(found, options), **_node_login(found)
    )
    client: redis.Redis = manager.master_for(found.service, **options)  # type: ignore[no-untyped-call]
    return client


async def primary_address(sentinels: SentinelSet) -> tuple[str, int]:
    """Where the sentinels say the primary is now: the first sentinel that
    answers and takes it for up. redis.ConnectionError if none does."""
    manager = AsyncSentinel(  # type: ignore[no-untyped-call]
        sentinels.sentinels, sentinel_kwargs=_sentinel_options(sentinels, {})
    )
    try:
        host, port = await manager.discover_master(sentinels.service)
    finally:
        await manager.aclose()
    return str(host), int(port)


def _node_login(sentinels: SentinelSet) -> dict[str, Any]:
    return {"db": sentinels.db, "username": sentinels.username, "password": sentinels.password}


def _sentinel_options(sentinels: SentinelSet, options: dict[str, Any]) -> dict[str, Any]:
    """How to reach the sentinels: the same login as the data nodes, and the
    client's socket timeouts (a sentinel that does not answer is skipped)."""
    return {
        "username": sentinels.username,
        "password": sentinels.password,
        "socket_timeout": options.get("socket_timeout") or SENTINEL_TIMEOUT_SECONDS,
        "socket_connect_timeout": options.get("socket_connect_timeout") or SENTINEL_TIMEOUT_SECONDS,
    }


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
