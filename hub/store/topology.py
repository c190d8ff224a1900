"""Which Redis the hub runs on: one server, a primary that Sentinel watches,
or a Cluster.

HUB_REDIS_URL says which. `redis+sentinel://[[user]:password@]host:port[,host:port...]/SERVICE[/DB]`
names the sentinels of a primary; any other URL names a server, which may
turn out to be a node of a cluster: the hub asks it once, at start.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import redis

from hub.errors import ConfigError

SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379
#: Seconds to wait for the server while finding out what it is.
DETECT_TIMEOUT_SECONDS = 5.0


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
