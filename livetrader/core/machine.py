"""The signal state machine of one pair (docs/behaviour.md §2), as pure functions.

A pair holds at most one ``SignalRow``: scheduled (``pending_at`` is None) or open.
``decide`` is what one minute does to a pair: given what it holds and the minute's
``Market``, it returns the ``TickResult``, or ``ASK`` when the strategy is to be asked;
``answer`` then turns the strategy's answer into the result. Live ticks (awaited or in
place) and the backtest all decide through these two and differ only in how they get the
market data and what they do with the result. The row that follows is ``result.signal``
for ``scheduled``/``waiting``/``opened``/``active`` and nothing for ``closed``/``cancelled``.
Risk checks are passed in as a callable so the machine itself stays free of shared state.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Container
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

from livetrader.core.interval import bucket
from livetrader.core.pnl import DEFAULT_COSTS, Costs, pnl_cost, pnl_percentage
from livetrader.core.price import MINUTE_MS, Market
from livetrader.core.signal import SCHEDULE_TIMEOUT_MINUTES, Action, Signal, SignalRow, TickResult, make_signal_id
from livetrader.core.validate import SignalError, SignalIdInUse, opens_now, validate_signal

#: Returns a rejection reason, or None to accept. Called with the candidate row, the price and now.
RiskGate = Callable[[SignalRow, float, int], str | None]


@dataclass(slots=True, frozen=True)
class Rules:
    """The configurable numbers of the machine."""

    costs: Costs = DEFAULT_COSTS
    schedule_timeout_minutes: int = SCHEDULE_TIMEOUT_MINUTES


DEFAULT_RULES = Rules()


#: Builds the ``TickResult`` of a quiet minute (``idle``, ``waiting``, ``active``) from all its
#: fields in order, in C: ``TickResult(...)`` runs the named tuple's Python-level ``__new__``
#: (keywords parsed, defaults filled), 3-9 % of an in-place live tick's instructions, and every
#: pair builds one of these every minute. Only for those three results;
#: ``tests/test_core_machine.py`` pins the field order and checks each equals the keyword-built one.
_result = tuple.__new__


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
    # Every minute of every open position comes here: the result is built directly (``_result``)
    # and the progress clamped to 0..100 inline (a helper call per clamp was 4 % of the tick).
    return _result(TickResult, (
        "active", row.symbol, row.strategy, row.exchange, now, price, row, None, None, None,
        pnl, pnl_cost(pnl, rules.costs),
        0.0 if to_tp < 0 else 100.0 if to_tp > 100 else to_tp,
        0.0 if to_sl < 0 else 100.0 if to_sl > 100 else to_sl,
    ))


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

    A scheduled signal is a resting limit order: a long reacts to the ``low`` (a short to the
    ``high``) of the minute that just closed (``decide`` passes them; without them, ``price``
    stands in). A risk rejection at activation keeps the signal waiting, with the reason,
    until it times out.
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
    # Every minute of every scheduled signal comes here: built directly (``_result``).
    return _result(TickResult, ("waiting", row.symbol, row.strategy, row.exchange, now, price, row,
                                None, None, None, None, None, None, None))


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
        trailing_stop=None if signal.trailing_stop is None else float(signal.trailing_stop),
    )
    reason = risk(row, price, now) if risk else None
    if reason:
        return TickResult("idle", symbol, strategy, exchange, now, price, reason=f"risk: {reason}")
    return TickResult("opened" if now_open else "scheduled", symbol, strategy, exchange, now, price, row)


def idle(symbol: str, strategy: str, exchange: str, now: int, price: float, reason: str | None = None) -> TickResult:
    """A tick in which no signal exists and none was accepted."""
    return TickResult("idle", symbol, strategy, exchange, now, price, reason=reason)


class Ask(enum.Enum):
    """``decide``'s answer when the pair holds nothing and may ask its strategy (an enum member,
    so that ``decision is ASK`` narrows the type for the checker)."""

    ASK = "ask"


#: What ``decide`` returns when the pair holds nothing and may ask its strategy.
ASK: Final = Ask.ASK
Decision = TickResult | Literal[Ask.ASK]


def may_ask(accepting: bool, minute: int, interval_ms: int, last_bucket: int | None) -> bool:
    """True when a pair holding nothing asks its strategy at ``minute`` (docs/behaviour.md §4):
    it takes new signals, and ``minute`` lies in another throttle bucket than the last ask."""
    return accepting and bucket(minute, interval_ms) != last_bucket


def decide(
    key: tuple[str, str, str],
    row: SignalRow | None,
    minute: int,
    market: Market,
    asking: bool,
    rules: Rules = DEFAULT_RULES,
    risk: RiskGate | None = None,
) -> Decision:
    """What ``minute`` does to the pair ``key`` (symbol, strategy, exchange) holding ``row``.

    - nothing held: ``ASK`` when ``asking`` (``may_ask``), else ``idle``;
    - a scheduled signal: ``check_scheduled`` on the closed minute's low (long) / high (short);
    - an open position: ``check_open`` on the minute's VWAP.

    The one decision of a tick, for live and backtest alike (docs/behaviour.md §2, §11).
    """
    if row is None:
        if asking:
            return ASK
        # Every minute of every pair holding nothing comes here: built directly (``_result``).
        return _result(TickResult, ("idle", key[0], key[1], key[2], minute, market.price,
                                    None, None, None, None, None, None, None, None))
    if row.pending_at is None:
        return check_scheduled(row, minute, market.price, market.low, market.high, risk, rules)
    return check_open(row, minute, market.price, rules)


def answer(
    signal: object,
    key: tuple[str, str, str],
    minute: int,
    price: float,
    last_opened_id: str | None,
    used_ids: Container[str] = (),
    risk: RiskGate | None = None,
) -> TickResult | None:
    """What the strategy's answer ``signal`` at ``minute`` does (docs/behaviour.md §2, "nothing held").

    None (no signal) gives None: the tick is a plain ``idle``, with nothing to record (the
    caller builds it, if it wants one: a backtest does not). A signal whose id is that of the
    last opened one is ignored (``idle`` with the reason); else it is accepted
    (``opened``/``scheduled``) or refused by ``risk`` (``idle``, reason ``risk: ...``). Raises
    ``SignalError`` for an invalid signal, a chosen id in ``used_ids`` included, and
    ``SignalIdInUse`` when the id generated for it is there.
    """
    if signal is None:
        return None
    chosen = getattr(signal, "id", None)
    if chosen is not None and chosen == last_opened_id:
        return TickResult("idle", key[0], key[1], key[2], minute, price,
                          reason=f"ignored: same id as the last opened signal {chosen}")
    signal_id = chosen or make_signal_id(key[0], key[1], minute)
    if isinstance(signal_id, str) and signal_id in used_ids:
        # A journal holds one story per id: a second signal under it would mix two trades.
        if chosen:
            raise SignalError([f"id {signal_id!r} was used before by this pair (it is in the journal); "
                               "a strategy that sets Signal.id must make each new signal's id unique"])
        raise SignalIdInUse(
            f"no new signal this minute: its generated id {signal_id} is already in the journal "
            "(a strategy chose that id before, or the journal was written on a clock ahead of this one)")
    return accept(signal, key[0], key[1], key[2], signal_id, minute, price, risk)  # type: ignore[arg-type]
