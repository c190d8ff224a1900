"""The targets the hub is judged against, each checked against what a run
measured. A target stated for 10,000 connections is only judged on a run of
at least that many; smaller runs show their figure marked "n/a".

The comparisons with Nchan take the hub's and Nchan's figures from the same
run: from the scenario's own result (which measured both), and from the peer
scenario's when it ran. The hub must do at least as well as each Nchan
variant measured (in memory, on Redis)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.nchan import VARIANTS as NCHAN_VARIANTS
from bench.scenarios.common import label

FULL_SCALE = 10_000
#: The peer comparison names no scale; below this many connections a run is a smoke test.
PEER_SCALE = 1_000
#: Hub CPU per delivery allowed against Nchan's, in fanout and broadcast.
CPU_MARGIN = 1.1


@dataclass(frozen=True)
class Check:
    measured: str
    met: bool | None  # None: not judged, for the reason in `na`
    scale: str
    na: str = "smaller run"


@dataclass(frozen=True)
class Target:
    scenario: str
    name: str
    required: str
    check: Callable[[dict[str, Any]], Check]


def _judge(ok: bool, connections: int, needed: int = FULL_SCALE) -> bool | None:
    return ok if connections >= needed else None


def _idle_rss(r: dict[str, Any]) -> Check:
    n, value = r["connections"], r["rss_per_connection_kib"]
    return Check(f"{value:.1f} KiB", _judge(value <= 16, n), f"N={n}")


def _idle_cpu(r: dict[str, Any]) -> Check:
    n, value = r["connections"], r["idle_cpu_percent"]
    return Check(f"{value:.2f} %", _judge(value <= 3, n), f"N={n}, {r['window_s']} s window")


def _fanout_throughput(r: dict[str, Any]) -> Check:
    hub = [v for v in r["variants"] if v["server"] == "hub"]
    # Judged on the variants that offered the target's load; else shown only.
    offering = [v for v in hub if v["rate"] * v["per_job"] >= 40_000] or hub
    best = max(offering, key=lambda v: v["deliveries_per_s"] or 0)
    p99 = best["latency_ms"]["p99_ms"]
    offered = best["rate"] * best["per_job"]
    ok = (best["deliveries_per_s"] or 0) >= 40_000 and p99 is not None and p99 <= 100 and best["lost"] == 0
    measured = (
        f"{best['deliveries_per_s']:,.0f}/s (offered {offered:,.0f}/s), p99 {p99} ms, lost {best['lost']}; "
        f"{best['deliveries_per_server_cpu_second'] or 0:,.0f} deliveries per hub CPU-second"
    )
    run = f"N={best['connections']}, {best['per_job']} per job, {best['rate']:,.0f} events/s"
    return Check(measured, ok if offered >= 40_000 else None, run)


def _fanout_10k(r: dict[str, Any]) -> Check:
    hub = [v for v in r["variants"] if v["server"] == "hub" and v.get("role", "sweep") == "sweep"]
    v = max(hub, key=lambda v: v["connections"])
    p50, p99 = v["latency_ms"]["p50_ms"], v["latency_ms"]["p99_ms"]
    ok = p50 is not None and p99 is not None and p50 <= 5 and p99 <= 50 and v["lost"] == 0
    at_scale = v["connections"] >= FULL_SCALE and v["rate"] >= 5_000
    return Check(
        f"p50 {p50} ms, p99 {p99} ms, lost {v['lost']}",
        ok if at_scale else None,
        f"N={v['connections']}, {v['rate']:,.0f} events/s",
    )


def _broadcast(r: dict[str, Any]) -> Check:
    n, worst, median = r["connections"], r["last_delivery_max_ms"], r["last_delivery_p50_ms"]
    ok = worst is not None and worst <= 250 and r["lost"] == 0
    return Check(f"last delivery p50 {median} ms, max {worst} ms", _judge(ok, n), f"N={n}, {r['events']} events")


def _polling_cpu(r: dict[str, Any]) -> Check:
    n, ratio = r["polling"]["connections"], r["cpu_ratio_polling_to_sse"]
    polled, sse = r["polling"], r["sse"]
    measured = (
        f"polling {polled['projected_cpu_percent']} % of a core (measured {polled['server_cpu_percent']} %), "
        f"SSE {sse['server_cpu_percent']} %: ratio {ratio}"
    )
    return Check(measured, _judge(ratio is not None and ratio >= 20, n), f"N={n}")


def _polling_staleness(r: dict[str, Any]) -> Check:
    n = r["sse"]["connections"]
    sse, polled = r["sse"]["staleness_ms"]["p50_ms"], r["polling"]["staleness_ms"]["p50_ms"]
    return Check(f"SSE {sse} ms vs polling {polled} ms", _judge(sse is not None and sse <= 5, n), f"N={n}")


def _connects(r: dict[str, Any]) -> Check:
    c = r["connects"]
    return Check(f"{c['connects_per_s']:,.0f}/s", c["connects_per_s"] >= 1_000, f"{c['clients']} concurrent clients")


def _storm(r: dict[str, Any]) -> Check:
    s = r["storm"]
    ok = s["recovery_s"] is not None and s["recovery_s"] <= 15 and s["lost"] == 0 and s["duplicates"] == 0
    measured = (
        f"recovered in {s['recovery_s']} s (all back after {s['all_reconnected_s']} s), "
        f"lost {s['lost']}, dup {s['duplicates']}"
    )
    return Check(measured, _judge(ok, s["connections"]), f"N={s['connections']}, {s['rate']:,.0f} events/s")


def _peer_deliveries(r: dict[str, Any]) -> Check:
    ratios = r["ratios_hub_to_peer"]
    per_cpu, achieved = ratios["deliveries_per_server_cpu_second"], ratios["deliveries_per_s"]
    ok = per_cpu is not None and per_cpu >= 1 and achieved is not None and achieved >= 0.99
    n = r["settings"]["connections"]
    return Check(
        f"deliveries per CPU-s hub/peer {per_cpu}; deliveries/s hub/peer {achieved}",
        _judge(ok, n, PEER_SCALE),
        f"N={n}",
    )


def _peer_memory(r: dict[str, Any]) -> Check:
    ratio = r["ratios_hub_to_peer"]["rss_per_connection"]
    hub, peer = r["hub"]["idle"]["rss_per_connection_kib"], r["peer"]["idle"]["rss_per_connection_kib"]
    n = r["settings"]["connections"]
    ok = ratio is not None and ratio <= 1
    return Check(f"{hub} vs {peer} KiB/connection (ratio {ratio})", _judge(ok, n, PEER_SCALE), f"N={n}")


# -- against Nchan, and the hub's own figures shown beside Nchan's ----------

#: The hub's figures of one scenario, and each Nchan variant's, from one run.
Hub = dict[str, Any]
Nchan = dict[str, dict[str, Any]]


def _each(nchan: Nchan, figure: Callable[[dict[str, Any]], Any]) -> str:
    return "; ".join(f"{label(variant)} {figure(r)}" for variant, r in nchan.items()) or "Nchan not measured"


def _not_worse(hub: float | None, nchan: Nchan, figure: Callable[[dict[str, Any]], Any], margin: float = 1.0) -> bool:
    values = [figure(r) for r in nchan.values()]
    return hub is not None and all(v is not None and hub <= margin * v for v in values)


def _compared(measured: str, ok: bool, nchan: Nchan, connections: int, scale: int) -> Check:
    if not nchan:
        return Check(measured, None, f"N={connections}", "Nchan not measured")
    return Check(measured, _judge(ok, connections, scale), f"N={connections}")


def _vs_nchan_memory(hub: Hub, nchan: Nchan) -> Check:
    kib = hub["rss_per_connection_kib"]
    measured = f"hub {kib} KiB; " + _each(nchan, lambda r: f"{r['rss_per_connection_kib']} KiB")
    ok = _not_worse(kib, nchan, lambda r: r["rss_per_connection_kib"])
    return _compared(measured, ok, nchan, hub["connections"], FULL_SCALE)


def _vs_nchan_broadcast(hub: Hub, nchan: Nchan) -> Check:
    p50 = hub["last_delivery_p50_ms"]
    measured = f"hub {p50} ms; " + _each(nchan, lambda r: f"{r['last_delivery_p50_ms']} ms")
    ok = _not_worse(p50, nchan, lambda r: r["last_delivery_p50_ms"])
    return _compared(measured, ok, nchan, hub["connections"], FULL_SCALE)


def _vs_nchan_cpu(hub: Hub, nchan: Nchan) -> Check:
    cpu = hub["server_cpu_us_per_delivery"]
    measured = f"hub {cpu} µs; " + _each(nchan, lambda r: f"{r['server_cpu_us_per_delivery']} µs")
    ok = _not_worse(cpu, nchan, lambda r: r["server_cpu_us_per_delivery"], CPU_MARGIN)
    return _compared(measured, ok, nchan, hub["connections"], PEER_SCALE)


def _longpoll_cpu(hub: Hub, nchan: Nchan) -> Check:
    def figures(r: dict[str, Any]) -> str:
        us = r["server_cpu_us_per_delivery"]
        return f"{'–' if us is None else round(us / 1000, 3)} ms CPU, p50 {r['latency_ms']['p50_ms']} ms"

    us = hub["server_cpu_us_per_delivery"]
    ok = us is not None and us <= 250 and hub["lost"] == 0
    measured = f"hub {figures(hub)}, lost {hub['lost']}; {_each(nchan, figures)}"
    n = hub["connections"]
    return Check(measured, _judge(ok, n, PEER_SCALE), f"N={n}, {hub['rate']:,.0f} events/s")


def _connects_per_core(hub: Hub, nchan: Nchan) -> Check:
    c = hub["connects"]
    measured = f"hub {c['connects_per_s']:,.0f}/s; " + _each(
        nchan, lambda r: f"{r['connects']['connects_per_s']:,.0f}/s"
    )
    return Check(measured, c["connects_per_s"] >= 4_000, f"{c['clients']} concurrent clients")


def _storm_fast(hub: Hub, nchan: Nchan) -> Check:
    def figures(r: dict[str, Any]) -> str:
        s = r["storm"]
        back = f"{s['reconnected']:,} of {s['connections']:,} back"
        return f"{s['recovery_s']} s ({back}), lost {s['lost']}, dup {s['duplicates']}"

    s = hub["storm"]
    ok = s["recovery_s"] is not None and s["recovery_s"] <= 3 and s["lost"] == 0 and s["duplicates"] == 0
    measured = f"hub {figures(hub)}; {_each(nchan, figures)}"
    return Check(measured, _judge(ok, s["connections"]), f"N={s['connections']}, {s['rate']:,.0f} events/s")


def _scenario_view(scenario: str, result: dict[str, Any]) -> tuple[Hub, Nchan] | None:
    """The hub's and Nchan's figures from a scenario's own result."""
    if scenario == "fanout":
        nchan = {v["server"]: v for v in result["variants"] if v["server"] in NCHAN_VARIANTS}
        sweep = [v for v in result["variants"] if v["server"] == "hub" and v.get("role", "sweep") == "sweep"]
        count = next(iter(nchan.values()))["connections"] if nchan else max(v["connections"] for v in sweep)
        return next(v for v in sweep if v["connections"] == count), nchan  # like with like
    if scenario == "churn":
        return {"connects": result["connects"], "storm": result["storm"]}, result.get("nchan", {})
    return result, result.get("nchan", {})


