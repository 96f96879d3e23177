"""Log output (JSON lines, console), redaction, and the live table."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
import structlog
from rich.console import Console

from livetrader.logs import get_logger
from livetrader.service.console import (
    ClockView,
    LiveView,
    PairView,
    add_redaction,
    clear_redaction,
    configure_logging,
    redact,
)

SECRET = "sk_live_0123456789abcdef"


class FakeTTY(io.StringIO):
    """A terminal, as far as isatty() can tell."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    # configure_logging changes process-wide state; put it back so other test files are unaffected.
    saved = structlog.get_config()
    root = logging.getLogger()
    saved_handlers = list(root.handlers)
    yield
    structlog.configure(**saved)
    root.handlers[:] = saved_handlers
    clear_redaction()


def json_lines(stream: io.StringIO) -> list[dict]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


# --- JSON lines ---------------------------------------------------------------------------------


def test_json_lines_one_object_per_line_with_fields() -> None:
    out = io.StringIO()
    configure_logging(json_lines=True, stream=out)
    log = get_logger("livetrader.test")
    log.info("tick", symbol="BTC/USDT", price=50000.5)
    log.warning("lagging", lag_ms=7000)

    first, second = json_lines(out)
    assert list(first)[:3] == ["timestamp", "level", "event"]
    assert first["event"] == "tick" and first["level"] == "info"
    assert first["symbol"] == "BTC/USDT" and first["price"] == 50000.5
    assert first["logger"] == "livetrader.test"
    assert first["timestamp"].endswith("Z") and "T" in first["timestamp"]
    assert second["level"] == "warning" and second["lag_ms"] == 7000


def test_auto_detect_chooses_json_when_not_a_terminal() -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    get_logger().info("hello")
    assert json_lines(out)[0]["event"] == "hello"


def test_unserialisable_values_do_not_break_logging() -> None:
    out = io.StringIO()
    configure_logging(json_lines=True, stream=out)
    get_logger().info("odd", obj=object(), big=2**80, tags={"a"})
    (line,) = json_lines(out)
    assert line["big"] == 2**80 and line["tags"] == ["a"] and "object" in line["obj"]


def test_level_filtering_hides_debug_at_info() -> None:
    out = io.StringIO()
    configure_logging(json_lines=True, level="INFO", stream=out)
    log = get_logger()
    log.debug("hidden")
    log.info("shown")
    assert [line["event"] for line in json_lines(out)] == ["shown"]

    out = io.StringIO()
    configure_logging(json_lines=True, level="debug", stream=out)
    log.debug("now shown")  # the same logger follows the new configuration
    assert [line["event"] for line in json_lines(out)] == ["now shown"]


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging(level="LOUD", stream=io.StringIO())


def test_stdlib_warnings_are_routed_at_warning_level() -> None:
    out = io.StringIO()
    configure_logging(json_lines=True, level="DEBUG", stream=out)
    configure_logging(json_lines=True, level="DEBUG", stream=out)  # idempotent: one handler
    lib = logging.getLogger("ccxt.test")
    lib.setLevel(logging.DEBUG)
    try:
        lib.info("chatty")
        lib.warning("rate limited %s", "binance")
    finally:
        lib.setLevel(logging.NOTSET)
    (line,) = json_lines(out)
    assert line == line | {"event": "rate limited binance", "level": "warning", "logger": "ccxt.test"}


def test_console_renderer_on_a_terminal() -> None:
    tty = FakeTTY()
    configure_logging(stream=tty)
    get_logger().info("started", pairs=3)
    text = tty.getvalue()
    assert "started" in text and "pairs" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


