"""What the daemon shows: structured log lines, secret redaction, and the live table of pairs.

Two outputs, chosen by where stdout goes:

- not a terminal (systemd, a pipe, a file): one JSON object per line, ``timestamp`` (ISO-8601
  UTC), ``level``, ``event``, then the key-values. journald stores each line as one entry.
- a terminal: structlog's readable console renderer, its times ISO and its numbers rounded
  (:func:`humanize_fields`), and for ``livetrader run`` a rich table (:class:`LiveView`),
  fitted to the terminal's width, that log lines scroll above.

Importing this module imports neither structlog nor rich: importing structlog imports rich
(``structlog.dev`` probes for it), about 0.2 s, and the CLI must answer ``--help`` at once.
Both are imported inside the functions that need them.

Modules log through :func:`livetrader.logs.get_logger`; :func:`configure_logging` here is the
one place that decides where their lines (and the standard ``logging`` records of libraries) go.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO, cast

import orjson

from livetrader import redaction
from livetrader.core.format import MISSING, format_duration, format_percent, format_price, format_time

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live
    from rich.table import Table
    from structlog.typing import EventDict, WrappedLogger

__all__ = [
    "ClockView",
    "LiveView",
    "PairView",
    "add_redaction",
    "clear_redaction",
    "configure_logging",
    "humanize_fields",
    "redact",
    "redact_secrets",
]

_LEVELS = {
    "CRITICAL": logging.CRITICAL,
    "ERROR": logging.ERROR,
    "WARNING": logging.WARNING,
    "WARN": logging.WARNING,
    "INFO": logging.INFO,
    "DEBUG": logging.DEBUG,
}

# ---------------------------------------------------------------------------------------------
# Redaction
# ---------------------------------------------------------------------------------------------

# The one registry (livetrader.redaction), under the names this module has always exported.
add_redaction = redaction.register
clear_redaction = redaction.clear
redact = redaction.redact


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: replace registered secrets in every string of the event, recursively.

    It runs after ``format_exc_info``, so a traceback is already text and is redacted too.
    """
    return cast("EventDict", redaction.redact_value(event_dict))


# ---------------------------------------------------------------------------------------------
# Logging
# ---------------------------------------------------------------------------------------------


def _json_fallback(obj: Any) -> Any:
    if isinstance(obj, set | frozenset):
        return list(obj)
    return repr(obj)