def _peer_view(scenario: str, result: dict[str, Any]) -> tuple[Hub, Nchan] | None:
    """The same from the peer scenario's result, which measured them all."""
    if scenario not in result["hub"]:
        return None
    return result["hub"][scenario], {v: r[scenario] for v, r in result.get("nchan", {}).items() if scenario in r}


@dataclass(frozen=True)
class Comparison:
    """A target judged on the hub's and each Nchan variant's figures of a
    scenario, wherever the run measured that scenario."""

    scenario: str
    name: str
    required: str
    check: Callable[[Hub, Nchan], Check]

    def views(self, results: dict[str, Any]) -> list[tuple[str, tuple[Hub, Nchan]]]:
        """(where from, the figures) for each result that measured the scenario."""
        found = []
        if self.scenario in results:
            found.append((self.scenario, _scenario_view(self.scenario, results[self.scenario])))
        if "peer" in results:
            found.append(("peer", _peer_view(self.scenario, results["peer"])))
        return [(source, view) for source, view in found if view is not None]


COMPARISONS = [
    Comparison("idle", "vs Nchan: idle memory", "≤ Nchan's RSS per SSE connection at 10,000", _vs_nchan_memory),
    Comparison(
        "broadcast", "vs Nchan: broadcast", "last delivery p50 ≤ Nchan's, 10,000 subscribers", _vs_nchan_broadcast
    ),
    Comparison("fanout", "vs Nchan: fanout CPU", "server CPU per delivery ≤ 1.1 × Nchan's", _vs_nchan_cpu),
    Comparison("broadcast", "vs Nchan: broadcast CPU", "server CPU per delivery ≤ 1.1 × Nchan's", _vs_nchan_cpu),
    Comparison("longpoll", "long-poll CPU", "≤ 0.25 ms of hub CPU per delivery, no loss", _longpoll_cpu),
    Comparison(
        "churn", "connects per core", "≥ 4,000 authenticated admitted stream opens/s on one core", _connects_per_core
    ),
    Comparison("churn", "fast reconnect storm", "10,000 clients back and caught up ≤ 3 s, 0 lost, 0 dup", _storm_fast),
]


