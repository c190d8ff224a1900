"""A client that stops reading is disconnected and counted; the hub's memory
stays bounded however much is published meanwhile."""

from __future__ import annotations

import asyncio
import socket

import pytest

from hub.store.journal import Journal
from tests.support.waiting import eventually

pytestmark = pytest.mark.gen_test(timeout=120)

EVENTS = 4000
PAYLOAD = "x" * 2000  # ~2 KB per event: ~8 MB in all


async def test_a_client_that_stops_reading_is_dropped_and_memory_stays_bounded(
    hub_process, settings, sync_redis, token
):
    hub = hub_process(HUB_SUBSCRIBER_QUEUE="200", HUB_WRITE_TIMEOUT_SECONDS="2")
    journal = Journal(sync_redis, settings)
    journal.create("flood", "slow", "character")

    # A client with a tiny receive window that reads the greeting, then nothing.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", hub.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(
        f"GET /api/v1/sse/jobs/character/flood HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {token('slow')}\r\n\r\n".encode()
    )
    await reader.readuntil(b"initial_status")
    baseline = hub.rss_bytes()
    assert hub.metric("hub_connections", transport="sse") == 1

    peak = baseline
    for number in range(EVENTS):
        journal.update("flood", "slow", "character", progress=number * 100 // EVENTS, note=PAYLOAD)
        if number % 200 == 0:
            peak = max(peak, hub.rss_bytes())

    await eventually(lambda: hub.metric("hub_slow_consumers_disconnected_total") == 1, timeout=30)
    await eventually(lambda: hub.metric("hub_connections", transport="sse") == 0, timeout=30)
    peak = max(peak, hub.rss_bytes())
    growth = peak - baseline
    published = EVENTS * len(PAYLOAD)
    print(f"published {published / 2**20:.1f} MiB; hub RSS grew by {growth / 2**20:.2f} MiB at most")
    assert growth < published / 4, "the hub must not buffer what a stuck client does not read"
    writer.transport.abort()
