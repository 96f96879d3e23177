"""Benchmark 1: backtest throughput on the reference workload (``bench/workload.py``).

Only ``run_backtest`` is timed, from inside a running event loop: generating the candles
and starting or closing the event loop are not part of it. Each mode runs ``repeats``
times; the table shows the median, the JSON also the best and every run.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from bench import workload
from bench.common import Result, median
from livetrader.backtest.replay import BacktestResult, run_backtest

TARGET_MINUTES_PER_SECOND = 1_000_000


async def _timed(mode: str, candles: list, start: int, end: int) -> tuple[float, BacktestResult]:
    strategy = workload.ReferenceStrategy(mode)
    began = time.perf_counter()
    result = await run_backtest(strategy, candles, workload.SYMBOL, start, end)
    return time.perf_counter() - began, result


def run(days: int = workload.DEFAULT_DAYS, repeats: int = 5) -> Result:
    """Run both modes of the reference workload over ``days`` days."""
    out = Result("backtest", f"Backtest throughput, reference workload ({days} days of 1-minute frames)")
    began = time.perf_counter()
    candles = workload.candles(days)
    generation = time.perf_counter() - began
    start, end = workload.frame_range(days)
    out.details["days"] = days
    out.details["candle_generation_seconds"] = generation
    out.details["repeats"] = repeats
    for mode in workload.MODES:
        runs: list[float] = []
        first: BacktestResult | None = None
        for _ in range(repeats):
            elapsed, result = asyncio.run(_timed(mode, candles, start, end))
            runs.append(elapsed)
            if first is None:
                first = result
            elif result.trades != first.trades:  # deterministic: every run must trade the same
                raise AssertionError(f"mode {mode}: two runs of the same workload traded differently")
        assert first is not None
        seconds = median(runs)
        reasons = Counter(t.close_reason for t in first.trades)
        out.add(f"{mode}: simulated minutes/s", first.frames / seconds, "min/s", TARGET_MINUTES_PER_SECOND, "min")
        out.add(f"{mode}: candles/s", first.candles / seconds, "candles/s")
        out.add(f"{mode}: trades", len(first.trades), "trades", sane="nonnegative")
        out.details[mode] = {
            "frames": first.frames,
            "candles": first.candles,
            "seconds_median": seconds,
            "seconds_best": min(runs),
            "seconds_all": runs,
            "minutes_per_second_median": first.frames / seconds,
            "minutes_per_second_best": first.frames / min(runs),
            "candles_per_second_median": first.candles / seconds,
            "strategy_calls": first.strategy_calls,
            "trades": len(first.trades),
            "close_reasons": dict(sorted(reasons.items())),
            "ended_open": first.ended_open,
            "total_pnl_percentage": sum(t.pnl_percentage or 0.0 for t in first.trades),
        }
    trade = out.details["trade"]["close_reasons"]
    out.notes.append(
        "timed: run_backtest only (candle generation "
        f"{generation:.2f} s and event-loop start-up excluded); median of {repeats} runs; "
        "trade-mode close reasons: " + ", ".join(f"{k} {v}" for k, v in trade.items())
    )
    return out
