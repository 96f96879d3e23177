"""One decision path for a tick (docs/behaviour.md §2, §11): ``core.machine.decide`` and ``answer``,
what live ticks (awaited, caught up, in place) and the backtest make of them, and the
``signal_backtest`` events of a backtest."""

import asyncio

import pytest

from livetrader import Signal, Strategy
from livetrader.backtest.replay import StrategyFailure, run_backtest
from livetrader.core.machine import ASK, answer, decide
from livetrader.core.price import MINUTE_MS, Candle, Market, market_of, vwap
from livetrader.core.signal import SignalRow
from livetrader.core.validate import SignalError, SignalIdInUse
from livetrader.events import BUS, EventBus, listen_signal, listen_signal_backtest
from livetrader.live.pair import Pair

M = MINUTE_MS
T0 = 1_704_067_200_000  # 2024-01-01T00:00Z
KEY = ("BTCUSDT", "s", "sim")


def row(position="long", pending_at=None, price_open=99.0, take_profit=101.5, stop_loss=97.0):
    if position == "short":
        price_open, take_profit, stop_loss = 101.0, 98.5, 103.0
    return SignalRow("id-1", *KEY, position, price_open, take_profit, stop_loss, 60, T0, pending_at)


# --- decide ------------------------------------------------------------------------------------

def test_nothing_held_asks_when_the_throttle_allows_and_is_idle_otherwise():
    market = Market(100.0, 99.0, 101.0)
    assert decide(KEY, None, T0 + M, market, True) is ASK
    idle = decide(KEY, None, T0 + M, market, False)
    assert (idle.action, idle.symbol, idle.strategy, idle.exchange) == ("idle", *KEY)
    assert (idle.at, idle.price, idle.signal) == (T0 + M, 100.0, None)


@pytest.mark.parametrize("position", ["long", "short"])
def test_a_scheduled_signal_reacts_to_the_closed_minutes_low_or_high_not_the_vwap(position):
    # The VWAP (100) is far from the entry; the closed minute's extreme reaches it.
    touching = Market(100.0, 98.9, 100.2) if position == "long" else Market(100.0, 99.8, 101.1)
    opened = decide(KEY, row(position), T0 + 5 * M, touching, False)
    assert opened.action == "opened" and opened.signal.pending_at == T0 + 5 * M
    missing = Market(100.0, 99.5, 100.5)
    assert decide(KEY, row(position), T0 + 5 * M, missing, False).action == "waiting"
    # Reaching the stop-loss rejects first, even when the entry is reached too.
    through = Market(100.0, 96.0, 100.0) if position == "long" else Market(100.0, 100.0, 104.0)
    rejected = decide(KEY, row(position), T0 + 5 * M, through, False)
    assert (rejected.action, rejected.reason) == ("cancelled", "price_reject")


def test_an_open_position_is_decided_on_the_vwap_not_the_extremes():
    held = row(pending_at=T0)
    # The minute's high reaches TP 101.5 but the VWAP does not: still active.
    assert decide(KEY, held, T0 + M, Market(100.0, 99.0, 102.0), False).action == "active"
    closed = decide(KEY, held, T0 + M, Market(101.6, 101.0, 102.0), False)
    assert (closed.action, closed.close_reason, closed.price_close) == ("closed", "take_profit", 101.5)


def test_market_of_is_the_vwap_and_the_last_candles_low_and_high():
    candles = [Candle(T0 + i * M, 100.0, 100.0 + i, 99.0 - i, 100.0, 1.0) for i in range(5)]
    assert market_of(candles) == Market(vwap(candles), 95.0, 104.0) == Market(299 / 3, 95.0, 104.0)


# --- answer ------------------------------------------------------------------------------------

def test_answer_none_ignored_accepted_refused_and_invalid():
    signal = Signal("long", 102.0, 98.0, id="idea")
    assert answer(None, KEY, T0, 100.0, None) is None
    ignored = answer(signal, KEY, T0, 100.0, "idea")
    assert ignored.action == "idle" and ignored.reason.startswith("ignored")
    assert answer(signal, KEY, T0, 100.0, None).action == "opened"
    refused = answer(signal, KEY, T0, 100.0, None, risk=lambda r, p, now: "full")
    assert (refused.action, refused.reason) == ("idle", "risk: full")
    with pytest.raises(SignalError, match="used before") as chosen:
        answer(signal, KEY, T0, 100.0, None, used_ids={"idea"})
    assert chosen.value.reason == "invalid signal"
    with pytest.raises(SignalIdInUse, match="already in the journal") as generated:
        answer(Signal("long", 102.0, 98.0), KEY, T0, 100.0, None, used_ids={"BTCUSDT-s-20240101T0000Z"})
    assert generated.value.reason == "signal id already used"
    with pytest.raises(SignalError, match="expected a Signal or None, got dict"):
        answer({"position": "long"}, KEY, T0, 100.0, None)


# --- live: a pair's ticks decide scheduled signals on the closed minute's low ------------------

