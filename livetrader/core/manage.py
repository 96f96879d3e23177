"""A strategy steering its open position (docs/behaviour.md §2, "Steering an open position").

Once a minute, while a pair holds an open position that the engine's own checks (expiry,
take-profit, stop-loss) did not close, a strategy defining ``manage(ctx, position)`` is asked
what to do with it. It answers nothing (carry on), ``Exit`` (close now, at the minute's price,
``close_reason`` ``signal``) or ``Levels`` (new take-profit and/or stop-loss, applied from the
next minute, journaled as ``adjusted``). A signal's ``trailing_stop`` is the built-in answer on
the same path: the stop-loss follows the price, only ever in the position's favour.

Pure: the shell (live pair, backtest) calls the strategy and passes its answer to ``steer``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from livetrader.core.machine import DEFAULT_RULES, Rules, close
from livetrader.core.signal import SignalRow, TickResult
from livetrader.core.validate import (
    MAX_STOP_LOSS_PERCENT,
    MIN_STOP_LOSS_PERCENT,
    MIN_TAKE_PROFIT_PERCENT,
    TOLERANCE,
    SignalError,
)


@dataclass(frozen=True, slots=True)
class Exit:
    """``manage``'s answer: close the position now, at the minute's price (``close_reason``
    ``signal``); ``note`` says why (journaled as the close's ``reason``)."""

    note: str = ""


@dataclass(frozen=True, slots=True)
class Levels:
    """``manage``'s answer: new ``take_profit`` and/or ``stop_loss`` (None keeps the level),
    applied from the next minute. They are validated like a new signal's at the current price.
    A stop-loss moves only in the position's favour (up for a long) unless ``loosen`` is True."""

    take_profit: float | None = None
    stop_loss: float | None = None
    loosen: bool = False


@dataclass(frozen=True, slots=True)
class Held:
    """What ``manage`` is shown of the open position (read-only): its signal and how it stands."""

    id: str
    position: str
    price_open: float
    take_profit: float
    stop_loss: float
    opened_at: int
    minutes: int
    note: str
    trailing_stop: float | None
    #: The minute's price and the position's PnL at it (percent, costs included).
    price: float
    pnl_percentage: float

    @classmethod
    def of(cls, active: TickResult) -> Held:
        """The view of the position an ``active`` result holds."""
        row = active.signal
        assert row is not None and row.pending_at is not None
        return cls(row.id, row.position, row.price_open, row.take_profit, row.stop_loss, row.pending_at, row.minutes,
                   row.note, row.trailing_stop, active.price, active.pnl_percentage or 0.0)


def trail(row: SignalRow, price: float) -> Levels | None:
    """The trailing stop's answer at ``price``: the stop-loss ``trailing_stop`` behind the price
    when that is in the position's favour, else None."""
    if row.trailing_stop is None:
        return None
    if row.position == "long":
        level = price * (1.0 - row.trailing_stop)
        return Levels(stop_loss=level) if level > row.stop_loss else None
    level = price * (1.0 + row.trailing_stop)
    return Levels(stop_loss=level) if level < row.stop_loss else None


def level_problems(row: SignalRow, take_profit: object, stop_loss: object, price: float, loosen: bool) -> list[str]:
    """Every rule new levels of the open ``row`` break at ``price`` (empty when valid). A level
    that changes is checked as a new signal's would be at this price (docs/behaviour.md §5: the
    right side of the price, the least and most distances); one that stays is not re-judged."""
    long = row.position == "long"
    problems: list[str] = []
    for name, value in (("take_profit", take_profit), ("stop_loss", stop_loss)):
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                and value > 0):
            problems.append(f"{name} must be a finite number > 0, got {value!r}")
    if problems:
        return problems
    assert isinstance(take_profit, (int, float)) and isinstance(stop_loss, (int, float))
    if take_profit != row.take_profit:
        if (take_profit <= price) if long else (take_profit >= price):
            problems.append(f"take_profit {take_profit:g} must be {'above' if long else 'below'} the price {price:g}")
        elif abs(take_profit - price) / price * 100 < MIN_TAKE_PROFIT_PERCENT - TOLERANCE:
            problems.append(f"take_profit {take_profit:g} must be at least {MIN_TAKE_PROFIT_PERCENT}% from the "
                            f"price {price:g}")
    if stop_loss != row.stop_loss:
        distance = abs(stop_loss - price) / price * 100
        if (stop_loss >= price) if long else (stop_loss <= price):
            problems.append(f"stop_loss {stop_loss:g} must be {'below' if long else 'above'} the price {price:g}")
        elif not MIN_STOP_LOSS_PERCENT - TOLERANCE <= distance <= MAX_STOP_LOSS_PERCENT + TOLERANCE:
            problems.append(f"stop_loss {stop_loss:g} is {distance:.4g}% from the price {price:g}; it must be "
                            f"{MIN_STOP_LOSS_PERCENT}% to {MAX_STOP_LOSS_PERCENT}% away")
        elif not loosen and ((stop_loss < row.stop_loss) if long else (stop_loss > row.stop_loss)):
            problems.append(f"stop_loss {stop_loss:g} moves against the position (from {row.stop_loss:g}); "
                            "return Levels(..., loosen=True) to do that on purpose")
    return problems


def steer(active: TickResult, answer: object, rules: Rules = DEFAULT_RULES) -> TickResult:
    """What ``manage``'s ``answer`` does to the ``active`` position: ``active`` itself (nothing,
    or levels that change nothing), ``closed`` (``Exit``) or ``adjusted`` (``Levels``).

    Raises ``SignalError`` listing every problem of an answer that is not one of these, or of
    levels that are invalid at the current price or loosen the stop-loss without ``loosen``.
    """
    row = active.signal
    assert active.action == "active" and row is not None
    if answer is None:
        return active
    if isinstance(answer, Exit):
        if not isinstance(answer.note, str):
            raise SignalError([f"Exit note must be text, got {type(answer.note).__name__}"])
        closed = close(row, active.at, active.price, active.price, "signal", rules)
        return closed._replace(reason=answer.note or None)
    if not isinstance(answer, Levels):
        raise SignalError([f"manage must return None, Exit(...) or Levels(...), got {type(answer).__name__}"])
    take_profit = row.take_profit if answer.take_profit is None else answer.take_profit
    stop_loss = row.stop_loss if answer.stop_loss is None else answer.stop_loss
    problems = level_problems(row, take_profit, stop_loss, active.price, answer.loosen)
    if problems:
        raise SignalError(problems)
    if take_profit == row.take_profit and stop_loss == row.stop_loss:
        return active
    moved = replace(row, take_profit=float(take_profit), stop_loss=float(stop_loss))
    return active._replace(action="adjusted", signal=moved)
