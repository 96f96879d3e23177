"""``livetrader backtest``: load candles, run the backtest, print a summary or one JSON document."""

from __future__ import annotations

import asyncio
import gc
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from livetrader import redaction
from livetrader.backtest.replay import BacktestResult, run_backtest
from livetrader.config import Config
from livetrader.core.format import format_minute
from livetrader.core.machine import Rules
from livetrader.core.price import MINUTE_MS, VWAP_CANDLES
from livetrader.core.signal import TickResult
from livetrader.core.stats import Stats, TradeSummary, compute_stats, summarize_trades
from livetrader.errors import NoCandlesError, UsageError
from livetrader.market.sources import open_source
from livetrader.strategy.base import Strategy, instantiate, instantiate_with, load_strategies, params_of
from livetrader.strategy.risk import build_profiles

# A symbol such as BTC/USDT cannot go into a file name as is.
_NOT_IN_FILE_NAME = re.compile(r"[^A-Za-z0-9._-]")

#: Minutes of history loaded before ``--from`` so strategies can look back from the first frame.
HISTORY_MINUTES = 1440


@dataclass(slots=True, frozen=True)
class BacktestRequest:
    """What the user asked for on the command line."""

    symbol: str
    strategy: str
    start: int | None
    end: int | None
    exchange: str
    candles: Path | None
    strict: bool
    as_json: bool
    report: Path | None
    #: The candle store to read (None: the data directory's); see ``_open_candles``.
    store: Path | None = None
    #: ``--param NAME=VALUE`` as given (one value each): the strategy's declared parameters for this run.
    params: tuple[str, ...] = ()


def resolve_range(request: BacktestRequest, bounds: tuple[int, int] | None) -> tuple[int, int]:
    """``[start, end)`` from the options, defaulting to the file's span or the last 7 days."""
    from livetrader.cli.times import default_range

    if bounds is not None:
        first, last_end = bounds
        start = request.start if request.start is not None else first + VWAP_CANDLES * MINUTE_MS
        end = request.end if request.end is not None else last_end
    else:
        default_start, default_end = default_range()
        end = request.end if request.end is not None else default_end
        start = request.start if request.start is not None else end - (default_end - default_start)
    if start >= end and bounds is not None:
        covers = f"{request.candles}, which covers {format_minute(bounds[0])} .. {format_minute(bounds[1])}"
        if request.start is not None and request.end is None:
            raise UsageError(f"--from {format_minute(start)} is past the end of {covers}: pass a --from before "
                             f"{format_minute(bounds[1])}, or a candle file that covers {format_minute(start)}")
        if request.start is None and request.end is not None:
            raise UsageError(f"--to {format_minute(end)} is too early for {covers} (the first frame is "
                             f"{format_minute(start)}, once five candles have closed): pass a --to after "
                             f"{format_minute(start)}")
    if start >= end:
        raise UsageError(f"--from must be before --to (got {format_minute(start)} .. {format_minute(end)})")
    return start, end


def run(request: BacktestRequest, config: Config, strategies_dir: Path) -> BacktestResult:
    """Run the whole command for one (symbol, strategy) pair; see ``run_all``."""
    return run_all([request], config, strategies_dir)[0]


def run_all(requests: list[BacktestRequest], config: Config, strategies_dir: Path) -> list[BacktestResult]:
    """Backtest each (symbol, strategy) pair of ``requests``, one after another.

    Every strategy name is checked before the first pair runs, so a typo in the last one costs
    nothing. Tables are printed after each pair; ``--json`` prints one document at the end: the
    pair's document for one pair, ``{"backtests": [...]}`` (in the order asked) for several.
    Raises LivetraderError subclasses for the user's mistakes.
    """
    with candles_frozen():
        registry = load_strategies(strategies_dir)
        classes = {request.strategy: registry.get(request.strategy) for request in requests}
        several = len(requests) > 1
        results: list[BacktestResult] = []
        documents: list[dict[str, Any]] = []
        for request in requests:
            result, document = _backtest(request, classes[request.strategy], config, several)
            results.append(result)
            documents.append(document)
    if requests and requests[0].as_json:
        doc = documents[0] if not several else {"backtests": documents}
        # Notes come from the strategy: an output like any other (the summary prints none).
        sys.stdout.buffer.write(orjson.dumps(redaction.redact_value(doc), option=orjson.OPT_INDENT_2))
        sys.stdout.buffer.write(b"\n")
    return results


