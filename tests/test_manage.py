"""core/manage.py: what a strategy's ``manage`` answer and a trailing stop do to an open position
(docs/behaviour.md §2, "Steering an open position")."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from livetrader.core.machine import check_open
from livetrader.core.manage import Exit, Held, Levels, level_problems, steer, trail
from livetrader.core.signal import SignalRow, record_of, row_of
from livetrader.core.validate import SignalError

M = 60_000


def row(position="long", tp=110.0, sl=95.0, trailing=None):
    return SignalRow("s1", "BTCUSDT", "x", "sim", position, 100.0, tp, sl, 240, 0, 0, "n", trailing)


def active(r, price=102.0, at=10 * M):
    result = check_open(r, at, price)
    assert result.action == "active"
    return result


def test_nothing_keeps_the_position_as_it_was():
    a = active(row())
    assert steer(a, None) is a
    assert steer(a, Levels()) is a  # levels that change nothing record nothing


def test_an_exit_closes_at_the_minutes_price_with_reason_signal_and_the_note():
    closed = steer(active(row(), price=102.0), Exit("trend turned"))
    assert closed.action == "closed" and closed.close_reason == "signal" and closed.price_close == 102.0
    assert closed.reason == "trend turned" and closed.pnl_percentage is not None


def test_new_levels_are_an_adjusted_record_that_restores_to_the_same_row():
    adjusted = steer(active(row(), price=104.0), Levels(take_profit=112.0, stop_loss=100.0))
    assert adjusted.action == "adjusted"
    assert (adjusted.signal.take_profit, adjusted.signal.stop_loss) == (112.0, 100.0)
    assert row_of(record_of(adjusted)) == adjusted.signal  # journaled, restored alike
    # From the next minute the new stop-loss decides: 99.9 now closes it.
    assert check_open(adjusted.signal, 11 * M, 99.9).close_reason == "stop_loss"


def test_a_stop_loss_never_loosens_by_accident_and_levels_are_checked_at_the_price():
    a = active(row(sl=98.0), price=104.0)
    with pytest.raises(SignalError, match="moves against the position"):
        steer(a, Levels(stop_loss=97.0))
    assert steer(a, Levels(stop_loss=97.0, loosen=True)).signal.stop_loss == 97.0
    with pytest.raises(SignalError, match="below the price"):
        steer(a, Levels(stop_loss=105.0))
    with pytest.raises(SignalError, match="at least 0.5% from the price"):
        steer(a, Levels(take_profit=104.1))
    with pytest.raises(SignalError, match="finite number"):
        steer(a, Levels(stop_loss=float("nan")))
    with pytest.raises(SignalError, match="manage must return"):
        steer(a, "sell!")
    # A take-profit that stays is not re-judged, even now that the price is near it.
    near = active(row(tp=105.0, sl=98.0), price=104.9)
    assert steer(near, Levels(stop_loss=99.0)).signal.take_profit == 105.0


def test_a_short_is_mirrored():
    a = active(row("short", tp=90.0, sl=105.0), price=96.0)
    assert steer(a, Levels(stop_loss=100.0)).signal.stop_loss == 100.0
    with pytest.raises(SignalError, match="moves against"):
        steer(a, Levels(stop_loss=106.0))
    assert trail(row("short", tp=90.0, sl=105.0, trailing=0.01), 96.0).stop_loss == pytest.approx(96.96)


def test_a_trailing_stop_follows_the_price_up_and_never_down():
    r = row(sl=95.0, trailing=0.02)
    assert trail(r, 100.0).stop_loss == pytest.approx(98.0)
    up = steer(active(r, price=100.0), trail(r, 100.0)).signal
    assert trail(up, 99.0) is None  # the price fell back: the stop stays
    assert trail(up, 101.0).stop_loss == pytest.approx(98.98)
    assert trail(row(), 100.0) is None  # no trailing stop


@given(st.lists(st.floats(96.0, 108.0), min_size=1, max_size=40), st.floats(0.005, 0.05))
def test_a_trailing_stop_only_ever_rises_and_stays_behind_the_best_price(prices, fraction):
    r = row(tp=1e6, sl=90.0, trailing=fraction)
    best = 0.0
    for i, price in enumerate(prices):
        result = check_open(r, (i + 1) * M, price)
        if result.action != "active":
            break
        best = max(best, price)
        levels = trail(r, price)
        moved = steer(result, levels) if levels is not None and not level_problems(
            r, r.take_profit, levels.stop_loss, price, False) else result
        assert moved.signal.stop_loss >= r.stop_loss
        assert moved.signal.stop_loss <= best * (1 - fraction) + 1e-9 or moved.signal.stop_loss == 90.0
        r = moved.signal


def test_the_view_manage_gets():
    held = Held.of(active(row(trailing=0.01), price=103.0))
    assert (held.id, held.price, held.opened_at, held.trailing_stop) == ("s1", 103.0, 0, 0.01)
    assert held.pnl_percentage > 0
