"""The one way prices, times and spans read (livetrader.core.format), and that every output uses it."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from livetrader.core.format import format_duration, format_minute, format_percent, format_price, format_time
from livetrader.report.markdown import build_report, stats_for
from livetrader.service.console import LiveView, PairView

M = 60_000
H = 60 * M
DAY0 = 1_704_067_200_000  # 2024-01-01T00:00Z


@pytest.mark.parametrize(
    ("value", "text"),
    [
        # Six significant digits, never fewer than two decimals.
        (1.23456, "1.23456"),
        (1.234567, "1.23457"),  # rounded half to even on the binary value, like every f-string
        (12.3456, "12.3456"),
        (0.12345, "0.12345"),
        (0.5, "0.50"),
        (1.5, "1.50"),
        (1.2, "1.20"),
        # Tiny prices keep their digits.
        (0.00162008, "0.00162008"),
        (0.00001234, "0.00001234"),
        (0.0000125, "0.0000125"),
        (1.23456789e-9, "0.00000000123457"),
        # Big prices keep their cents and a thousands separator.
        (64_000, "64,000.00"),
        (64_123.456, "64,123.46"),
        (50_000.123456, "50,000.12"),
        (1_234_567.891, "1,234,567.89"),
        (1e12, "1,000,000,000,000.00"),
        # Rounding that carries into a new digit.
        (999.999999, "1,000.00"),
        (0.0099999999, "0.01"),
        # Negative values (a PnL, a difference) read the same way.
        (-1.23456, "-1.23456"),
        (-64_123.456, "-64,123.46"),
        (-0.00162008, "-0.00162008"),
        # Nothing to show.
        (0, "0.00"),
        (0.0, "0.00"),
        (None, "-"),
        (float("nan"), "-"),
        (float("inf"), "-"),
        (float("-inf"), "-"),
        ("12.5", "-"),  # read back from disk: a string is not a price
        (True, "-"),
    ],
)
def test_format_price(value: object, text: str) -> None:
    assert format_price(value) == text


@pytest.mark.parametrize(
    ("ms", "second", "minute"),
    [
        (DAY0, "2024-01-01T00:00:00Z", "2024-01-01T00:00Z"),
        (DAY0 + 12 * H + 34 * M + 56_789, "2024-01-01T12:34:56Z", "2024-01-01T12:34Z"),  # rounded down
        (DAY0 + 0.5, "2024-01-01T00:00:00Z", "2024-01-01T00:00Z"),
        (0, "1970-01-01T00:00:00Z", "1970-01-01T00:00Z"),
        (None, "-", "-"),
        (float("nan"), "-", "-"),
        ("2024-01-01", "-", "-"),
        (10**30, "-", "-"),  # beyond any calendar
    ],
)
def test_format_time_and_minute(ms: object, second: str, minute: str) -> None:
    assert format_time(ms) == second
    assert format_minute(ms) == minute


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0.0s"),
        (300, "0.3s"),
        (12_000, "12.0s"),
        (59_999, "59.9s"),  # rounded down: never longer than it was
        (M, "1m"),
        (45 * M + 59_999, "45m"),
        (2 * H + 5 * M, "2h 05m"),
        (26 * H + 3 * M, "1d 02h 03m"),
        (None, "-"),
        (-1, "-"),
        (float("nan"), "-"),
    ],
)
def test_format_duration(ms: object, text: str) -> None:
    assert format_duration(ms) == text


@pytest.mark.parametrize(
    ("value", "signed", "text"),
    [
        (0.6, False, "0.60%"),
        (-1.2, False, "-1.20%"),
        (0.604, True, "+0.60%"),
        (-0.123456789, True, "-0.12%"),
        (12.345678, False, "12.35%"),
        # Too small to show is neither a gain nor a loss.
        (-0.001, True, "0.00%"),
        (0.0, True, "0.00%"),
        (None, True, "-"),
        (float("nan"), False, "-"),
        (True, False, "-"),
    ],
)
def test_format_percent(value: object, signed: bool, text: str) -> None:
    assert format_percent(value, signed=signed) == text


def test_format_percent_decimals() -> None:
    assert format_percent(33.333333, decimals=3) == "33.333%"


def test_the_live_view_and_a_report_print_the_same_price_and_time() -> None:
    price, at = 1.23456, DAY0 + 12 * H + 5_000
    pair = PairView("BTCUSDT", "s", "sim", "idle", price=price, last_tick_at=at)
    console = Console(file=io.StringIO(), width=200)
    console.print(LiveView(lambda: [pair]).render())
    live = console.file.getvalue()
    records = [{"event": "idle", "symbol": "BTCUSDT", "at": at, "price": price}]
    report = build_report("r", records, stats=stats_for(records), now_ms=at)
    for text in (live, report):
        assert format_price(price) == "1.23456" and "1.23456" in text
        assert "2024-01-01T12:00:05Z" in text
