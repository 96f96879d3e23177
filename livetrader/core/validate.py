"""Signal validation (docs/behaviour.md §5): every problem of a signal, reported at once."""

from __future__ import annotations

import math

from livetrader.core.signal import MAX_MINUTES, Signal

MIN_TAKE_PROFIT_PERCENT = 0.5
MIN_STOP_LOSS_PERCENT = 0.5
MAX_STOP_LOSS_PERCENT = 20.0
#: Longest ``note`` accepted: it is journaled with every transition and shown in reports.
MAX_NOTE_LENGTH = 1000
# Distances are compared with this slack in the signal's favour, so a level exactly
# 0.5 % away is accepted whatever the float rounding of ``price * 1.005``.
TOLERANCE = 1e-9


class SignalError(ValueError):
    """A strategy returned an invalid signal; ``problems`` lists every rule it broke."""

    #: The ``reason`` of the idle tick it makes.
    reason = "invalid signal"

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid signal: " + "; ".join(problems))
        self.problems = problems


class SignalIdInUse(SignalError):
    """The id generated for a new signal is in the pair's journal already: no signal this minute."""

    reason = "signal id already used"

    def __init__(self, message: str) -> None:
        ValueError.__init__(self, message)
        self.problems = [message]


def _is_price(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _distance_percent(level: float, entry: float) -> float:
    return abs(level - entry) / entry * 100.0


def _text_problem(name: str, value: object, limit: int | None) -> str | None:
    """Why ``value`` cannot be journaled as the signal's text field ``name``, or None.

    Journal lines, logs and reports are UTF-8: a lone surrogate (``"\\ud800"``) cannot be
    written, and would otherwise fail the tick later, at journaling time, under another name.
    The message quotes the offending character escaped, so the message itself can be logged.
    """
    if not isinstance(value, str):
        return f"{name} must be text (a str), got {type(value).__name__}"
    if limit is not None and len(value) > limit:
        return f"{name} must be at most {limit} characters, got {len(value)}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"{name} must be valid Unicode text (UTF-8 encodable); it holds {ascii(value[exc.start])} at "
                f"position {exc.start}, half of a surrogate pair")
    return None


def signal_problems(signal: object, price: float) -> list[str]:  # noqa: C901 - one branch per rule, every problem reported at once
    """Every rule of docs/behaviour.md §5 that ``signal`` breaks at the current ``price`` (empty when valid)."""
    if not isinstance(signal, Signal):
        return [f"expected a Signal or None, got {type(signal).__name__}"]
    problems: list[str] = []
    long = signal.position == "long"
    if signal.position not in ("long", "short"):
        problems.append(f"position must be 'long' or 'short', got {signal.position!r}")
    prices = {"take_profit": signal.take_profit, "stop_loss": signal.stop_loss}
    if signal.price_open is not None:
        prices["price_open"] = signal.price_open
    bad = [name for name, value in prices.items() if not _is_price(value)]
    problems += [f"{name} must be a finite number > 0, got {prices[name]!r}" for name in bad]
    minutes: object = signal.minutes  # untrusted: strategy code may put any object here
    if isinstance(minutes, float) and minutes.is_integer():
        minutes = int(minutes)
    if not isinstance(minutes, int) or isinstance(minutes, bool):
        problems.append(f"minutes must be a whole number, got {signal.minutes!r}")
    elif not 0 < minutes <= MAX_MINUTES:
        problems.append(f"minutes must be > 0 and <= {MAX_MINUTES}, got {minutes}")
    note_problem = _text_problem("note", signal.note, MAX_NOTE_LENGTH)
    if note_problem:
        problems.append(note_problem)
    if isinstance(signal.id, str):  # the id is journaled the same way
        id_problem = _text_problem("id", signal.id, None)
        if id_problem:
            problems.append(id_problem)
    trailing: object = signal.trailing_stop
    if trailing is not None and not (isinstance(trailing, (int, float)) and not isinstance(trailing, bool)
                                     and MIN_STOP_LOSS_PERCENT / 100 - TOLERANCE <= trailing
                                     <= MAX_STOP_LOSS_PERCENT / 100 + TOLERANCE):
        problems.append(f"trailing_stop must be a fraction from {MIN_STOP_LOSS_PERCENT / 100:g} to "
                        f"{MAX_STOP_LOSS_PERCENT / 100:g} (0.01: 1 % behind the price), got {trailing!r}")
    if bad or signal.position not in ("long", "short"):
        return problems

    tp, sl = signal.take_profit, signal.stop_loss
    entry = signal.price_open if signal.price_open is not None else price
    if long and not tp > entry > sl:
        problems.append(f"long needs take_profit > entry > stop_loss, got {tp} > {entry} > {sl}")
    if not long and not tp < entry < sl:
        problems.append(f"short needs take_profit < entry < stop_loss, got {tp} < {entry} < {sl}")
    tp_distance = _distance_percent(tp, entry)
    sl_distance = _distance_percent(sl, entry)
    if tp_distance < MIN_TAKE_PROFIT_PERCENT - TOLERANCE:
        problems.append(f"take_profit is {tp_distance:.4g}% from the entry; it must be at least "
                        f"{MIN_TAKE_PROFIT_PERCENT}% away to cover fees")
    if sl_distance < MIN_STOP_LOSS_PERCENT - TOLERANCE:
        problems.append(f"stop_loss is {sl_distance:.4g}% from the entry; it must be at least "
                        f"{MIN_STOP_LOSS_PERCENT}% away")
    if sl_distance > MAX_STOP_LOSS_PERCENT + TOLERANCE:
        problems.append(f"stop_loss is {sl_distance:.4g}% from the entry; it must be at most "
                        f"{MAX_STOP_LOSS_PERCENT}% away")
    if opens_now(signal, price):
        # A position that would open already past one of its exits would close at once at a
        # price it never traded at.
        beyond_sl = price <= sl if long else price >= sl
        beyond_tp = price >= tp if long else price <= tp
        if beyond_sl:
            problems.append(f"the current price {price} is already at or beyond the stop_loss {sl}")
        if beyond_tp:
            problems.append(f"the current price {price} is already at or beyond the take_profit {tp}")
    elif not (min(sl, tp) < entry < max(sl, tp)):
        problems.append(f"a scheduled price_open {entry} must lie strictly between stop_loss and take_profit")
    return problems


def opens_now(signal: Signal, price: float) -> bool:
    """True when the signal opens at once: a market entry, or an entry price already reached."""
    if signal.price_open is None:
        return True
    return price <= signal.price_open if signal.position == "long" else price >= signal.price_open


def validate_signal(signal: object, price: float) -> Signal:
    """Return the signal if it is valid, else raise SignalError listing every problem."""
    problems = signal_problems(signal, price)
    if problems:
        raise SignalError(problems)
    assert isinstance(signal, Signal)
    return signal
