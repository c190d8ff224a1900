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
again (redis-py's sentinel connections do this).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelConnectionPool
from redis.sentinel import Sentinel

from hub.errors import ConfigError

SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379
#: Seconds to wait for the server while finding out what it is.
DETECT_TIMEOUT_SECONDS = 5.0
#: Seconds to wait for a sentinel's answer (unless the client's own socket
#: timeouts say otherwise).
SENTINEL_TIMEOUT_SECONDS = 5.0


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


def sync_client(url: str, **options: Any) -> redis.Redis:
    """A blocking client of the primary `url` names; `options` as for redis.Redis."""
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
