"""``livetrader download``: fetch 1-minute candles once into the local candle store (``market.store``)."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from livetrader import redaction
from livetrader.config import Config
from livetrader.core.format import format_minute
from livetrader.core.price import MINUTE_MS
from livetrader.errors import UsageError
from livetrader.market.sources import open_source
from livetrader.market.store import CandleStore, DownloadReport, default_root, download, page_fetcher

#: Seconds between two progress lines on stderr.
PROGRESS_EVERY = 1.0
#: Symbols downloaded at once. Their requests share one ccxt instance, so its rate limiter spaces them
#: all: a few at once fill the time each request waits for its answer; more would only queue.
CONCURRENT_SYMBOLS = 4
#: The last minutes before now that an empty answer does not mark as gaps (clock skew).
SETTLE_MINUTES = 2


@dataclass(slots=True, frozen=True)
class DownloadRequest:
    """What the user asked for on the command line; times in ms."""

    symbols: list[str]
    exchange: str
    start: int
    end: int | None
    store: Path | None
    #: ``--json``: one document on stdout at the end instead of a summary line per symbol.
    as_json: bool = False


def run_download(request: DownloadRequest, config: Config) -> list[DownloadReport]:
    """Download every symbol of ``request`` into the store; print progress (stderr) and one summary per symbol."""
    if request.exchange == "files":
        raise UsageError("download fetches from an exchange (a ccxt exchange such as binance, or sim); "
                         "a candle file is read directly: livetrader backtest --candles PATH")
    root = request.store or default_root(config.data_dir)
    store = CandleStore(root)
    source = open_source(request.exchange, config)
    clock = getattr(source, "clock", None)
    now = clock() if callable(clock) else int(time.time() * 1000)
    closed = now - now % MINUTE_MS  # the minute forming now is not history yet
    end = min(request.end, closed) if request.end is not None else closed
    start = request.start - request.start % MINUTE_MS
    if start >= end:
        detail = "the last closed minute" if request.end is None or request.end > closed else "--to"
        raise UsageError(f"--from {format_minute(request.start)} must be before {detail} ({format_minute(end)})")
    with store.lock():
        # An exchange a moment behind has nothing yet for the last minutes: not gaps, just not yet.
        settled = closed - SETTLE_MINUTES * MINUTE_MS
        outcomes = asyncio.run(_download_all(request, source, store, start, end, settled))
    if request.as_json:
        sys.stdout.buffer.write(orjson.dumps({"downloads": [document(symbol, outcome, store)
                                                            for symbol, outcome in outcomes]},
                                             option=orjson.OPT_INDENT_2) + b"\n")
    for _, outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome  # the first failure, once every symbol has ended (and is in the document)
    return [outcome for _, outcome in outcomes if isinstance(outcome, DownloadReport)]


async def _download_all(request: DownloadRequest, source: Any, store: CandleStore, start: int, end: int,
                        settled: int) -> list[tuple[str, DownloadReport | BaseException]]:
    """Every symbol, ``CONCURRENT_SYMBOLS`` at a time, a summary line as each ends (unless ``--json``):
    ``(symbol, report or the error that stopped it)`` in the order asked. A symbol that fails does
    not stop the others."""
    try:
        symbols = [source.resolve_symbol(name) for name in dict.fromkeys(request.symbols)]  # a typo: before any
        fetch_page = page_fetcher(source)
        room = asyncio.Semaphore(CONCURRENT_SYMBOLS)

        async def one(symbol: str) -> DownloadReport:
            async with room:
                report = await download(store, request.exchange, symbol, start, end, fetch_page, _Progress(),
                                        settled=settled)
            if not request.as_json:
                print(summary(report, store), flush=True)
            return report

        outcomes = await asyncio.gather(*(one(symbol) for symbol in symbols), return_exceptions=True)
    finally:
        await source.close()
    return list(zip(symbols, outcomes, strict=True))


class _Progress:
    """A progress line on stderr about once a second: how much of what was missing is fetched."""

    def __init__(self) -> None:
        self.last = 0.0
        self.total: int | None = None

    def __call__(self, report: DownloadReport, left: int) -> None:
        if self.total is None:
            self.total = left + report.fetched + report.new_gap_minutes
        now = time.monotonic()
        if now - self.last < PROGRESS_EVERY and left:
            return
        self.last = now
        done = self.total - left
        percent = 100 * done / self.total if self.total else 100.0
        print(f"{report.symbol}: {percent:5.1f}% ({done:,} of {self.total:,} missing minutes, "
              f"{report.requests:,} requests)", file=sys.stderr, flush=True)


def document(symbol: str, outcome: DownloadReport | BaseException, store: CandleStore) -> dict[str, Any]:
    """One symbol's entry of ``--json``: the report's figures (times in integer ms UTC), or its error."""
    if isinstance(outcome, BaseException):
        return {"symbol": symbol, "error": redaction.redact(str(outcome) or type(outcome).__name__)}
    report = outcome
    return {"symbol": report.symbol, "exchange": report.exchange, "from": report.start, "to": report.end,
            "minutes": (report.end - report.start) // MINUTE_MS, "already": report.already,
            "fetched": report.fetched, "requests": report.requests, "new_gap_minutes": report.new_gap_minutes,
            "gaps": [list(gap) for gap in report.gaps],
            "store": str(store.folder(report.exchange, report.symbol)), "error": None}


def summary(report: DownloadReport, store: CandleStore) -> str:
    """One line per symbol: what was fetched, what was already there, the gaps, where it is."""
    minutes = (report.end - report.start) // MINUTE_MS
    gap_minutes = sum(b - a for a, b in report.gaps) // MINUTE_MS
    text = (f"{report.symbol} on {report.exchange}, {format_minute(report.start)} .. {format_minute(report.end)}: "
            f"{minutes:,} minutes; fetched {report.fetched:,} in {report.requests:,} request(s), "
            f"{report.already:,} already stored")
    if report.gaps:
        first = report.gaps[0]
        text += (f"; {len(report.gaps):,} gap(s), {gap_minutes:,} minute(s) the exchange has no candle for "
                 f"(first {format_minute(first[0])} .. {format_minute(first[1])}; backtests fill them flat)")
    else:
        text += "; no gaps"
    return text + f"; store: {store.folder(report.exchange, report.symbol)}"
