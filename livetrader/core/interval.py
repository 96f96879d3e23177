"""Interval names, their lengths, the throttle bucket (docs/behaviour.md §4), and candle resampling."""

from __future__ import annotations

from collections.abc import Sequence

from livetrader.core.price import MINUTE_MS, Candle

#: Intervals a strategy may declare as its signal throttle.
SIGNAL_INTERVALS: dict[str, int] = {
    "1m": MINUTE_MS,
    "3m": 3 * MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": 60 * MINUTE_MS,
}

#: Intervals ``ctx.candles`` can build from 1-minute candles.
CANDLE_INTERVALS: dict[str, int] = {
    **SIGNAL_INTERVALS,
    "2h": 120 * MINUTE_MS,
    "4h": 240 * MINUTE_MS,
    "1d": 1440 * MINUTE_MS,
}


def bucket(now_ms: int, interval_ms: int) -> int:
    """The wall-aligned throttle bucket that ``now_ms`` falls in."""
    return now_ms - now_ms % interval_ms


def resample(candles: Sequence[Candle], interval_ms: int) -> list[Candle]:
    """Aggregate consecutive 1-minute candles into complete ``interval_ms`` candles.

    Only buckets whose every minute is present are returned, so a bucket still forming
    (or cut by the window start) never appears: no look-ahead, no partial candle.
    """
    if interval_ms == MINUTE_MS:
        return list(candles)
    per = interval_ms // MINUTE_MS
    out: list[Candle] = []
    i, n = 0, len(candles)
    while i < n:
        start = candles[i].timestamp - candles[i].timestamp % interval_ms
        j = i
        while j < n and candles[j].timestamp < start + interval_ms:
            j += 1
        if j - i == per and candles[i].timestamp == start:
            chunk = candles[i:j]
            out.append(
                Candle(
                    start,
                    chunk[0].open,
                    max(c.high for c in chunk),
                    min(c.low for c in chunk),
                    chunk[-1].close,
                    sum(c.volume for c in chunk),
                )
            )
        i = j
    return out