def _backtest(
    request: BacktestRequest, cls: Any, config: Config, several: bool
) -> tuple[BacktestResult, dict[str, Any]]:
    """Backtest one pair: prints its tables (unless ``--json``) and returns its JSON document."""
    strategy = strategy_with_params(cls, request.params)
    symbol, start, end, candles, filled = load_range(request, config)
    profiles = build_profiles(config.risk_tables())
    risk = None
    if cls.risk:
        config.risk_profile(cls.risk)  # a clear error when the profile is not configured
        risk = profiles[cls.risk]

    started = time.perf_counter()
    with _progress(start, end, enabled=not request.as_json and sys.stderr.isatty()) as progress:
        result = asyncio.run(
            run_backtest(strategy, candles, symbol, start, end, exchange=request.exchange,
                         rules=rules_for(cls, config), risk=risk, progress=progress, strict=request.strict)
        )
    elapsed = time.perf_counter() - started
    from livetrader.backtest.walk import buy_and_hold, trades_of

    trades = trades_of(result)
    stats = compute_stats(trades, first_at=result.start, last_at=result.end)
    summary = summarize_trades(trades, buy_and_hold=buy_and_hold(candles, start, end, rules_for(cls, config)))
    if request.report is not None:
        _write_report(report_path(request.report, result, several), result, stats, summary)
    if not request.as_json:
        print_summary(result, stats, elapsed, filled, summary)
    document = to_document(result, stats, elapsed, filled)
    document["trade_summary"] = summary.to_dict()
    if request.params:
        document["summary"]["params"] = dict(strategy_params(cls, request.params))
    return result, document


def rules_for(cls: type[Strategy], config: Config) -> Rules:
    """The engine's rules, with the position cost a live run of ``cls`` would spend (the strategy's
    ``cost``, else its risk profile's, else ``[engine] cost``): the trades' PnL in quote currency."""
    rules = config.engine.rules()
    profile = config.risk.get(cls.risk) if cls.risk else None
    cost = cls.cost or (profile.cost if profile is not None else None)
    return rules if not cost else replace(rules, costs=replace(rules.costs, cost=float(cost)))


def strategy_params(cls: type[Strategy], given: tuple[str, ...]) -> dict[str, Any]:
    """``--param NAME=VALUE`` options read as the strategy's declared parameters (one value each)."""
    from livetrader.backtest.walk import expand_values, parse_param_option

    declared = params_of(cls)
    values: dict[str, Any] = {}
    for text in given:
        name, spec = parse_param_option(text)
        if name not in declared:
            raise UsageError(f"--param {name}: strategy '{cls.name}' has no such parameter "
                             f"(its parameters: {', '.join(declared) or 'none'})")
        expanded = expand_values(name, spec, declared[name].type)
        if len(expanded) != 1:
            raise UsageError(f"--param {text}: backtest takes one value per parameter; "
                             "`livetrader walk` runs a grid of them")
        values[name] = expanded[0]
    return values


def strategy_with_params(cls: type[Strategy], given: tuple[str, ...]) -> Strategy:
    """An instance of ``cls``, its declared parameters set by ``--param`` (none: ``instantiate``)."""
    if not given:
        return instantiate(cls)
    return instantiate_with(cls, strategy_params(cls, given))


@contextmanager
def candles_frozen() -> Iterator[None]:
    """Where ``load_range`` may freeze candles: at the end, whatever was frozen is handed back
    to the garbage collector (``gc.unfreeze``).

    ``gc.freeze`` moves every object alive at that moment out of the collector's sight, not only
    the candles: a strategy's module, its open files, its threads' objects too. Left frozen,
    those in reference cycles would never be finalized, not even at exit (a strategy's unclosed
    log file lost its last buffer: ``tests/test_backtest_cli.py``)."""
    try:
        yield
    finally:
        gc.unfreeze()


def load_range(request: BacktestRequest, config: Config) -> tuple[str, int, int, list[Any], int]:
    """The candles a backtest of ``request`` runs on: (symbol as the exchange spells it, first
    frame, end, candles from ``HISTORY_MINUTES`` before the first frame to the end, minutes the
    source filled in). Candles from a file or the store are frozen out of the collector's sight
    (``gc.freeze``): call it inside ``candles_frozen``."""
    # --- candle source: the store when it holds the range (livetrader download), else the exchange ---
    from livetrader.market.files import gc_paused

    with gc_paused():  # through the load and the freeze: re-enabled before it, the collector walks every candle once
        stored = _open_stored(request, config)
        source = stored or open_source(request.exchange, config, request.candles, request.strict)
        if stored is not None or request.candles is not None:
            # A year of candles, loaded now and kept to the end: out of the collector's sight, or every
            # full collection during the replay walks them all (measured: the replay 10-20 % slower).
            gc.freeze()
    # --- end of candle source ---
    if getattr(source, "from_copy", False):
        from livetrader.market.parsed import folder_of

        print(f"candles: {request.candles} ({len(getattr(source, 'candles', ())):,} minutes), from the parsed copy in "
              f"{folder_of(config.data_dir)} (the file is byte for byte the one parsed)", file=sys.stderr, flush=True)
    symbol = source.resolve_symbol(request.symbol)
    bounds = source.bounds(symbol)
    start, end = resolve_range(request, bounds)
    if bounds is not None and (end <= bounds[0] or start >= bounds[1]):
        raise NoCandlesError(
            f"no candles for {symbol} between {format_minute(start)} and {format_minute(end)}: "
            f"{request.candles} covers {format_minute(bounds[0])} .. {format_minute(bounds[1])}"
        )
    history_start = start - start % MINUTE_MS - HISTORY_MINUTES * MINUTE_MS
    candles = asyncio.run(_fetch_and_close(source, symbol, history_start, end))
    if stored is not None or request.candles is not None:
        gc.freeze()  # the list handed over too (a file source's is a slice of its own: a new list)
    if not candles:
        raise NoCandlesError(f"no candles for {symbol} between {format_minute(start)} and {format_minute(end)}")
    return symbol, start, end, candles, getattr(source, "filled_minutes", 0)


