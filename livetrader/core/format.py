"""How a price, a time and a span of time read, everywhere a person reads them.

One rule each, used by the live view, reports, ``livetrader status``, backtest summaries,
``livetrader recover`` and error messages (docs/behaviour.md §10):

* **Prices**: 6 significant digits, at least 2 decimals, trailing zeros past the second decimal
  dropped, thousands separated by commas. A BTC price keeps its cents (``64,123.45``), a token
  at a fraction of a cent keeps its moves (``0.00162008``, ``0.00001234``), ``1.23456`` is
  ``1.23456``. Missing or non-finite: ``-``.
* **Times**: ISO-8601 UTC from integer ms; :func:`format_time` to the second
  (``2024-01-01T12:00:05Z``), :func:`format_minute` to the minute (``2024-01-01T12:00Z``) where
  every time is a minute boundary (backtest ranges, signal times). Unknown: ``-``.
* **Percentages**: :func:`format_percent`, two decimals and a ``%`` (``0.60%``, ``-1.20%``);
  ``signed=True`` for a PnL, which reads ``+0.60%``. Missing or non-finite: ``-``.
* **Spans**: :func:`format_duration`, seconds with one decimal below a minute (``0.3s``,
  ``12.0s``), whole minutes from there (``45m``, ``2h 05m``, ``1d 02h 05m``). Unknown or
  negative: ``-``.

Pure and cheap (no clock, no locale): values read back from disk are not trusted, so anything
that is not a finite number (a string, a bool, NaN) prints ``-`` rather than raising.
File names and signal ids carry compact stamps of their own (``20240101T1200Z``): they are
names, not text for a person, and are made where they are defined.
"""

from __future__ import annotations

import math
import time
from typing import Any, Final

PRICE_DIGITS: Final = 6
"""Significant digits a price shows (never fewer than two decimals)."""

MISSING: Final = "-"
"""What a missing or non-finite value prints as."""

_MAX_DECIMALS: Final = 20


def _finite(value: Any) -> float | None:
    """``value`` as a finite float, else None (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def format_price(value: Any) -> str:
    """A price to 6 significant digits (at least 2 decimals); ``-`` for None, NaN, inf or a non-number.

    >>> format_price(64000), format_price(64123.456), format_price(1.23456), format_price(0.00162008)
    ('64,000.00', '64,123.46', '1.23456', '0.00162008')
    >>> format_price(1.5), format_price(-0.5), format_price(None)
    ('1.50', '-0.50', '-')
    """
    number = _finite(value)
    if number is None:
        return MISSING
    if number == 0:
        return "0.00"
    magnitude = math.floor(math.log10(abs(number)))
    decimals = min(_MAX_DECIMALS, max(2, PRICE_DIGITS - 1 - magnitude))
    text = f"{number:,.{decimals}f}"
    if decimals > 2:
        # Zeros after the sixth digit say nothing; two decimals keep a column of prices aligned.
        whole, _, fraction = text.partition(".")
        text = f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"
    return text


PERCENT_DECIMALS: Final = 2
"""Decimals a percentage shows: a hundredth of a percent is below any fee."""


def format_percent(value: Any, *, signed: bool = False, decimals: int = PERCENT_DECIMALS) -> str:
    """A percentage to ``decimals`` decimals with a ``%``; ``signed`` puts ``+`` before a gain.

    >>> format_percent(0.6), format_percent(-1.2), format_percent(0.604, signed=True), format_percent(None)
    ('0.60%', '-1.20%', '+0.60%', '-')
    """
    number = _finite(value)
    if number is None:
        return MISSING
    places = max(0, decimals)
    if round(number, places) == 0:
        return f"{0:.{places}f}%"  # too small to show is neither a gain nor a loss: no sign
    return f"{number:{'+' if signed else ''}.{places}f}%"


def _utc(ms: Any, pattern: str) -> str:
    number = _finite(ms)
    if number is None:
        return MISSING
    try:
        return time.strftime(pattern, time.gmtime(number // 1000))
    except (OverflowError, OSError, ValueError):
        return MISSING


def format_time(ms: Any) -> str:
    """Integer ms UTC as ISO-8601 to the second, ``2024-01-01T12:00:05Z``; ``-`` when unknown.

    >>> format_time(1_704_110_405_000), format_time(None)
    ('2024-01-01T12:00:05Z', '-')
    """
    return _utc(ms, "%Y-%m-%dT%H:%M:%SZ")


def format_minute(ms: Any) -> str:
    """Integer ms UTC as ISO-8601 to the minute, ``2024-01-01T12:00Z``; ``-`` when unknown.

    For times that are minute boundaries (backtest ranges, signal times): the seconds would
    always read ``:00``.

    >>> format_minute(1_704_110_400_000)
    '2024-01-01T12:00Z'
    """
    return _utc(ms, "%Y-%m-%dT%H:%MZ")


def format_duration(ms: Any) -> str:
    """A span of ms: ``0.3s`` / ``12.0s`` below a minute, then ``45m``, ``2h 05m``, ``1d 02h 05m``.

    Rounded down (a tenth of a second, then a minute), so a span never reads longer than it
    was; ``-`` when unknown or negative.

    >>> format_duration(300), format_duration(45 * 60_000 + 59_999), format_duration(26 * 3_600_000 + 180_000)
    ('0.3s', '45m', '1d 02h 03m')
    """
    number = _finite(ms)
    if number is None or number < 0:
        return MISSING
    span = int(number)
    if span < 60_000:
        tenths = span // 100
        return f"{tenths // 10}.{tenths % 10}s"
    minutes = span // 60_000
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h {mins:02d}m"
    if hours:
        return f"{hours}h {mins:02d}m"
    return f"{mins}m"
