"""Everything a request handler needs, built once per application and passed
to handlers through Tornado's `initialize` (no module-level state)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from hub.auth import TokenVerifier
from hub.bus import EventBus
from hub.connections import ConnectionManager
from hub.history import History
from hub.journal import Journal
from hub.keys import KeySpace
from hub.metrics import HubMetrics
from hub.settings import Settings

#: Sends a job to the workers: (job type, job id, owner, job input).
Enqueue = Callable[[str, str, str, dict[str, Any]], Awaitable[None]]


@dataclass
class HubContext:
    settings: Settings
    redis: Redis
    keys: KeySpace
    journal: Journal
    history: History
    bus: EventBus
    connections: ConnectionManager
    metrics: HubMetrics
    verifier: TokenVerifier
    enqueue: Enqueue
