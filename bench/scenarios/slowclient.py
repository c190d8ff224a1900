"""slow-client: one client on `/my` stops reading while its jobs report
progress, then reads on.

The client (a plain socket, default buffers, HTTP/1.0 so that the body is
the stream itself) reads its snapshot, then nothing for PAUSE seconds while
10 jobs each report progress at 20 Hz (200 events/s), then reads until it
has every job's newest update, or until the hub has cut it off. Reported:
events published and received, events coalesced and slow clients dropped
(from the hub's /metrics), the hub's RSS before, at its peak during the
pause and after the catch-up, and what the kernel held for the connection
at the end of the pause (the hub's send queue and the client's receive
queue): what the kernel takes never reaches the hub's queue.

Variants: a small event (the benchmark's own, ~160 bytes) or one with a
2,000-character note; progress of 10 jobs, or the same number of events
each for a job of its own (nothing to collapse: the comparison); the hub's
defaults, or a patient hub. Two limits end a pause: the hub's write
timeout (HUB_WRITE_TIMEOUT_SECONDS, 10 s, counted from when the kernel
stops taking data), and the kernel's own, HUB_DEAD_CLIENT_SECONDS (30 s,
TCP_USER_TIMEOUT), which Linux applies to a receive window that stays
closed as well; the patient hub raises both above the pause.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench.params import Params
from bench.publisher import JournalSink, Publisher
from bench.scenarios.common import MIB, warm_up
from bench.stack import Stack
from bench.wire import SseDecoder, benchmark_update

NAME = "slow-client"
JOBS = 10
USER = "paused-user"
NOTE = "n" * 2_000
#: The hub's defaults: HUB_WRITE_TIMEOUT_SECONDS and HUB_DEAD_CLIENT_SECONDS.
DEFAULT_LIMITS = (10.0, 30.0)
#: How long the hub may take to have every event from Redis, and the client to catch up.
SETTLE_TIMEOUT = 30.0
CATCH_UP_TIMEOUT = 60.0
RSS_SAMPLE_SECONDS = 0.05


def settings(params: Params) -> dict[str, Any]:
    return {
        "pause_seconds": params.seconds(10, 2),
        "rate": params.events_per_second(200, 200),
        "jobs": JOBS,
        "note_chars": len(NOTE),
    }


def patient_limits(pause: float) -> tuple[float, float]:
    """Both limits well above the pause."""
    return (max(60.0, 2 * pause),) * 2


def measure(*, pause: float, rate: float, collapsible: bool, note: str, limits: tuple[float, float]) -> dict[str, Any]:
    events = int(rate * pause)
    write_timeout, dead_client = limits
    env = {"HUB_WRITE_TIMEOUT_SECONDS": str(write_timeout), "HUB_DEAD_CLIENT_SECONDS": str(dead_client)}
    with Stack("hub", connections=1, env=env) as stack:
        warm_up(stack)
        job_ids = stack.create_jobs([USER] * (JOBS if collapsible else events), prefix="slow")
        jobs = [(job_id, USER) for job_id in job_ids]
        client = PausedClient(stack.port, stack.token(USER))
        client.read_snapshot(len(jobs))
        bus_before = metric(stack, "hub_bus_messages_total")
        baseline = stack.probe.rss_bytes()
        with (
            RssPeak(stack) as peak,
            Publisher(
                JournalSink(stack.redis_url, stack.settings.namespace, note), jobs, rate, pause, stack.load_cpus
            ) as publisher,
        ):
            publisher.start()
            published = publisher.result()
            # Every event has reached the hub, or the stream has ended.
            settled = wait_until(
                lambda: (
                    metric(stack, "hub_bus_messages_total") - bus_before >= published["sent"]
                    or metric(stack, "hub_connections") == 0
                ),
                SETTLE_TIMEOUT,
            )
            kernel = client.kernel_queues(stack.port)
            open_at_pause_end = metric(stack, "hub_connections") == 1
        at_pause_end = stack.probe.rss_bytes()
        began = time.monotonic()
        received = client.catch_up(published["counts"])
        catch_up_seconds = time.monotonic() - began
        after = stack.probe.rss_bytes()
        client.close()
        coalesced = metric(stack, "hub_events_coalesced_total")
        dropped = metric(stack, "hub_slow_consumers_disconnected_total")
    newest = sum(1 for job, count in published["counts"].items() if received["last_seq"].get(job) == count)
    return {
        "events": "progress of 10 jobs" if collapsible else "one event per job",
        "event_bytes": received["mean_bytes"],
        "write_timeout_s": write_timeout,
        "dead_client_s": dead_client,
        "pause_s": pause,
        "open_at_pause_end": open_at_pause_end,
        "cut": received["cut"],
        "published": published["sent"],
        "publish_rate_achieved": round(published["rate_achieved"], 1),
        "received": received["events"],
        "coalesced": int(coalesced),
        "dropped": int(dropped),
        "jobs_with_newest_update": newest,
        "jobs": len(jobs),
        "hub_settled": settled,
        "catch_up_s": round(catch_up_seconds, 2),
        "rss_before_mib": round(baseline / MIB, 1),
        "rss_peak_mib": round(max(peak.bytes, at_pause_end) / MIB, 1),
        "rss_after_mib": round(after / MIB, 1),
        "kernel_hub_send_queue_kib": round(kernel[0] / 1024, 1),
        "kernel_client_receive_queue_kib": round(kernel[1] / 1024, 1),
        **stack.diagnostics(),
    }


def run(params: Params) -> dict[str, Any]:
    chosen = settings(params)
    measurements = []
    pause = chosen["pause_seconds"]
    for note in ("", NOTE):
        for collapsible in (True, False):
            for limits in (DEFAULT_LIMITS, patient_limits(pause)):
                print(
                    f"   {'2 KB' if note else 'small'} events, {'collapsible' if collapsible else 'distinct jobs'}, "
                    f"write timeout {limits[0]:g} s, dead client {limits[1]:g} s",
                    flush=True,
                )
                measurements.append(
                    measure(pause=pause, rate=chosen["rate"], collapsible=collapsible, note=note, limits=limits)
                )
    return {"settings": chosen, "measurements": measurements}


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "events": m["events"],
            "bytes/event": m["event_bytes"],
            "write timeout / dead client s": f"{m['write_timeout_s']:g} / {m['dead_client_s']:g}",
            "published": m["published"],
            "received": m["received"],
            "coalesced": m["coalesced"],
            "dropped (slow)": m["dropped"],
            "stream ended early": "yes" if m["cut"] else "no",
            "newest of each job": f"{m['jobs_with_newest_update']}/{m['jobs']}",
            "RSS before MiB": m["rss_before_mib"],
            "RSS peak MiB": m["rss_peak_mib"],
            "RSS after MiB": m["rss_after_mib"],
            "kernel KiB (hub send + client receive)": round(
                m["kernel_hub_send_queue_kib"] + m["kernel_client_receive_queue_kib"], 1
            ),
            "catch-up s": m["catch_up_s"],
        }
        for m in result["measurements"]
    ]


class PausedClient:
    """`/my` of one user on a blocking socket, read only when told."""

    def __init__(self, port: int, token: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.sendall(
            f"GET /api/v1/sse/jobs/my HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
        )
        self.decoder = SseDecoder()
        self.head = b""

    def read_snapshot(self, jobs: int) -> None:
        """Reads the answer's head and one initial_status per job."""
        seen = 0
        buffered = b""
        while b"\r\n\r\n" not in buffered:
            buffered += self._recv()
        head, _, body = buffered.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"the stream did not open: {head[:200]!r}")
        data = body
        while True:
            seen += sum(b'"type":"initial_status"' in frame.data for frame in self.decoder.feed(data))
            if seen >= jobs:
                return
            data = self._recv()

    def catch_up(self, counts: dict[str, int]) -> dict[str, Any]:
        """Reads until every job's last update, the end of the stream, or
        CATCH_UP_TIMEOUT."""
        last_seq: dict[str, int] = {}
        events = size = 0
        cut = False
        deadline = time.monotonic() + CATCH_UP_TIMEOUT
        while any(last_seq.get(job) != count for job, count in counts.items()) and time.monotonic() < deadline:
            data = self._recv()
            if not data:
                cut = True  # the stream ended: cut by the hub, or aborted by the kernel
                break
            for frame in self.decoder.feed(data):
                update = benchmark_update(frame.data)
                if update is not None:
                    job, seq, _ = update
                    last_seq[job] = seq
                    events += 1
                    size += len(frame.data)
        mean = round(size / events) if events else None
        return {"events": events, "last_seq": last_seq, "mean_bytes": mean, "cut": cut}

    def kernel_queues(self, hub_port: int) -> tuple[int, int]:
        """Bytes the kernel holds for this connection: the hub's socket's
        send queue and this one's receive queue."""
        local_port = self.sock.getsockname()[1]
        send = receive = 0
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = (int(address.split(":")[1], 16) for address in fields[1:3])
            tx, rx = (int(part, 16) for part in fields[4].split(":"))
            if (local, remote) == (hub_port, local_port):
                send = tx
            elif (local, remote) == (local_port, hub_port):
                receive = rx
        return send, receive

    def close(self) -> None:
        self.sock.close()

    def _recv(self) -> bytes:
        try:
            return self.sock.recv(262_144)
        except (ConnectionResetError, TimeoutError):
            return b""


class RssPeak:
    """The server's largest RSS while the block runs, sampled every 50 ms."""

    def __init__(self, stack: Stack) -> None:
        self._stack = stack
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.bytes = 0

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.bytes = max(self.bytes, self._stack.probe.rss_bytes())
            self._stop.wait(RSS_SAMPLE_SECONDS)


def metric(stack: Stack, name: str) -> float:
    """The SSE transport's (or the unlabelled) value of `name` on the hub's /metrics."""
    with urllib.request.urlopen(stack.url + "/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and sample.labels.get("transport", "sse") == "sse"
    )


def wait_until(check: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
