"""docs/behaviour.md §2: the state machine, its actions, reasons and the order of its checks."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livetrader.core.machine import ASK, Rules, accept, check_open, check_scheduled, decide
from livetrader.core.pnl import Costs, pnl_cost, pnl_percentage
from livetrader.core.price import Market
from livetrader.core.signal import Signal, SignalRow, TickResult

M = 60_000
T0 = 1_700_000_040_000 - 1_700_000_040_000 % M


def row(position="long", price_open=100.0, tp=102.0, sl=99.0, minutes=60, pending=True):
    return SignalRow("id-1", "BTCUSDT", "s", "sim", position, price_open, tp, sl, minutes,
                     scheduled_at=T0, pending_at=T0 if pending else None)


def test_market_signal_opens_at_the_current_price():
    tick = accept(Signal("long", 103, 98), "BTCUSDT", "s", "sim", "x", T0, 100.5)
    assert tick.action == "opened"
    assert tick.signal.price_open == 100.5 and tick.signal.pending_at == T0


def test_reached_entry_opens_at_exactly_price_open():
    tick = accept(Signal("long", 103, 98, price_open=101), "BTCUSDT", "s", "sim", "x", T0, 100.5)
    assert tick.action == "opened" and tick.signal.price_open == 101


def test_unreached_entry_is_scheduled():
    tick = accept(Signal("short", 97, 102, price_open=100), "BTCUSDT", "s", "sim", "x", T0, 99.0)
    assert tick.action == "scheduled" and tick.signal.pending_at is None


def test_risk_rejection_is_idle_with_the_reason():
    tick = accept(Signal("long", 103, 98), "BTCUSDT", "s", "sim", "x", T0, 100, lambda r, p, n: "too many")
    assert tick.action == "idle" and tick.reason == "risk: too many" and tick.signal is None


class TestOpenPosition:
    def test_active_reports_pnl_and_clamped_progress(self):
        tick = check_open(row(), T0 + M, 101.0)
        assert tick.action == "active"
        assert tick.progress_tp == pytest.approx(50.0) and tick.progress_sl == 0.0
        assert tick.pnl_percentage is not None
        below = check_open(row(), T0 + M, 99.5)
        assert below.progress_sl == pytest.approx(50.0) and below.progress_tp == 0.0

    def test_take_profit_closes_at_exactly_the_take_profit(self):
        tick = check_open(row(), T0 + M, 105.0)
        assert (tick.action, tick.close_reason, tick.price_close) == ("closed", "take_profit", 102.0)

    def test_stop_loss_closes_at_exactly_the_stop_loss(self):
        tick = check_open(row(), T0 + M, 90.0)
        assert (tick.close_reason, tick.price_close) == ("stop_loss", 99.0)

    def test_levels_are_inclusive(self):
        assert check_open(row(), T0 + M, 102.0).close_reason == "take_profit"
        assert check_open(row(), T0 + M, 99.0).close_reason == "stop_loss"

    def test_short_is_the_mirror(self):
        short = row("short", 100, tp=98, sl=101)
        assert check_open(short, T0 + M, 97).close_reason == "take_profit"
        assert check_open(short, T0 + M, 101.5).close_reason == "stop_loss"
        assert check_open(short, T0 + M, 99).action == "active"

    def test_expiry_comes_before_take_profit_and_is_priced_at_the_current_price(self):
        tick = check_open(row(minutes=60), T0 + 60 * M, 105.0)
        assert (tick.close_reason, tick.price_close) == ("time_expired", 105.0)

    def test_lifetime_counts_from_pending_at(self):
        assert check_open(row(minutes=60), T0 + 59 * M, 100.5).action == "active"

    def test_take_profit_is_checked_before_stop_loss(self):
        # A price can satisfy both only if the levels are crossed; TP wins by order.
        odd = row(tp=99.0, sl=99.5, price_open=100)
        assert check_open(odd, T0 + M, 99.2).close_reason == "take_profit"

    def test_pnl_of_a_close_uses_fees_and_slippage(self):
        tick = check_open(row(price_open=50000, tp=51000, sl=49000), T0 + M, 51000)
        assert tick.pnl_percentage == pytest.approx(1.594408, abs=1e-6)
        assert tick.pnl_cost == pytest.approx(1.594408, abs=1e-6)


class TestScheduled:
    def test_waiting_until_the_entry_is_reached(self):
        assert check_scheduled(row(pending=False), T0 + M, 100.5).action == "waiting"

    def test_activation_opens_at_exactly_price_open_with_pending_at_now(self):
        tick = check_scheduled(row(pending=False), T0 + 5 * M, 99.7)
        assert tick.action == "opened"
        assert tick.signal.price_open == 100.0 and tick.signal.pending_at == T0 + 5 * M

    def test_stop_loss_is_checked_before_activation(self):
        tick = check_scheduled(row(pending=False), T0 + M, 98.0)
        assert (tick.action, tick.reason) == ("cancelled", "price_reject")

    def test_timeout_after_120_minutes_comes_first(self):
        tick = check_scheduled(row(pending=False), T0 + 120 * M, 99.5)
        assert (tick.action, tick.reason) == ("cancelled", "timeout")
        assert check_scheduled(row(pending=False), T0 + 119 * M, 99.5).action == "opened"

    def test_timeout_is_configurable(self):
        tick = check_scheduled(row(pending=False), T0 + 30 * M, 100.5, rules=Rules(schedule_timeout_minutes=30))
        assert tick.reason == "timeout"

    def test_short_mirror(self):
        short = row("short", 100, tp=98, sl=101, pending=False)
        assert check_scheduled(short, T0 + M, 99.0).action == "waiting"
        assert check_scheduled(short, T0 + M, 100.2).action == "opened"
        assert check_scheduled(short, T0 + M, 101.0).reason == "price_reject"

    def test_candle_extremes_drive_backtest_activation(self):
        # The close stays above the entry but the low touched it: a limit order would have filled.
        assert check_scheduled(row(pending=False), T0 + M, 100.5, low=99.9, high=100.8).action == "opened"
        # The low pierced the stop-loss: rejected first, even though it also passed the entry.
        assert check_scheduled(row(pending=False), T0 + M, 100.5, low=98.9, high=100.8).reason == "price_reject"

    def test_risk_rejection_at_activation_keeps_waiting(self):
        tick = check_scheduled(row(pending=False), T0 + M, 99.5, risk=lambda r, p, n: "full")
        assert tick.action == "waiting" and tick.reason == "risk: full"
        assert tick.signal.pending_at is None


class TestQuietResults:
    """The results of a quiet minute (``idle``, ``waiting``, ``active``) are built field by field
    in order (``machine._result``, for speed): each must be exactly the keyword-built one."""

    def test_the_field_order_they_are_built_in(self):
        # machine._result lists the fields in this order: a new or moved field must be added there too.
        assert TickResult._fields == ("action", "symbol", "strategy", "exchange", "at", "price", "signal",
                                      "close_reason", "reason", "price_close", "pnl_percentage", "pnl_cost",
                                      "progress_tp", "progress_sl")

    @settings(max_examples=400, deadline=None)
    @given(
        position=st.sampled_from(["long", "short"]),
        pending=st.booleans(),
        held=st.booleans(),
        entry=st.floats(1.0, 1000.0),
        tp_distance=st.floats(0.001, 0.5),
        sl_distance=st.floats(0.001, 0.5),
        moves=st.tuples(st.floats(-0.6, 0.6), st.floats(-0.6, 0.6), st.floats(0.0, 0.3)),
        minutes=st.integers(1, 300),
        at=st.integers(1, 400),
        fees=st.sampled_from([Rules(), Rules(costs=Costs(fee_percent=0.0, slippage_percent=0.0, cost=250.0))]),
    )
    def test_decide_gives_the_keyword_built_result(self, position, pending, held, entry, tp_distance,
                                                   sl_distance, moves, minutes, at, fees):
        sign = 1 if position == "long" else -1
        held_row = SignalRow("id-9", "ETHUSDT", "s", "sim", position, entry, entry * (1 + sign * tp_distance),
                             entry * (1 - sign * sl_distance), minutes, scheduled_at=T0,
                             pending_at=T0 if pending else None)
        price = entry * (1 + moves[0])
        low, high = min(price, entry * (1 + moves[1])), max(price, entry * (1 + moves[1])) * (1 + moves[2])
        minute = T0 + at * M
        key = ("ETHUSDT", "s", "sim")
        result = decide(key, held_row if held else None, minute, Market(price, low, high), False, fees)
        assert result is not ASK and type(result) is TickResult and len(result) == len(TickResult._fields)
        if not held:
            expected = TickResult("idle", *key, minute, price)
        elif result.action == "waiting" and result.reason is None:
            expected = TickResult("waiting", "ETHUSDT", "s", "sim", minute, price, held_row)
        elif result.action == "active":
            pnl = pnl_percentage(position, entry, price, fees.costs)
            to_tp = (price - entry) / (held_row.take_profit - entry) * 100.0
            to_sl = (price - entry) / (held_row.stop_loss - entry) * 100.0
            expected = TickResult("active", "ETHUSDT", "s", "sim", minute, price, held_row, pnl_percentage=pnl,
                                  pnl_cost=pnl_cost(pnl, fees.costs), progress_tp=min(max(to_tp, 0.0), 100.0),
                                  progress_sl=min(max(to_sl, 0.0), 100.0))
        else:
            return  # a transition: built by keywords, as before
        assert result == expected
        assert result.signal is expected.signal
