"""The layers stay apart: the job store is importable without the web server
(workers and the HTTP publisher use it), and the actors never import the web
server, its delivery path or its runtime."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.environment import ROOT

WEB_SIDE = ("tornado", "hub.web", "hub.delivery", "hub.runtime")


def modules_after_import(*names: str) -> set[str]:
    """The modules a fresh interpreter holds after importing `names`."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(names)!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return set(json.loads(output))


def offending(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


@pytest.mark.parametrize(
    "module",
    [
        "hub.store.settings",
        "hub.store.keys",
        "hub.store.scripts",
        "hub.store.journal",
        "hub.store.history",
        "hub.store.registry",
        "hub.store.stalls",
        "hub.store.wire",
    ],
)
def test_the_store_imports_no_web_server(module: str) -> None:
    assert offending(modules_after_import(module), WEB_SIDE) == []


@pytest.mark.parametrize("module", ["actors", "actors.worker", "actors.lifecycle", "actors.examples"])
def test_the_actors_import_no_web_server(module: str) -> None:
    assert offending(modules_after_import(module), WEB_SIDE) == []


def test_the_store_imports_neither_dramatiq_nor_the_actors() -> None:
    modules = modules_after_import("hub.store.journal", "hub.store.history", "hub.store.registry")
    assert offending(modules, ("dramatiq", "actors")) == []
