"""The benchmarks run and give sane numbers, and the fast backtest path trades exactly as a plain replay.

``plain_replay`` below is the slow, obvious reference: one live-style tick per minute, straight
from the core (``core.price.vwap``, ``check_open``, ``check_scheduled``, ``accept``), with no bulk
VWAP, no bucket jumps and no scans. The fast path must produce the very same ``TickResult``
objects: times, reasons, prices, PnL, ids, everything.

The tests import nothing from ``bench/``: the reference workload is written here again from its
definition (issue 8, ``bench/workload.py``'s docstring), and the benchmarks run as the command
``python -m bench --quick --json``, whose backtest must trade exactly as this workload does.
"""

import asyncio
import json
import math
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from livetrader.backtest.replay import run_backtest
from livetrader.core.interval import SIGNAL_INTERVALS
from livetrader.core.machine import DEFAULT_RULES, accept, cancel, check_open, check_scheduled, close
from livetrader.core.price import Candle, vwap
from livetrader.core.signal import Signal, make_signal_id
from livetrader.strategy.context import Context
from livetrader.strategy.risk import RiskProfile

M = 60_000
ROOT = Path(__file__).resolve().parent.parent


class Reference:
    """The reference workload of issue 8, from its definition: 1-minute candles from 2024-01-01
    priced by a formula of the minute, and a 5m strategy alternating market short / long
    signals with TP and SL 1 % from the price and a 240-minute lifetime (or never a signal)."""

    SYMBOL = "BTCUSDT"
    START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z

    @staticmethod
    def noise(t_ms):
        x = ((t_ms // M) * 2654435761) % 2**32
        x ^= x >> 15
        x = (x * 2246822519) % 2**32
        x ^= x >> 13
        return (x % 10000) / 10000 - 0.5

    @classmethod
    def price(cls, t_ms):
        return 50000 * (1 + 0.03 * math.sin(t_ms / (60000 * 317)) + 0.002 * cls.noise(t_ms))

    @classmethod
    def candles(cls, days):
        """Every candle a backtest of ``days`` days needs: from 5 minutes before the first frame."""
        out = []
        for ts in range(cls.START_MS - 5 * M, cls.START_MS + days * 1440 * M, M):
            o = c = cls.price(ts)  # with 1-minute candles the close is the open: the definition
            out.append(Candle(ts, o, max(o, c) * 1.0005, min(o, c) * 0.9995, c, 10 + (cls.noise(ts) + 0.5) * 5))
        return out

    @classmethod
    def frame_range(cls, days):
        return cls.START_MS, cls.START_MS + days * 1440 * M


class Alternating:
    name = "reference"
    interval = "5m"

    def __init__(self, mode="trade"):
        self.mode, self.calls = mode, 0

    async def get_signal(self, ctx):
        self.calls += 1
        if self.mode == "idle":
            return None
        p = ctx.price
        if self.calls % 2:
            return Signal("short", take_profit=p * 0.99, stop_loss=p * 1.01, minutes=240)
        return Signal("long", take_profit=p * 1.01, stop_loss=p * 0.99, minutes=240)


def plain_replay(strategy, candles, symbol, start, end, risk=None):  # noqa: C901 - the reference oracle stays one obvious per-minute loop
    """Every minute from ``start`` to ``end``, one tick each, as live mode would run it."""
    base = candles[0].timestamp
    interval = SIGNAL_INTERVALS[strategy.interval]
    gate = risk.check if risk else None

    def price_at(t):
        i = (t - base) // M
        return vwap(candles[i - 5:i])

    async def load(a, b):
        return [c for c in candles if a <= c.timestamp < b]

    def ask(t, price):
        ctx = Context(symbol, strategy.name, "sim", t, price, load)
        out = strategy.get_signal(ctx)
        return asyncio.run(out) if asyncio.iscoroutine(out) else out

    row, last_bucket, last_opened = None, None, None
    trades, cancelled = [], []
    for t in range(start, end + M, M):
        price = price_at(t)
        if row is not None and row.pending_at is not None:  # an open position
            if t > row.pending_at:
                tick = check_open(row, t, price)
                if tick.action == "closed":
                    trades.append(tick)
                    if risk:
                        risk.remove(row.id)
                    row = None
            continue
        if row is not None:  # a scheduled signal, checked on the candle that just closed
            if t > row.scheduled_at:
                c = candles[(t - base) // M - 1]
                tick = check_scheduled(row, t, price, c.low, c.high, gate)
                if tick.action == "cancelled":
                    cancelled.append(tick)
                    row = None
                elif tick.action == "opened":
                    row = tick.signal
                    last_opened = row.id
                    if risk:
                        risk.add(row)
            continue
        if t >= end or t - t % interval == last_bucket:
            continue
        previous, last_bucket = last_bucket, t - t % interval
        signal = ask(t, price)
        if signal is None or (signal.id is not None and signal.id == last_opened):
            continue
        tick = accept(signal, symbol, strategy.name, "sim", signal.id or make_signal_id(symbol, strategy.name, t),
                      t, price, gate)
        if tick.action == "idle":  # a risk rejection hands the bucket back
            last_bucket = previous
            continue
        row = tick.signal
        if tick.action == "opened":
            last_opened = row.id
            if risk:
                risk.add(row)
    if row is not None:
        price = price_at(end)
        if row.pending_at is not None:
            trades.append(close(row, end, price, price, "time_expired", DEFAULT_RULES))
        else:
            cancelled.append(cancel(row, end, price, "timeout"))
    return trades, cancelled


def fast(strategy, candles, symbol, start, end, risk=None):
    return asyncio.run(run_backtest(strategy, candles, symbol, start, end, risk=risk))


def test_fast_path_equals_plain_replay_on_the_reference_workload():
    days = 3
    candles = Reference.candles(days)
    start, end = Reference.frame_range(days)
    result = fast(Alternating("trade"), candles, Reference.SYMBOL, start, end)
    trades, cancelled = plain_replay(Alternating("trade"), candles, Reference.SYMBOL, start, end)
    assert len(result.trades) > 10
    assert {t.close_reason for t in result.trades} >= {"take_profit", "stop_loss", "time_expired"}
    for got, want in zip(result.trades, trades, strict=True):  # trade by trade, every field
        assert (got.at, got.close_reason, got.price, got.price_close, got.pnl_percentage) == (
            want.at, want.close_reason, want.price, want.price_close, want.pnl_percentage)
        assert got == want
    assert result.cancelled == cancelled == []


def test_idle_reference_workload_never_trades_and_asks_once_per_bucket():
    candles = Reference.candles(1)
    start, end = Reference.frame_range(1)
    strategy = Alternating("idle")
    result = fast(strategy, candles, Reference.SYMBOL, start, end)
    assert result.trades == [] and result.frames == 1440
    assert strategy.calls == result.strategy_calls == 1440 // 5


# --- the fast path on harder ground: scheduled signals, windows without volume, risk ----------

def rough_market(seed, minutes, start):
    """A random walk with zero-volume minutes and flat stretches (VWAP falls back to the mean close)."""
    rng = random.Random(seed)
    price, out = 100.0, []
    for i in range(minutes):
        o = price
        price *= 1 + rng.gauss(0, 0.003)
        hi, lo = max(o, price) * (1 + rng.random() * 0.002), min(o, price) * (1 - rng.random() * 0.002)
        volume = 0.0 if rng.random() < 0.3 else rng.random() * 10
        if 400 <= i < 420:
            o = hi = lo = price
            volume = 0.0
        out.append(Candle(start + i * M, o, hi, lo, price, volume))
    return out


class Mixed:
    """Market and scheduled signals, long and short, with lifetimes from 1 minute to a day."""

    name = "mixed"

    def __init__(self, seed, interval):
        self.rng = random.Random(seed)
        self.interval = interval

    def get_signal(self, ctx):
        r, p = self.rng.random(), ctx.price
        minutes = self.rng.choice([1, 2, 5, 30, 90, 240, 1440])
        if r < 0.3:
            return None
        if r < 0.45:
            return Signal("long", p * 1.01, p * 0.99, minutes=minutes)
        if r < 0.6:
            return Signal("short", p * 0.99, p * 1.01, minutes=minutes)
        if r < 0.75:
            return Signal("long", p * 1.012, p * 0.99, price_open=p * 0.997, minutes=minutes)
        if r < 0.9:
            return Signal("short", p * 0.988, p * 1.01, price_open=p * 1.003, minutes=minutes)
        return Signal("long", p * 1.008, p * 0.994, price_open=p * 1.001, minutes=minutes, id="same-idea")


def flaky_profile():
    """Rejects about a third of acceptances and activations, deterministically."""

    def flaky(candidate):
        digest = (candidate.now // M * 7 + len(candidate.signal.id) + (candidate.signal.pending_at or 0)) % 3
        return "flaky" if digest == 0 else None

    return RiskProfile("flaky", [flaky])


@pytest.mark.parametrize("seed", range(8))
def test_fast_path_equals_plain_replay_with_scheduled_signals_no_volume_and_risk(seed):
    t0 = Reference.START_MS
    candles = rough_market(seed, 2000, t0)
    rng = random.Random(seed)
    start = t0 + rng.randrange(5, 200) * M
    end = t0 + rng.randrange(1200, 2000) * M
    interval = rng.choice(["1m", "3m", "5m", "15m"])
    with_risk = seed % 2 == 0
    result = fast(Mixed(seed, interval), candles, "X", start, end, flaky_profile() if with_risk else None)
    trades, cancelled = plain_replay(Mixed(seed, interval), candles, "X", start, end,
                                     flaky_profile() if with_risk else None)
    assert len(result.trades) > 5
    assert result.trades == trades
    assert result.cancelled == cancelled


def hostile_market(seed, minutes, start):
    """Candles no source should deliver: NaN and infinite prices, closes outside the range, negative,
    huge, tiny and integer volumes. The backtest does not validate candles, so whatever the core
    makes of them, the fast path must make the same."""
    rng = random.Random(seed)
    price, out = 100.0, []
    for i in range(minutes):
        o = price
        price *= 1 + rng.gauss(0, 0.003)
        hi, lo, close, volume = max(o, price) * 1.001, min(o, price) * 0.999, price, rng.random() * 10
        pick = rng.randrange(40)
        if pick == 0:
            volume = math.nan
        elif pick == 1:
            hi = math.nan
        elif pick == 2:
            close = hi * 1.01
        elif pick == 3:
            volume = -rng.random()
        elif pick == 4:
            volume = 1e200
        elif pick == 5:
            volume = 1e-200
        elif pick == 6:
            volume = -0.0
        elif pick == 7:
            lo = 0.0
        elif pick == 8:
            hi = math.inf
        elif pick == 9:
            volume = 3
        out.append(Candle(start + i * M, o, hi, lo, close, volume))
    return out


class Careful(Mixed):
    """``Mixed``, but no signal while the price is not a usable number."""

    def get_signal(self, ctx):
        return super().get_signal(ctx) if math.isfinite(ctx.price) and ctx.price > 1e-9 else None


@pytest.mark.parametrize("seed", range(6))
def test_fast_path_equals_plain_replay_on_hostile_candles(seed):
    t0 = Reference.START_MS
    candles = hostile_market(seed, 2000, t0)
    start, end = t0 + 30 * M, t0 + 1990 * M
    result = fast(Careful(seed, "1m"), candles, "X", start, end)
    trades, cancelled = plain_replay(Careful(seed, "1m"), candles, "X", start, end)
    assert len(result.trades) > 5
    # repr, not ==: a NaN price is never equal to itself
    assert [repr(t) for t in result.trades] == [repr(t) for t in trades]
    assert [repr(c) for c in result.cancelled] == [repr(c) for c in cancelled]


class Scripted:
    """The scripted signal at the given frames, None otherwise."""

    name, interval = "scripted", "1m"

    def __init__(self, script):
        self.script = script

    def get_signal(self, ctx):
        return self.script.get(ctx.now_ms)


def flat(ts, price, low=None, volume=1.0, close=None):
    """A candle at ``price`` (o = h = c), its low ``low`` if given, its close ``close`` if given."""
    return Candle(ts, price, price, price if low is None else low, price if close is None else close, volume)


def test_fast_path_equals_plain_replay_when_prices_land_exactly_on_the_levels():
    # Whole-number candles make the VWAP exact, so each comparison is decided at equality: TP and
    # SL of a long and of a short, entry and SL reached by a candle low.
    t0 = Reference.START_MS
    levels = {20: 101.0, 50: 101.0, 160: 99.0, 190: 99.0}
    special = {start + i: price for start, price in levels.items() for i in range(10)}
    lows = {80: 99.5, 140: 98.0}
    candles = [flat(t0 + i * M, special.get(i, 100.0), lows.get(i)) for i in range(240)]
    script = {
        t0 + 10 * M: Signal("long", 101.0, 99.0, minutes=240),
        t0 + 40 * M: Signal("short", 99.0, 101.0, minutes=240),
        t0 + 70 * M: Signal("long", 101.0, 98.0, price_open=99.5, minutes=30),
        t0 + 130 * M: Signal("long", 101.0, 98.0, price_open=99.5, minutes=30),
        t0 + 150 * M: Signal("long", 101.0, 99.0, minutes=240),
        t0 + 180 * M: Signal("short", 99.0, 101.0, minutes=240),
    }
    start, end = t0 + 5 * M, t0 + 230 * M
    result = fast(Scripted(script), candles, "X", start, end)
    trades, cancelled = plain_replay(Scripted(script), candles, "X", start, end)
    assert [(t.close_reason, t.price_close) for t in result.trades] == [
        ("take_profit", 101.0), ("stop_loss", 101.0), ("time_expired", 100.0), ("stop_loss", 99.0),
        ("take_profit", 99.0)]
    assert result.trades[2].signal.pending_at == t0 + 81 * M  # activated on the candle low at 80
    assert [c.reason for c in result.cancelled] == ["price_reject"]
    assert result.trades == trades and result.cancelled == cancelled


@pytest.mark.parametrize("case", ["close above the high", "negative volumes", "overflowing volumes"])
def test_fast_path_prices_frames_whose_candles_look_inside_the_levels_but_are_not(case):
    # Lows and highs stay between SL 99 and TP 101, yet each VWAP reaches TP: a typical price
    # pulled up by a close above the high; weights of both signs; a product overflowing to inf.
    t0 = Reference.START_MS
    if case == "close above the high":
        odd = [Candle(0, 100.5, 100.5, 99.5, 105.0, 1.0)] * 5
    elif case == "negative volumes":
        odd = [flat(0, 100.9, volume=3.0), flat(0, 99.2, volume=-2.0)] * 3
    else:
        odd = [flat(0, 100.0, volume=1e307)] * 5
    candles = [flat(t0 + i * M, 100.0) for i in range(120)]
    for i, c in enumerate(odd):
        candles[40 + i] = c._replace(timestamp=t0 + (40 + i) * M)
    script = {t0 + 10 * M: Signal("long", 101.0, 99.0, minutes=240)}
    result = fast(Scripted(script), candles, "X", t0 + 5 * M, t0 + 110 * M)
    trades, _ = plain_replay(Scripted(script), candles, "X", t0 + 5 * M, t0 + 110 * M)
    assert [t.close_reason for t in result.trades] == ["take_profit"]
    assert result.trades == trades


# --- the benchmarks themselves -----------------------------------------------------------------

@pytest.mark.e2e
def test_quick_benchmarks_are_sane_and_backtest_the_reference_workload():
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--json"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr  # --quick exits 1 when a figure is not sane
    benchmarks = json.loads(done.stdout)["benchmarks"]
    assert list(benchmarks) == ["backtest", "live", "safety", "restart", "cli", "orders", "candles", "observe", "walk",
                                "stream"]
    for name, result in benchmarks.items():
        for row in result["rows"]:
            assert math.isfinite(row["value"]), (name, row["metric"])
    # The bench's workload is the reference one: its backtest trades exactly as ours.
    details = benchmarks["backtest"]["details"]
    days = details["days"]
    ours = fast(Alternating("trade"), Reference.candles(days), Reference.SYMBOL, *Reference.frame_range(days))
    assert details["trade"]["trades"] == len(ours.trades) > 0
    assert details["trade"]["close_reasons"] == dict(sorted(Counter(t.close_reason for t in ours.trades).items()))
    assert details["trade"]["total_pnl_percentage"] == sum(t.pnl_percentage or 0.0 for t in ours.trades)
    assert details["idle"]["trades"] == 0 and details["idle"]["strategy_calls"] == days * 1440 // 5
    # Every pair of the crowd opened: one order each, through the local exchange.
    crowd = benchmarks["orders"]["details"]["crowd"]
    assert crowd["opened"] == crowd["pairs"] == crowd["orders"] == crowd["stops"]
    torture = benchmarks["orders"]["details"]["torture"]
    assert torture["kills"] == 3 and torture["resent"] == 0 and torture["orders_not_in_journal"] == 0
    assert torture["closed_twice"] == 0 and torture["unprotected"] == 0
    # The walk ran every run in one process, on the pool and on Dask, with equal rows (else it raises).
    walk = benchmarks["walk"]["details"]
    assert walk["runs"] == 6 and walk["trades"] > 0 and len(walk["dask_seconds"]) == len(walk["pool_seconds"]) == 1
    # Every pair decided every counted minute on streamed candles, none fetched by the minute over REST.
    streamed = benchmarks["stream"]["details"]["stream"]
    assert streamed["decisions"] == streamed["symbols"] * streamed["minutes"]
    assert streamed["stream"]["candles"] >= streamed["symbols"] * streamed["minutes"]
