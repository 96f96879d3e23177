"""trailing-long: a long whose stop-loss follows the price up (a built-in trailing stop).

``Signal(trailing_stop=0.006)`` keeps the stop-loss 0.6 % below the best price seen since the
position opened: each minute whose price is higher moves it up (journaled as ``adjusted``), and
it never moves down. In sandbox/live mode the protective stop on the exchange moves with it.
"""

from livetrader import Signal, Strategy


class TrailingLong(Strategy):
    """Buy every half hour after two rising minutes; let a 0.6 % trailing stop take it out."""

    name = "trailing-long"
    interval = "30m"

    async def get_signal(self, ctx):
        candles = await ctx.candles("1m", limit=3)
        if len(candles) < 3 or not candles[0].close < candles[1].close < candles[2].close:
            return None
        return Signal(position="long", take_profit=ctx.price * 1.03, stop_loss=ctx.price * 0.99, minutes=360,
                      trailing_stop=0.006, note="two rising minutes")
