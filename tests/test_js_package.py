"""The JavaScript client as an npm package: `npm pack` makes a tarball that
holds the modules, their declarations and the README, and nothing else; an
app that installs it (offline: it has no dependencies) imports both entries
from Node, and type-checks its own code against the declarations with
`tsc --strict`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.environment import ROOT, need

JS = ROOT / "clients" / "js"
NAME = "@realtime-hub/client"
#: An app's TypeScript that uses both entries; its @ts-expect-error lines are mistakes the declarations must catch.
CONSUMER = ROOT / "tests" / "node" / "package_consumer.ts"
TSC = JS / "node_modules" / "typescript" / "bin" / "tsc"
#: React is an optional peer dependency: the app brings its own (here the copy the client's tests use).
REACT = JS / "node_modules" / "react"


@dataclass(frozen=True)
class Installed:
    app: Path
    tarball: Path
    packed: list[str]


def tool(name: str) -> str:
    found = shutil.which(name)
    need(found is not None, f"{name} is not installed")
    assert found is not None
    return found


def run(command: list[str], cwd: Path, timeout: float = 120) -> str:
    # npm's own checks for a newer npm would be a request to the registry.
    env = dict(os.environ, npm_config_update_notifier="false", npm_config_loglevel="error")
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """The package packed, and installed with React into a fresh app, offline."""
    npm = tool("npm")
    need(REACT.is_dir() and TSC.is_file(), "run `npm ci --prefix clients/js` first (tests/js_deps.py does)")
    out = tmp_path_factory.mktemp("pack")
    [pack] = json.loads(run([npm, "pack", "--json", "--pack-destination", str(out)], JS))
    tarball = out / pack["filename"]
    app = tmp_path_factory.mktemp("app")
    (app / "package.json").write_text(json.dumps({"name": "an-app", "private": True, "type": "module"}))
    run([npm, "install", "--offline", "--no-audit", "--no-fund", str(tarball), str(REACT)], app)
    yield Installed(app, tarball, sorted(entry["path"] for entry in pack["files"]))


def test_the_tarball_holds_every_module_its_declarations_and_the_readme_and_nothing_else(installed):
    modules = sorted(path.name for pattern in ("*.js", "*.d.ts") for path in JS.glob(pattern))
    assert {"hub-client.js", "hub-client.d.ts", "react.js", "react.d.ts"} <= set(modules)
    assert installed.packed == sorted([*modules, "README.md", "package.json"])
    unpacked = installed.app / "node_modules" / NAME
    assert sorted(path.name for path in unpacked.iterdir()) == installed.packed
    manifest = json.loads((unpacked / "package.json").read_text())
    assert manifest["sideEffects"] is False
    assert manifest.get("dependencies", {}) == {}
    assert set(manifest["exports"]) == {".", "./react", "./package.json"}


# Imports each entry as an app would, by the package's name; prints what each exports.
IMPORTS = """
import { createRequire } from 'node:module';
const client = await import('@realtime-hub/client');
const react = await import('@realtime-hub/client/react');
const manifest = createRequire(process.cwd() + '/')('@realtime-hub/client/package.json');
console.log(JSON.stringify({
  client: Object.keys(client).sort(),
  react: Object.keys(react).sort(),
  version: manifest.version,
  terminal: client.TERMINAL_STATUSES,
}));
"""


def test_an_app_imports_both_entries_by_the_packages_name(installed):
    node = tool("node")
    found = json.loads(run([node, "--input-type=module", "-e", IMPORTS], installed.app))
    assert {"subscribeJob", "subscribeMyJobs", "hubClient", "listJobs", "isTerminal"} <= set(found["client"])
    assert found["react"] == ["useJobSSE"]
    assert found["version"] == json.loads((JS / "package.json").read_text())["version"]
    assert found["terminal"] == ["completed", "failed"]


@pytest.mark.parametrize("resolution", ["nodenext", "bundler"])
def test_an_apps_typescript_checks_against_the_declarations(installed, resolution):
    """As an app built by Node's own resolution or by a bundler would see
    them: both entries' types, strict, and every deliberate mistake caught."""
    node = tool("node")
    shutil.copy(CONSUMER, installed.app / CONSUMER.name)
    module = "nodenext" if resolution == "nodenext" else "esnext"
    command = [node, str(TSC), "--noEmit", "--strict", "--target", "es2022", "--lib", "es2022,dom"]
    command += ["--module", module, "--moduleResolution", resolution, CONSUMER.name]
    run(command, installed.app)
