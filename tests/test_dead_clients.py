"""Clients that never finish their request (slowloris) or vanish without a
goodbye cost bounded memory and are dropped in bounded time."""

from __future__ import annotations

import asyncio
import time
import urllib.request

import pytest

from tests.conftest import eventually

pytestmark = pytest.mark.gen_test(timeout=120)

SLOW_CLIENTS = 200


async def trickle(port: int, connected: list[int], closed_after: list[float]) -> None:
    """Sends a request's headers one byte at a time, never finishing them."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(b"GET /api/v1/sse/jobs/my HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    connected.append(1)
    try:
        for _ in range(200):  # at most ~40 s, far beyond the hub's bound
            writer.write(b"a")
            await writer.drain()
            if await _closed_within(reader, 0.2):
                closed_after.append(time.monotonic() - started)
                return
    except (ConnectionResetError, BrokenPipeError):
        closed_after.append(time.monotonic() - started)
    finally:
        writer.close()


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        data = await asyncio.wait_for(reader.read(1024), seconds)
    except TimeoutError:
        return False
    return data == b"" or data.startswith(b"HTTP/1.1 4")


async def test_slowloris_clients_are_dropped_in_bounded_time(hub_process):
    hub = hub_process(HUB_REQUEST_TIMEOUT_SECONDS="1")
    baseline = hub.rss_bytes()
    connected: list[int] = []
    closed_after: list[float] = []
    slow = [asyncio.create_task(trickle(hub.port, connected, closed_after)) for _ in range(SLOW_CLIENTS)]
    await eventually(lambda: len(connected) == SLOW_CLIENTS)

    # Meanwhile the hub serves everyone else.
    started = time.monotonic()
    with urllib.request.urlopen(hub.url + "/healthz", timeout=5) as answer:
        assert answer.status == 200
    healthy_in = time.monotonic() - started
    peak = hub.rss_bytes()

    await asyncio.gather(*slow)
    assert len(closed_after) == SLOW_CLIENTS, "every slow client was dropped"
    print(
        f"{SLOW_CLIENTS} slowloris clients: dropped after {min(closed_after):.2f}-{max(closed_after):.2f}s "
        f"(HUB_REQUEST_TIMEOUT_SECONDS=1); /healthz answered in {healthy_in * 1000:.1f} ms meanwhile; "
        f"RSS +{(peak - baseline) / 2**20:.2f} MiB"
    )
    assert max(closed_after) < 10
    assert peak - baseline < 20 * 2**20
