"""Statistics over closed trades (docs/behaviour.md §10), pinned against values worked out by hand."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livetrader.core.stats import (
    MIN_DAYS_FOR_ANNUAL,
    MIN_TRADES_FOR_RATIOS,
    STAT_EXPLANATIONS,
    STAT_KINDS,
    ClosedTrade,
    Stats,
    compute_stats,
    format_stat,
)

T0 = 1_700_000_000_000  # an arbitrary ms UTC origin
DAY = 86_400_000
FIELD_NAMES = [f.name for f in dataclasses.fields(Stats)]
COUNT_FIELDS = {"total_events", "total_closed", "win_count", "loss_count"}
FLOAT_FIELDS = [name for name in FIELD_NAMES if name not in COUNT_FIELDS]


def spread(pnls: list[float], days: float) -> list[ClosedTrade]:
    """Back-to-back trades: the first opens at T0 and the last closes at exactly T0 + days."""
    span = int(days * DAY)
    n = len(pnls)
    return [
        ClosedTrade(pnl_percentage=p, opened_at=T0 + i * span // n, closed_at=T0 + (i + 1) * span // n)
        for i, p in enumerate(pnls)
    ]


def approx(value: float) -> object:
    return pytest.approx(value, rel=1e-12, abs=1e-12)


def assert_all_finite_or_none(stats: Stats) -> None:
    for name in FLOAT_FIELDS:
        value = getattr(stats, name)
        assert value is None or (isinstance(value, float) and math.isfinite(value)), (name, value)
    for name in COUNT_FIELDS:
        value = getattr(stats, name)
        assert isinstance(value, int) and not isinstance(value, bool) and value >= 0, (name, value)


# --------------------------------------------------------------------------------------------
# The worked example: 12 trades over exactly 30 days.
#
#   pnl       =  3, -1,  2, -2,  0,  4, -1,  1, -3,  2,  5,  2
#   sum       = 12                      -> total_pnl 12, avg_pnl 12/12 = 1
#   p - avg   =  2, -2,  1, -3, -1,  3, -2,  0, -4,  1,  4,  1
#   squares   =  4,  4,  1,  9,  1,  9,  4,  0, 16,  1, 16,  1  -> sum 66
#   sample variance = 66 / (12 - 1) = 6  -> std_dev = sqrt(6) ≈ 2.449490
#     (population variance would be 66/12 = 5.5: a wrong denominator changes every ratio)
#   wins   = 3, 2, 4, 1, 2, 5, 2  -> 7 wins, sum 19, avg 19/7
#   losses = -1, -2, -1, -3       -> 4 losses, sum -7, avg -7/4
#   the 0 is neither: decisive trades = 11
#   win_rate        = 7/11 * 100 = 63.6363...   (not 7/12 = 58.33)
#   sharpe          = 1 / sqrt(6) ≈ 0.408248
#   certainty_ratio = (19/7) / (7/4) = 76/49 ≈ 1.551020
#   profit_factor   = 19 / 7 ≈ 2.714286
#   expectancy      = 7/11 * 19/7 - 4/11 * 7/4 = 19/11 - 7/11 = 12/11 ≈ 1.090909
#   sqn             = sqrt(12) * 1 / sqrt(6) = sqrt(2) ≈ 1.414214
#   history_days    = 30 -> trades per year = 12 / 30 * 365 = 146
#   annualized_sharpe       = sqrt(146) / sqrt(6) = sqrt(146/6) ≈ 4.932883
#   expected_yearly_returns = 1 * 146 = 146
#   equity curve (from 0): 3, 2, 4, 2, 2, 6, 5, 6, 3, 5, 10, 12
#   running peak          : 3, 3, 4, 4, 4, 6, 6, 6, 6, 6, 10, 12
#   peak - equity         : 0, 1, 0, 2, 2, 0, 1, 0, 3, 1,  0,  0  -> max_drawdown 3
# --------------------------------------------------------------------------------------------
PNLS_12 = [3.0, -1.0, 2.0, -2.0, 0.0, 4.0, -1.0, 1.0, -3.0, 2.0, 5.0, 2.0]


def test_worked_example_12_trades_over_30_days():
    s = compute_stats(spread(PNLS_12, 30))
    assert s.total_events == 12
    assert s.total_closed == 12
    assert s.win_count == 7
    assert s.loss_count == 4
    assert s.win_rate == approx(700 / 11)
    assert s.avg_pnl == approx(1.0)
    assert s.total_pnl == approx(12.0)
    assert s.std_dev == approx(math.sqrt(6))
    assert s.sharpe == approx(1 / math.sqrt(6))
    assert s.annualized_sharpe == approx(math.sqrt(146 / 6))
    assert s.certainty_ratio == approx(76 / 49)
    assert s.expected_yearly_returns == approx(146.0)
    assert s.max_drawdown == approx(3.0)
    assert s.profit_factor == approx(19 / 7)
    assert s.expectancy == approx(12 / 11)
    assert s.sqn == approx(math.sqrt(2))


def test_worked_example_numbers_rounded():
    # The same figures, as plain decimals, so a reader can check them without the formulas.
    s = compute_stats(spread(PNLS_12, 30))
    assert s.win_rate == pytest.approx(63.636364, abs=1e-6)
    assert s.std_dev == pytest.approx(2.449490, abs=1e-6)
    assert s.sharpe == pytest.approx(0.408248, abs=1e-6)
    assert s.annualized_sharpe == pytest.approx(4.932883, abs=1e-6)
    assert s.certainty_ratio == pytest.approx(1.551020, abs=1e-6)
    assert s.profit_factor == pytest.approx(2.714286, abs=1e-6)
    assert s.expectancy == pytest.approx(1.090909, abs=1e-6)
    assert s.sqn == pytest.approx(1.414214, abs=1e-6)


def test_order_of_input_does_not_matter():
    # Reports keep events newest first: the drawdown must follow closed_at, not list order.
    # Reversed list order would give equity 2, 7, 9, 6, ... and a different drawdown.
    trades = spread(PNLS_12, 30)
    assert compute_stats(list(reversed(trades))) == compute_stats(trades)


def test_explicit_history_bounds():
    # first_at 10 days before the first trade, last_at at the last close: history 40 days.
    # trades per year = 12 / 40 * 365 = 109.5
    # expected_yearly_returns = 1 * 109.5 = 109.5; annualized_sharpe = sqrt(109.5 / 6) = sqrt(18.25)
    s = compute_stats(spread(PNLS_12, 30), first_at=T0 - 10 * DAY)
    assert s.expected_yearly_returns == approx(109.5)
    assert s.annualized_sharpe == approx(math.sqrt(18.25))
    # last_at 30 days after the last close: history 60 days -> 12 / 60 * 365 = 73 trades per year
    s = compute_stats(spread(PNLS_12, 30), last_at=T0 + 60 * DAY)
    assert s.expected_yearly_returns == approx(73.0)
    assert s.annualized_sharpe == approx(math.sqrt(73 / 6))
    # Ratios that do not depend on time are unchanged.
    assert s.sharpe == approx(1 / math.sqrt(6))


def test_total_events_is_passed_through():
    assert compute_stats(spread(PNLS_12, 30), total_events=40).total_events == 40
    assert compute_stats([], total_events=5).total_events == 5


# --------------------------------------------------------------------------------------------
# Null guards
# --------------------------------------------------------------------------------------------


def test_no_trades():
    s = compute_stats([])
    assert (s.total_events, s.total_closed, s.win_count, s.loss_count) == (0, 0, 0, 0)
    for name in FLOAT_FIELDS:
        assert getattr(s, name) is None, name
    # History bounds alone do not conjure figures out of nothing.
    s = compute_stats([], first_at=T0, last_at=T0 + 365 * DAY)
    for name in FLOAT_FIELDS:
        assert getattr(s, name) is None, name


def test_one_winning_trade():
    s = compute_stats(spread([2.5], 1))
    assert (s.total_closed, s.win_count, s.loss_count) == (1, 1, 0)
    assert s.win_rate == approx(100.0)  # 1 / 1 * 100
    assert s.avg_pnl == approx(2.5)
    assert s.total_pnl == approx(2.5)
    assert s.expectancy == approx(2.5)  # the only decisive trade
    assert s.max_drawdown == 0.0  # equity 0 -> 2.5 never falls
    # std_dev needs two trades; every ratio needs ten; one day of history is not enough to annualise
    for name in ("std_dev", "sharpe", "annualized_sharpe", "certainty_ratio", "profit_factor", "sqn"):
        assert getattr(s, name) is None, name
    assert s.expected_yearly_returns is None


def test_one_losing_trade():
    s = compute_stats(spread([-4.0], 1))
    assert (s.win_count, s.loss_count) == (0, 1)
    assert s.win_rate == 0.0  # 0 / 1 * 100
    assert s.expectancy == approx(-4.0)
    assert s.max_drawdown == approx(4.0)  # 0 -> -4
    assert s.profit_factor is None  # below ten trades
    assert s.std_dev is None


def test_expected_yearly_returns_needs_history_not_ten_trades():
    # One trade, 20 days: trades per year = 1 / 20 * 365 = 18.25; 2.5 * 18.25 = 45.625.
    s = compute_stats(spread([2.5], 20))
    assert s.expected_yearly_returns == approx(45.625)
    assert s.annualized_sharpe is None  # Sharpe itself is guarded


def test_two_trades_have_a_std_dev_but_no_ratios():
    # 1 and 3: avg 2, deviations -1, 1, sample variance 2 / 1 = 2 -> std sqrt(2)
    s = compute_stats(spread([1.0, 3.0], 30))
    assert s.std_dev == approx(math.sqrt(2))
    assert s.sharpe is None
    assert s.sqn is None


# Nine trades: 4, -2, 4, -2, 4, -2, 4, -2, 4
#   sum = 5*4 - 4*2 = 12, avg = 12/9 = 4/3
#   deviations 8/3 (five times), -10/3 (four times)
#   squares 5 * 64/9 + 4 * 100/9 = 720/9 = 80; sample variance 80 / 8 = 10 -> std sqrt(10)
#   sharpe = (4/3) / sqrt(10); sqn = sqrt(9) * (4/3) / sqrt(10) = 4 / sqrt(10)
#   certainty = 4 / 2 = 2; profit factor = 20 / 8 = 2.5
PNLS_9 = [4.0, -2.0, 4.0, -2.0, 4.0, -2.0, 4.0, -2.0, 4.0]


def test_nine_trades_are_too_few_for_ratios():
    assert MIN_TRADES_FOR_RATIOS == 10
    s = compute_stats(spread(PNLS_9, 60))
    assert s.std_dev == approx(math.sqrt(10))  # std_dev itself only needs two trades
    assert s.avg_pnl == approx(4 / 3)
    assert s.win_rate == approx(500 / 9)  # 5 / 9 * 100
    assert s.expectancy == approx(4 / 3)  # no zero trade: same as avg_pnl
    # 60 days is ample history, yet the ratios rest on too few trades
    for name in ("sharpe", "annualized_sharpe", "certainty_ratio", "profit_factor", "sqn"):
        assert getattr(s, name) is None, name
    # trades per year = 9 / 60 * 365 = 54.75; 4/3 * 54.75 = 73
    assert s.expected_yearly_returns == approx(73.0)


def test_ratio_threshold_is_overridable():
    s = compute_stats(spread(PNLS_9, 60), min_trades_for_ratios=9)
    assert s.sharpe == approx((4 / 3) / math.sqrt(10))
    assert s.sqn == approx(4 / math.sqrt(10))
    assert s.certainty_ratio == approx(2.0)
    assert s.profit_factor == approx(2.5)
    # annualized = sharpe * sqrt(54.75)
    assert s.annualized_sharpe == approx((4 / 3) / math.sqrt(10) * math.sqrt(54.75))
    # ten trades with the default threshold: PNLS_9 + [0] -> same sums, n = 10
    # avg 12/10 = 1.2; deviations 2.8 (x5), -3.2 (x4), -1.2 -> squares 39.2 + 40.96 + 1.44 = 81.6
    # sample variance 81.6 / 9; sharpe = 1.2 / sqrt(81.6 / 9)
    s = compute_stats(spread([*PNLS_9, 0.0], 60))
    assert s.sharpe == approx(1.2 / math.sqrt(81.6 / 9))
    assert s.sqn == approx(math.sqrt(10) * 1.2 / math.sqrt(81.6 / 9))
    assert s.profit_factor == approx(2.5)


def test_thirteen_days_is_too_short_to_annualise():
    assert MIN_DAYS_FOR_ANNUAL == 14
    s = compute_stats(spread(PNLS_12, 13))
    assert s.sharpe == approx(1 / math.sqrt(6))  # not time-based: still reported
    assert s.annualized_sharpe is None
    assert s.expected_yearly_returns is None


def test_fourteen_days_is_enough_to_annualise():
    # trades per year = 12 / 14 * 365 = 4380 / 14 ≈ 312.857
    s = compute_stats(spread(PNLS_12, 14))
    assert s.expected_yearly_returns == approx(4380 / 14)
    assert s.annualized_sharpe == approx(math.sqrt(4380 / 14) / math.sqrt(6))


def test_day_threshold_is_overridable():
    # 13 days allowed: 12 / 13 * 365 = 4380 / 13 trades per year
    s = compute_stats(spread(PNLS_12, 13), min_days_for_annual=13)
    assert s.expected_yearly_returns == approx(4380 / 13)
    # zero history cannot be annualised even with no threshold: n / 0 is infinite
    same_instant = [ClosedTrade(p, T0, T0) for p in PNLS_12]
    s = compute_stats(same_instant, min_days_for_annual=0)
    assert s.expected_yearly_returns is None
    assert s.annualized_sharpe is None
    assert s.sharpe == approx(1 / math.sqrt(6))


def test_all_zero_pnl():
    s = compute_stats(spread([0.0] * 12, 30))
    assert (s.win_count, s.loss_count) == (0, 0)
    assert s.win_rate is None  # no decisive trade: 0 / 0
    assert s.expectancy is None
    assert s.avg_pnl == 0.0
    assert s.total_pnl == 0.0
    assert s.std_dev == 0.0
    assert s.sharpe is None  # 0 / 0, not NaN
    assert s.sqn is None
    assert s.annualized_sharpe is None
    assert s.certainty_ratio is None
    assert s.profit_factor is None
    assert s.max_drawdown == 0.0
    assert s.expected_yearly_returns == 0.0  # 0 * 146
    assert_all_finite_or_none(s)


def test_constant_nonzero_pnl_has_no_sharpe():
    # 1.5 every time: std 0 -> sharpe would be +inf
    s = compute_stats(spread([1.5] * 12, 30))
    assert s.std_dev == 0.0
    assert s.sharpe is None
    assert s.sqn is None
    assert s.annualized_sharpe is None
    assert s.profit_factor is None  # no loss: 18 / 0
    assert s.expected_yearly_returns == approx(1.5 * 146)
    assert_all_finite_or_none(s)


def test_only_wins():
    # 1, 2, 3 four times: avg 2, deviations -1, 0, 1 -> squares 4 * 2 = 8; variance 8 / 11
    # sharpe = 2 / sqrt(8/11)
    s = compute_stats(spread([1.0, 2.0, 3.0] * 4, 30))
    assert (s.win_count, s.loss_count) == (12, 0)
    assert s.win_rate == approx(100.0)
    assert s.certainty_ratio is None  # avg loss does not exist
    assert s.profit_factor is None  # 24 / 0
    assert s.expectancy == approx(2.0)  # 1 * 2 - 0
    assert s.sharpe == approx(2 / math.sqrt(8 / 11))
    assert s.max_drawdown == 0.0


def test_only_losses():
    # -1, -2, -3 four times: sum -24, avg -2
    s = compute_stats(spread([-1.0, -2.0, -3.0] * 4, 30))
    assert (s.win_count, s.loss_count) == (0, 12)
    assert s.win_rate == 0.0
    assert s.certainty_ratio is None  # avg win does not exist
    assert s.profit_factor == 0.0  # 0 / 24: a real, finite figure
    assert s.expectancy == approx(-2.0)
    assert s.sharpe == approx(-2 / math.sqrt(8 / 11))
    assert s.max_drawdown == approx(24.0)  # straight down from 0 to -24


def test_overflow_becomes_none_not_inf():
    s = compute_stats(spread([1e308] * 12, 30))
    assert s.avg_pnl == 1e308
    assert s.total_pnl is None  # 1.2e309 would be infinite
    assert s.expected_yearly_returns is None  # 1e308 * 146
    assert s.sharpe is None  # std 0
    assert_all_finite_or_none(s)
    s = compute_stats(spread([1.7e308, -1.7e308] * 6, 30))
    assert_all_finite_or_none(s)


# --------------------------------------------------------------------------------------------
# Drawdown on known sequences
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pnls", "expected"),
    [
        # equity 5, 3, 6, -1, 0, 4, 3; peak 5, 5, 6, 6, 6, 6, 6; falls 0, 2, 0, 7, 6, 2, 3 -> 7
        ([5.0, -2.0, 3.0, -7.0, 1.0, 4.0, -1.0], 7.0),
        # the curve starts at 0, so early losses count: equity -2, -5, -1, 0, -6, -4 -> 0 - (-6) = 6
        ([-2.0, -3.0, 4.0, 1.0, -6.0, 2.0], 6.0),
        # never falls (a zero is flat, not a fall) -> 0
        ([1.0, 0.0, 2.0, 3.0], 0.0),
        # two separate dips, 10 -> 8 (2) and 12 -> 7.5 (4.5) -> 4.5
        ([10.0, -2.0, 4.0, -1.5, -3.0, 9.0], 4.5),
    ],
)
def test_max_drawdown_known_sequences(pnls, expected):
    assert compute_stats(spread(pnls, 30)).max_drawdown == approx(expected)


def test_max_drawdown_follows_close_time():
    # Close order -1, +3, -2: equity -1, 2, 0; peak 0, 2, 2; falls 1, 0, 2 -> 2.
    # List order +3, -2, -1 would give equity 3, 1, 0 -> 3, so list order must not be used.
    trades = [
        ClosedTrade(3.0, T0 + 1 * DAY, T0 + 2 * DAY),
        ClosedTrade(-2.0, T0 + 2 * DAY, T0 + 3 * DAY),
        ClosedTrade(-1.0, T0, T0 + 1 * DAY),
    ]
    assert compute_stats(trades).max_drawdown == approx(2.0)


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

finite_pnl = st.floats(allow_nan=False, allow_infinity=False)
trade = st.builds(
    lambda pnl, opened, duration: ClosedTrade(pnl, opened, opened + duration),
    finite_pnl,
    st.integers(min_value=0, max_value=4_000_000_000_000),
    st.integers(min_value=0, max_value=400 * DAY),
)


@settings(max_examples=300, deadline=None)
@given(
    trades=st.lists(trade, max_size=40),
    total_events=st.none() | st.integers(min_value=0, max_value=1000),
    first_at=st.none() | st.integers(min_value=0, max_value=4_000_000_000_000),
    last_at=st.none() | st.integers(min_value=0, max_value=4_000_000_000_000),
    min_trades=st.integers(min_value=0, max_value=12),
    min_days=st.floats(min_value=0, max_value=30),
)
def test_never_nan_or_infinite(trades, total_events, first_at, last_at, min_trades, min_days):
    s = compute_stats(
        trades,
        total_events=total_events,
        first_at=first_at,
        last_at=last_at,
        min_trades_for_ratios=min_trades,
        min_days_for_annual=min_days,
    )
    assert_all_finite_or_none(s)
    assert s.total_closed == len(trades)
    assert s.win_count + s.loss_count <= s.total_closed
    if s.win_rate is not None:
        assert 0.0 <= s.win_rate <= 100.0
    if s.max_drawdown is not None:
        assert s.max_drawdown >= 0.0
    json.dumps(s.to_dict(), allow_nan=False)  # strict JSON: would raise on NaN or inf
    for name, _label, _text in STAT_EXPLANATIONS:
        format_stat(getattr(s, name), STAT_KINDS[name])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=-50, max_value=50, allow_nan=False), min_size=10, max_size=40))
def test_formulas_agree_on_moderate_values(pnls):
    s = compute_stats(spread(pnls, 30))
    n = len(pnls)
    wins = [p for p in pnls if p > 0]
    losses = [p for p in pnls if p < 0]
    mean = sum(pnls) / n
    assert s.avg_pnl == pytest.approx(mean, abs=1e-9)
    assert s.total_pnl == pytest.approx(sum(pnls), abs=1e-9)
    assert s.max_drawdown is not None and s.max_drawdown <= sum(abs(p) for p in pnls) + 1e-9
    if wins or losses:
        # expectancy = win_rate/100 * avg_win - loss_rate * |avg_loss|
        decisive = len(wins) + len(losses)
        avg_win = sum(wins) / len(wins) if wins else 0.0
        avg_loss = sum(losses) / len(losses) if losses else 0.0
        expected = len(wins) / decisive * avg_win - len(losses) / decisive * abs(avg_loss)
        assert s.expectancy == pytest.approx(expected, abs=1e-9)
    if s.sharpe is not None:
        assert s.std_dev is not None and s.sqn is not None
        assert s.sharpe == pytest.approx(s.avg_pnl / s.std_dev, rel=1e-9)
        assert s.sqn == pytest.approx(math.sqrt(n) * s.sharpe, rel=1e-9)
        # 30 days of history: trades per year = n / 30 * 365
        assert s.annualized_sharpe == pytest.approx(s.sharpe * math.sqrt(n / 30 * 365), rel=1e-9)


# --------------------------------------------------------------------------------------------
# Dataclasses, explanations and formatting
# --------------------------------------------------------------------------------------------


def test_dataclasses_are_frozen_slots():
    t = ClosedTrade(1.0, T0, T0 + DAY)
    s = compute_stats([t])
    for obj in (t, s):
        assert not hasattr(obj, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.pnl_percentage = 2.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.sharpe = 1.0  # type: ignore[misc]


def test_to_dict():
    d = compute_stats(spread(PNLS_12, 13)).to_dict()
    assert list(d) == FIELD_NAMES
    assert d["annualized_sharpe"] is None
    assert d["win_count"] == 7
    assert d["max_drawdown"] == approx(3.0)
    assert json.loads(json.dumps(d, allow_nan=False))["expected_yearly_returns"] is None


def test_explanations_cover_every_field_in_order():
    assert [name for name, _label, _text in STAT_EXPLANATIONS] == FIELD_NAMES
    assert list(STAT_KINDS) == FIELD_NAMES
    for name, label, text in STAT_EXPLANATIONS:
        assert label and text and "\n" not in text
        if name not in COUNT_FIELDS:
            assert "N/A" in text, name  # each nullable figure states its guard
    texts = {name: text for name, _label, text in STAT_EXPLANATIONS}
    for name in ("sharpe", "certainty_ratio", "profit_factor", "sqn"):
        assert str(MIN_TRADES_FOR_RATIOS) in texts[name], name
    for name in ("annualized_sharpe", "expected_yearly_returns"):
        assert str(MIN_DAYS_FOR_ANNUAL) in texts[name], name


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        (None, "count", "N/A"),
        (None, "percent", "N/A"),
        (None, "pnl", "N/A"),
        (None, "points", "N/A"),
        (None, "ratio", "N/A"),
        (math.nan, "ratio", "N/A"),
        (math.inf, "pnl", "N/A"),
        (12, "count", "12"),
        (0, "count", "0"),
        (700 / 11, "percent", "63.64%"),
        (100.0, "percent", "100.00%"),
        (1.0, "pnl", "+1.000%"),
        (-2.5, "pnl", "-2.500%"),
        (math.sqrt(6), "points", "2.449%"),
        (3.0, "points", "3.000%"),
        (1 / math.sqrt(6), "ratio", "0.408"),
        (-1.23456, "ratio", "-1.235"),
    ],
)
def test_format_stat(value, kind, expected):
    assert format_stat(value, kind) == expected


def test_format_stat_rejects_unknown_kind():
    with pytest.raises(ValueError):
        format_stat(1.0, "furlongs")
