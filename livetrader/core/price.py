"""Candles, their validation, the VWAP price every decision uses (docs/behaviour.md §3), one at a
time (``vwap``) or for a run of minutes (``vwaps``), and a minute's market data (``Market``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

MINUTE_MS = 60_000
_INF = float("inf")
#: The closed 1-minute candles a price is the VWAP of.
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
    """Volume-weighted average of the typical price; the mean close when no volume traded.

    The sums run left to right from 0.0, one candle at a time: ``vwaps`` does the same
    arithmetic in the same order, so both give the same floats.
    """
    if len(candles) == VWAP_CANDLES:
        # The price of every tick, written out: the loop's very sums, in its order, without the loop.
        a, b, c, d, e = candles
        volume = 0.0 + a[5] + b[5] + c[5] + d[5] + e[5]
        if volume > 0:
            return (0.0 + (a[2] + a[3] + a[4]) / 3.0 * a[5] + (b[2] + b[3] + b[4]) / 3.0 * b[5]
                    + (c[2] + c[3] + c[4]) / 3.0 * c[5] + (d[2] + d[3] + d[4]) / 3.0 * d[5]
                    + (e[2] + e[3] + e[4]) / 3.0 * e[5]) / volume
        return _mean_close(candles)
    total_volume = 0.0
    weighted = 0.0
    for _, _, high, low, close, volume in candles:
        total_volume += volume
        weighted += (high + low + close) / 3.0 * volume
    if total_volume > 0:
        return weighted / total_volume
    if not candles:
        raise CandleError("no candles to price from")
    return _mean_close(candles)


def _mean_close(candles: Sequence[Candle]) -> float:
    return sum(c.close for c in candles) / len(candles)


def vwaps(candles: Sequence[Candle]) -> list[float]:
    """The VWAP of every run of ``VWAP_CANDLES`` consecutive candles: element ``j`` is
    ``vwap(candles[j:j + 5])``, the same float, for ``j`` up to ``len(candles) - 5``.

    For pricing many consecutive minutes at once (a backtest's scan): each candle's
    ``typical * volume`` is computed once, and each window is summed left to right from 0.0
    as ``vwap`` sums it, so a minute costs a few additions and one division.
    """
    tv = [(high + low + last) / 3.0 * volume for _, _, high, low, last, volume in candles]
    vol = [c[5] for c in candles]
    # Five shifted views: element j of the k-th is candle j + k; zip stops with the shortest,
    # at the last complete window.
    out = [
        (0.0 + a + b + c + d + e) / y if (y := 0.0 + p + q + r + s + t) > 0 else None
        for a, b, c, d, e, p, q, r, s, t in zip(
            tv, tv[1:], tv[2:], tv[3:], tv[4:], vol, vol[1:], vol[2:], vol[3:], vol[4:], strict=False
        )
    ]
    if None in out:  # windows without volume: the mean close, as vwap
        out = [_mean_close(candles[j:j + VWAP_CANDLES]) if x is None else x for j, x in enumerate(out)]
    return out  # type: ignore[return-value]


class Market(NamedTuple):
    """What the closed candles say at one minute, all a decision needs (docs/behaviour.md §2-§3).

    ``price`` is the VWAP of the five candles before the minute; ``low`` and ``high`` are
    those of the candle that closed at the minute (the one opening a minute before): a
    scheduled signal, a resting limit order, reacts to them.
    """

    price: float
    low: float
    high: float


def market_of(candles: Sequence[Candle]) -> Market:
    """The ``Market`` of the minute the five ``candles`` (oldest first) are the last before."""
    last = candles[-1]
    # tuple.__new__: a named tuple's own __new__ is a Python function, and a backtest builds one per ask.
    return _new_tuple(Market, (vwap(candles), last[3], last[2]))


_new_tuple = tuple.__new__


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