@pytest.mark.e2e
def test_lines_survive_sigkill_through_a_pipe(tmp_path) -> None:
    # Under systemd stdout is a pipe: nothing may sit in a buffer when the process is killed.
    script = textwrap.dedent(
        """
        import os, signal
        from livetrader.logs import get_logger
        from livetrader.service.console import configure_logging
        configure_logging()
        get_logger().info("before kill", n=1)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == -9
    (line,) = [json.loads(s) for s in done.stdout.splitlines()]
    assert line["event"] == "before kill" and line["n"] == 1


@pytest.mark.e2e
def test_import_does_not_pull_in_rich_or_structlog() -> None:
    # Modules that log at import time or that users import stay light: structlog comes with the first line.
    code = (
        "import sys, livetrader.service.console, livetrader.events, livetrader.service.systemd,"
        " livetrader.report.markdown; from livetrader.logs import get_logger; get_logger('x');"
        "print(sorted(m for m in ('rich', 'structlog') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == "[]", done.stderr


# --- Redaction ----------------------------------------------------------------------------------


def test_redaction_in_event_field_and_nested_values() -> None:
    out = io.StringIO()
    configure_logging(json_lines=True, stream=out)
    add_redaction([SECRET])
    log = get_logger()
    log.info(f"using key {SECRET}")
    log.info("request", headers={"X-MBX-APIKEY": SECRET}, args=[1, ("a", f"k={SECRET}")], url=f"?key={SECRET}")

    assert SECRET not in out.getvalue()
    event, request = json_lines(out)
    assert event["event"] == "using key ***"
    assert request["headers"] == {"X-MBX-APIKEY": "***"}
    assert request["args"] == [1, ["a", "k=***"]]
    assert request["url"] == "?key=***"


def test_redaction_in_exception_traceback_and_reprs() -> None:
    out = io.StringIO()
    configure_logging(json_lines=True, stream=out)
    add_redaction([SECRET])
    log = get_logger()
    try:
        raise RuntimeError(f"401 for key {SECRET}")
    except RuntimeError as exc:
        log.exception("fetch failed")
        log.error("fetch failed again", error=exc)

    assert SECRET not in out.getvalue()
    first, second = json_lines(out)
    assert "Traceback" in first["exception"] and "401 for key ***" in first["exception"]
    assert second["error"] == "RuntimeError('401 for key ***')"


def test_redaction_of_stdlib_records_and_console_output() -> None:
    tty = FakeTTY()
    configure_logging(stream=tty)
    add_redaction([SECRET])
    logging.getLogger("asyncio").error("task failed with %s", SECRET)
    get_logger().info("key", value=SECRET)
    assert SECRET not in tty.getvalue() and "***" in tty.getvalue()


def test_short_secrets_are_ignored_and_longest_wins() -> None:
    add_redaction(["abc", "", SECRET, SECRET[:8]])
    assert redact("abc") == "abc"
    assert redact(f"x {SECRET} y {SECRET[:8]}") == "x *** y ***"


# --- Prices and the live view -------------------------------------------------------------------


NOW_MS = 1_700_000_000_000  # 2023-11-14 22:13:20 UTC

PAIRS = [
    PairView(
        symbol="BTC/USDT",
        strategy="breakout",
        exchange="binance",
        state="open",
        price=50000,
        position="long",
        price_open=50123,
        take_profit=51000,
        stop_loss=49500,
        pnl_percentage=-0.25,
        last_tick_at=NOW_MS,
        lag_ms=12_000,
        error_count=2,
        last_error="NetworkError: " + "x" * 100,
        closed_trades=3,
        won_trades=2,
        lost_trades=1,
        realised_pnl=1.5,
    ),
    PairView(
        symbol="SHIB/USDT",
        strategy="meanrev",
        exchange="sim",
        state="scheduled",
        price=0.00001234,
        position="short",
        price_open=0.0000125,
        last_tick_at=NOW_MS,
        lag_ms=100,
        closed_trades=1,
        lost_trades=1,
        realised_pnl=-0.5,
    ),
    PairView(symbol="ETH/USDT", strategy="breakout", exchange="binance", state="idle"),
]


def render(view: LiveView) -> str:
    # Wide enough for every column on one line: full ISO times take 20 characters.
    console = Console(file=io.StringIO(), width=220)
    console.print(view.render())
    return console.file.getvalue()


def test_live_view_renders_one_row_per_pair() -> None:
    text = render(LiveView(lambda: PAIRS))
    lines = text.splitlines()
    for symbol, state in [("BTC/USDT", "open"), ("SHIB/USDT", "scheduled"), ("ETH/USDT", "idle")]:
        (row,) = [line for line in lines if symbol in line]
        assert f" {state} " in row
    assert "50,000.00" in text and "0.00001234" in text
    assert "long @ 50,123.00 TP 51,000.00 SL 49,500.00" in text
    assert "scheduled short @ 0.0000125" in text
    assert "-0.25%" in text
    assert "2023-11-14T22:13:20Z lag 12.0s" in text and "lag 0" not in text
    assert "2 NetworkError: xxx" in text and "x" * 60 not in text
    assert "3 pairs · 1 open · 4 closed trades (2 won, 2 lost) · mean +0.25% per trade" in text
    assert not re.search(r"N/A|\bNone\b|\bnan\b|\binf\b", text)


def test_live_view_redacts_errors_and_survives_a_failing_provider() -> None:
    add_redaction([SECRET])
    pair = PairView("BTC/USDT", "s", "binance", "parked", error_count=1, last_error=f"bad key {SECRET}")
    assert "bad key ***" in render(LiveView(lambda: [pair]))

    def broken() -> list[PairView]:
        raise KeyError(SECRET)

    text = render(LiveView(broken))
    assert "cannot read the pairs" in text and SECRET not in text


def test_live_view_as_a_context_manager() -> None:
    console = Console(file=io.StringIO(), width=200)
    with LiveView(lambda: PAIRS, refresh_per_second=20, console=console) as view:
        view.refresh()
    view.refresh()  # after exit: a no-op, not an error
    assert "BTC/USDT" in console.file.getvalue()


# --- Readable numbers and times in console lines (only there) ----------------------------------

TICK = {"at": 1_796_209_800_000, "symbol": "BTC/USDT", "price": 43123.456789123, "price_open": 43000.123456789,
        "take_profit": 43258.9999999, "stop_loss": 0.000012345678, "pnl_percentage": -0.123456789,
        "progress_tp": 33.333333333, "behind_seconds": 1.23456789012}


def test_console_lines_show_iso_times_and_rounded_prices_and_percentages() -> None:
    tty = FakeTTY()
    configure_logging(stream=tty)
    get_logger().info("closed", **TICK, timeline={"origin_sim": 1_796_209_800_000, "speed": 3000.0})
    line = re.sub(r"\x1b\[[0-9;]*m", "", tty.getvalue())  # colours off, the text is what a person reads
    assert "at=2026-12-02T11:10:00Z" in line and "origin_sim': '2026-12-02T11:10:00Z'" in line
    assert "price=43,123.46" in line and "price_open=43,000.12" in line and "take_profit=43,259.00" in line
    assert "stop_loss=0.0000123457" in line
    assert "pnl_percentage=-0.12%" in line and "progress_tp=33.33%" in line and "behind_seconds=1.23457" in line
    assert not re.search(r"\b\d{13}\b", line), "a raw epoch in ms"
    # Seven decimals or more only on a price below a cent, whose six digits start after zeros.
    assert not re.search(r"(?<![\d.])(?!0\.0)[\d,]+\.\d{7,}", line), "an unrounded float"
    # The line's own stamp (the wall clock) reads to the second.
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ", line)


def test_json_lines_keep_the_exact_numbers() -> None:
    out = io.StringIO()
    configure_logging(json_lines=True, stream=out)
    get_logger().info("closed", **TICK)
    (line,) = json_lines(out)
    assert {k: line[k] for k in TICK} == TICK


def test_humanizing_leaves_counts_flags_and_texts_alone() -> None:
    tty = FakeTTY()
    configure_logging(stream=tty)
    get_logger().info("ready", pairs=3, open=True, at="not a time", started_at="2024-01-01T00:00:00Z", attempt=2)
    line = re.sub(r"\x1b\[[0-9;]*m", "", tty.getvalue())
    assert "pairs=3" in line and "open=True" in line and "at='not a time'" in line and "attempt=2" in line
    assert "started_at=2024-01-01T00:00:00Z" in line


# --- The live view on 80 columns, its clock, its footer -----------------------------------------


def render_at(width: int, pairs: list[PairView], clock: ClockView | None = None) -> str:
    console = Console(file=io.StringIO(), width=width)
    console.print(LiveView(lambda: pairs, clock_provider=(lambda: clock) if clock else None).render())
    return console.file.getvalue()


@pytest.mark.parametrize("width", [80, 100, 120])
def test_live_view_fits_the_terminal_with_its_key_columns_whole(width: int) -> None:
    long_named = PairView("DOGE/USDT:USDT", "mean-reversion-v2", "binance", "scheduled", price=0.0812345,
                          position="short", price_open=0.0825, take_profit=0.08, stop_loss=0.084,
                          last_tick_at=NOW_MS, lag_ms=65_000, error_count=12, last_error="x" * 300)
    text = render_at(width, [*PAIRS, long_named], ClockView(NOW_MS, simulated=True, speed=3000))
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    header = next(line for line in lines if "Symbol" in line)
    for column in ("Symbol", "Strategy", "State", "PnL", "Errors"):
        assert column in header
    for pair, pnl in [(PAIRS[0], "-0.25%"), (PAIRS[1], "-"), (PAIRS[2], "-"), (long_named, "-")]:
        (row,) = [line for line in lines if line.startswith(pair.symbol + " ")]
        assert f" {pair.strategy} " in row and f" {pair.state} " in row and f" {pnl} " in row, row


def test_live_view_at_80_columns_keeps_the_price_and_a_last_tick() -> None:
    text = render_at(80, PAIRS, ClockView(NOW_MS + 5_000, simulated=True, speed=3000))
    (btc,) = [line for line in text.splitlines() if line.startswith("BTC/USDT")]
    assert "50,000.00" in btc and "long" in btc and "22:13:20 lag 12.0s" in btc


def test_live_view_says_its_clock_is_simulated_with_full_dates() -> None:
    text = render_at(200, PAIRS, ClockView(NOW_MS + 5_000, simulated=True, speed=3000))
    assert "simulated clock 3000x · simulated now 2023-11-14T22:13:25Z (UTC)" in text
    assert "Last tick (sim)" in text and "2023-11-14T22:13:20Z" in text
    real = render_at(200, PAIRS, ClockView(NOW_MS + 5_000))
    assert "real clock · now 2023-11-14T22:13:25Z (UTC)" in real and "Last tick (UTC)" in real
    assert "simulated" not in real


def test_live_view_short_last_tick_keeps_the_date_of_another_day() -> None:
    stale = PairView("ETH/USDT", "s", "sim", "idle", price=2000.0, last_tick_at=NOW_MS - 86_400_000)
    text = render_at(80, [stale], ClockView(NOW_MS, simulated=True, speed=3000))
    assert "2023-11-13T22:13:20Z" in text


def test_live_view_footer_shows_the_mean_per_trade_not_a_sum_of_percentages() -> None:
    pairs = [PairView("A", "s", "sim", "idle", closed_trades=1, won_trades=1, realised_pnl=10.0),
             PairView("B", "s", "sim", "idle", closed_trades=3, won_trades=1, lost_trades=2, realised_pnl=-2.0)]
    text = render_at(120, pairs)
    assert "4 closed trades (2 won, 2 lost) · mean +2.00% per trade" in text
    assert "+8.00%" not in text and "realised" not in text
    none_closed = render_at(120, [PairView("A", "s", "sim", "idle")])
    assert "0 closed trades" in none_closed and "mean" not in none_closed