def _render_json(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> str:
    # The three fixed fields first so `journalctl -o cat` lines read left to right.
    ordered = {
        "timestamp": event_dict.pop("timestamp", None),
        "level": event_dict.pop("level", None),
        "event": event_dict.pop("event", None),
        **event_dict,
    }
    try:
        data = orjson.dumps(ordered, default=_json_fallback, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        # orjson refuses what json accepts (integers beyond 64 bits, for one); a log call must
        # never take the daemon down, so fall back to the slow path.
        return json.dumps(ordered, default=_json_fallback, ensure_ascii=False)
    # Text, not bytes: the line goes through sys.stdout's text layer, keeping order with print()
    # and following rich's redirection of sys.stdout while the live view is up.
    return data.decode()


#: Keys whose integer value is a time in ms UTC (besides every ``*_at`` key): ``at`` of a tick,
#: ``since`` of a stall, ``now`` of a clock, a simulated timeline's two origins.
TIME_KEYS = frozenset({"at", "since", "now", "origin_wall", "origin_sim"})
#: Keys holding a price (besides every ``price_*`` / ``*_price`` key) or an amount of quote currency.
PRICE_KEYS = frozenset({"price", "price_open", "price_close", "take_profit", "stop_loss", "pnl_cost"})
#: Keys holding a percentage (besides every ``*_percentage`` / ``*_pct`` key); those of a PnL get a sign.
PERCENT_KEYS = frozenset({"pnl_percentage", "progress_tp", "progress_sl", "realised_pnl"})
_SIGNED_PERCENT_KEYS = frozenset({"pnl_percentage", "realised_pnl"})
#: Significant digits of any other float in a console line.
_OTHER_FLOAT_DIGITS = 6
#: Integers this large under a time key are ms since the epoch (year 2001 on); smaller ones are
#: left alone (a count, seconds).
_MS_EPOCH_FLOOR = 10**12


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _humanize(key: str, value: Any) -> Any:
    """One console field as a person reads it (format.py's rules); anything else unchanged."""
    if isinstance(value, dict):
        return {k: _humanize(str(k), v) for k, v in value.items()}
    if not _is_number(value):
        return value
    if key in TIME_KEYS or key.endswith("_at"):
        if isinstance(value, int) and abs(value) >= _MS_EPOCH_FLOOR:
            return format_time(value)
        return value
    if key in PRICE_KEYS or key.startswith("price_") or key.endswith("_price"):
        return format_price(value)
    if key in PERCENT_KEYS or key.endswith(("_percentage", "_pct")):
        return format_percent(value, signed=key in _SIGNED_PERCENT_KEYS)
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.{_OTHER_FLOAT_DIGITS}g}")
    return value


def humanize_fields(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor of the *console* output only: times in ms become ISO-8601 UTC, prices
    follow format.py's rule, percentages get two decimals, other floats six significant digits.

    By key name (``TIME_KEYS``, ``PRICE_KEYS``, ``PERCENT_KEYS`` and their suffixes), so no log
    call formats its own values: the JSON lines (journald, scripts) and the journals keep the
    exact numbers. The line's own ``timestamp`` (the wall clock) is cut to the second.
    """
    for key, value in list(event_dict.items()):
        if key == "timestamp" and isinstance(value, str) and "." in value:
            event_dict[key] = value.split(".", 1)[0] + "Z"  # "...T12:00:05.123456Z": the second is enough here
        elif key != "event":
            event_dict[key] = _humanize(key, value)
    return event_dict


class _StdlibBridge(logging.Handler):
    """Hands stdlib ``logging`` records (asyncio, ccxt, urllib3) to structlog, so they share the
    output format, the stream and the redaction."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            import structlog

            # FilteringBoundLogger only knows the standard levels; custom ones round down.
            level = max(
                (lv for lv in (logging.WARNING, logging.ERROR, logging.CRITICAL) if lv <= record.levelno),
                default=logging.WARNING,
            )
            structlog.get_logger().log(level, record.getMessage(), logger=record.name, exc_info=record.exc_info)
        except Exception:  # noqa: BLE001 - logging.Handler's contract: handleError, never raise from emit
            self.handleError(record)


_bridge: _StdlibBridge | None = None


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


def _printer(stream: TextIO | None) -> Any:
    """structlog's PrintLogger, made to survive a closed output (see ``stdout_lost``)."""
    import structlog

    class _Printer(structlog.PrintLogger):
        def msg(self, message: str) -> None:
            try:
                super().msg(message)
            except (BrokenPipeError, ValueError, OSError) as exc:  # EPIPE, a closed file, EIO
                if stdout_lost(exc):
                    try:
                        super().msg(message)  # the line itself, to where the output went
                    except (OSError, ValueError):
                        pass

        log = debug = info = warn = warning = err = error = critical = exception = fatal = failure = msg

    return _Printer(stream)


def stdout_lost(exc: BaseException) -> bool:
    """The daemon's stdout went away (``livetrader run | head``, a ``tee`` killed by Ctrl-C, a
    closed terminal): a lost output must never stop trading. The descriptor is pointed at
    stderr (which journald also reads) and one line there says so; when stderr is gone too,
    at /dev/null. True when the output was moved (the caller may write again)."""
    global _stdout_moved
    if _stdout_moved:
        return False
    _stdout_moved = True
    import os

    try:
        fd = sys.__stdout__.fileno() if sys.__stdout__ is not None else 1
    except (OSError, ValueError):
        fd = 1
    note = (f"livetrader: stdout closed ({type(exc).__name__}: {exc}); log lines go to stderr from now on, "
            "trading continues\n")
    try:
        os.write(2, note.encode())
        os.dup2(2, fd)
    except OSError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    return True


_stdout_moved = False


class _SharedLogger:
    """A structlog logger factory that hands out one logger instance."""

    def __init__(self, logger: Any) -> None:
        self.logger = logger

    def __call__(self, *args: Any) -> Any:
        return self.logger


def configure_logging(*, json_lines: bool | None = None, level: str = "INFO", stream: TextIO | None = None) -> None:
    """Configure structlog (and route stdlib ``logging`` warnings to it). Safe to call again.

    Args:
        json_lines: JSON objects, one per line, if True; the readable console format if False;
            if None, JSON unless the output stream is a terminal.
        level: the lowest level shown: DEBUG, INFO, WARNING, ERROR or CRITICAL. Stdlib records
            are taken from WARNING up whatever this says: below that, libraries are too chatty.
        stream: where lines go. None means whatever ``sys.stdout`` is at the time of each line,
            so rich's live view and pytest's capture both see them.

    Every line is flushed as it is written: under systemd stdout is a pipe, and a daemon killed
    with SIGKILL must not take buffered lines with it.
    """
    global _bridge
    import structlog

    min_level = _LEVELS.get(level.upper())
    if min_level is None:
        raise ValueError(f"unknown log level {level!r}: use one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    target = stream if stream is not None else sys.stdout
    if json_lines is None:
        json_lines = not _isatty(target)

    renderer: Callable[[WrappedLogger, str, EventDict], str]
    # Only a person reads the console: its numbers are rounded and its times ISO; the JSON
    # lines keep exact values for machines (journald, scripts, the tests).
    readable: list[Callable[[WrappedLogger, str, EventDict], EventDict]] = []
    if json_lines:
        renderer = _render_json
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_isatty(target))
        readable.append(humanize_fields)

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
            structlog.processors.StackInfoRenderer(),
            # Tracebacks become text before redaction: a secret in an exception message is then
            # caught, and no pretty traceback with local variables can print an API key.
            structlog.processors.format_exc_info,
            redact_secrets,
            *readable,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(min_level),
        # PrintLogger prints with flush=True; with no file it prints to the sys.stdout of the
        # moment, which is what lets rich's Live redirect log lines above its table. One
        # instance serves every line (building one per line was a fifth of restoring a pair).
        logger_factory=_SharedLogger(_printer(stream)),
        # Not cached, so a re-configuration (tests, or `run` after import-time loggers) reaches
        # every logger; resolving the configuration per call costs microseconds.
        cache_logger_on_first_use=False,
    )

    root = logging.getLogger()
    if _bridge is not None:
        root.removeHandler(_bridge)
    _bridge = _StdlibBridge(level=max(logging.WARNING, min_level))
    root.addHandler(_bridge)


# ---------------------------------------------------------------------------------------------
# The live view
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PairView:
    """What the live view shows of one (symbol, strategy) pair at one moment.

    ``state`` is one of idle, scheduled, open, parked, stopped, done. ``position`` is the side
    ("long"/"short") of the scheduled or open signal, None without one. Times are UTC ms, on
    the run's clock (simulated under ``--speed`` or ``--candles``, see :class:`ClockView`).
    """

    symbol: str
    strategy: str
    exchange: str
    state: str
    price: float | None = None
    position: str | None = None
    price_open: float | None = None
    take_profit: float | None = None
    stop_loss: float | None = None
    #: Unrealised PnL of the open position, in percent.
    pnl_percentage: float | None = None
    last_tick_at: int | None = None
    lag_ms: int | None = None
    error_count: int = 0
    last_error: str | None = None
    closed_trades: int = 0
    #: Closed trades with a PnL above zero / below zero.
    won_trades: int = 0
    lost_trades: int = 0
    #: Sum of the PnL percentages of the pair's closed trades (the footer shows their mean).
    realised_pnl: float = 0.0


@dataclass(frozen=True, slots=True)
class ClockView:
    """The clock the pairs' times are on, for the view's header.

    ``simulated``: a ``--speed`` or ``--candles`` run, whose times are not the wall clock's
    (the stamps of the log lines above the table are). ``speed``: simulated minutes per real one.
    """

    now_ms: int
    simulated: bool = False
    speed: float = 1.0


_STATE_STYLES = {
    "idle": "dim",
    "scheduled": "yellow",
    "open": "bold cyan",
    "parked": "magenta",
    "stopped": "red",
    "done": "dim",
}
_ERROR_WIDTH = 60
_LAG_SHOWN_MS = 5_000


def _position_text(pair: PairView, detail: int = 2) -> str:
    """The held signal: side only (``detail`` 0), with its entry price (1), with TP and SL (2)."""
    if pair.position is None:
        return "-"
    # Shortened, the State column alone says "scheduled".
    parts = [f"scheduled {pair.position}" if pair.state == "scheduled" and detail == 2 else pair.position]
    labelled = (("@", pair.price_open), ("TP", pair.take_profit), ("SL", pair.stop_loss))
    for label, value in labelled[: (0, 1, 3)[detail]]:
        if value is not None:
            parts.append(f"{label} {format_price(value)}")
    return " ".join(parts)


def _one_line(text: str, width: int) -> str:
    # Error messages can be multi-line (tracebacks, HTTP bodies); a table cell takes one line.
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


@dataclass(frozen=True, slots=True)
class _Layout:
    """Which columns the table shows, and how much of each: the widest that fits the terminal."""

    exchange: bool = True
    price: bool = True
    #: Position column: None (absent), else the ``_position_text`` detail.
    position: int | None = 2
    #: Last tick column: None (absent), "full" (date and time), "short" (time of day when on the
    #: header's date; the header shows the date).
    tick: str | None = "full"
    error_text: bool = True


# From everything down to the key columns (symbol, strategy, state, PnL, error count), each
# step giving up what a trader misses least: the exchange (usually one), error texts (the
# log has them), TP/SL, the date of the last tick (in the header), then tick, price, position.
_LAYOUTS = (
    _Layout(),
    _Layout(exchange=False),
    _Layout(exchange=False, error_text=False),
    _Layout(exchange=False, error_text=False, position=1),
    _Layout(exchange=False, error_text=False, position=1, tick="short"),
    _Layout(exchange=False, error_text=False, position=0, tick="short"),
    _Layout(exchange=False, error_text=False, position=0, tick=None),
    _Layout(exchange=False, error_text=False, position=0, tick=None, price=False),
    _Layout(exchange=False, error_text=False, position=None, tick=None, price=False),
)


class LiveView:
    """A live table of the pairs for ``livetrader run`` on a terminal.

    Use as a context manager; the table refreshes itself ``refresh_per_second`` times a second,
    and anything printed or logged meanwhile scrolls above it::

        with LiveView(lambda: views) as view:
            ...
            view.refresh()  # optional: show a change at once

    ``pairs_provider`` is called from rich's refresh thread: it must return a snapshot (e.g. a
    list of frozen :class:`PairView`), not a collection the engine mutates while it is read.
    ``clock_provider`` gives the run's clock for the header (which says whether it is simulated);
    None leaves the header out. ``notices_provider`` gives lines shown in red under the header (a
    halt in force, docs/behaviour.md §13). ``console`` defaults to a new ``rich.console.Console()`` on stdout.

    The table fits the console's width: on a narrow terminal it drops or shortens columns
    (``_LAYOUTS``) rather than wrapping each row over several lines.
    """

    def __init__(
        self,
        pairs_provider: Callable[[], Iterable[PairView]],
        refresh_per_second: float = 2,
        *,
        console: Console | None = None,
        clock_provider: Callable[[], ClockView] | None = None,
        notices_provider: Callable[[], list[str]] | None = None,
    ) -> None:
        if refresh_per_second <= 0:
            raise ValueError(f"refresh_per_second must be > 0, got {refresh_per_second}")
        self._pairs_provider = pairs_provider
        self._clock_provider = clock_provider
        self._notices_provider = notices_provider
        self._refresh_per_second = refresh_per_second
        self._console = console
        self._live: Live | None = None

    def __enter__(self) -> LiveView:
        from rich.console import Console
        from rich.live import Live

        live = Live(
            console=self._console if self._console is not None else Console(),
            get_renderable=self.render,
            refresh_per_second=self._refresh_per_second,
            redirect_stdout=True,
            redirect_stderr=True,
            # The last table stays on screen after a stop: it is the final state of the run.
            transient=False,
        )
        # start(refresh=True): Live's own __enter__ waits a full refresh period before the first
        # draw when the content comes from get_renderable.
        live.start(refresh=True)
        self._live = live
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        live, self._live = self._live, None
        if live is not None:
            live.stop()

    def refresh(self) -> None:
        """Redraw now instead of at the next tick of the refresh timer (no-op when not entered)."""
        if self._live is not None:
            self._live.refresh()

    def render(self) -> RenderableType:
        """The table of pairs as of now, as a rich renderable (also what the tests print); it
        lays itself out for the width of the console it is printed on."""
        from rich.text import Text

        try:
            pairs = list(self._pairs_provider())
            clock = self._clock_provider() if self._clock_provider is not None else None
            notices = self._notices_provider() if self._notices_provider is not None else []
        except Exception as exc:  # noqa: BLE001 - it would freeze the view (below)
            # An exception here would kill rich's refresh thread and freeze the display silently.
            return Text(_one_line(redact(f"live view: cannot read the pairs: {exc!r}"), 200), style="red")
        return _FittedTable(pairs, clock, notices)


_MEASURE_WIDTH = 10_000


class _FittedTable:
    """The table of pairs in the widest layout that fits the width it is rendered at."""

    def __init__(self, pairs: list[PairView], clock: ClockView | None, notices: list[str] | None = None) -> None:
        self.pairs = pairs
        self.clock = clock
        self.notices = notices or []

    def __rich_console__(self, console: Console, options: Any) -> Any:
        table = None
        # Measured unconstrained: a table measured at the console's width reports that width.
        unconstrained = options.update_width(_MEASURE_WIDTH)
        for layout in _LAYOUTS:
            table = _table(self.pairs, self.clock, layout)
            if console.measure(table, options=unconstrained).maximum <= options.max_width:
                break
        # Header and footer are lines of their own, wrapped at the terminal's width rather than
        # at a narrow table's.
        header = _header(self.clock)
        if header is not None:
            yield header
        if self.notices:
            from rich.text import Text

            for notice in self.notices:
                yield Text(_one_line(redact(notice), 400), style="bold red")
        yield table
        yield _footer(self.pairs)


def _header(clock: ClockView | None) -> Any:
    from rich.text import Text

    if clock is None:
        return None
    if clock.simulated:
        # The log lines scrolling above are stamped with the wall clock: this says the table is not.
        return Text.assemble(("simulated clock", "bold yellow"), f" {clock.speed:g}x · simulated now "
                             f"{format_time(clock.now_ms)} (UTC)")
    return Text(f"real clock · now {format_time(clock.now_ms)} (UTC)")


def _footer(pairs: list[PairView]) -> Any:
    """Counts, and the closed trades' mean PnL: percentages of different positions do not add up
    to a "realised PnL" (README, Decisions)."""
    from rich.text import Text

    closed = sum(p.closed_trades for p in pairs)
    won = sum(p.won_trades for p in pairs)
    lost = sum(p.lost_trades for p in pairs)
    open_now = sum(p.state.split("·")[0] == "open" for p in pairs)  # "open·live": a pair placing orders
    parts: list[Any] = [f"{len(pairs)} pairs · {open_now} open · {closed} closed trades"]
    if closed:
        parts += [f" ({won} won, {lost} lost) · mean ", _signed_percent(sum(p.realised_pnl for p in pairs) / closed),
                  " per trade"]
    return Text.assemble(*parts)


def _table(pairs: list[PairView], clock: ClockView | None, layout: _Layout) -> Table:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    # One space between columns (the box's blank divider) and none at the edges: 80 columns count.
    table = Table(box=box.SIMPLE_HEAD, padding=0, show_edge=False)
    # Short cells never wrap: a price split over two lines reads as two numbers. The key
    # columns are cut with an ellipsis rather than wrapped when even the narrowest layout is too wide.
    table.add_column("Symbol", no_wrap=True, style="bold", overflow="ellipsis")
    table.add_column("Strategy", no_wrap=True, overflow="ellipsis")
    if layout.exchange:
        table.add_column("Exchange", no_wrap=True)
    table.add_column("State", no_wrap=True)
    if layout.price:
        table.add_column("Price", justify="right", no_wrap=True)
    if layout.position is not None:
        table.add_column("Position" if layout.position else "Side")
    table.add_column("PnL", justify="right", no_wrap=True)
    if layout.tick is not None:
        table.add_column("Last tick (sim)" if clock is not None and clock.simulated else "Last tick (UTC)",
                         no_wrap=True)
    table.add_column("Errors")
    for pair in pairs:
        cells: list[Any] = [pair.symbol, pair.strategy]
        if layout.exchange:
            cells.append(pair.exchange)
        cells.append(Text(pair.state, style=_STATE_STYLES.get(pair.state.split("·")[0], "")))
        if layout.price:
            cells.append(format_price(pair.price))
        if layout.position is not None:
            cells.append(_position_text(pair, layout.position))
        cells.append(_signed_percent(pair.pnl_percentage))
        if layout.tick is not None:
            cells.append(_tick_text(pair, clock if layout.tick == "short" else None))
        cells.append(_errors_text(pair, layout.error_text))
        table.add_row(*cells)
    return table


def _signed_percent(value: float | None) -> Any:
    from rich.text import Text

    text = format_percent(value, signed=True)
    style = "" if value is None or text in (MISSING, "0.00%") else "green" if value > 0 else "red"
    return Text(text, style=style)


def _tick_text(pair: PairView, short_on: ClockView | None = None) -> Any:
    """The last tick, with its lag when it is late; the time of day alone when ``short_on`` is
    given and the tick is on the date of its ``now`` (which the header shows)."""
    from rich.text import Text

    if pair.last_tick_at is None:
        return Text("-")
    stamp = format_time(pair.last_tick_at)
    if short_on is not None and stamp[:10] == format_time(short_on.now_ms)[:10]:
        stamp = stamp[11:19]
    text = Text(stamp)
    if pair.lag_ms is not None and pair.lag_ms > _LAG_SHOWN_MS:
        text.append(f" lag {format_duration(pair.lag_ms)}", style="yellow")
    return text


def _errors_text(pair: PairView, with_message: bool = True) -> Any:
    from rich.text import Text

    if pair.error_count <= 0:
        return Text("-")
    text = str(pair.error_count)
    if pair.last_error and with_message:
        # Exchange errors can quote request URLs and headers; the screen gets the same redaction.
        text += " " + _one_line(redact(pair.last_error), _ERROR_WIDTH)
    return Text(text, style="red")
