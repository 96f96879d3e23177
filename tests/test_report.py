"""docs/behaviour.md §10: the per-pair event window and the markdown report."""

from __future__ import annotations

import gc
import re
import tracemalloc
from pathlib import Path

import pytest

from livetrader.core.signal import SignalRow, TickResult, record_of
from livetrader.core.stats import STAT_EXPLANATIONS, compute_stats
from livetrader.report.markdown import (
    COLUMNS,
    NO_CLOSED_TRADES,
    SPARK_BLOCKS,
    EventWindow,
    build_report,
    closed_trades,
    report_filename,
    sparkline,
    stats_for,
    write_equity_png,
)

M = 60_000
H = 60 * M
DAY0 = 1_704_067_200_000  # 2024-01-01T00:00Z
NAN_OR_INF = re.compile(r"\b(nan|inf|infinity)\b", re.IGNORECASE)


def row(sid: str, at: int, *, opened: bool = True, price_open: float = 100.0) -> SignalRow:
    return SignalRow(
        id=sid,
        symbol="BTCUSDT",
        strategy="s1",
        exchange="sim",
        position="long",
        price_open=price_open,
        take_profit=price_open * 1.02,
        stop_loss=price_open * 0.99,
        minutes=1440,
        scheduled_at=at,
        pending_at=at if opened else None,
    )


def tick(action: str, at: int, signal: SignalRow | None = None, price: float = 100.0, **extra: object) -> dict:
    return record_of(TickResult(action, "BTCUSDT", "s1", "sim", at, price, signal, **extra))  # type: ignore[arg-type]


def trade(sid: str, opened_at: int, closed_at: int, pnl: float) -> list[dict]:
    """opened → active → active → closed records of one signal, oldest first."""
    sig = row(sid, opened_at)
    return [
        tick("opened", opened_at, sig),
        tick("active", opened_at + M, sig, progress_tp=10.0),
        tick("active", opened_at + 2 * M, sig, progress_tp=20.0),
        tick("closed", closed_at, sig, close_reason="take_profit" if pnl > 0 else "stop_loss",
             price_close=100.0 + pnl, pnl_percentage=pnl, pnl_cost=pnl),
    ]


# -- window rules --------------------------------------------------------------------------------


def test_idle_replaces_previous_idle_only_when_nothing_happened_since() -> None:
    window = EventWindow()
    window.add(tick("idle", DAY0))
    window.add(tick("idle", DAY0 + M))
    assert [(e["event"], e["at"]) for e in window.events()] == [("idle", DAY0 + M)]

    for record in trade("a", DAY0 + 2 * M, DAY0 + 10 * M, 1.5):
        window.add(record)
    window.add(tick("idle", DAY0 + 11 * M))
    window.add(tick("idle", DAY0 + 12 * M))
    assert [e["event"] for e in window.events()] == ["idle", "closed", "active", "opened", "idle"]
    assert window.events()[0]["at"] == DAY0 + 12 * M
    assert window.total_added == 8


def test_active_replaces_previous_active_of_same_signal_keeping_opened() -> None:
    window = EventWindow()
    sig = row("a", DAY0)
    window.add(tick("opened", DAY0, sig))
    for i in range(1, 30):
        window.add(tick("active", DAY0 + i * M, sig, progress_tp=float(i)))
    events = window.events()
    assert [e["event"] for e in events] == ["active", "opened"]
    assert events[0]["progress_tp"] == 29.0

    # A different signal's active does not replace the first one's.
    other = row("b", DAY0 + H)
    window.add(tick("active", DAY0 + H, other))
    assert [(e["event"], e.get("signal_id")) for e in window.events()] == [
        ("active", "b"),
        ("active", "a"),
        ("opened", "a"),
    ]


