"""What the daemon shows: structured log lines, secret redaction, and the live table of pairs.

Two outputs, chosen by where stdout goes:

- not a terminal (systemd, a pipe, a file): one JSON object per line, ``timestamp`` (ISO-8601
  UTC), ``level``, ``event``, then the key-values. journald stores each line as one entry.
- a terminal: structlog's readable console renderer, and for ``livetrader run`` a rich table
  (:class:`LiveView`) that log lines scroll above.

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
from livetrader.core.format import format_duration, format_price, format_time

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live
    from rich.table import Table
    from structlog.typing import EventDict, WrappedLogger

__all__ = [
    "LiveView",
    "PairView",
    "add_redaction",
    "clear_redaction",
    "configure_logging",
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
    if json_lines:
        renderer = _render_json
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_isatty(target))

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
    ("long"/"short") of the scheduled or open signal, None without one. Times are UTC ms.
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
    #: Sum of the PnL percentages of the pair's closed trades.
    realised_pnl: float = 0.0


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


def _position_text(pair: PairView) -> str:
    if pair.position is None:
        return "-"
    parts = [f"scheduled {pair.position}" if pair.state == "scheduled" else pair.position]
    for label, value in (("@", pair.price_open), ("TP", pair.take_profit), ("SL", pair.stop_loss)):
        if value is not None:
            parts.append(f"{label} {format_price(value)}")
    return " ".join(parts)


def _one_line(text: str, width: int) -> str:
    # Error messages can be multi-line (tracebacks, HTTP bodies); a table cell takes one line.
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


class LiveView:
    """A live table of the pairs for ``livetrader run`` on a terminal.

    Use as a context manager; the table refreshes itself ``refresh_per_second`` times a second,
    and anything printed or logged meanwhile scrolls above it::

        with LiveView(lambda: views) as view:
            ...
            view.refresh()  # optional: show a change at once

    ``pairs_provider`` is called from rich's refresh thread: it must return a snapshot (e.g. a
    list of frozen :class:`PairView`), not a collection the engine mutates while it is read.
    ``console`` defaults to a new ``rich.console.Console()`` on stdout.
    """

    def __init__(
        self,
        pairs_provider: Callable[[], Iterable[PairView]],
        refresh_per_second: float = 2,
        *,
        console: Console | None = None,
    ) -> None:
        if refresh_per_second <= 0:
            raise ValueError(f"refresh_per_second must be > 0, got {refresh_per_second}")
        self._pairs_provider = pairs_provider
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
        """The table of pairs as of now, as a rich renderable (also what the tests print)."""
        from rich.text import Text

        try:
            pairs = list(self._pairs_provider())
        except Exception as exc:  # noqa: BLE001 - it would freeze the view (below)
            # An exception here would kill rich's refresh thread and freeze the display silently.
            return Text(_one_line(redact(f"live view: cannot read the pairs: {exc!r}"), 200), style="red")
        return self._table(pairs)

    def _table(self, pairs: list[PairView]) -> Table:
        from rich import box
        from rich.table import Table
        from rich.text import Text

        realised = sum(p.realised_pnl for p in pairs)
        caption = Text.assemble(
            f"{len(pairs)} pairs · {sum(p.state == 'open' for p in pairs)} open · "
            f"{sum(p.closed_trades for p in pairs)} closed trades · realised PnL ",
            _signed_percent(realised),
        )
        table = Table(box=box.SIMPLE_HEAD, caption=caption, caption_justify="left")
        # Short cells never wrap: a price split over two lines reads as two numbers.
        table.add_column("Symbol", no_wrap=True, style="bold")
        table.add_column("Strategy", no_wrap=True)
        table.add_column("Exchange", no_wrap=True)
        table.add_column("State", no_wrap=True)
        table.add_column("Price", justify="right", no_wrap=True)
        table.add_column("Position")
        table.add_column("PnL", justify="right", no_wrap=True)
        table.add_column("Last tick (UTC)", no_wrap=True)
        table.add_column("Errors")
        for pair in pairs:
            table.add_row(
                pair.symbol,
                pair.strategy,
                pair.exchange,
                Text(pair.state, style=_STATE_STYLES.get(pair.state, "")),
                format_price(pair.price),
                _position_text(pair),
                _signed_percent(pair.pnl_percentage),
                _tick_text(pair),
                _errors_text(pair),
            )
        return table


def _signed_percent(value: float | None) -> Any:
    from rich.text import Text

    if value is None or not math.isfinite(value):
        return Text("-")
    style = "green" if value > 0 else "red" if value < 0 else ""
    return Text(f"{value:+.2f}%", style=style)


def _tick_text(pair: PairView) -> Any:
    from rich.text import Text

    if pair.last_tick_at is None:
        return Text("-")
    text = Text(format_time(pair.last_tick_at))
    if pair.lag_ms is not None and pair.lag_ms > _LAG_SHOWN_MS:
        text.append(f" lag {format_duration(pair.lag_ms)}", style="yellow")
    return text


def _errors_text(pair: PairView) -> Any:
    from rich.text import Text

    if pair.error_count <= 0:
        return Text("-")
    text = str(pair.error_count)
    if pair.last_error:
        # Exchange errors can quote request URLs and headers; the screen gets the same redaction.
        text += " " + _one_line(redact(pair.last_error), _ERROR_WIDTH)
    return Text(text, style="red")