def _open_stored(request: BacktestRequest, config: Config) -> Any:
    """The candle store's ``StoreSource`` when it holds every minute the backtest prices (history
    as far as the store has it, up to ``HISTORY_MINUTES``), else None. Says on stderr, in one line,
    where the candles come from whenever the store holds the symbol."""
    if request.candles is not None or request.exchange == "files":
        return None
    from livetrader.market.store import default_root, missing_minutes, open_stored

    root = request.store or default_root(config.data_dir)
    if not root.is_dir():
        return None
    start, end = resolve_range(request, None)
    start -= start % MINUTE_MS
    history_start = start - HISTORY_MINUTES * MINUTE_MS
    # The range itself must be stored; history is what the store has (with less than five minutes
    # of it the first frames wait for five candles, as with a candle file that starts at --from).
    needed_from = start
    stored = open_stored(root, request.exchange, request.symbol, history_start, end, needed_from)
    if stored is not None:
        history = (start - stored.times[0]) // MINUTE_MS
        notes = [f"{len(stored.candles):,} minutes"]
        if history < HISTORY_MINUTES:
            notes.append(f"{history:,} of them before --from, not {HISTORY_MINUTES:,}: download from earlier "
                         "for the full history")
        if stored.filled_minutes:
            notes.append(f"{stored.filled_minutes:,} gap minute(s) filled flat")
        print(f"candles: from the store {stored.where} ({', '.join(notes)})", file=sys.stderr, flush=True)
        return stored
    lacking = missing_minutes(root, request.exchange, request.symbol, needed_from, end)
    if lacking is not None:
        print(f"candles: from {request.exchange}: the store {root} lacks {lacking:,} minute(s) of "
              f"{format_minute(start)} .. {format_minute(end)} (`livetrader download` fetches them)",
              file=sys.stderr, flush=True)
    return None


def report_path(path: Path, result: BacktestResult, several: bool) -> Path:
    """``--report PATH`` for one pair; with several pairs, one file each: ``PATH``'s stem + ``_SYMBOL_strategy``."""
    if not several:
        return path
    symbol = _NOT_IN_FILE_NAME.sub("_", result.symbol)
    return path.with_name(f"{path.stem}_{symbol}_{result.strategy}{path.suffix or '.md'}")


async def _fetch_and_close(source: Any, symbol: str, start: int, end: int) -> list[Any]:
    """All candles of the range, closing the source's connections on the same event loop."""
    try:
        return await source.fetch(symbol, start, end)
    finally:
        await source.close()


def _signal_fields(t: TickResult) -> dict[str, Any]:
    s = t.signal
    assert s is not None
    return {"signal_id": s.id, "symbol": s.symbol, "strategy": s.strategy, "position": s.position,
            "price_open": s.price_open, "take_profit": s.take_profit, "stop_loss": s.stop_loss,
            "minutes": s.minutes, "scheduled_at": s.scheduled_at}


def trade_record(t: TickResult) -> dict[str, Any]:
    """The JSON shape of one closed trade (times as integer ms UTC)."""
    assert t.signal is not None
    return {**_signal_fields(t), "opened_at": t.signal.pending_at, "closed_at": t.at, "close_reason": t.close_reason,
            "price_close": t.price_close, "pnl_percentage": t.pnl_percentage, "note": t.signal.note}


def cancel_record(t: TickResult) -> dict[str, Any]:
    """The JSON shape of one cancelled scheduled signal."""
    return {**_signal_fields(t), "cancelled_at": t.at, "reason": t.reason}


