"""A background thread that runs one sweep of the store now and then (stalled
jobs, held jobs). A sweep that fails (Redis down) is logged and tried again
at the next interval."""

from __future__ import annotations

import logging
import threading

from hub.errors import StoreError


class Sweeper:
    #: The thread's name, and what the log calls a failed sweep.
    name = "sweep"

    def __init__(self, interval_seconds: float) -> None:
        self._interval = interval_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._log = logging.getLogger(type(self).__module__)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def sweep(self) -> int:
        """One sweep; returns how many things it did."""
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.sweep()
            except Exception as exc:  # Redis down: the next sweep tries again
                # The class only, never the text; a store error's text is Redis's class.
                failure = exc if isinstance(exc, StoreError) else exc.__class__.__name__
                self._log.warning("%s failed: %s", self.name, failure)
