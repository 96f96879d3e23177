"""What a trader reads: the trades summary (core.stats.summarize_trades), its report section, and
`livetrader report --summary` (every pair and the portfolio line)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_recovery import T0, drive

from livetrader.core.price import MINUTE_MS
from livetrader.core.stats import ClosedTrade, compute_stats, drawdown_span, summarize_trades
from livetrader.report.markdown import build_report, closed_trades

HOUR = 60 * MINUTE_MS


def trade(pnl, opened_h, closed_h, reason, cost=None):
    return ClosedTrade(pnl, T0 + opened_h * HOUR, T0 + closed_h * HOUR, reason, cost)


#: Closed in this order: +2, -1, -1.5, +0.5, -0.5, +3 (costs: pnl per 100 quote).
WORKED = [
    trade(2.0, 0, 1, "take_profit", 2.0),
    trade(-1.0, 1, 3, "stop_loss", -1.0),
    trade(-1.5, 3, 4, "stop_loss", -1.5),
    trade(0.5, 4, 8, "time_expired", 0.5),
    trade(-0.5, 8, 9, "time_expired", -0.5),
    trade(3.0, 9, 10, "take_profit", 3.0),
]


def test_the_worked_summary():
    s = summarize_trades(list(reversed(WORKED)), buy_and_hold=-4.25)
    assert s.trades == 6 and s.pnl_cost == pytest.approx(2.5)
    assert [(r.reason, r.count, r.wins, r.losses) for r in s.by_reason] == [
        ("stop_loss", 2, 0, 2), ("take_profit", 2, 2, 0), ("time_expired", 2, 1, 1)]
    assert [r.avg_pnl for r in s.by_reason] == pytest.approx([-1.25, 2.5, 0.0])
    assert [r.pnl_cost for r in s.by_reason] == pytest.approx([-2.5, 5.0, 0.0])
    assert s.avg_duration_ms == pytest.approx(10 / 6 * HOUR) and s.median_duration_ms == HOUR
    assert s.best == WORKED[5] and s.worst == WORKED[2]
    assert (s.longest_win_streak, s.longest_loss_streak) == (1, 2)
    # Equity 2, 1, -0.5, 0, -0.5, 2.5: the peak 2 (closed at hour 1) falls to -0.5 (hour 4).
    assert (s.max_drawdown, s.drawdown_start, s.drawdown_end) == (2.5, T0 + HOUR, T0 + 4 * HOUR)
    assert s.buy_and_hold == -4.25
    assert s.to_dict()["best"]["pnl_percentage"] == 3.0


def test_a_curve_falling_from_its_start_dates_the_drawdown_from_the_first_opening():
    falling = [trade(-1.0, 2, 3, "stop_loss"), trade(-1.0, 3, 5, "stop_loss"), trade(1.0, 5, 6, "take_profit")]
    assert drawdown_span(falling) == (2.0, T0 + 2 * HOUR, T0 + 5 * HOUR)
    assert drawdown_span([trade(1.0, 0, 1, "take_profit")]) == (0.0, None, None)
    assert drawdown_span([]) == (None, None, None)
    empty = summarize_trades([])
    assert empty.pnl_cost is None and empty.best is None and empty.avg_duration_ms is None
    assert summarize_trades([trade(1.0, 0, 1, None)]).by_reason[0].reason == "?"


pnls = st.floats(min_value=-50, max_value=50, allow_nan=False, allow_infinity=False)
trades = st.lists(
    st.builds(lambda pnl, opened, held, reason, cost: ClosedTrade(pnl, T0 + opened * MINUTE_MS,
                                                                  T0 + (opened + held) * MINUTE_MS, reason,
                                                                  None if cost is None else pnl * cost),
              pnls, st.integers(0, 10_000), st.integers(0, 1440),
              st.sampled_from(["take_profit", "stop_loss", "time_expired", None]),
              st.none() | st.floats(0.5, 1000)),
    max_size=40,
)


@given(trades)
def test_the_summary_agrees_with_the_statistics(closed):
    s = summarize_trades(closed)
    stats = compute_stats(closed)
    assert s.trades == len(closed) == sum(r.count for r in s.by_reason)
    assert sum(r.wins for r in s.by_reason) == stats.win_count
    assert sum(r.losses for r in s.by_reason) == stats.loss_count
    assert s.longest_win_streak <= stats.win_count and s.longest_loss_streak <= stats.loss_count
    assert (s.longest_win_streak > 0) == (stats.win_count > 0)
    if closed:
        assert s.max_drawdown == pytest.approx(stats.max_drawdown, abs=1e-9)
        assert s.best.pnl_percentage == max(t.pnl_percentage for t in closed)
        assert s.worst.pnl_percentage == min(t.pnl_percentage for t in closed)
        durations = sorted(t.closed_at - t.opened_at for t in closed)
        assert durations[0] <= s.median_duration_ms <= durations[-1]
        assert durations[0] - 1e-6 <= s.avg_duration_ms <= durations[-1] + 1e-6
    if s.drawdown_start is not None:
        assert s.max_drawdown > 0 and s.drawdown_start <= s.drawdown_end
    costs = [t.pnl_cost for t in closed if t.pnl_cost is not None]
    assert (s.pnl_cost is None) == (not costs)
    if costs:
        assert s.pnl_cost == pytest.approx(math.fsum(costs), abs=1e-6)


def record(pnl, opened_h, closed_h, reason, cost):
    return {"event": "closed", "signal_id": f"s{opened_h}", "symbol": "BTCUSDT", "strategy": "x", "exchange": "sim",
            "at": T0 + closed_h * HOUR, "pending_at": T0 + opened_h * HOUR, "price": 100.0, "position": "long",
            "close_reason": reason, "pnl_percentage": pnl, "pnl_cost": cost}


def test_every_report_has_the_trades_section_from_its_records():
    records = [record(t.pnl_percentage, (t.opened_at - T0) // HOUR, (t.closed_at - T0) // HOUR, t.close_reason,
                      t.pnl_cost) for t in WORKED]
    assert closed_trades(records) == WORKED  # reason and quote PnL come through from the records
    text = build_report("r", records, stats=compute_stats(WORKED))
    section = text[text.index("## Trades"):text.index("## Statistics")]
    assert "| stop_loss | 2 | -1.250% | -2.50 | 0 | 2 |" in section
    assert "| take_profit | 2 | +2.500% | +5.00 | 2 | 0 |" in section
    assert "| Profit (quote currency) | +2.50 |" in section
    assert "| Longest losing streak | 2 |" in section
    assert "| Drawdown | 2.500% from 2024-01-01T01:00:00Z to 2024-01-01T04:00:00Z |" in section
    assert "| Buy and hold (same range) | N/A |" in section


def test_report_summary_has_a_line_per_pair_and_the_portfolio(tmp_path, capsys):
    from livetrader.cli.report import run as run_report

    data_dir = tmp_path / "dump"
    ticks = [T0 + i * 20 * MINUTE_MS for i in range(12)]
    drive(data_dir, "always-long", ticks, crash_on="none")
    drive(data_dir, "quick-long", ticks, crash_on="none")
    capsys.readouterr()
    assert run_report(data_dir, None, None, None, True, summary=True) == 0
    doc = json.loads(capsys.readouterr().out)
    pairs, portfolio = doc["pairs"], doc["portfolio"]
    assert [p["name"] for p in pairs] == ["BTCUSDT always-long (sim)", "BTCUSDT quick-long (sim)"]
    assert all(p["trades"] >= 3 for p in pairs)
    assert portfolio["trades"] == sum(p["trades"] for p in pairs)
    assert portfolio["pnl_cost"] == pytest.approx(sum(p["pnl_cost"] for p in pairs))
    assert portfolio["pnl"] == pytest.approx(sum(p["pnl"] for p in pairs))
    assert portfolio["first_at"] == min(p["first_at"] for p in pairs)
    assert run_report(data_dir, None, None, None, False, summary=True) == 0
    text = capsys.readouterr().out
    assert "| BTCUSDT always-long (sim) |" in text and f"| **portfolio** | {portfolio['trades']} |" in text
    assert run_report(data_dir, None, None, tmp_path / "out", False, summary=True) == 0
    assert (tmp_path / "out" / "summary.md").read_text() == text
