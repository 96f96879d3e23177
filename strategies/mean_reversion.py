"""mean-reversion: fade stretched moves, long below the average and short above it.

Shows shorts, a risk profile (``conservative`` in config/livetrader.toml: at most 3
positions at once, 1 per symbol) and a callback keeping per-symbol state.
"""

from statistics import fmean, pstdev

from livetrader import Signal, Strategy

WINDOW = 60  # minutes of closes the average and deviation are measured over
STRETCH = 2.0  # how many standard deviations away counts as stretched
PAUSE_MS = 60 * 60_000  # sit out an hour after a stop-loss


class MeanReversion(Strategy):
    """Bet on a return toward the one-hour average after a move of two deviations."""

    name = "mean-reversion"
    interval = "15m"
    risk = "conservative"

    def __init__(self):
        # One instance per symbol, so this is per-symbol state.
        self.paused_until = 0

    def on_close(self, result):
        # Callbacks get the TickResult; a stop-loss suggests a trend, so stand aside a while.
        if result.close_reason == "stop_loss":
            self.paused_until = result.at + PAUSE_MS

    async def get_signal(self, ctx):
        if ctx.now_ms < self.paused_until:
            return None
        candles = await ctx.candles("1m", limit=WINDOW)
        if len(candles) < WINDOW:
            return None
        closes = [c.close for c in candles]
        deviation = pstdev(closes)
        if deviation == 0:
            return None  # a flat market gives no measure of "stretched"
        z = (ctx.price - fmean(closes)) / deviation
        if z <= -STRETCH:  # far below the average: expect a bounce
            return Signal(
                position="long",
                take_profit=ctx.price * 1.008,
                stop_loss=ctx.price * 0.99,
                minutes=120,
                note=f"z={z:.1f}",
            )
        if z >= STRETCH:  # far above the average: expect a pullback
            return Signal(
                position="short",
                take_profit=ctx.price * 0.992,
                stop_loss=ctx.price * 1.01,
                minutes=120,
                note=f"z={z:.1f}",
            )
        return None