def test_waiting_collapses_per_signal() -> None:
    window = EventWindow()
    sig = row("s", DAY0, opened=False, price_open=90.0)
    window.add(tick("scheduled", DAY0, sig))
    for i in range(1, 120):
        window.add(tick("waiting", DAY0 + i * M, sig))
    assert [e["event"] for e in window.events()] == ["waiting", "scheduled"]


def test_window_stays_bounded_over_100000_events() -> None:
    window = EventWindow(max_events=250)
    base = tick("idle", DAY0)
    sig_base = tick("opened", DAY0, row("x", DAY0))

    def feed(count: int, start: int) -> int:
        # Fresh dicts shaped like record_of's (built by copying, which keeps 100,000 events quick).
        at = start
        n = 0
        while n < count:
            for _ in range(5):
                window.add({**base, "at": at})
                at += M
                n += 1
            sid = f"id-{at}"
            window.add({**sig_base, "event": "opened", "signal_id": sid, "at": at})
            n += 1
            for _ in range(20):
                at += M
                window.add({**sig_base, "event": "active", "signal_id": sid, "at": at, "progress_tp": 1.0})
                n += 1
            at += M
            window.add({**sig_base, "event": "closed", "signal_id": sid, "at": at, "pnl_percentage": 0.1,
                        "close_reason": "time_expired"})
            n += 1
            at += M
        return at

    at = feed(5_000, DAY0)
    gc.collect()
    tracemalloc.start()
    try:
        at = feed(5_000, at)
        gc.collect()
        baseline, _ = tracemalloc.get_traced_memory()
        at = feed(100_000, at)
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(window) == 250
    assert window.total_added >= 110_000
    # Flat: the window's size does not grow with the number of events (allow allocator noise).
    assert after - baseline < 64 * 1024, (baseline, after)
    # Collapsing kept each trade's rows to opened/active/closed plus one idle between trades.
    kinds = [e["event"] for e in window.events()[:8]]
    assert kinds == ["closed", "active", "opened", "idle"] * 2


def test_window_closed_trades_and_stats() -> None:
    window = EventWindow()
    for record in trade("a", DAY0, DAY0 + 2 * H + 5 * M, 2.0) + trade("b", DAY0 + 3 * H, DAY0 + 4 * H, -1.0):
        window.add(record)
    trades = window.closed_trades()
    assert [(t.pnl_percentage, t.opened_at, t.closed_at) for t in trades] == [
        (2.0, DAY0, DAY0 + 2 * H + 5 * M),
        (-1.0, DAY0 + 3 * H, DAY0 + 4 * H),
    ]
    stats = window.stats()
    assert stats.total_closed == 2 and stats.win_count == 1 and stats.loss_count == 1
    assert stats.total_events == len(window) == 6


def test_window_of_tick_results_reads_as_the_window_of_their_records() -> None:
    """The live pair adds tick results; they collapse and render exactly as their records would."""
    sig, waiting = row("a", DAY0), row("w", DAY0, opened=False, price_open=90.0)
    results = [TickResult("idle", "BTCUSDT", "s1", "sim", DAY0 - 2 * M, 100.0),
               TickResult("idle", "BTCUSDT", "s1", "sim", DAY0 - M, 100.0),
               TickResult("opened", "BTCUSDT", "s1", "sim", DAY0, 100.0, sig)]
    results += [TickResult("active", "BTCUSDT", "s1", "sim", DAY0 + i * M, 100.5, sig, progress_tp=float(i))
                for i in range(1, 40)]
    results += [TickResult("closed", "BTCUSDT", "s1", "sim", DAY0 + 40 * M, 102.0, sig, close_reason="take_profit",
                           price_close=102.0, pnl_percentage=1.6, pnl_cost=1.6),
                TickResult("scheduled", "BTCUSDT", "s1", "sim", DAY0 + 41 * M, 99.0, waiting)]
    results += [TickResult("waiting", "BTCUSDT", "s1", "sim", DAY0 + i * M, 99.0, waiting) for i in range(42, 60)]
    lazy, eager = EventWindow(), EventWindow()
    for result in results:
        lazy.add(result)
        eager.add(record_of(result))
    assert lazy.events() == eager.events()
    assert [e["event"] for e in lazy.events()] == ["waiting", "scheduled", "closed", "active", "opened", "idle"]
    assert lazy.stats() == eager.stats() and lazy.closed_trades() == eager.closed_trades()
    # A restored journal record and a live result mix: an active result replaces an active record.
    lazy.add(record_of(TickResult("active", "BTCUSDT", "s1", "sim", DAY0 + 61 * M, 99.0, waiting)))
    lazy.add(TickResult("active", "BTCUSDT", "s1", "sim", DAY0 + 62 * M, 99.0, waiting))
    assert [e["event"] for e in lazy.events()[:3]] == ["active", "waiting", "scheduled"]


