"""Jobs seen from below the API: sent straight to the broker, read from
their Redis stream, and checked as a whole story."""

from __future__ import annotations

from typing import Any

import dramatiq

from actors.broker import make_broker
from hub.store.keys import KeySpace
from hub.store.registry import JOB_OPTION, QUEUE
from hub.store.settings import Settings

TERMINAL = ("completed", "failed")


def enqueue_job(
    settings: Settings, actor: str, job_id: str, owner: str, options: dict[str, Any] | None = None, **message: Any
) -> None:
    """Sends a hub job straight to the broker, as the hub does, for any actor
    (the test actors in tests/flaky_actors.py included)."""
    broker = make_broker(settings)
    job = {JOB_OPTION: {"id": job_id, "owner": owner, "type": "character"}}
    try:
        broker.enqueue(
            dramatiq.Message(
                queue_name=QUEUE, actor_name=actor, args=(), kwargs={}, options={**job, **(options or {})}, **message
            )
        )
    finally:
        broker.close()


def history(sync_redis: Any, settings: Settings, job_id: str) -> list[str]:
    """The ids of every event the job ever had, from its Redis stream."""
    return [i.decode() for i, _ in sync_redis.xrange(KeySpace(settings.namespace).job_events(job_id))]


def position(event_id: str) -> tuple[int, int]:
    ms, seq = event_id.split("-")
    return int(ms), int(seq)


def assert_a_proper_job_story(events: list[dict[str, Any]]) -> None:
    """Ids unique and increasing, progress never down, exactly one terminal
    event and it comes last."""
    assert events, "no events"
    positions = [position(e["id"]) for e in events]
    assert positions == sorted(set(positions)), "ids must be unique and increasing"
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress), "progress went down"
    assert [e["status"] in TERMINAL for e in events].count(True) == 1
    assert events[-1]["status"] in TERMINAL
