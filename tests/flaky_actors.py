"""Actors for fault tests, loaded into a real worker with `hub worker --import`."""

from __future__ import annotations

import time

import dramatiq

import actors
from actors.progress import report
from hub.store.registry import QUEUE


class Boom(Exception):
    pass


@dramatiq.actor(queue_name=QUEUE, max_retries=2, min_backoff=10, max_backoff=50)
def always_fails() -> None:
    report(30, step="about to fail")
    raise Boom("the model refused")


@dramatiq.actor(queue_name=QUEUE, max_retries=0, time_limit=300)
def too_slow() -> None:
    report(10, step="thinking")
    for _ in range(200):  # short sleeps: Dramatiq's time limit interrupts between them
        time.sleep(0.05)


@dramatiq.actor(queue_name=QUEUE, max_retries=1, min_backoff=10, max_backoff=50)
def leaks_secrets() -> None:
    """Fails with text no user should see."""
    raise RuntimeError("password=hunter2 at /srv/x")


@dramatiq.actor(queue_name=QUEUE, max_retries=2, min_backoff=10, max_backoff=50)
def refuses_on_purpose() -> None:
    report(10, step="checking the quota")
    raise actors.JobFailed("quota exceeded")
