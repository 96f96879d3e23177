"""my-strategy: follow fresh upward momentum (an SMA crossover on 1-minute candles).

Copy this file, change ``name`` and ``get_signal``, and run it with
``livetrader backtest BTC/USDT --strategy <your-name>``.
"""

from livetrader import Signal, Strategy

LOOKBACK = 5  # one 5m interval: the strategy is asked once per interval, so look back that far


def sma(values: list[float], length: int) -> float:
    """The mean of the last ``length`` values."""
    return sum(values[-length:]) / length


class MyStrategy(Strategy):
    """Go long when the fast average has just crossed above the slow one."""

    name = "my-strategy"  # what --strategy selects
    interval = "5m"  # asked at most once per 5 minutes while the pair holds no signal
    risk = None  # no risk profile: no limit on concurrent positions
    # Tunable parameters: `livetrader walk --strategy my-strategy --param fast=5:20:5 --param slow=20,30,60`
    fast: int = 10  # minutes in the fast moving average
    slow: int = 30  # minutes in the slow moving average

    def __init__(self):
        if not 0 < self.fast < self.slow:
            raise ValueError(f"fast ({self.fast}) must be above 0 and below slow ({self.slow})")

    async def get_signal(self, ctx):
        fast, slow = self.fast, self.slow
        candles = await ctx.candles("1m", limit=slow + LOOKBACK)
        if len(candles) < slow + LOOKBACK:
            return None  # not enough history yet
        closes = [c.close for c in candles]
        before = closes[:-LOOKBACK]
        crossed_up = sma(closes, fast) > sma(closes, slow) and sma(before, fast) <= sma(before, slow)
        if not crossed_up:
            return None
        # Market entry (no price_open): opens at the current price. TP +1.5 %, SL -1 %:
        # both at least 0.5 % away from the entry, as docs/behaviour.md §5 requires.
        return Signal(
            position="long",
            take_profit=ctx.price * 1.015,
            stop_loss=ctx.price * 0.99,
            minutes=240,  # close after 4 hours whatever happens
            note=f"SMA{fast} crossed above SMA{slow}",
        )
