"""The one "pause during a sweep" mechanism: what keeps off the CPU while the pairs of a minute tick.

A *sweep* is the work one minute boundary starts: every pair's tick (``live/metronome.py``). It
takes a fraction of a second and the rest of the minute is idle, so work that is not urgent
waits for its end: the cyclic garbage collector (``live/collector.py``), the event bus's
delivery to listeners (``events.EventBus``) and the background snapshot writer
(``store/writer.py``). Each is a :class:`SweepPause`; the metronome pauses them all through one
:class:`SweepPauses` registry when a sweep begins and resumes them when the last running sweep
ends.

One limit for all: a sweep that outlasts :data:`PAUSE_LIMIT_SECONDS` (a hung exchange, a slow
strategy) resumes every member anyway, so garbage, events and snapshots never wait long. The
registry keeps that limit with one timer on the event loop; the members only know how to pause
and resume. Nothing a member holds is needed for safety meanwhile: the journal's commit log has
made every transition durable before the writer is held, and ``flush``/``close`` never wait for
a pause.

This module imports nothing of livetrader: store/ and events/ sit below live/ and implement it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from typing import Final, Protocol

__all__ = ["PAUSE_LIMIT_SECONDS", "SweepPause", "SweepPauses"]

PAUSE_LIMIT_SECONDS: Final = 10.0
"""Longest anything stays paused for one sweep (real seconds)."""


class SweepPause(Protocol):
    """Something that keeps off the CPU while a sweep runs; both calls are idempotent."""

    def pause(self) -> None:
        """A sweep began: hold back (called on the event loop)."""

    def resume(self) -> None:
        """No sweep runs any more, or the limit passed: carry on with what was held."""


class SweepPauses:
    """The registry the metronome pauses and resumes, with the one limit; see the module docstring."""

    __slots__ = ("limit", "_members", "_timer", "paused")

    def __init__(self, members: Iterable[SweepPause] = (), *, limit: float = PAUSE_LIMIT_SECONDS) -> None:
        self.limit = limit
        self._members: list[SweepPause] = list(members)
        self._timer: asyncio.TimerHandle | None = None
        #: True from :meth:`pause` until :meth:`resume` (or the limit).
        self.paused = False

    def add(self, member: SweepPause) -> None:
        """Pause ``member`` from the next sweep on."""
        self._members.append(member)

    def remove(self, member: SweepPause) -> None:
        """Stop pausing ``member`` (resume it first if it may be paused)."""
        self._members.remove(member)

    def pause(self) -> None:
        """Pause every member (a sweep began) and start the limit; no-op while already paused.

        A boundary that fires while an earlier sweep still runs does not extend the limit:
        it counts from the first pause.
        """
        if self.paused:
            return
        self.paused = True
        for member in self._members:
            member.pause()
        self._timer = asyncio.get_running_loop().call_later(self.limit, self.resume)

    def resume(self) -> None:
        """Resume every member (the last sweep ended, the limit passed, or the engine closes)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.paused = False
        for member in self._members:
            member.resume()

    def __iter__(self) -> Iterator[SweepPause]:
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, member: object) -> bool:
        return member in self._members
