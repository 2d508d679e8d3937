"""The web process's garbage-collection pauses, as /metrics shows them (web.metrics).

The web serves every client, launch and event read from one OS thread (eventlet): while CPython's
cyclic collector runs, all of them wait. A full (generation 2) collection walks every object the
process holds: while 1,000 clients connected (`python -m bench.herd 1000`), full collections took
126-147 ms on average and at most 148-161 ms before the startup objects were frozen
(serve.freeze_startup_objects), 82-100 ms and at most 120-134 ms after. `Pauses` times each
collection through `gc.callbacks` (docs.python.org/3/library/gc.html#gc.callbacks), so that an
operator can see them.
"""
from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

# Histogram bucket bounds (seconds) for one collection; +Inf is added.
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
GENERATIONS = (0, 1, 2)


class Pauses:
    """Per generation (0, 1, 2): collections counted, their summed and longest duration (seconds),
    and how many fell at or under each of BUCKETS. Bounded: a fixed set of numbers, whatever the
    process's life. `install` adds the callback once; `uninstall` removes it."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.count = [0, 0, 0]
        self.total = [0.0, 0.0, 0.0]
        self.longest = [0.0, 0.0, 0.0]
        self.buckets = [[0] * len(BUCKETS) for _ in GENERATIONS]
        self._started: float | None = None

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        """gc.callbacks' signature: `phase` "start" or "stop", `info` {"generation", ...}."""
        if phase == "start":
            self._started = self.clock()
            return
        started, self._started = self._started, None
        generation = info.get("generation")
        if started is None or generation not in GENERATIONS:
            return
        self.add(generation, self.clock() - started)

    def add(self, generation: int, seconds: float) -> None:
        """Count one collection of `generation` that took `seconds`."""
        self.count[generation] += 1
        self.total[generation] += seconds
        self.longest[generation] = max(self.longest[generation], seconds)
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                self.buckets[generation][i] += 1

    def install(self) -> Pauses:
        if self not in gc.callbacks:
            gc.callbacks.append(self)
        return self

    def uninstall(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)


PAUSES = Pauses()  # the process's own: serve.py installs it
