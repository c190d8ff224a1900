"""The garbage collector, set for a process that holds thousands of
long-lived connections.

CPython's full collection walks every object that could be in a cycle. With
10,000 open streams that is millions of objects, and the process stops for
about 0.4 s on a small server: every event due meanwhile is late by as much.
Two settings make full collections rare and cheaper; both trade a little
memory (cyclic garbage waits longer) for steady delivery times.
"""

from __future__ import annotations

import gc

#: Allocations (net of frees) between young collections; CPython's default
#: of 700 runs one every few deliveries under load, and each one promotes
#: whatever happens to be alive at that moment towards the oldest generation.
YOUNG_THRESHOLD = 20_000
#: Young collections per middle one, and middle ones per full one (CPython
#: also waits until a quarter of the oldest generation is new).
MIDDLE_THRESHOLD = 10
OLD_THRESHOLD = 10


def settle() -> None:
    """Called once the server is built: what start-up made (modules, classes,
    the application) lives as long as the process, so it is frozen out of
    every later collection instead of being walked again by each one."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)
