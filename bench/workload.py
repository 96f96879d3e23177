"""The reference backtest workload (issue 8), defined exactly so other frameworks can run it too.

- symbol BTCUSDT, 1-minute frames from 2024-01-01T00:00:00Z for ``days`` days;
- candles from a price function of the minute ``m = floor(t_ms / 60000)``::

      noise(t): x = (m * 2654435761) mod 2^32; x ^= x >> 15; x = (x * 2246822519) mod 2^32;
                x ^= x >> 13; return (x mod 10000) / 10000 - 0.5
      price(t) = 50000 * (1 + 0.03 * sin(t_ms / (60000 * 317)) + 0.002 * noise(t))

  candle at ``ts``: ``open = price(ts)``, ``close = price(ts + step - 60000)``,
  ``high = max(open, close) * 1.0005``, ``low = min(open, close) * 0.9995``,
  ``volume = 10 + (noise(ts) + 0.5) * 5``;
- strategy: interval 5m; whenever asked, a market signal alternating short (first call),
  long, short, ... with take-profit and stop-loss 1 % from the current price and a
  240-minute lifetime (mode ``trade``), or always None (mode ``idle``).

With 1-minute candles ``step`` is 60,000 ms, so ``close == open``: that is the definition,
kept literally rather than "improved", so the numbers stay comparable.
"""

from __future__ import annotations

import math

from livetrader.core.price import MINUTE_MS, VWAP_CANDLES, Candle
from livetrader.core.signal import Signal

SYMBOL = "BTCUSDT"
START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
DEFAULT_DAYS = 365
LIFETIME_MINUTES = 240
MODES = ("trade", "idle")


def noise(t_ms: int) -> float:
    """Deterministic noise in [-0.5, 0.5) of the minute containing ``t_ms``."""
    x = ((t_ms // MINUTE_MS) * 2654435761) % 2**32
    x ^= x >> 15
    x = (x * 2246822519) % 2**32
    x ^= x >> 13
    return (x % 10000) / 10000 - 0.5


def price(t_ms: int) -> float:
    """The reference price at ``t_ms``."""
    return 50000 * (1 + 0.03 * math.sin(t_ms / (60000 * 317)) + 0.002 * noise(t_ms))


def candle(ts: int, step: int = MINUTE_MS) -> Candle:
    """The reference candle opening at ``ts`` lasting ``step`` ms."""
    o = price(ts)
    c = price(ts + step - 60000)
    return Candle(ts, o, max(o, c) * 1.0005, min(o, c) * 0.9995, c, 10 + (noise(ts) + 0.5) * 5)


def candles(days: int = DEFAULT_DAYS, start: int = START_MS) -> list[Candle]:
    """The 1-minute candles a backtest of ``days`` days from ``start`` needs.

    They begin ``VWAP_CANDLES`` minutes before ``start``: the first frame is priced by the
    five candles before it.
    """
    first = start - VWAP_CANDLES * MINUTE_MS
    end = start + days * 1440 * MINUTE_MS
    return [candle(ts) for ts in range(first, end, MINUTE_MS)]


def frame_range(days: int = DEFAULT_DAYS, start: int = START_MS) -> tuple[int, int]:
    """``[start, end)`` of the frames for ``days`` days."""
    return start, start + days * 1440 * MINUTE_MS


class ReferenceStrategy:
    """The reference strategy: alternating market signals (``trade``) or never a signal (``idle``).

    A plain class rather than a ``livetrader.Strategy`` subclass so that any framework's
    port of it reads the same; ``run_backtest`` only needs ``name``, ``interval`` and
    ``get_signal``.
    """

    name = "reference"
    interval = "5m"

    def __init__(self, mode: str = "trade") -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self.calls = 0

    async def get_signal(self, ctx):  # type: ignore[no-untyped-def]
        """Short on the first call, long on the second, and so on; TP/SL 1 % from the price."""
        self.calls += 1
        if self.mode == "idle":
            return None
        p = ctx.price
        if self.calls % 2:
            return Signal("short", take_profit=p * 0.99, stop_loss=p * 1.01, minutes=LIFETIME_MINUTES)
        return Signal("long", take_profit=p * 1.01, stop_loss=p * 0.99, minutes=LIFETIME_MINUTES)
