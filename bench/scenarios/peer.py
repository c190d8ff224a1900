"""peer: the idle, fanout and broadcast measurements, run on the hub and on a
minimal sse-starlette/uvicorn server (bench/peers/) in the same run, with
the same clients and load; reported as ratios hub / peer.

At a rate both servers sustain, both deliver every event, so deliveries/s
alone cannot tell them apart; deliveries per CPU-second of the server (how
many one core could deliver) does, and is what "at least as many
deliveries/s" is judged on, next to the achieved rate.
"""

from __future__ import annotations

from typing import Any

from bench.params import Params
from bench.scenarios import broadcast, fanout, idle

NAME = "peer"
SERVERS = ("hub", "peer")


def settings(params: Params) -> dict[str, Any]:
    return {
        "connections": params.connection_count(10_000, 100),
        "idle_window": params.seconds(20, 3),
        "keepalive_seconds": 1 if params.quick else 15,
        "fanout_rate": params.events_per_second(5_000, 100),
        "fanout_duration": params.seconds(20, 3),
        "broadcast_events": 10 if not params.quick else 3,
    }


def run(params: Params) -> dict[str, Any]:
    s = settings(params)
    n = s["connections"]
    measured: dict[str, dict[str, Any]] = {}
    for server in SERVERS:
        measured[server] = {
            "idle": idle.measure(server, n, s["idle_window"], s["keepalive_seconds"]),
            "fanout": fanout.measure(server, n, s["fanout_rate"], s["fanout_duration"], kind="jobs", per_job=1),
            "broadcast": broadcast.measure(server, n, s["broadcast_events"], 1.0 if not params.quick else 4.0),
        }
    hub, peer = measured["hub"], measured["peer"]
    ratios = {
        "rss_per_connection": _ratio(hub["idle"]["rss_per_connection_kib"], peer["idle"]["rss_per_connection_kib"]),
        "idle_cpu": _ratio(hub["idle"]["idle_cpu_percent"], peer["idle"]["idle_cpu_percent"]),
        "deliveries_per_s": _ratio(hub["fanout"]["deliveries_per_s"], peer["fanout"]["deliveries_per_s"]),
        "deliveries_per_server_cpu_second": _ratio(
            hub["fanout"]["deliveries_per_server_cpu_second"], peer["fanout"]["deliveries_per_server_cpu_second"]
        ),
        "fanout_p50": _ratio(hub["fanout"]["latency_ms"]["p50_ms"], peer["fanout"]["latency_ms"]["p50_ms"]),
        "fanout_p99": _ratio(hub["fanout"]["latency_ms"]["p99_ms"], peer["fanout"]["latency_ms"]["p99_ms"]),
        "broadcast_last_p50": _ratio(
            hub["broadcast"]["last_delivery_p50_ms"], peer["broadcast"]["last_delivery_p50_ms"]
        ),
        "broadcast_last_max": _ratio(
            hub["broadcast"]["last_delivery_max_ms"], peer["broadcast"]["last_delivery_max_ms"]
        ),
    }
    return {"settings": s, **measured, "ratios_hub_to_peer": ratios}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for server in SERVERS:
        r = result[server]
        out.append(
            {
                "server": "hub (Tornado)" if server == "hub" else "peer (sse-starlette/uvicorn)",
                "connections": r["idle"]["connections"],
                "KiB/connection": r["idle"]["rss_per_connection_kib"],
                "idle CPU %": r["idle"]["idle_cpu_percent"],
                "deliveries/s": r["fanout"]["deliveries_per_s"],
                "deliveries/CPU-s": r["fanout"]["deliveries_per_server_cpu_second"],
                "fanout p50 ms": r["fanout"]["latency_ms"]["p50_ms"],
                "fanout p99 ms": r["fanout"]["latency_ms"]["p99_ms"],
                "fanout lost": r["fanout"]["lost"],
                "broadcast last p50 ms": r["broadcast"]["last_delivery_p50_ms"],
                "broadcast last max ms": r["broadcast"]["last_delivery_max_ms"],
            }
        )
    ratios = result["ratios_hub_to_peer"]
    out.append(
        {
            "server": "ratio hub / peer",
            "KiB/connection": ratios["rss_per_connection"],
            "idle CPU %": ratios["idle_cpu"],
            "deliveries/s": ratios["deliveries_per_s"],
            "deliveries/CPU-s": ratios["deliveries_per_server_cpu_second"],
            "fanout p50 ms": ratios["fanout_p50"],
            "fanout p99 ms": ratios["fanout_p99"],
            "broadcast last p50 ms": ratios["broadcast_last_p50"],
            "broadcast last max ms": ratios["broadcast_last_max"],
        }
    )
    return out
