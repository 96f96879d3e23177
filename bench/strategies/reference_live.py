"""The reference strategy of the backtest workload, as a live strategy (used by the live benchmarks).

Interval 5m; each time it is asked, a market signal alternating short (first), long, short,
... with take-profit and stop-loss 1 % from the current price and a 240-minute lifetime.
"""

from livetrader import Signal, Strategy


class BenchReference(Strategy):
    """Alternating market signals, TP/SL 1 % away, 240 minutes to live."""

    name = "bench-reference"
    interval = "5m"

    def __init__(self):
        self.calls = 0

    async def get_signal(self, ctx):
        self.calls += 1
        p = ctx.price
        if self.calls % 2:
            return Signal("short", take_profit=p * 0.99, stop_loss=p * 1.01, minutes=240)
        return Signal("long", take_profit=p * 1.01, stop_loss=p * 0.99, minutes=240)


class BenchHold(Strategy):
    """A market long with exits far away and the longest lifetime: it opens and then holds."""

    name = "bench-hold"
    interval = "1m"

    async def get_signal(self, ctx):
        return Signal("long", take_profit=ctx.price * 1.5, stop_loss=ctx.price * 0.85, minutes=1440)


class BenchHoldShort(Strategy):
    """A market short with exits far away and the longest lifetime."""

    name = "bench-hold-short"
    interval = "1m"

    async def get_signal(self, ctx):
        return Signal("short", take_profit=ctx.price * 0.85, stop_loss=ctx.price * 1.15, minutes=1440)


class BenchHoldNear(Strategy):
    """A market long with exits 5 % away and the longest lifetime."""

    name = "bench-hold-near"
    interval = "1m"

    async def get_signal(self, ctx):
        return Signal("long", take_profit=ctx.price * 1.05, stop_loss=ctx.price * 0.95, minutes=1440)
