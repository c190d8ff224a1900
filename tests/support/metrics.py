"""Reading the hub's metrics through prometheus_client's public API."""

from __future__ import annotations

from typing import Any


def sample(ctx: Any, name: str, **labels: str) -> float:
    """The value of the sample `name` (as exposed: a counter's name ends in
    `_total`) with exactly `labels`, from the in-process hub `ctx`'s registry.
    A sample the registry does not have fails the test: a misspelt name must
    not read as zero."""
    value = ctx.metrics.registry.get_sample_value(name, labels)
    assert value is not None, f"no sample {name}{labels}"
    return float(value)
