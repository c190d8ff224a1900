"""PNG plots of a run: latency percentiles against connections (fanout), and
hub CPU for 2-second polling against SSE (polling)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def draw(results: dict[str, Any], folder: Path, stem: str) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
    except ImportError:
        print("matplotlib is not installed (pip install -e .[bench]); no plots")
        return []
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    if "fanout" in results:
        written.append(_latency_by_connections(results["fanout"], folder / f"{stem}-fanout-latency.png"))
    if "polling" in results:
        written.append(_polling_vs_sse(results["polling"], folder / f"{stem}-polling-cpu.png"))
    return written


def _latency_by_connections(fanout: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    variants = sorted(
        (v for v in fanout["variants"] if v["server"] == "hub" and v.get("role", "sweep") == "sweep"),
        key=lambda v: v["connections"],
    )
    counts = [v["connections"] for v in variants]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for key, label in (("p50_ms", "p50"), ("p90_ms", "p90"), ("p99_ms", "p99"), ("max_ms", "max")):
        axes.plot(counts, [v["latency_ms"][key] for v in variants], marker="o", label=label)
    axes.set_xscale("log")
    axes.set_yscale("log")
    # Plain numbers on both axes, and a tick at each measured connection count.
    axes.set_xticks(counts)
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    low, high = axes.get_ylim()
    low = min(low, 1.0)  # so the 1 ms line is always there to read against
    axes.set_ylim(low, high)
    # Label the minor ticks too, unless the range is so wide they would crowd.
    axes.yaxis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}") if high / low < 30 else NullFormatter())
    axes.set_xlabel("SSE connections (one job each)")
    axes.set_ylabel("publish → client parsed (ms)")
    rate = variants[0]["rate"] if variants else 0
    axes.set_title(f"Hub fanout latency at {rate:,.0f} events/s")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _polling_vs_sse(polling: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    polled, sse = polling["polling"], polling["sse"]
    figure, (cpu_axes, stale_axes) = plt.subplots(1, 2, figsize=(9, 4))
    labels = ["GET every 2 s", "SSE"]
    cpu_axes.bar(labels, [polled["server_cpu_percent"], sse["server_cpu_percent"]], color=["#c0504d", "#4f81bd"])
    if polled["projected_cpu_percent"] > polled["server_cpu_percent"]:
        cpu_axes.bar(
            labels[:1],
            [polled["projected_cpu_percent"] - polled["server_cpu_percent"]],
            bottom=[polled["server_cpu_percent"]],
            color="#e6b8b7",
            label="needed beyond one core (projected)",
        )
        cpu_axes.legend(loc="center right", fontsize="small")
    cpu_axes.set_ylabel("hub CPU, % of one core")
    cpu_axes.set_title(f"{polled['connections']:,} clients")
    stale_axes.bar(
        labels,
        [polled["staleness_ms"]["p50_ms"] or 0, sse["staleness_ms"]["p50_ms"] or 0],
        color=["#c0504d", "#4f81bd"],
    )
    stale_axes.set_yscale("log")
    stale_axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    stale_axes.yaxis.set_minor_formatter(NullFormatter())
    stale_axes.set_ylabel("median staleness (ms)")
    stale_axes.set_title("change → client sees it")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