def test_max_events_must_be_positive() -> None:
    with pytest.raises(ValueError):
        EventWindow(0)


def test_report_filename() -> None:
    name = report_filename("BTC/USDT", "my strat", "../bin ance", DAY0 + 12 * H + 34 * M + 56_000)
    assert name == "BTC%2FUSDT_my%20strat_%2E.%2Fbin%20ance_20240101T123456Z.md"
    assert re.fullmatch(r"[A-Za-z0-9%][A-Za-z0-9._%-]+", name)
    assert report_filename("BTCUSDT", "my-strategy", "sim", DAY0) == "BTCUSDT_my-strategy_sim_20240101T000000Z.md"


def test_sparkline() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == SPARK_BLOCKS
    assert sparkline([1.0, 1.0, 1.0]) == "▄▄▄"
    assert sparkline([]) == ""
    long = sparkline([float(i) for i in range(1000)], width=60)
    assert len(long) == 60 and long[0] == "▁" and long[-1] == "█"


# -- the report ----------------------------------------------------------------------------------


def test_report_has_columns_rows_and_stats() -> None:
    records = trade("sig-a", DAY0, DAY0 + 2 * H + 5 * M, 2.0) + [
        tick("idle", DAY0 + 3 * H),
        tick("scheduled", DAY0 + 4 * H, row("sig-c", DAY0 + 4 * H, opened=False, price_open=0.00001234)),
        tick("cancelled", DAY0 + 6 * H, row("sig-c", DAY0 + 4 * H, opened=False, price_open=0.00001234),
             price=0.00001300, reason="timeout"),
    ]
    text = build_report("BTCUSDT · s1 · sim", records, stats=stats_for(records),
                        note="Statistics cover all 1 closed trades in the journal.", now_ms=DAY0 + 7 * H)
    assert text.startswith("# BTCUSDT · s1 · sim\n")
    assert "Statistics cover all 1 closed trades in the journal." in text
    assert "Generated 2024-01-01T07:00:00Z." in text
    for column in COLUMNS:
        assert column in text
    for _, label, explanation in STAT_EXPLANATIONS:
        assert f"| {label} |" in text
        assert explanation.split(";")[0].replace("|", "\\|") in text  # pipes escaped inside the table

    lines = text.splitlines()
    table = [line for line in lines if line.startswith("| 2024-")]
    # Newest first, one row per event.
    assert [line.split(" | ")[1] for line in table] == [
        "cancelled", "scheduled", "idle", "closed", "active", "active", "opened",
    ]
    cancelled, closed = table[0], table[3]
    assert "timeout" in cancelled and "2h 00m" in cancelled and "0.00001234" in cancelled
    assert "take_profit" in closed and "2h 05m" in closed and "+2.000%" in closed
    assert "2024-01-01T02:05:00Z" in closed
    assert "100.00" in closed and "102.00" in closed and "99.00" in closed
    # "Price" is the minute's VWAP; a close row also says what the close paid ("Close price").
    close_price = COLUMNS.index("Close price")  # the first cell keeps the row's leading "| "
    assert closed.split(" | ")[close_price] == "102.00" and table[4].split(" | ")[close_price] == "-"
    # Guarded statistics print N/A with one closed trade.
    sharpe = next(line for line in lines if line.startswith("| Sharpe ratio |"))
    assert "| N/A |" in sharpe
    assert NO_CLOSED_TRADES not in text
    assert not NAN_OR_INF.search(text)