def to_document(result: BacktestResult, stats: Stats, elapsed: float, filled: int) -> dict[str, Any]:
    """The one JSON document of ``--json``: trades, cancelled signals, statistics and a summary."""
    return {
        "trades": [trade_record(t) for t in result.trades],
        "cancelled": [cancel_record(t) for t in result.cancelled],
        "stats": stats.to_dict(),
        "summary": {
            "symbol": result.symbol,
            "strategy": result.strategy,
            "exchange": result.exchange,
            "from": result.start,
            "to": result.end,
            "frames": result.frames,
            "candles": result.candles,
            "filled_minutes": filled,
            "strategy_calls": result.strategy_calls,
            "risk_rejections": result.risk_rejections,
            "adjustments": result.adjustments,
            "closed_at_range_end": result.ended_open,
            "cancelled_at_range_end": result.ended_scheduled,
            # Strategy errors counted (without --strict), by kind, each with its first occurrence.
            "errors": {kind: {"count": count, "first": result.first_errors.get(kind)}
                       for kind, count in sorted(result.errors.items())},
            "seconds": round(elapsed, 6),
        },
    }


def print_summary(result: BacktestResult, stats: Stats, elapsed: float, filled: int,
                  summary: TradeSummary | None = None) -> None:
    """A readable summary: the range, the trades by close reason, the statistics."""
    from rich.console import Console
    from rich.table import Table

    from livetrader.core.stats import STAT_EXPLANATIONS, STAT_KINDS, format_stat

    console = Console()
    head = Table(title=f"Backtest {result.strategy} on {result.symbol} ({result.exchange})", show_header=False)
    head.add_column("what")
    head.add_column("value", justify="right")
    head.add_row("range", f"{format_minute(result.start)} .. {format_minute(result.end)}")
    head.add_row("frames (minutes)", f"{result.frames:,}")
    if filled:
        head.add_row("missing minutes filled", f"{filled:,} (flat, zero volume)")
    head.add_row("strategy asked", f"{result.strategy_calls:,} times")
    reasons: dict[str, int] = {}
    for t in result.trades:
        reasons[t.close_reason or "?"] = reasons.get(t.close_reason or "?", 0) + 1
    head.add_row("trades", f"{len(result.trades):,}")
    for reason, count in sorted(reasons.items()):
        head.add_row(f"  {reason}", f"{count:,}")
    if result.ended_open:
        head.add_row("  of them closed at the range end", f"{result.ended_open}")
    head.add_row("cancelled scheduled signals", f"{len(result.cancelled):,}")
    if result.ended_scheduled:
        head.add_row("  of them at the range end", f"{result.ended_scheduled}")
    if result.risk_rejections:
        head.add_row("risk rejections", f"{result.risk_rejections:,}")
    if result.adjustments:
        head.add_row("levels moved (adjusted)", f"{result.adjustments:,}")
    for kind, count in sorted(result.errors.items()):
        first = result.first_errors.get(kind) or {}
        head.add_row(f"{kind} errors (ticks left idle)", f"{count:,}, first: {first.get('message', '?')}")
    if summary is not None:
        from livetrader.report.markdown import summary_lines

        for label, value in summary_lines(summary):
            head.add_row(label, value)
    speed = result.frames / elapsed if elapsed > 0 else float("inf")
    head.add_row("time", f"{elapsed:.3f} s ({speed:,.0f} minutes/s)")
    console.print(head)

    table = Table(title="Statistics (N/A: not enough trades or history to be meaningful)")
    table.add_column("statistic")
    table.add_column("value", justify="right")
    values = stats.to_dict()
    for name, label, _ in STAT_EXPLANATIONS:
        table.add_row(label, format_stat(values[name], STAT_KINDS[name]))
    console.print(table)
    if not result.trades:
        console.print("No closed trades in this range.")


def _write_report(path: Path, result: BacktestResult, stats: Stats, summary: TradeSummary) -> None:
    from livetrader.core.signal import record_of
    from livetrader.report.markdown import build_report
    from livetrader.store.atomic import write_atomic

    events = sorted(
        [*(record_of(t) for t in result.trades), *(record_of(t) for t in result.cancelled)],
        key=lambda r: r["at"],
        reverse=True,
    )
    title = f"Backtest report: {result.strategy} on {result.symbol} ({result.exchange}), " \
            f"{format_minute(result.start)} .. {format_minute(result.end)}"
    text = build_report(title, events, stats=stats, note="Statistics cover every closed trade of the backtest.",
                        summary=summary)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text.encode())


class _progress:
    """A rich progress bar over simulated days, shown only on a terminal."""

    def __init__(self, start: int, end: int, enabled: bool) -> None:
        self.start, self.end, self.enabled = start, end, enabled
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> Any:
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("backtest"), BarColumn(), TextColumn("{task.description}"),
                            TimeElapsedColumn(), console=Console(stderr=True), transient=True)
        self.bar.__enter__()
        self.task = self.bar.add_task("", total=self.end - self.start)
        return self.update

    def update(self, t: int) -> None:
        self.bar.update(self.task, completed=t - self.start, description=format_minute(t))

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

