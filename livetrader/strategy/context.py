"""What a strategy sees when it is asked for a signal."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from livetrader.core.interval import CANDLE_INTERVALS, resample
from livetrader.core.price import MINUTE_MS, Candle

#: Fetches the closed 1-minute candles opening in [start_ms, end_ms).
CandleLoader = Callable[[int, int], Awaitable[list[Candle]]]
#: The same, for candles already in memory (a backtest's): answered at once, no coroutine.
CandleSlicer = Callable[[int, int], list[Candle]]


class Context:
    """The strategy's view of one tick: symbol, time, VWAP price and closed candles only.

    ``candles`` never returns a candle that opened at or after the minute containing
    ``now``: a strategy cannot look ahead, in live and backtest alike.
    """

    __slots__ = ("symbol", "strategy", "exchange", "now_ms", "_price", "_load", "_slice", "_price_at")

    def __init__(
        self, symbol: str, strategy: str, exchange: str, now_ms: int, price: float | None, load: CandleLoader,
        in_memory: CandleSlicer | None = None, price_at: Callable[[int], float] | None = None,
    ) -> None:
        """``in_memory``, when given, answers ``candles`` instead of ``load`` (same arguments, same
        result): the backtest's, whose candles are all in a list (an await per read was a third of
        an ask's cost). ``price`` None: ``price_at(now_ms)`` gives it when first read (a backtest's
        strategy that answers without reading it costs no VWAP)."""
        self.symbol = symbol
        self.strategy = strategy
        self.exchange = exchange
        self.now_ms = now_ms
        self._price = price
        self._load = load
        self._slice = in_memory
        self._price_at = price_at

    @property
    def price(self) -> float:
        """The VWAP of the five 1-minute candles before now (docs/behaviour.md §3)."""
        price = self._price
        if price is None:
            assert self._price_at is not None, "a Context needs a price or a price_at"
            price = self._price = self._price_at(self.now_ms)
        return price

    @price.setter
    def price(self, value: float) -> None:
        self._price = value  # as when it was a plain attribute: a strategy may have set it

    @property
    def now(self) -> datetime:
        """The tick time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.now_ms / 1000, tz=UTC)

    async def candles(self, interval: str = "1m", limit: int = 30) -> list[Candle]:
        """The last ``limit`` closed candles of ``interval`` before now, oldest first."""
        if interval not in CANDLE_INTERVALS:
            raise ValueError(f"unknown candle interval {interval!r}; use one of {', '.join(CANDLE_INTERVALS)}")
        if limit <= 0:
            return []
        step = CANDLE_INTERVALS[interval]
        end = self.now_ms - self.now_ms % MINUTE_MS
        if step == MINUTE_MS:
            if self._slice is not None:
                return self._slice(end - limit * MINUTE_MS, end)
            return await self._load(end - limit * MINUTE_MS, end)
        # Whole buckets only: stop at the last bucket boundary at or before the current minute.
        bucket_end = end - end % step
        if self._slice is not None:
            raw = self._slice(bucket_end - limit * step, bucket_end)
        else:
            raw = await self._load(bucket_end - limit * step, bucket_end)
        return resample(raw, step)[-limit:]