def test_report_with_only_idle_events() -> None:
    records = [tick("idle", DAY0 + i * M) for i in range(3)]
    text = build_report("quiet", records, stats=stats_for(records), now_ms=DAY0)
    assert NO_CLOSED_TRADES in text
    assert "## Equity" not in text
    assert "| Total events | 3 |" in text
    assert "| Win rate | N/A |" in text
    assert not NAN_OR_INF.search(text)


def test_report_with_no_events_at_all() -> None:
    text = build_report("empty", [], stats=stats_for([]), now_ms=DAY0)
    assert "No events yet." in text and NO_CLOSED_TRADES in text
    assert not NAN_OR_INF.search(text)


def test_zero_pnl_trades_print_no_nan() -> None:
    records: list[dict] = []
    for i in range(12):
        records += trade(f"z{i}", DAY0 + i * 30 * 24 * H // 12, DAY0 + i * 30 * 24 * H // 12 + H, 0.0)
    stats = stats_for(records)
    assert stats.total_closed == 12
    text = build_report("flat", records, stats=stats, now_ms=DAY0 + 40 * 24 * H)
    assert not NAN_OR_INF.search(text)
    assert "| Sharpe ratio | N/A |" in text  # zero deviation
    assert "▄" in text  # a flat equity curve still draws


def test_report_sparkline_and_equity_with_two_closed_trades() -> None:
    records = trade("a", DAY0, DAY0 + H, 3.0) + trade("b", DAY0 + 2 * H, DAY0 + 3 * H, -1.0)
    text = build_report("pair", records, stats=stats_for(records), now_ms=DAY0 + 4 * H)
    assert "## Equity" in text
    spark = re.search(f"`([{SPARK_BLOCKS}]+)`", text)
    assert spark is not None and len(spark.group(1)) == 3  # 0, +3, +2
    assert spark.group(1) == "▁█▆"
    assert "min +0.000%" in text and "max +3.000%" in text and "final +2.000%" in text


def test_report_with_stats_covering_more_than_rows_and_max_rows() -> None:
    records = [tick("idle", DAY0 + i * M) for i in range(10)]
    trades = closed_trades(trade("a", DAY0, DAY0 + H, 1.0))
    text = build_report("pair", records, stats=compute_stats(trades, total_events=500), max_rows=4,
                        trades=trades, now_ms=DAY0)
    assert "Showing the newest 4 of 10 events." in text
    assert sum(1 for line in text.splitlines() if line.startswith("| 2024-")) == 4
    assert "| Total events | 500 |" in text
    assert "One closed trade" in text


def test_malformed_records_do_not_break_the_report() -> None:
    records = [
        {"event": "closed", "at": DAY0, "pnl_percentage": float("nan"), "price": float("inf")},
        {"event": "idle", "at": "soon", "note": "a | b"},
        {"event": "closed", "at": DAY0 + H, "pnl_percentage": 1.0},
    ]
    stats = stats_for(records)
    assert stats.total_closed == 1
    text = build_report("odd", records, stats=stats, now_ms=DAY0)
    assert not NAN_OR_INF.search(text)


def test_write_equity_png(tmp_path: Path) -> None:
    records = trade("a", DAY0, DAY0 + H, 3.0) + trade("b", DAY0 + 2 * H, DAY0 + 3 * H, -1.0)
    path = tmp_path / "equity.png"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert write_equity_png(path, records) is False
        assert not path.exists()
        return
    assert write_equity_png(path, records) is True
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert write_equity_png(tmp_path / "none.png", [tick("idle", DAY0)]) is False
