"""``livetrader report``: markdown reports (or JSON) built from the journal, daemon running or not."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from livetrader import redaction
from livetrader.config import require_data_dir
from livetrader.errors import UsageError
from livetrader.report.markdown import build_report, closed_trades, report_filename, stats_for, write_equity_png
from livetrader.store.journal import JOURNAL_DIR, read_journal

#: Newest journal events shown in a report table; the statistics always cover every trade.
MAX_ROWS = 500


@dataclass(slots=True)
class JournalPair:
    """One pair's journal: its records and how many lines could not be read."""

    symbol: str
    strategy: str
    exchange: str
    records: list[dict[str, Any]]
    bad_lines: int
    path: Path


def journal_pairs(data_dir: Path) -> list[JournalPair]:
    """Every pair with a journal under ``data_dir`` (read-only: nothing is repaired here)."""
    out = []
    for path in sorted((data_dir / JOURNAL_DIR).glob("*.jsonl")):
        read = read_journal(path)
        if not read.records:
            continue
        first = read.records[0]
        bad = len(read.problems) + (1 if read.truncated_tail else 0)
        out.append(JournalPair(first["symbol"], first["strategy"], first["exchange"], read.records, bad, path))
    return out


def journal_note(pair: JournalPair) -> str:
    """The report's note: where it comes from and what the statistics cover."""
    closed = sum(1 for r in pair.records if r["event"] == "closed")
    note = (f"Built from the journal {pair.path.name}: the statistics cover all {closed} closed trades "
            f"of its {len(pair.records)} events.")
    if pair.bad_lines:
        note += f" {pair.bad_lines} unreadable line(s) were skipped: run `livetrader recover --dry-run`."
    return note


def markdown_of(pair: JournalPair, now_ms: int, clock_note: str | None = None) -> str:
    """The markdown report of one journal; ``clock_note`` says when its times are simulated."""
    title = f"Report: {pair.strategy} on {pair.symbol} ({pair.exchange})"
    note = journal_note(pair) if clock_note is None else f"{clock_note} {journal_note(pair)}"
    return build_report(title, pair.records, stats=stats_for(pair.records), note=note, now_ms=now_ms,
                        trades=closed_trades(pair.records), max_rows=MAX_ROWS)


def report_clock(data_dir: Path) -> tuple[int, str | None]:
    """When the report is made (the wall clock), and, for a directory a ``--speed``/``--candles``
    run left its simulated timeline in, the note saying its events' times are on that clock.

    Unlike the daemon's report at a stop (README, Decisions), this one is built at any later
    time, when the simulated clock has run on by (wall time passed) × speed: its "now" would
    date nothing, so the name and "Generated" stay on the wall clock and the note says which is which.
    """
    from livetrader.live.clock import saved_clock

    wall = int(time.time() * 1000)
    clock = saved_clock(data_dir)
    if clock is None:
        return wall, None
    return wall, (f"Clock: the events' times are on this data directory's simulated clock ({clock.speed:g}x); this "
                  "report's file name and \"Generated\" are on the wall clock.")


def _halt_note(data_dir: Path) -> str:
    """The halts in force in ``data_dir`` (docs/behaviour.md §13), for the reports' note; empty when none."""
    from livetrader.core.halt import halts_in_force
    from livetrader.errors import StoreReadError
    from livetrader.service.status import halt_lines
    from livetrader.store.control import read_control

    try:
        records = read_control(data_dir).records
    except StoreReadError:
        return ""
    halts = [h.as_dict() for _, h in sorted(halts_in_force(records).items())]
    return " ".join(halt_lines(halts, halts))
def run(data_dir: Path, symbol: str | None, strategy: str | None, out: Path | None, as_json: bool,
        summary: bool = False) -> int:
    """Print (or write to ``out``) the report of every matching pair, or with ``summary`` one line
    per pair and the portfolio line; returns the exit code."""
    require_data_dir(data_dir, "report")
    pairs = journal_pairs(data_dir)
    if not pairs:
        sys.stdout.write(f"No journal yet in {data_dir}: nothing has traded there. No closed trades yet.\n")
        return 0
    wanted = [p for p in pairs if (symbol is None or _same_symbol(p.symbol, symbol))
              and (strategy is None or p.strategy == strategy)]
    if not wanted:
        known = ", ".join(f"{p.symbol}/{p.strategy}/{p.exchange}" for p in pairs)
        raise UsageError(
            f"no journal for {symbol or '*'} / {strategy or '*'} in {data_dir}; pairs with a journal: {known}"
        )
    if summary:
        return _summary(wanted, out, as_json)
    now, clock_note = report_clock(data_dir)
    halted = _halt_note(data_dir)
    if halted:
        clock_note = f"{clock_note} {halted}" if clock_note else halted
    if as_json:
        doc = {"pairs": [{"symbol": p.symbol, "strategy": p.strategy, "exchange": p.exchange,
                          "stats": stats_for(p.records).to_dict(),
                          "trades": [r for r in p.records if r["event"] == "closed"],
                          "events": len(p.records), "unreadable_lines": p.bad_lines} for p in wanted]}
        # Notes and reasons come from strategies (the markdown is redacted by build_report).
        sys.stdout.buffer.write(orjson.dumps(redaction.redact_value(doc), option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    if out is None:
        sys.stdout.write("\n\n".join(markdown_of(p, now, clock_note) for p in wanted))
        return 0
    from livetrader.store.atomic import write_atomic

    out.mkdir(parents=True, exist_ok=True)
    for p in wanted:
        path = out / report_filename(p.symbol, p.strategy, p.exchange, now)
        write_atomic(path, markdown_of(p, now, clock_note).encode())
        write_equity_png(path.with_suffix(".png"), p.records)  # only with livetrader[charts]
        sys.stdout.write(f"{path}\n")
    return 0


def _same_symbol(a: str, b: str) -> bool:
    return a.replace("/", "").upper() == b.replace("/", "").upper()


def _summary(pairs: list[JournalPair], out: Path | None, as_json: bool) -> int:
    """``--summary``: every pair on one line and the portfolio line, as markdown (or JSON)."""
    from livetrader.report.summary import summarize_pairs, summary_markdown

    lines = summarize_pairs([(f"{p.symbol} {p.strategy} ({p.exchange})", p.records) for p in pairs])
    if as_json:
        doc = {"pairs": [line.to_dict() for line in lines[:-1]], "portfolio": lines[-1].to_dict()}
        sys.stdout.buffer.write(orjson.dumps(redaction.redact_value(doc), option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    text = summary_markdown(lines)
    if out is None:
        sys.stdout.write(text)
        return 0
    from livetrader.store.atomic import write_atomic

    out.mkdir(parents=True, exist_ok=True)
    path = out / "summary.md"
    write_atomic(path, text.encode())
    sys.stdout.write(f"{path}\n")
    return 0
