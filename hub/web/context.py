"""Everything a request handler needs, built once per application and passed
to handlers through Tornado's `initialize` (no module-level state)."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from hub.delivery.bus import EventBus
from hub.delivery.clock import Clock
from hub.delivery.connections import ConnectionManager, UserSlots
from hub.store.history import History
from hub.store.journal import Journal
from hub.store.keys import KeySpace
from hub.store.registry import Registry
from hub.store.settings import Settings
from hub.web.auth import TokenVerifier
from hub.web.handlers.jobs import Enqueue
from hub.web.metrics import HubMetrics
from hub.web.rate_limit import JobRateLimit
from hub.web.tickets import Tickets


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
    slots: UserSlots
    tickets: Tickets
    job_rate: JobRateLimit
    clock: Clock
    job_types: Registry
    #: Set on SIGTERM: the process answers what it holds, then exits.
    draining: bool = False

    async def start(self) -> None:
        """Connects what runs in the background: the event bus and the
        process's liveness for connection limits."""
        self.bus.start()
        await self.slots.start()

    async def close(self) -> None:
        await self.bus.close()
        await self.slots.close()
