"""Minute boundaries for every pair's loop: one timer per boundary, and how long each sweep took.

Each pair's loop sleeps until the next minute boundary. With one timer (and one stop
watcher) per pair, 10,000 pairs cost 10,000 timers and helper tasks every minute; here
every loop waiting for the same boundary waits on its own plain future, and a single
timer per boundary wakes them all. A stop request wakes one loop at once.

A *sweep* is the work one boundary starts: the ticks of every loop it woke. The
metronome counts them down and records how long the slowest took to finish, which the
status file shows (and the benchmarks measure).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class Sweep:
    """The ticks started by one minute boundary."""

    minute: int
    pairs: int
    started: float
    left: int
    seconds: float | None = None


class Metronome:
    """Wakes the loops waiting for a minute boundary; see the module docstring."""

    def __init__(self) -> None:
        self._waiting: dict[int, list[asyncio.Future[bool]]] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._sweeps: dict[int, Sweep] = {}
        #: The last sweep that completed.
        self.last: Sweep | None = None
        #: Called with each completed sweep.
        self.listeners: list[Callable[[Sweep], None]] = []

    def wait(self, minute: int, seconds: float) -> asyncio.Future[bool]:
        """A future resolved True at the boundary ``minute``, due ``seconds`` from now (real time).

        The first waiter of a boundary sets its timer; resolve the future with False to wake
        the loop early (a stop).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        waiting = self._waiting.get(minute)
        if waiting is None:
            waiting = self._waiting[minute] = []
            if seconds < float("inf"):
                self._timers[minute] = loop.call_at(loop.time() + seconds, self.fire, minute)
        waiting.append(future)
        return future

    def fire(self, minute: int) -> int:
        """Wake every loop waiting for ``minute`` (the timer calls this); returns how many woke."""
        timer = self._timers.pop(minute, None)
        if timer is not None:
            timer.cancel()
        woken = 0
        for future in self._waiting.pop(minute, ()):
            if not future.done():
                future.set_result(True)
                woken += 1
        if woken:
            self._sweeps[minute] = Sweep(minute, woken, time.perf_counter(), woken)
        return woken

    def ticked(self, minute: int) -> None:
        """One loop woken at ``minute`` finished its tick (or gave up on it)."""
        sweep = self._sweeps.get(minute)
        if sweep is None:
            return
        sweep.left -= 1
        if sweep.left <= 0:
            del self._sweeps[minute]
            sweep.seconds = time.perf_counter() - sweep.started
            self.last = sweep
            for listener in self.listeners:
                listener(sweep)

    @property
    def sweeping(self) -> bool:
        """True while the loops woken at some boundary have not all finished their tick."""
        return bool(self._sweeps)

    async def between_sweeps(self, limit: float) -> None:
        """Return once no sweep is running, or after ``limit`` seconds (a stuck tick must not hold the caller)."""
        waited = 0.0
        while self._sweeps and waited < limit:
            await asyncio.sleep(0.01)
            waited += 0.01

    def waiting(self, minute: int) -> list[asyncio.Future[bool]]:
        """The loops still waiting for the boundary ``minute``."""
        return [f for f in self._waiting.get(minute, ()) if not f.done()]
