"""dip-buyer: in an uptrend, wait for a small dip with a scheduled (limit) entry.

Shows scheduled signals: ``price_open`` below the current price makes the signal wait
until the price comes down to it (or until it times out after 120 minutes, or the price
falls through the stop-loss first).
"""

from livetrader import Signal, Strategy

TREND = 60  # minutes in the trend average
DIP = 0.004  # enter 0.4 % below the current price


class DipBuyer(Strategy):
    """Buy 0.4 % below the price while it trades above its one-hour average."""

    name = "dip-buyer"
    interval = "15m"

    async def get_signal(self, ctx):
        candles = await ctx.candles("1m", limit=TREND)
        if len(candles) < TREND:
            return None
        average = sum(c.close for c in candles) / len(candles)
        if ctx.price <= average:
            return None  # not an uptrend: a dip here is more likely the start of a fall
        entry = ctx.price * (1 - DIP)
        # TP and SL are set around the entry, not the current price: docs/behaviour.md §5 measures
        # their distance from price_open, and price_open must lie strictly between them.
        return Signal(
            position="long",
            price_open=entry,
            take_profit=entry * 1.01,  # +1 % from the entry
            stop_loss=entry * 0.992,  # -0.8 % from the entry
            minutes=180,  # lifetime counted from when the entry fills
            note="dip in an uptrend",
        )
