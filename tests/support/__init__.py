"""What the tests share besides fixtures (those live in tests/conftest.py),
one concept a module: the suite's environment, bounded waits, tokens, hub
processes, the raw HTTP client, SSE reading, metrics, jobs, the Python
client's drivers and a TCP proxy that breaks connections on purpose."""