TARGETS = [
    Target("idle", "idle memory", "≤ 16 KiB RSS per connection at 10,000", _idle_rss),
    Target("idle", "idle CPU", "≤ 3 % of a core at 10,000", _idle_cpu),
    Target("fanout", "fanout throughput", "≥ 40,000 deliveries/s, p99 ≤ 100 ms, no loss", _fanout_throughput),
    Target("fanout", "fanout latency", "10,000 conn. at 5,000 events/s: p50 ≤ 5 ms, p99 ≤ 50 ms", _fanout_10k),
    Target("broadcast", "broadcast", "10,000 subscribers: last delivery ≤ 250 ms", _broadcast),
    Target("polling", "polling CPU", "SSE ≤ 1/20 of 2 s polling's CPU at 10,000", _polling_cpu),
    Target("polling", "staleness", "SSE median ≤ 5 ms (polling ~1 s)", _polling_staleness),
    Target("churn", "connects", "≥ 1,000 connects/s", _connects),
    Target("churn", "reconnect storm", "10,000 clients recover ≤ 15 s, no loss", _storm),
    Target("peer", "vs peer: deliveries", "≥ the sse-starlette peer's deliveries/s", _peer_deliveries),
    Target("peer", "vs peer: memory", "≤ the peer's memory per connection", _peer_memory),
]


def _safely(check: Callable[..., Check], *figures: Any) -> Check:
    """The check, or n/a when a measurement it needs failed (the run's failures say why)."""
    try:
        return check(*figures)
    except (KeyError, TypeError):
        return Check("not measured", None, "", "a measurement failed")


def evaluate(results: dict[str, Any], load_average: list[float]) -> list[dict[str, Any]]:
    judged = [(t.name, t.required, _safely(t.check, results[t.scenario]), "") for t in TARGETS if t.scenario in results]
    for comparison in COMPARISONS:
        for source, view in comparison.views(results):
            judged.append(
                (comparison.name, comparison.required, _safely(comparison.check, *view), f" ({source} scenario)")
            )
    return [
        {
            "target": name,
            "required": required,
            "measured": check.measured,
            "met": f"n/a ({check.na})" if check.met is None else ("met" if check.met else "NOT met"),
            "run": check.scale + source,
            "load average at start": " ".join(str(v) for v in load_average),
        }
        for name, required, check, source in judged
    ]
