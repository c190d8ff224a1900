"""The realtime hub's benchmark: `python -m bench SCENARIO|all`; see docs/PERFORMANCE.md."""
