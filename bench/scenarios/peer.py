"""peer: the hub beside other servers, in one run, with the same clients and
load, reported side by side and as ratios hub / other:

- a minimal sse-starlette/uvicorn server (bench/peers/): idle, fanout,
  broadcast;
- Nchan, the nginx module (bench/nchan.py), in memory and on Redis, when
  installed: idle, fanout, broadcast, long-poll, and churn (connects and
  the reconnect storm).

At a rate both servers sustain, both deliver every event, so deliveries/s
alone cannot tell them apart; the server's CPU per delivery (or deliveries
per CPU-second: how many one core could deliver) does, and is what "at least
as many deliveries/s" is judged on, next to the achieved rate.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from bench.params import Params
from bench.scenarios import broadcast, churn, fanout, idle, longpoll
from bench.scenarios.common import label, nchan_variants

NAME = "peer"


def settings(params: Params) -> dict[str, Any]:
    n = params.connection_count(10_000, 100)
    return {
        "connections": n,
        "idle_window": params.seconds(20, 3),
        "keepalive_seconds": 1 if params.quick else 15,
        "fanout_rate": params.events_per_second(5_000, 100),
        "fanout_duration": params.seconds(20, 3),
        "broadcast_events": 10 if not params.quick else 3,
        "broadcast_rate": 1.0 if not params.quick else 4.0,
        # As the longpoll scenario: more clients than this saturate a hub process.
        "longpoll_connections": min(n, 5_000),
        "longpoll_rate": 200.0 if not params.quick else 100.0,
        "longpoll_duration": params.seconds(30, 3),
        "churn_clients": 64 if not params.quick else 16,
        "churn_duration": params.seconds(15, 3),
        "storm_connections": n,
        "storm_rate": 1_000.0 if not params.quick else 100.0,
    }


def measures(server: str, s: dict[str, Any], requests: bool) -> dict[str, Callable[[], dict[str, Any]]]:
    """Each scenario's measurement on `server`; `requests`: long-poll and
    churn too (the sse-starlette peer has no long-poll, and its connects were
    never a question)."""
    n = s["connections"]
    found: dict[str, Callable[[], dict[str, Any]]] = {
        "idle": lambda: idle.measure(server, n, s["idle_window"], s["keepalive_seconds"]),
        "fanout": lambda: fanout.measure(server, n, s["fanout_rate"], s["fanout_duration"], kind="jobs", per_job=1),
        "broadcast": lambda: broadcast.measure(server, n, s["broadcast_events"], s["broadcast_rate"]),
    }
    if requests:
        found["longpoll"] = lambda: longpoll.measure(
            server, s["longpoll_connections"], s["longpoll_rate"], s["longpoll_duration"]
        )
        found["churn"] = lambda: churn.measure(server, s)
    return found


def measure(server: str, s: dict[str, Any], failures: dict[str, str], *, requests: bool = True) -> dict[str, Any]:
    """Every scenario on `server`. One that fails goes into `failures` and
    the others still run: a long run keeps what it measured."""
    results = {}
    for scenario, measure_one in measures(server, s, requests).items():
        print(f"   {scenario} on {label(server)}", flush=True)
        try:
            results[scenario] = measure_one()
        except Exception as exc:
            traceback.print_exc()
            failures[f"{scenario} on {label(server)}"] = f"{type(exc).__name__}: {exc}"
    return results


def run(params: Params) -> dict[str, Any]:
    s = settings(params)
    failures: dict[str, str] = {}
    hub = measure("hub", s, failures)
    peer = measure("peer", s, failures, requests=False)
    compared = nchan_variants(lambda server: measure(server, s, failures))
    failures |= compared.pop("failures", {})
    return {
        "settings": s,
        "hub": hub,
        "peer": peer,
        **compared,
        "ratios_hub_to_peer": ratios(hub, peer),
        "ratios_hub_to_nchan": {variant: ratios(hub, other) for variant, other in compared["nchan"].items()},
        **({"failures": failures} if failures else {}),
    }


def ratios(hub: dict[str, Any], other: dict[str, Any]) -> dict[str, float | None]:
    """hub / other for each figure both have (below 1: the hub has less of it)."""
    figures = {
        "rss_per_connection": ("idle", ("rss_per_connection_kib",)),
        "idle_cpu": ("idle", ("idle_cpu_percent",)),
        "deliveries_per_s": ("fanout", ("deliveries_per_s",)),
        "deliveries_per_server_cpu_second": ("fanout", ("deliveries_per_server_cpu_second",)),
        "fanout_cpu_per_delivery": ("fanout", ("server_cpu_us_per_delivery",)),
        "fanout_p50": ("fanout", ("latency_ms", "p50_ms")),
        "fanout_p99": ("fanout", ("latency_ms", "p99_ms")),
        "broadcast_last_p50": ("broadcast", ("last_delivery_p50_ms",)),
        "broadcast_last_max": ("broadcast", ("last_delivery_max_ms",)),
        "broadcast_cpu_per_delivery": ("broadcast", ("server_cpu_us_per_delivery",)),
        "longpoll_p50": ("longpoll", ("latency_ms", "p50_ms")),
        "longpoll_cpu_per_delivery": ("longpoll", ("server_cpu_us_per_delivery",)),
        "connects_per_s": ("churn", ("connects", "connects_per_s")),
        "storm_recovery": ("churn", ("storm", "recovery_s")),
    }
    return {
        name: _ratio(_get(hub.get(scenario, {}), path), _get(other.get(scenario, {}), path))
        for name, (scenario, path) in figures.items()
    }


def _get(result: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = result
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, int | float) else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def sections(result: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """One table per scenario: each server's row, the hub's first, and the ratios."""
    everyone = [result["hub"], result["peer"], *result.get("nchan", {}).values()]
    tables = {"idle": idle.table, "fanout": fanout.table, "broadcast": broadcast.table}
    tables |= {"longpoll": longpoll.table, "churn": churn.table}
    found = []
    for scenario, table in tables.items():
        measured = [server[scenario] for server in everyone if scenario in server]
        if scenario in result["hub"]:
            found.append((f"peer: {scenario}", table(measured)))
        elif measured:  # no ratios without the hub's figures
            rows = [row for row in table(measured) if not any(str(v).startswith("hub / ") for v in row.values())]
            found.append((f"peer: {scenario} (the hub's failed)", rows))
    return found
