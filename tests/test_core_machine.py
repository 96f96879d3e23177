"""docs/behaviour.md §2: the state machine, its actions, reasons and the order of its checks."""

import pytest

from livetrader.core.machine import Rules, accept, check_open, check_scheduled
from livetrader.core.signal import Signal, SignalRow

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
