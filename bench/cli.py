"""`python -m bench SCENARIO|all [--connections N[,N...]] [--duration S]
[--rate R] [--per-job K] [--processes P] [--redis-url URL | --cluster P | --replica]
[--publishers P] [--json PATH] [--quick] [--profile]`: runs the scenarios, then writes the run's JSON, its
markdown summary and its plots."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

from bench import plots, profile, report, targets
from bench.cluster import MIN_PRIMARIES
from bench.params import Params, redacted
from bench.scenarios import (
    broadcast,
    churn,
    fanout,
    idle,
    longpoll,
    peer,
    polling,
    redis_cost,
    slowclient,
    streams100k,
)
from bench.stack import PROCESSES_ENV, PROFILE_DIR_ENV
from bench.system import cpu_sets, load_average, machine, pin, raise_open_files, source_version

SCENARIOS: dict[str, ModuleType] = {
    module.NAME: module
    for module in (idle, fanout, broadcast, longpoll, polling, churn, peer, streams100k, redis_cost, slowclient)
}
RESULTS = Path(__file__).resolve().parent / "results"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Benchmarks the realtime hub.")
    parser.add_argument("scenario", choices=[*SCENARIOS, "all"])
    parser.add_argument(
        "--connections",
        type=lambda text: tuple(int(part) for part in text.split(",")),
        help="connections (a comma-separated list makes fanout sweep them)",
    )
    parser.add_argument("--duration", type=float, help="seconds of load per measurement")
    parser.add_argument("--rate", type=float, help="events published per second")
    parser.add_argument("--per-job", type=int, help="fanout: connections per job (default 1)")
    parser.add_argument(
        "--processes",
        type=int,
        help="run the hub as N web-server processes (HUB_PROCESSES) on every core, the load's included, "
        "measured alone without the Nchan rows; streams100k: N `hub serve`, each on its own port",
    )
    parser.add_argument("--publishers", type=int, help="redis-cost: publisher processes trying to saturate Redis")
    parser.add_argument(
        "--redis-url",
        help="redis-cost: measure this Redis (any HUB_REDIS_URL) instead of starting one; its keys are removed after",
    )
    parser.add_argument(
        "--cluster",
        type=int,
        metavar="P",
        help="redis-cost: start and measure a local Valkey Cluster of P primaries (3 or more), a replica each",
    )
    parser.add_argument(
        "--replica",
        action="store_true",
        help="redis-cost: give the Valkey it starts a replica, as each primary of --cluster has",
    )
    parser.add_argument("--json", type=Path, help="where the run's JSON goes (the .md and plots go beside it)")
    parser.add_argument("--quick", action="store_true", help="small N and a few seconds each: a smoke test")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample each server with py-spy during its measurement windows and log its garbage collections",
    )
    args = parser.parse_args(argv)
    if args.cluster is not None and (args.redis_url or args.cluster < MIN_PRIMARIES):
        parser.error(f"--cluster takes {MIN_PRIMARIES} or more primaries, and no --redis-url")
    if args.replica and (args.redis_url or args.cluster is not None):
        parser.error("--replica is for the Valkey redis-cost starts: neither --redis-url nor --cluster")
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # so every `with` block stops its processes


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    params = Params(
        args.connections,
        args.duration,
        args.rate,
        args.per_job,
        args.quick,
        args.processes,
        args.redis_url,
        args.publishers,
        args.cluster,
        args.replica,
    )
    if args.processes is not None:
        os.environ[PROCESSES_ENV] = str(args.processes)
    signal.signal(signal.SIGTERM, _interrupt)
    raise_open_files()
    pin(cpu_sets()[1])  # this process and everything it starts, but the server, stay off the server's core
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    started = datetime.now(UTC)
    path = args.json or RESULTS / f"{args.scenario}-{started:%Y%m%d-%H%M%S}.json"
    if args.profile:
        os.environ[PROFILE_DIR_ENV] = str(path.parent / f"{path.stem}-profiles")
    run: dict[str, Any] = {
        "started_at": started.isoformat(timespec="seconds"),
        "command": redacted("python -m bench " + " ".join(sys.argv[1:] if argv is None else argv)),
        "params": params.as_dict(),
        "machine": machine(args.processes or 1),
        "source": source_version(str(Path(__file__).resolve().parent.parent)),
        "load_average_start": load_average(),
        "uptime": Path("/proc/uptime").read_text().split()[0],
        "results": {},
        "failures": {},
    }
    for name in names:
        print(f"== {name} ({datetime.now(UTC):%H:%M:%S}, load average {load_average()})", flush=True)
        began = time.monotonic()
        try:
            run["results"][name] = SCENARIOS[name].run(params)
        except KeyboardInterrupt:
            run["failures"][name] = "interrupted"
            break
        except Exception as exc:
            traceback.print_exc()
            run["failures"][name] = f"{type(exc).__name__}: {exc}"
        else:  # measurements that failed while the scenario's others stood
            for what, error in run["results"][name].get("failures", {}).items():
                run["failures"][f"{name}: {what}"] = error
        print(f"   {name} took {time.monotonic() - began:.0f}s", flush=True)
    run["valkey_version"] = _valkey_version()
    run["load_average_end"] = load_average()
    run["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    run["targets"] = targets.evaluate(run["results"], run["load_average_start"])
    sections = [section for name, result in run["results"].items() for section in _sections(name, result)]
    run["profiles"] = {p: profile.summarize(p) for p in _profiles(run["results"]) if Path(p).exists()}
    text = report.markdown(run, sections)
    gc_rows = [{"window": name, **pauses} for name, pauses in _gc_windows(run["results"]).items()]
    if gc_rows:
        text += "## Garbage collections of the server during each window (≥ 1 ms, and every full one)\n\n"
        text += report.markdown_table(gc_rows) + "\n"
    text += "".join(profile.markdown(Path(p).name, summary) + "\n" for p, summary in run["profiles"].items())
    run["plots"] = [str(p) for p in plots.draw(run["results"], path.parent, path.stem)]
    md = report.write(path, run, text)
    print(text)
    print(f"written: {path}, {md}" + "".join(f", {p}" for p in run["plots"]))
    return 1 if run["failures"] else 0


def _sections(name: str, result: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """A scenario's tables: one (its `rows`), or several (its `sections`)."""
    module = SCENARIOS[name]
    if hasattr(module, "sections"):
        found: list[tuple[str, list[dict[str, Any]]]] = module.sections(result)
        return found
    return [(name, module.rows(result))]


def _profiles(value: Any) -> list[str]:
    """Every profile a scenario's stacks wrote, wherever it sits in the results."""
    if isinstance(value, dict):
        found = [p for p in value.get("profiles", []) if isinstance(p, str)]
        return found + [p for key, item in value.items() if key != "profiles" for p in _profiles(item)]
    if isinstance(value, list):
        return [p for item in value for p in _profiles(item)]
    return []


def _gc_windows(value: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if isinstance(value, dict):
        found.update(value.get("gc_pauses") or {})
        for key, item in value.items():
            if key != "gc_pauses":
                found.update(_gc_windows(item))
    elif isinstance(value, list):
        for item in value:
            found.update(_gc_windows(item))
    return found


def _valkey_version() -> str | None:
    import subprocess

    from hub.runtime.embedded import server_binary

    try:
        out = subprocess.run([server_binary(), "--version"], capture_output=True, text=True, timeout=10).stdout
    except Exception:
        return None
    return next((part.split("=", 1)[1] for part in out.split() if part.startswith("v=")), out.strip() or None)
