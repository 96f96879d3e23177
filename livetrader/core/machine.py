"""The signal state machine of one pair (docs/behaviour.md §2), as pure functions.

A pair holds at most one ``SignalRow``: scheduled (``pending_at`` is None) or open. Each
function takes the row, the tick time and the price, and returns the ``TickResult``; the
row that follows is ``result.signal`` for ``scheduled``/``waiting``/``opened``/``active``
and nothing for ``closed``/``cancelled``. Risk checks are passed in as a callable so the
machine itself stays free of shared state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from livetrader.core.pnl import DEFAULT_COSTS, Costs, pnl_cost, pnl_percentage
from livetrader.core.price import MINUTE_MS
from livetrader.core.signal import SCHEDULE_TIMEOUT_MINUTES, Action, Signal, SignalRow, TickResult
from livetrader.core.validate import opens_now, validate_signal

#: Returns a rejection reason, or None to accept. Called with the candidate row, the price and now.
RiskGate = Callable[[SignalRow, float, int], str | None]


@dataclass(slots=True, frozen=True)
class Rules:
    """The configurable numbers of the machine."""

    costs: Costs = DEFAULT_COSTS
    schedule_timeout_minutes: int = SCHEDULE_TIMEOUT_MINUTES


DEFAULT_RULES = Rules()


def _clamp_percent(value: float) -> float:
    return 0.0 if value < 0 else 100.0 if value > 100 else value


def _base(row: SignalRow, action: Action, now: int, price: float, **kw: Any) -> TickResult:
    return TickResult(action, row.symbol, row.strategy, row.exchange, now, price, row, **kw)


def close(row: SignalRow, now: int, price: float, price_close: float, reason: str, rules: Rules) -> TickResult:
    """The ``closed`` result of ``row`` at ``price_close`` for ``reason``."""
    pnl = pnl_percentage(row.position, row.price_open, price_close, rules.costs)
    return _base(row, "closed", now, price, close_reason=reason, price_close=price_close,
                 pnl_percentage=pnl, pnl_cost=pnl_cost(pnl, rules.costs))


def cancel(row: SignalRow, now: int, price: float, reason: str) -> TickResult:
    """The ``cancelled`` result of a scheduled ``row``."""
    return _base(row, "cancelled", now, price, reason=reason)


def check_open(row: SignalRow, now: int, price: float, rules: Rules = DEFAULT_RULES) -> TickResult:
    """Monitor an open position: expiry first, then take-profit, then stop-loss, else active."""
    assert row.pending_at is not None
    if now - row.pending_at >= row.minutes * MINUTE_MS:
        return close(row, now, price, price, "time_expired", rules)
    long = row.position == "long"
    if (price >= row.take_profit) if long else (price <= row.take_profit):
        return close(row, now, price, row.take_profit, "take_profit", rules)
    if (price <= row.stop_loss) if long else (price >= row.stop_loss):
        return close(row, now, price, row.stop_loss, "stop_loss", rules)
    to_tp = (price - row.price_open) / (row.take_profit - row.price_open) * 100.0
    to_sl = (price - row.price_open) / (row.stop_loss - row.price_open) * 100.0
    pnl = pnl_percentage(row.position, row.price_open, price, rules.costs)
    # Built directly, not through _base's **kw: every minute of every open position comes here.
    return TickResult("active", row.symbol, row.strategy, row.exchange, now, price, row, pnl_percentage=pnl,
                      pnl_cost=pnl_cost(pnl, rules.costs), progress_tp=_clamp_percent(to_tp),
                      progress_sl=_clamp_percent(to_sl))


def check_scheduled(
    row: SignalRow,
    now: int,
    price: float,
    low: float | None = None,
    high: float | None = None,
    risk: RiskGate | None = None,
    rules: Rules = DEFAULT_RULES,
) -> TickResult:
    """Watch a scheduled signal: timeout, then stop-loss rejection, then activation, else waiting.

    Live passes only ``price``; a backtest passes the candle's ``low``/``high`` so that a
    long reacts to the low (a short to the high) inside the minute. A risk rejection at
    activation keeps the signal waiting, with the reason, until it times out.
    """
    if now - row.scheduled_at >= rules.schedule_timeout_minutes * MINUTE_MS:
        return cancel(row, now, price, "timeout")
    long = row.position == "long"
    extreme = (price if low is None else low) if long else (price if high is None else high)
    if (extreme <= row.stop_loss) if long else (extreme >= row.stop_loss):
        return cancel(row, now, price, "price_reject")
    if (extreme <= row.price_open) if long else (extreme >= row.price_open):
        reason = risk(row, price, now) if risk else None
        if reason:
            return _base(row, "waiting", now, price, reason=f"risk: {reason}")
        return _base(replace(row, pending_at=now), "opened", now, price)
    return _base(row, "waiting", now, price)


def accept(
    signal: Signal,
    symbol: str,
    strategy: str,
    exchange: str,
    signal_id: str,
    now: int,
    price: float,
    risk: RiskGate | None = None,
) -> TickResult:
    """Turn a strategy's signal into ``opened`` or ``scheduled``, or an ``idle`` with the reason.

    Validation failures raise ``SignalError`` (the caller reports them as errors); a risk
    rejection is an ``idle`` whose ``reason`` starts with ``risk:``.
    """
    validate_signal(signal, price)
    now_open = opens_now(signal, price)
    row = SignalRow(
        id=signal_id,
        symbol=symbol,
        strategy=strategy,
        exchange=exchange,
        position=signal.position,
        price_open=price if signal.price_open is None else float(signal.price_open),
        take_profit=float(signal.take_profit),
        stop_loss=float(signal.stop_loss),
        minutes=int(signal.minutes),
        scheduled_at=now,
        pending_at=now if now_open else None,
        note=signal.note,
    )
    reason = risk(row, price, now) if risk else None
    if reason:
        return TickResult("idle", symbol, strategy, exchange, now, price, reason=f"risk: {reason}")
    return TickResult("opened" if now_open else "scheduled", symbol, strategy, exchange, now, price, row)


def idle(symbol: str, strategy: str, exchange: str, now: int, price: float, reason: str | None = None) -> TickResult:
    """A tick in which no signal exists and none was accepted."""
    return TickResult("idle", symbol, strategy, exchange, now, price, reason=reason)
