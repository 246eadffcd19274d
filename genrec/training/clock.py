"""Seconds a run was running: monotonic time less the time its process was stopped.

A run's ``train_seconds`` and the seconds of its training steps (``real_tokens_per_s``) should not count the time
the process was stopped (``kill -STOP``, Ctrl-Z; a suspended system stops monotonic time itself, so its sleep is
counted nowhere). A stopped process cannot see the signal that stops it (SIGSTOP cannot be caught), so a daemon
thread watches the clock instead: it wakes every ``interval`` seconds, and when a wake-up comes more than
``threshold`` seconds late, the lateness is counted as a pause. Every read of the clock makes the same check
first, so a read that comes before the watcher woke up again already excludes the pause. Pauses shorter than
``threshold`` are counted as running time; the threshold is well above how long a busy machine leaves a runnable
thread waiting, or a long C call holds the interpreter lock.
"""
from __future__ import annotations

import threading
import time
from typing import Callable


class RunClock:
    """``clock()``: seconds of running time (monotonic, pauses removed); ``clock.paused``: seconds paused so far."""

    def __init__(self, interval: float = 1.0, threshold: float = 10.0, now: Callable[[], float] = time.monotonic,
                 watch: bool = True):
        self.interval, self.threshold, self._now = interval, threshold, now
        self.paused = 0.0
        self._last = now()
        self._lock = threading.RLock()  # ``read`` ticks under it
        self._stop = threading.Event()
        self._thread = None
        if watch:
            self._thread = threading.Thread(target=self._watch, name="genrec-run-clock", daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()

    def tick(self) -> float:
        """Count a pause if the last tick is more than ``interval + threshold`` seconds ago; returns the running
        time (``clock()``)."""
        with self._lock:
            now = self._now()
            late = now - self._last - self.interval
            if late > self.threshold:
                self.paused += late
            self._last = now
            return now - self.paused

    def __call__(self) -> float:
        return self.tick()

    def read(self) -> tuple[float, float]:
        """(running time, seconds paused so far), read together: a pause is in exactly one of them."""
        with self._lock:
            return self.tick(), self.paused

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
