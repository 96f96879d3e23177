"""When CPython's cyclic garbage collector runs: not while the pairs of a minute tick.

Reference counting frees almost everything the live loop allocates the moment it is
dropped; the cyclic collector only finds reference cycles. It runs whenever allocations
pass a threshold, walking every object its generation tracks: with 10,000 pairs a full
collection takes about 0.1 s, and it landed in the middle of a sweep every few minutes.
A minute's ticks take a fraction of a second and the rest of the minute is idle, so the
collector is paused while a sweep runs and resumed when the last running sweep ends:
whatever it had to do happens right after, in the idle part of the minute. Nothing is
skipped, only moved; a sweep that outlasts ``livetrader.sweep.PAUSE_LIMIT_SECONDS`` (a hung
exchange, a slow strategy) resumes it anyway, so garbage never piles up for long. It is one
member of the sweep's pause registry (``livetrader.sweep``), which keeps that limit.

Start-up is the other burst: restoring thousands of pairs builds about a million objects
that live as long as the process (``collector_paused``, ``freeze_startup_objects``).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

from livetrader.market.files import gc_paused


class SweepCollector:
    """Pauses the cyclic collector for the length of a sweep (a ``livetrader.sweep.SweepPause``)."""

    def __init__(self) -> None:
        #: True while this object holds the collector paused.
        self.paused = False

    def pause(self) -> None:
        """Pause the collector (a sweep began); no-op when it is off already, e.g. by the user."""
        if self.paused or not gc.isenabled():
            return
        gc.disable()
        self.paused = True

    def resume(self) -> None:
        """Resume the collector (the last sweep ended, the limit passed, or the engine closes)."""
        if self.paused:
            self.paused = False
            gc.enable()


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic GC while pairs are restored, and freeze what they built.

    Restoring 10,000 pairs allocates about a million objects that live as long as the
    process; the collector, triggered by those allocations, would walk the growing heap
    again and again (a quarter of the restart time). Nothing collectable piles up meanwhile.
    """
    try:
        with gc_paused():
            yield
    finally:
        freeze_startup_objects()


def freeze_startup_objects() -> None:
    """Keep the cyclic GC from walking, again and again, what start-up built and the process keeps.

    Strategies, pairs, restored state and imported modules live as long as the process;
    with thousands of pairs they are a million objects, and walking them dominated the
    sweep time. Garbage is collected first, so nothing that should die is frozen.
    """
    gc.collect()
    gc.freeze()
