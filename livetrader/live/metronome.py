"""Minute boundaries for every pair's loop: one timer per boundary, and how long each sweep took.

Each pair's loop sleeps until the next minute boundary. With one timer (and one stop
watcher) per pair, 10,000 pairs cost 10,000 timers and helper tasks every minute; here
every loop waiting for the same boundary waits on its own plain future, and a single
timer per boundary wakes them all. A stop request wakes one loop at once.

A loop may also leave an *express* tick with its wait: at the boundary the metronome
calls it first, and when it ticked in place (``Pair.tick_in_place``: nothing to await)
the loop is not woken at all but left waiting for the next boundary it names. Most ticks
of a minute are such, and waking 10,000 tasks to run them cost more than the ticks.

A *sweep* is the work one boundary starts: the ticks of every loop it woke or ticked in
place. The metronome counts them down and records how long the slowest took to finish,
which the status file shows (and the benchmarks measure). While a sweep runs, what should
keep off the CPU is paused through one registry (``livetrader.sweep.SweepPauses``).

A loop whose candles are pushed by a stream (``market.ccxt.stream``) waits with a *key*, its
exchange and symbol: it wakes as soon as that symbol's closed candle arrives (``fire_key``),
never before the boundary, and at the latest ``grace`` seconds after it, when the candle has
not come (its tick then fetches it over REST). So a decision waits for its own candle, not
for the slowest symbol's, and a sweep ends when the last keyed group has ticked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import TypeAlias

from livetrader.sweep import SweepPause, SweepPauses

#: A loop's express tick: called with the boundary and the clock's time at it, True when it
#: ticked the pair in place (the loop sleeps on), False when the loop must be woken to tick.
Express = Callable[[int, int], bool]
#: After the express ticks of a boundary: the next boundary and the real seconds until it.
NextWait = Callable[[], "tuple[int, float]"]
#: A loop waiting for a boundary: its future, its express tick, its key (None: woken at the boundary).
_Waiter: TypeAlias = "tuple[asyncio.Future[int | bool], Express | None, Hashable | None]"


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

    def __init__(self, pauses: SweepPauses | Iterable[SweepPause] = (), next_wait: NextWait | None = None,
                 now: Callable[[], int] | None = None) -> None:
        #: Paused while a sweep runs, resumed when none does (or after the registry's limit): the
        #: cyclic GC (``live.collector.SweepCollector``), the event bus, the background writer.
        self.pauses = pauses if isinstance(pauses, SweepPauses) else SweepPauses(pauses)
        #: Where the loops ticked in place wait next (required for express ticks).
        self.next_wait = next_wait
        #: The clock the express ticks run at, read once per boundary (default: the boundary itself).
        self.now = now
        #: Real seconds after a boundary at which keyed loops whose candle has not come are woken anyway.
        self.grace = 0.0
        # Per boundary, the waiting loops grouped by key (None: no key, woken at the boundary).
        self._waiting: dict[int, dict[Hashable | None, list[_Waiter]]] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}  # the boundary
        self._late: dict[int, asyncio.TimerHandle] = {}  # the boundary plus ``grace``
        self._arrived: dict[int, set[Hashable]] = {}  # keys whose candle came before their boundary
        self._sweeps: dict[int, Sweep] = {}
        #: The last sweep that completed.
        self.last: Sweep | None = None
        #: Called with each completed sweep.
        self.listeners: list[Callable[[Sweep], None]] = []

    def wait(self, minute: int, seconds: float, express: Express | None = None,
             key: Hashable | None = None) -> asyncio.Future[int | bool]:
        """A future resolved with ``minute`` at that boundary, due ``seconds`` from now (real time).

        With ``express``, the boundary first calls it, and while it ticks in place the
        future stays pending, moved on to the next boundary (``next_wait``); the future then
        resolves with the boundary at which it did not. The first waiter of a boundary sets its timer;
        resolve the future with False to wake the loop early (a stop). With ``key``, the loop is
        woken by ``fire_key(minute, key)`` (not before the boundary), or ``grace`` after the boundary.
        """
        future: asyncio.Future[int | bool] = asyncio.get_running_loop().create_future()
        self._file(minute, seconds, (future, express, key))
        return future

    def _file(self, minute: int, seconds: float, waiter: _Waiter) -> None:
        groups = self._waiting.get(minute)
        if groups is None:
            groups = self._waiting[minute] = {}
        key = waiter[2]
        if key is not None and key in self._arrived.get(minute, ()):
            key = None  # its candle is in: woken at the boundary with the unkeyed ones
        if seconds < float("inf"):
            loop = asyncio.get_running_loop()
            if minute not in self._timers:
                self._timers[minute] = loop.call_at(loop.time() + seconds, self._boundary, minute)
            if key is not None and minute not in self._late:
                self._late[minute] = loop.call_at(loop.time() + seconds + self.grace, self.fire, minute)
        group = groups.get(key)
        if group is None:
            group = groups[key] = []
        group.append(waiter)

    def _boundary(self, minute: int) -> None:
        """The boundary's timer: wake the unkeyed loops and those whose candle came already."""
        self._timers.pop(minute, None)
        arrived = self._arrived.pop(minute, set())
        self._fire(minute, [None, *arrived])

    def fire_key(self, minute: int, key: Hashable) -> int:
        """The candle closing at ``minute`` of ``key`` arrived: wake (or tick) its loops, at once
        when the boundary has passed, else at the boundary. Returns how many were woken now."""
        if minute in self._timers:
            self._arrived.setdefault(minute, set()).add(key)
            return 0
        return self._fire(minute, [key])

    def fire(self, minute: int) -> int:
        """Tick or wake every loop waiting for ``minute`` (the timers call this); returns how many."""
        return self._fire(minute, None)

    def _fire(self, minute: int, keys: list[Hashable | None] | None) -> int:  # noqa: C901 - the per-minute hot path, kept in one frame
        """Tick or wake the loops of ``keys`` (None: all) waiting for ``minute``; returns how many."""
        started = time.perf_counter()
        groups = self._waiting.get(minute)
        if groups is None:
            taken: list[list[_Waiter]] = []
        elif keys is None:
            taken = list(groups.values())
            groups.clear()
        else:
            taken = [groups.pop(k) for k in keys if k in groups]
        if not groups:
            self._waiting.pop(minute, None)
            self._arrived.pop(minute, None)
            for timers in (self._timers, self._late):
                timer = timers.pop(minute, None)
                if timer is not None:
                    timer.cancel()
        self.pauses.pause()  # before anything allocates: a collection due now waits too
        for earlier in [s for m, s in self._sweeps.items() if m < minute and s.left <= 0 and m not in self._waiting]:
            self._complete(earlier)  # all ticked, its last group gone: never left open behind a newer one
        due = [w for group in taken for w in group if not w[0].done()]
        if not due:
            sweep = self._sweeps.get(minute)
            if sweep is not None and sweep.left <= 0 and minute not in self._waiting:
                self._complete(sweep)  # its last keyed group had no loop left to wake
            elif not self._sweeps:
                self.pauses.resume()
            return 0
        sweep = self._sweeps.get(minute)
        if sweep is None:
            sweep = self._sweeps[minute] = Sweep(minute, len(due), started, len(due))
        else:  # another keyed group of a boundary whose sweep runs
            sweep.pairs += len(due)
            sweep.left += len(due)
        in_place: list[_Waiter] = []
        keep, next_wait = in_place.append, self.next_wait
        can_express = next_wait is not None
        now = self.now() if self.now is not None else minute  # one reading: the pairs ticked in place share it
        for waiter in due:
            express = waiter[1]
            if can_express and express is not None:
                try:
                    ticked = express(minute, now)
                except Exception:  # noqa: BLE001 - never leave the other loops asleep: this one ticks as usual
                    ticked = False
                if ticked:
                    keep(waiter)
                    continue
            waiter[0].set_result(minute)
        if in_place and next_wait is not None:  # (in_place holds loops only when it is set)
            following, seconds = next_wait()
            self._file(following, seconds, in_place[0])  # sets the timers if first
            unkeyed = self._waiting[following].get(None)
            for waiter in in_place[1:]:
                if waiter[2] is None and unkeyed is not None:
                    unkeyed.append(waiter)  # the common case, thousands a minute: no lookups
                else:
                    self._file(following, seconds, waiter)
                    unkeyed = self._waiting[following].get(None)
            sweep.left -= len(in_place) - 1
            self.ticked(minute)  # the last of them: completes the sweep when none was woken
        return len(due)

    def ticked(self, minute: int) -> None:
        """One loop woken at ``minute`` finished its tick (or gave up on it)."""
        sweep = self._sweeps.get(minute)
        if sweep is None:
            return
        sweep.left -= 1
        if sweep.left <= 0 and minute not in self._waiting:  # keyed groups still to come: the sweep runs on
            self._complete(sweep)

    def _complete(self, sweep: Sweep) -> None:
        del self._sweeps[sweep.minute]
        sweep.seconds = time.perf_counter() - sweep.started
        self.last = sweep
        if not self._sweeps:
            self.pauses.resume()
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

    def waiting(self, minute: int) -> list[asyncio.Future[int | bool]]:
        """The loops still waiting for the boundary ``minute``."""
        return [w[0] for group in self._waiting.get(minute, {}).values() for w in group if not w[0].done()]
