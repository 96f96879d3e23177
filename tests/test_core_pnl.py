"""docs/behaviour.md §6: profit and loss with fees and slippage."""

import pytest

from livetrader.core.pnl import Costs, pnl_cost, pnl_percentage


@pytest.mark.parametrize(
    ("position", "price_open", "price_close", "expected"),
    [
        ("long", 50000, 51000, 1.594408),
        ("long", 50000, 49500, -1.396604),
        ("short", 50000, 49000, 1.605608),
    ],
)
def test_worked_values_of_the_spec(position, price_open, price_close, expected):
    assert pnl_percentage(position, price_open, price_close) == pytest.approx(expected, abs=5e-7)


def test_a_flat_trade_loses_fees_and_slippage():
    # open' = 100.1, close' = 99.9: raw = -0.1998 %, fees 0.1 * (1 + 0.998) = 0.1998 %
    assert pnl_percentage("long", 100, 100) == pytest.approx(-0.1998002 - 0.1998002, rel=1e-6)


def test_costs_are_configurable():
    free = Costs(fee_percent=0, slippage_percent=0, cost=1000)
    assert pnl_percentage("long", 100, 110, free) == pytest.approx(10.0)
    assert pnl_percentage("short", 100, 110, free) == pytest.approx(-10.0)
    assert pnl_cost(10.0, free) == pytest.approx(100.0)


def test_exit_fee_is_charged_on_the_exit_notional():
    fee_only = Costs(fee_percent=1.0, slippage_percent=0)
    # long 100 -> 200: raw 100 %, fees 1 % of entry + 1 % of the doubled exit = 3 %
    assert pnl_percentage("long", 100, 200, fee_only) == pytest.approx(97.0)


def test_pnl_cost_uses_the_default_position_cost_of_100():
    assert pnl_cost(1.5) == pytest.approx(1.5)