class ListSource:
    """Fixed candles, made in-process (so a pair's feed can tick in place)."""

    name = "list"

    def __init__(self, candles):
        self.candles = {c.timestamp: c for c in candles}

    def resolve_symbol(self, symbol):
        return symbol

    def bounds(self, symbol):
        return None

    def fetch_sync(self, symbol, start, end):
        return [self.candles[t] for t in range(start, end, M) if t in self.candles]

    async def fetch(self, symbol, start, end):
        return self.fetch_sync(symbol, start, end)

    async def close(self):
        pass


class LimitOnce(Strategy):
    name = "limit-once"
    interval = "1m"

    def __init__(self):
        self.asked = 0

    async def get_signal(self, ctx):
        self.asked += 1
        if self.asked == 1:
            return Signal("long", take_profit=101.5, stop_loss=97.0, price_open=99.0, minutes=30)
        return None


DIP = T0 + 20 * M  # the candle opening here trades down to 98.9; its VWAP stays near 100


def dip_candles():
    out = []
    for i in range(-10, 120):
        ts = T0 + i * M
        low = 98.9 if ts == DIP else 100.0
        out.append(Candle(ts, 100.0, 100.0, low, 100.0, 1.0))
    return out


def _pair():
    return Pair("BTCUSDT", LimitOnce(), "list", ListSource(dip_candles()))


@pytest.mark.parametrize("how", ["every minute", "one late tick"])
def test_live_activates_a_scheduled_signal_on_the_closed_minutes_low(how):
    async def main():
        pair = _pair()
        scheduled = await pair.tick(T0)
        assert scheduled.action == "scheduled"
        minutes = range(T0 + M, DIP + 3 * M, M) if how == "every minute" else [DIP + 2 * M]
        results = [await pair.tick(t) for t in minutes]
        return pair, results

    pair, results = asyncio.run(main())
    opened = [r for r in results if r.action == "opened"] or [pair.last_result]
    assert pair.row is not None and pair.row.pending_at == DIP + M  # the minute the dip candle closed
    assert pair.row.price_open == 99.0
    if how == "every minute":
        assert [r.action for r in results[:-2]] == ["waiting"] * 20 and opened[0].at == DIP + M


def test_in_place_tick_leaves_the_activation_to_the_awaited_tick():
    async def main():
        pair = _pair()
        await pair.tick(T0)
        for t in range(T0 + M, DIP + M, M):
            assert pair.tick_in_place(t, t), t  # waiting: decided in place
        assert pair.row.pending_at is None
        assert not pair.tick_in_place(DIP + M, DIP + M)  # the activation is journaled: ``tick``
        assert pair.row.pending_at is None
        return await pair.tick(DIP + M)

    assert asyncio.run(main()).action == "opened"


# --- the backtest's events ---------------------------------------------------------------------

class Quick(Strategy):
    name = "quick"
    interval = "1m"

    def __init__(self):
        self.hooks = []

    async def get_signal(self, ctx):
        if ctx.now_ms == T0 + 10 * M:
            return Signal("long", take_profit=101.5, stop_loss=97.0, price_open=99.0, minutes=5)
        return None

    def on_open(self, result):
        self.hooks.append(("on_open", result.at))

    async def on_close(self, result):
        self.hooks.append(("on_close", result.at))


def test_a_backtest_emits_each_transition_on_signal_backtest_and_signal():
    got = {"signal": [], "signal_backtest": []}
    strategy = Quick()

    async def main():
        # The public API the README documents, on the process-wide bus.
        unsubscribe = [listen_signal_backtest(got["signal_backtest"].append), listen_signal(got["signal"].append)]
        try:
            result = await run_backtest(strategy, dip_candles(), "BTCUSDT", T0, T0 + 60 * M)
            await BUS.drain(5)
        finally:
            for stop in unsubscribe:
                stop()
        return result

    result = asyncio.run(main())
    actions = [(r.action, r.at) for r in got["signal_backtest"]]
    assert actions == [("scheduled", T0 + 10 * M), ("opened", DIP + M), ("closed", DIP + 6 * M)]
    assert got["signal"] == got["signal_backtest"]
    assert got["signal_backtest"][-1] == result.trades[0]
    assert strategy.hooks == [("on_open", DIP + M), ("on_close", DIP + 6 * M)]  # through the same hook table


def test_a_backtest_nobody_listens_to_emits_nothing():
    bus = EventBus()
    emitted = []
    bus.emit = lambda topic, payload: emitted.append(topic)  # type: ignore[method-assign]
    result = asyncio.run(run_backtest(Quick(), dip_candles(), "BTCUSDT", T0, T0 + 60 * M, bus=bus))
    assert len(result.trades) == 1 and emitted == []


def test_a_backtest_asks_with_the_live_strategy_timeout():
    class Hangs(Strategy):
        name = "hangs"
        interval = "1m"

        async def get_signal(self, ctx):
            await asyncio.sleep(30)

    with pytest.raises(StrategyFailure, match=r"'hangs' timed out at 2024-01-01T00:10Z: no answer after 0.2 s"):
        asyncio.run(run_backtest(Hangs(), dip_candles(), "BTCUSDT", T0 + 10 * M, T0 + 60 * M,
                                 strategy_timeout_seconds=0.2))
