"""The run's record: one JSON file with everything, and a markdown summary
(printed, and written beside the JSON)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "_no rows_\n"
    columns = list(rows[0])
    for row in rows[1:]:
        columns += [c for c in row if c not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isinf(value) or math.isnan(value):
            return str(value)
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def markdown(run: dict[str, Any], sections: list[tuple[str, list[dict[str, Any]]]]) -> str:
    machine = run["machine"]
    parts = [
        f"# Benchmark run {run['started_at']}\n",
        f"Command: `{run['command']}`  \n"
        f"Machine: {machine['cores']} cores ({machine['cpu_model']}), {machine['memory_gib']} GiB, "
        f"Linux {machine['kernel']}, Python {machine['python']}, Tornado {machine['versions']['tornado']}, "
        f"redis-py {machine['versions']['redis']}, Valkey {run.get('valkey_version')}  \n"
        f"Load average at start / end: {run['load_average_start']} / {run.get('load_average_end')}  \n"
        f"Source: commit {run['source']['commit']}, {run['source']['hub_uncommitted_files']} uncommitted file(s) "
        f"under hub/ and actors/  \n"
        f"Pinning: server on {machine['pinning']['server']}, load on {machine['pinning']['load']}\n",
    ]
    for title, rows in sections:
        parts.append(f"## {title}\n\n{markdown_table(rows)}")
    if run.get("targets"):
        parts.append("## Targets\n\n" + markdown_table(run["targets"]))
    if run.get("failures"):
        parts.append("## Failures\n\n" + "\n".join(f"- {name}: {error}" for name, error in run["failures"].items()))
    return "\n".join(parts) + "\n"


def write(path: Path, run: dict[str, Any], text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    md = path.with_suffix(".md")
    md.write_text(text, encoding="utf-8")
    return md


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, tuple)):
        return list(value)
    if hasattr(value, "summary"):
        return value.summary()
    return str(value)
