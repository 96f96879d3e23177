"""Backtest (SPEC §11): the live state machine run over a finite range of candles, fast-forward.

Backtest time is live time: at frame ``t`` the price is the VWAP of the candles opening in
``[t-5m, t)``; a decision taken from the candle opening at ``c`` is stamped ``c + 1m``.
The loop is lean on purpose: candles live in flat lists, the VWAP window is summed from
precomputed ``typical * volume`` products, a pair with no signal jumps straight to the
next throttle bucket (no frame inside one bucket can ask the strategy), and an open or
scheduled signal is scanned candle by candle until it ends.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from livetrader.context import Context
from livetrader.core.interval import SIGNAL_INTERVALS
from livetrader.core.machine import DEFAULT_RULES, Rules, accept, cancel, check_open, check_scheduled, close
from livetrader.core.price import MINUTE_MS, VWAP_CANDLES, Candle
from livetrader.core.signal import TickResult, make_signal_id
from livetrader.core.validate import SignalError
from livetrader.errors import LivetraderError, NoCandlesError
from livetrader.risk import RiskProfile
from livetrader.tracing import describe


class StrategyFailure(LivetraderError):
    """The strategy raised or returned an invalid signal during a backtest."""


@dataclass(slots=True)
class BacktestResult:
    """Everything a backtest produced; times in integer ms UTC."""

    symbol: str
    strategy: str
    exchange: str
    start: int
    end: int
    trades: list[TickResult] = field(default_factory=list)
    cancelled: list[TickResult] = field(default_factory=list)
    frames: int = 0
    candles: int = 0
    strategy_calls: int = 0
    risk_rejections: int = 0
    ended_open: int = 0
    ended_scheduled: int = 0


class _Series:
    """Gap-free 1-minute candles as flat lists, with the VWAP of any frame in O(5)."""

    __slots__ = ("candles", "base", "tv", "vol", "close")

    def __init__(self, candles: Sequence[Candle]) -> None:
        self.candles = list(candles)
        self.base = candles[0].timestamp
        self.vol = [c.volume for c in candles]
        # Same arithmetic, in the same order, as core.price.vwap: results are bit-identical.
        self.tv = [(c.high + c.low + c.close) / 3.0 * c.volume for c in candles]
        self.close = [c.close for c in candles]

    def index(self, ts: int) -> int:
        return (ts - self.base) // MINUTE_MS

    def vwap_at(self, frame_index: int) -> float:
        """VWAP of the five candles before frame ``frame_index`` (candles i-5 .. i-1)."""
        lo = frame_index - VWAP_CANDLES
        volume = 0.0
        weighted = 0.0
        for k in range(lo, frame_index):
            volume += self.vol[k]
            weighted += self.tv[k]
        if volume > 0:
            return weighted / volume
        return sum(self.close[lo:frame_index]) / VWAP_CANDLES


async def run_backtest(
    strategy: object,
    candles: Sequence[Candle],
    symbol: str,
    start: int,
    end: int,
    *,
    exchange: str = "sim",
    rules: Rules = DEFAULT_RULES,
    risk: RiskProfile | None = None,
    progress: Callable[[int], None] | None = None,
) -> BacktestResult:
    """Run ``strategy`` over ``candles`` for frames in ``[start, end)``.

    ``candles`` must be gap-free 1-minute candles covering at least ``[start - 5m, end)``;
    candles before that serve as history for ``ctx.candles``. ``progress`` is called now
    and then with the current frame time.
    """
    name = strategy.name  # type: ignore[attr-defined]
    interval_ms = SIGNAL_INTERVALS[strategy.interval]  # type: ignore[attr-defined]
    start += -start % MINUTE_MS
    series = _Series(candles)
    first_frame = series.base + VWAP_CANDLES * MINUTE_MS
    last_candle_end = series.base + len(series.candles) * MINUTE_MS
    start = max(start, first_frame)
    end = min(end, last_candle_end)
    if start >= end:
        raise NoCandlesError(
            f"no candles to backtest {symbol} in the requested range: a frame needs the 5 candles before it"
        )
    result = BacktestResult(symbol, name, exchange, start, end, candles=len(series.candles))
    get_signal = strategy.get_signal  # type: ignore[attr-defined]
    is_async = inspect.iscoroutinefunction(get_signal)
    callbacks = {hook: getattr(strategy, hook, None) for hook in ("on_open", "on_close", "on_schedule", "on_cancel")}
    all_candles = series.candles

    async def load(lo: int, hi: int) -> list[Candle]:
        a = max(0, series.index(lo))
        b = max(0, min(len(all_candles), series.index(hi)))
        return all_candles[a:b]

    gate = risk.check if risk else None

    async def emit(res: TickResult) -> None:
        hook = callbacks.get(_HOOKS.get(res.action, ""))
        if hook is not None:
            out = hook(res)
            if inspect.isawaitable(out):
                await out

    last_bucket: int | None = None
    last_opened_id: str | None = None
    t = start
    next_progress = start
    while t < end:
        if progress is not None and t >= next_progress:
            progress(t)
            next_progress = t + 1440 * MINUTE_MS
        b = t - t % interval_ms
        if b == last_bucket:
            # Nothing can happen before the next bucket: no signal exists and the strategy
            # may not be asked again inside this one.
            t = b + interval_ms
            continue
        last_bucket = b
        i = series.index(t)
        price = series.vwap_at(i)
        result.strategy_calls += 1
        ctx = Context(symbol, name, exchange, t, price, load)
        try:
            signal = (await get_signal(ctx)) if is_async else get_signal(ctx)
        except Exception as exc:
            raise StrategyFailure(f"strategy {name!r} raised at {_iso(t)}: {describe(exc)}") from exc
        if signal is None:
            t = b + interval_ms
            continue
        if signal.id is not None and signal.id == last_opened_id:
            t = b + interval_ms
            continue
        try:
            tick = accept(signal, symbol, name, exchange, signal.id or make_signal_id(symbol, name, t), t, price, gate)
        except SignalError as exc:
            raise StrategyFailure(f"strategy {name!r} returned an invalid signal at {_iso(t)}: {exc}") from exc
        if tick.action == "idle":  # risk rejection: hand the bucket back, ask again next minute
            result.risk_rejections += 1
            last_bucket = None
            t += MINUTE_MS
            continue
        await emit(tick)
        row = tick.signal
        assert row is not None
        k = i  # the first candle to check is the one opening at t
        if tick.action == "scheduled":
            row, k, finished = await _scan_scheduled(series, row, k, end, rules, gate, result, emit)
            if finished is not None:
                t = finished + MINUTE_MS
                continue
            last_opened_id = row.id
        else:
            last_opened_id = row.id
        if risk:
            risk.add(row)
        closed_at = await _scan_open(series, row, k, end, rules, result, emit)
        if risk:
            risk.remove(row.id)
        t = closed_at + MINUTE_MS
    result.frames = (end - start) // MINUTE_MS
    if progress is not None:
        progress(end)
    return result


_HOOKS = {"opened": "on_open", "closed": "on_close", "scheduled": "on_schedule", "cancelled": "on_cancel"}


async def _scan_scheduled(series, row, k, end, rules, gate, result, emit):  # type: ignore[no-untyped-def]
    """Scan candles from index ``k`` until the scheduled ``row`` activates or is cancelled.

    Returns ``(row, next_candle_index, None)`` on activation, or ``(row, k, stamp)`` when it
    was cancelled at ``stamp``.
    """
    candles = series.candles
    n = len(candles)
    while k < n:
        c = candles[k]
        stamp = c.timestamp + MINUTE_MS
        if stamp > end:
            break
        tick = check_scheduled(row, stamp, series.vwap_at(k + 1), c.low, c.high, gate, rules)
        if tick.action == "cancelled":
            result.cancelled.append(tick)
            await emit(tick)
            return row, k, stamp
        if tick.action == "opened":
            await emit(tick)
            assert tick.signal is not None
            return tick.signal, k + 1, None
        k += 1
    tick = cancel(row, end, series.vwap_at(series.index(end)), "timeout")
    result.cancelled.append(tick)
    result.ended_scheduled += 1
    await emit(tick)
    return row, k, end


async def _scan_open(series, row, k, end, rules, result, emit) -> int:  # type: ignore[no-untyped-def]
    """Check the open ``row`` on each candle from index ``k``; return the close time."""
    candles = series.candles
    n = len(candles)
    while k < n:
        stamp = candles[k].timestamp + MINUTE_MS
        if stamp > end:
            break
        tick = check_open(row, stamp, series.vwap_at(k + 1), rules)
        if tick.action == "closed":
            result.trades.append(tick)
            await emit(tick)
            return stamp
        k += 1
    price = series.vwap_at(series.index(end))
    tick = close(row, end, price, price, "time_expired", rules)
    result.trades.append(tick)
    result.ended_open += 1
    await emit(tick)
    return end


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%MZ")
