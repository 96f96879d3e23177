"""Clocks for tests that drive the engine by hand."""

from __future__ import annotations

from livetrader.live.clock import Clock


class ManualClock(Clock):
    """A simulated clock that moves only when the test sets ``now``; it never wakes a loop by
    itself (the test fires each minute boundary with ``Metronome.fire``)."""

    speed = 1.0

    def __init__(self, now_ms: int) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now

    def real_seconds(self, simulated_ms: float) -> float:
        """Never by itself: only a fired boundary ends a wait."""
        return float("inf") if simulated_ms > 0 else 0.0
