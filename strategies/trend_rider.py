"""trend-rider: ride an upward trend and leave when it turns (an exit signal from ``manage``).

Shows ``manage(self, ctx, position)``: asked once a minute while the position is open (and the
take-profit, stop-loss and expiry did not close it), it may answer ``Exit(note)`` to close at
the minute's price (``close_reason`` ``signal``), ``Levels(...)`` to move the take-profit or
stop-loss, or None to carry on. Here: out as soon as the fast average falls back below the slow
one, and the stop-loss raised to break-even once the position is 1 % up.
"""

from livetrader import Exit, Levels, Signal, Strategy

FAST = 10  # minutes in the fast moving average
SLOW = 30  # minutes in the slow moving average


def sma(values: list[float], length: int) -> float:
    """The mean of the last ``length`` values."""
    return sum(values[-length:]) / length


class TrendRider(Strategy):
    """Long while the fast average is above the slow one; the strategy decides when to leave."""

    name = "trend-rider"
    interval = "15m"

    async def get_signal(self, ctx):
        closes = [c.close for c in await ctx.candles("1m", limit=SLOW)]
        if len(closes) < SLOW or sma(closes, FAST) <= sma(closes, SLOW) * 1.0005:
            return None
        # A wide take-profit: the exit signal usually comes first. Four hours at most.
        return Signal(position="long", take_profit=ctx.price * 1.04, stop_loss=ctx.price * 0.985, minutes=240,
                      note="fast above slow")

    async def manage(self, ctx, position):
        closes = [c.close for c in await ctx.candles("1m", limit=SLOW)]
        if len(closes) == SLOW and sma(closes, FAST) < sma(closes, SLOW):
            return Exit(note="trend turned: fast below slow")
        breakeven = position.price_open * 1.002  # costs covered
        if position.price >= position.price_open * 1.01 and position.stop_loss < breakeven:
            return Levels(stop_loss=breakeven)  # moves only up: a stop-loss never loosens by accident
        return None
