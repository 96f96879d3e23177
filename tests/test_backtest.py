"""docs/behaviour.md §11: backtest time is live time; edge rules worked in the SPEC, and the fast path."""

import asyncio
import random

import pytest

from livetrader.backtest.replay import StrategyFailure, run_backtest
from livetrader.core.machine import DEFAULT_RULES, accept, check_open, check_scheduled, close
from livetrader.core.price import Candle, vwap
from livetrader.core.signal import Signal
from livetrader.errors import NoCandlesError
from livetrader.strategy.context import Context
from livetrader.strategy.risk import RiskProfile, max_positions

M = 60_000
H = 60 * M
DAY0 = 1_704_067_200_000  # 2024-01-01T00:00Z
T10 = DAY0 + 10 * H  # 10:00


def flat(start, duration_ms, price=100.0, overrides=None):
    """Flat candles (o=h=l=c=price, volume 1) over ``duration_ms``, some replaced by ``overrides[ts]``."""
    overrides = overrides or {}
    out = []
    for i in range(duration_ms // M):
        ts = start + i * M
        out.append(overrides.get(ts, Candle(ts, price, price, price, price, 1.0)))
    return out


def spike(ts, price, low=None, high=None, volume=1000.0):
    lo = min(price, low if low is not None else price)
    hi = max(price, high if high is not None else price)
    return Candle(ts, price, hi, lo, price, volume)


class Scripted:
    """Returns the scripted signal at the given frames, None otherwise; records every call."""

    name = "scripted"

    def __init__(self, script, interval="1m"):
        self.script = script
        self.interval = interval
        self.calls = []
        self.events = []

    async def get_signal(self, ctx):
        self.calls.append(ctx.now_ms)
        return self.script.get(ctx.now_ms)

    def on_open(self, result):
        self.events.append(("open", result.at))

    def on_close(self, result):
        self.events.append(("close", result.at))


def run(strategy, candles, start, end, **kw):
    return asyncio.run(run_backtest(strategy, candles, "BTCUSDT", start, end, **kw))


def test_lifetime_expiry_is_priced_by_the_five_candles_before_it():
    # Candles 10:55..10:59 at 100.2 so that the expiry price is recognisable; TP/SL far away.
    overrides = {T10 + (55 + i) * M: spike(T10 + (55 + i) * M, 100.2, volume=1.0) for i in range(5)}
    candles = flat(T10 - H, 4 * H, overrides=overrides)
    s = Scripted({T10: Signal("long", 110, 95, minutes=60)})
    res = run(s, candles, T10, T10 + 2 * H)
    (trade,) = res.trades
    assert trade.signal.pending_at == T10
    assert trade.at == T10 + H and trade.close_reason == "time_expired"
    assert trade.price_close == pytest.approx(100.2)


def test_position_is_first_checked_on_the_candle_opening_at_its_frame():
    candles = flat(T10 - H, 2 * H, overrides={T10: spike(T10, 120.0)})
    s = Scripted({T10: Signal("long", 102, 99)})
    (trade,) = run(s, candles, T10, T10 + H).trades
    assert trade.close_reason == "take_profit" and trade.at == T10 + M and trade.price_close == 102


def test_scheduled_signal_times_out_at_120_minutes_even_if_the_last_candle_reaches_it():
    # The candle opening at 11:59 dips to the entry, but its decision (12:00) is a timeout.
    dip = T10 + 119 * M
    candles = flat(T10 - H, 5 * H, overrides={dip: spike(dip, 100.0, low=98.9)})
    s = Scripted({T10: Signal("long", 102, 97, price_open=99)})
    res = run(s, candles, T10, T10 + 3 * H)
    (cancelled,) = res.cancelled
    assert (cancelled.reason, cancelled.at) == ("timeout", T10 + 2 * H)
    assert not res.trades


def test_scheduled_signal_activates_on_the_candle_low_and_is_checked_from_the_next_candle():
    dip = T10 + 30 * M
    # The dip candle also spikes above TP (high 105): that must NOT close it, the next candle is first.
    candles = flat(T10 - H, 4 * H, overrides={dip: Candle(dip, 100, 105, 98.9, 100, 1.0)})
    s = Scripted({T10: Signal("long", 101.5, 97, price_open=99, minutes=30)})
    res = run(s, candles, T10, T10 + 3 * H)
    (trade,) = res.trades
    assert trade.signal.pending_at == dip + M
    # flat 100 is below TP 101.5 and above SL 97: it expires 30 minutes after activation
    assert (trade.close_reason, trade.at) == ("time_expired", dip + M + 30 * M)


def test_scheduled_stop_loss_rejection_comes_before_activation():
    dip = T10 + 10 * M
    candles = flat(T10 - H, 3 * H, overrides={dip: spike(dip, 100.0, low=96.0)})
    s = Scripted({T10: Signal("long", 102, 97, price_open=99)})
    res = run(s, candles, T10, T10 + 2 * H)
    assert [(c.reason, c.at) for c in res.cancelled] == [("price_reject", dip + M)]


def test_after_a_close_the_strategy_is_next_asked_one_minute_later():
    closes_at = T10 + 37 * M
    candles = flat(T10 - H, 3 * H, overrides={closes_at - M: spike(closes_at - M, 120.0)})
    s = Scripted({T10: Signal("long", 102, 99)})
    res = run(s, candles, T10, T10 + H)
    assert res.trades[0].at == closes_at
    assert s.calls[:2] == [T10, closes_at + M]


def test_throttle_asks_once_per_bucket_and_signals_only_inside_the_range():
    candles = flat(T10 - H, 3 * H)
    s = Scripted({}, interval="15m")
    run(s, candles, T10 + 7 * M, T10 + H)
    assert s.calls == [T10 + 7 * M, T10 + 15 * M, T10 + 30 * M, T10 + 45 * M]


def test_range_end_closes_open_positions_and_cancels_scheduled_ones():
    end = T10 + H
    overrides = {end - (i + 1) * M: spike(end - (i + 1) * M, 100.3, volume=1.0) for i in range(5)}
    candles = flat(T10 - H, 3 * H, overrides=overrides)
    res = run(Scripted({T10: Signal("long", 110, 95)}), candles, T10, end)
    (trade,) = res.trades
    assert (trade.close_reason, trade.at, res.ended_open) == ("time_expired", end, 1)
    assert trade.price_close == pytest.approx(100.3)
    res = run(Scripted({T10: Signal("long", 110, 95, price_open=99)}), flat(T10 - H, 3 * H), T10, end)
    assert [(c.reason, c.at) for c in res.cancelled] == [("timeout", end)] and res.ended_scheduled == 1


def test_strategy_sees_only_closed_candles():
    seen = []

    class Peek:
        name, interval = "peek", "1m"

        async def get_signal(self, ctx):
            last = (await ctx.candles("1m", limit=3))[-1]
            five = await ctx.candles("5m", limit=2)
            seen.append((ctx.now_ms, last.timestamp, five[-1].timestamp))

    run(Peek(), flat(T10 - H, 2 * H), T10 + 7 * M, T10 + 9 * M)
    assert seen == [(T10 + 7 * M, T10 + 6 * M, T10), (T10 + 8 * M, T10 + 7 * M, T10)]


def test_the_price_a_strategy_reads_is_the_vwap_of_the_five_candles_before_now():
    """A backtest prices a tick when the strategy reads ``ctx.price`` (not before): the same VWAP."""
    candles = random_walk(DAY0, 300, 11)
    by_ts = {c.timestamp: i for i, c in enumerate(candles)}
    seen = []

    class Reads:
        name, interval = "reads", "1m"

        async def get_signal(self, ctx):
            seen.append((ctx.now_ms, ctx.price, ctx.price))

    run(Reads(), candles, DAY0 + 10 * M, DAY0 + 200 * M)
    assert len(seen) == 190
    for now, price, again in seen:
        i = by_ts[now]
        assert price == again == vwap(candles[i - 5:i])


def test_a_context_prices_once_and_only_when_read():
    calls = []

    def price_at(t):
        calls.append(t)
        return 123.5

    async def load(a, b):
        return []

    lazy = Context("BTCUSDT", "s", "sim", T10, None, load, price_at=price_at)
    assert calls == []
    assert lazy.price == lazy.price == 123.5 and calls == [T10]
    assert Context("BTCUSDT", "s", "sim", T10, 99.0, load, price_at=price_at).price == 99.0 and calls == [T10]


def test_same_id_as_the_last_opened_signal_is_ignored():
    candles = flat(T10 - H, 3 * H, overrides={T10: spike(T10, 120.0)})
    again = Signal("long", 102, 99, id="idea-1")
    s = Scripted({T10: again, T10 + 2 * M: again, T10 + 10 * M: Signal("long", 102, 99, id="idea-2")})
    res = run(s, candles, T10, T10 + 20 * M)
    assert [t.signal.id for t in res.trades] == ["idea-1", "idea-2"]


def test_risk_rejection_hands_the_bucket_back():
    profile = RiskProfile("p", [max_positions(1)])
    profile.positions["elsewhere"] = None  # another pair holds the only slot
    s = Scripted({}, interval="15m")
    s.script = {T10: Signal("long", 102, 99), T10 + M: None}
    res = run(s, flat(T10 - H, 2 * H), T10, T10 + 30 * M, risk=profile)
    assert res.risk_rejections == 1
    assert s.calls[:3] == [T10, T10 + M, T10 + 15 * M]


def test_callbacks_receive_open_and_close():
    candles = flat(T10 - H, 2 * H, overrides={T10 + 5 * M: spike(T10 + 5 * M, 120.0)})
    s = Scripted({T10: Signal("long", 102, 99)})
    run(s, candles, T10, T10 + H)
    assert s.events == [("open", T10), ("close", T10 + 6 * M)]


def test_a_raising_strategy_names_the_time_and_the_error():
    class Broken:
        name, interval = "broken", "1m"

        async def get_signal(self, ctx):
            raise RuntimeError("boom")

    expected = r"raised at 2024-01-01T10:00Z: RuntimeError: boom \(at .*test_backtest.py:\d+\)"
    with pytest.raises(StrategyFailure, match=expected):
        run(Broken(), flat(T10 - H, 2 * H), T10, T10 + H)


def test_an_invalid_signal_names_every_problem():
    s = Scripted({T10: Signal("long", 100.1, 99.99, minutes=0)})
    with pytest.raises(StrategyFailure, match="invalid signal.*minutes.*take_profit.*stop_loss"):
        run(s, flat(T10 - H, 2 * H), T10, T10 + H)


def test_a_range_without_enough_candles_is_a_clear_error():
    with pytest.raises(NoCandlesError, match="no candles"):
        run(Scripted({}), flat(T10, 4 * M), T10, T10 + H)


# --- the fast path against a plain per-minute replay of the same core --------------------------

def random_walk(start, minutes, seed):
    rng = random.Random(seed)
    price, out = 100.0, []
    for i in range(minutes):
        o = price
        price *= 1 + rng.gauss(0, 0.002)
        hi, lo = max(o, price) * (1 + rng.random() * 0.001), min(o, price) * (1 - rng.random() * 0.001)
        out.append(Candle(start + i * M, o, hi, lo, price, rng.random() * 10))
    return out


class Alternating:
    name, interval = "alt", "5m"

    def __init__(self):
        self.n = 0

    async def get_signal(self, ctx):
        self.n += 1
        p = ctx.price
        kind = self.n % 3
        if kind == 0:
            return Signal("short", p * 0.99, p * 1.01, minutes=90)
        if kind == 1:
            return Signal("long", p * 1.01, p * 0.99, minutes=240)
        return Signal("long", p * 1.012, p * 0.99, price_open=p * 0.997, minutes=120)


def plain_replay(strategy, candles, start, end):
    """Every stamp from start to end, one live-style tick each: the slow, obvious reference."""
    by_ts = {c.timestamp: c for c in candles}
    base = candles[0].timestamp

    def price_at(t):
        return vwap(candles[(t - base) // M - 5:(t - base) // M])

    row, last_bucket, trades, cancelled = None, None, [], []
    interval = 5 * M
    for t in range(start, end + M, M):
        p = price_at(t)
        if row is not None and row.pending_at is not None and t > row.pending_at:
            tick = check_open(row, t, p)
            if tick.action == "closed":
                trades.append(tick)
                row = None
            continue
        if row is not None and row.pending_at is None and t > row.scheduled_at:
            c = by_ts[t - M]
            tick = check_scheduled(row, t, p, c.low, c.high)
            if tick.action == "cancelled":
                cancelled.append(tick)
                row = None
            elif tick.action == "opened":
                row = tick.signal
            continue
        if row is not None or t >= end:
            continue
        if t - t % interval == last_bucket:
            continue
        last_bucket = t - t % interval
        async def ask(now, price):
            async def load(a, b):
                return [c for c in candles if a <= c.timestamp < b]
            return await strategy.get_signal(Context("BTCUSDT", "alt", "sim", now, price, load))

        sig = asyncio.run(ask(t, p))
        if sig is not None:
            row = accept(sig, "BTCUSDT", "alt", "sim", f"id{t}", t, p).signal
    if row is not None:
        p = price_at(end)
        if row.pending_at is not None:
            trades.append(close(row, end, p, p, "time_expired", DEFAULT_RULES))
        else:
            cancelled.append(None)
    return trades, cancelled


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fast_path_equals_plain_replay(seed):
    start = DAY0 + H
    candles = random_walk(DAY0, 3 * 1440, seed)
    end = DAY0 + 2 * 1440 * M
    fast = run(Alternating(), candles, start, end)
    trades, cancelled = plain_replay(Alternating(), candles, start, end)
    key = lambda t: (t.signal.position, t.signal.pending_at, t.at, t.close_reason, t.price_close, t.pnl_percentage)  # noqa: E731
    assert len(fast.trades) > 20
    assert {t.close_reason for t in fast.trades} >= {"take_profit", "stop_loss"}
    assert [key(t) for t in fast.trades] == [key(t) for t in trades]
    assert len(fast.cancelled) == len(cancelled)
