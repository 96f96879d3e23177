"""Candles, their validation, and the VWAP price every live decision uses (docs/behaviour.md §3)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

MINUTE_MS = 60_000
_INF = float("inf")
VWAP_CANDLES = 5


class Candle(NamedTuple):
    """One closed OHLCV candle; ``timestamp`` is its opening time in integer ms UTC."""

    timestamp: int
    open: float
    high: float
    low: float
    close: float
    volume: float


class CandleError(ValueError):
    """A batch of candles is unusable; the message says which candle and why."""


def vwap(candles: Sequence[Candle]) -> float:
    """Volume-weighted average of the typical price; the mean close when no volume traded."""
    total_volume = 0.0
    weighted = 0.0
    for c in candles:
        total_volume += c.volume
        weighted += (c.high + c.low + c.close) / 3.0 * c.volume
    if total_volume > 0:
        return weighted / total_volume
    if not candles:
        raise CandleError("no candles to price from")
    return sum(c.close for c in candles) / len(candles)


def candle_problem(c: Candle) -> str | None:
    """Why a single candle cannot be used, or None when it is sound."""
    try:
        # The common case in one chained comparison (NaN fails every comparison, so it falls
        # through to the detailed checks below, which name the problem).
        if 0 < c.low <= c.open <= c.high < _INF and c.low <= c.close <= c.high and 0 <= c.volume < _INF:
            return None
    except TypeError:
        pass
    values = (c.open, c.high, c.low, c.close)
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (*values, c.volume)):
        return "a value is not a finite number"
    if min(values) <= 0:
        return "a price is zero or negative"
    if c.volume < 0:
        return "volume is negative"
    if c.high < c.low:
        return f"high {c.high} is below low {c.low}"
    if not (c.low <= c.open <= c.high and c.low <= c.close <= c.high):
        return "open or close lies outside the high-low range"
    return None


def validate_candles(
    candles: Sequence[Candle], start_ms: int | None = None, end_ms: int | None = None, step_ms: int = MINUTE_MS
) -> None:
    """Raise CandleError unless the batch is sound, ordered and gap-free.

    With ``start_ms``/``end_ms`` the batch must cover exactly the candles opening in
    ``[start_ms, end_ms)``: a missing or extra candle is an error, never a silent price.
    """
    previous: int | None = None
    for c in candles:
        problem = candle_problem(c)
        if problem:
            raise CandleError(f"candle at {c.timestamp}: {problem}")
        if c.timestamp % step_ms:
            raise CandleError(f"candle at {c.timestamp}: not aligned to {step_ms // 1000} s")
        if previous is not None:
            if c.timestamp == previous:
                raise CandleError(f"candle at {c.timestamp}: duplicate timestamp")
            if c.timestamp < previous:
                raise CandleError(f"candle at {c.timestamp}: out of order (after {previous})")
            if c.timestamp != previous + step_ms:
                missing = (c.timestamp - previous) // step_ms - 1
                raise CandleError(f"{missing} candle(s) missing after {previous}")
        previous = c.timestamp
    spike = spike_problem(candles)
    if spike:
        raise CandleError(spike)
    if start_ms is not None and end_ms is not None:
        expected = (end_ms - start_ms) // step_ms
        if len(candles) != expected or (candles and candles[0].timestamp != start_ms):
            raise CandleError(
                f"expected {expected} candle(s) opening in [{start_ms}, {end_ms}), got {len(candles)}"
            )


#: A candle this many times above (or below) the batch's median close is bad data, not a market
#: move: one 1000x print must never open or close a position.
SPIKE_FACTOR = 10.0


def spike_problem(candles: Sequence[Candle]) -> str | None:
    """Why the batch holds an implausible price spike, or None."""
    if len(candles) < 3:
        return None
    closes = sorted([c.close for c in candles])
    median = closes[len(closes) // 2]
    above, below = median * SPIKE_FACTOR, median / SPIKE_FACTOR
    for c in candles:
        if c.high > above or c.low < below:
            return f"candle at {c.timestamp}: price spike ({c.low}..{c.high} against a median close of {median})"
    return None


def price_window(now_ms: int) -> tuple[int, int]:
    """The [start, end) opening times of the closed candles that price a tick at ``now_ms``."""
    end = now_ms - now_ms % MINUTE_MS
    return end - VWAP_CANDLES * MINUTE_MS, end
