"""``livetrader report --summary``: every pair on one line, and the portfolio (all pairs together) under them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from livetrader.core.format import format_time
from livetrader.core.stats import ClosedTrade, compute_stats, drawdown_span, format_stat, summarize_trades
from livetrader.redaction import redact
from livetrader.report.markdown import closed_trades

#: The portfolio line's name in the table and in JSON.
PORTFOLIO = "portfolio"


@dataclass(slots=True, frozen=True)
class SummaryLine:
    """One pair's (or the portfolio's) figures; every None prints ``N/A``."""

    name: str
    trades: int
    wins: int
    losses: int
    win_rate: float | None
    pnl: float | None
    pnl_cost: float | None
    max_drawdown: float | None
    drawdown_cost: float | None
    first_at: int | None
    last_at: int | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, in field order."""
        return {name: getattr(self, name) for name in self.__slots__}


def summary_line(name: str, trades: Sequence[ClosedTrade]) -> SummaryLine:
    """The figures of ``trades``: counts, win rate, summed PnL % (of the positions, in points),
    PnL in quote currency, drawdown of the summed PnL % and of the quote PnL (in close order)."""
    stats = compute_stats(trades)
    summary = summarize_trades(trades)
    in_quote = [replace(t, pnl_percentage=t.pnl_cost) for t in trades if t.pnl_cost is not None]
    drawdown_cost = drawdown_span(sorted(in_quote, key=lambda t: (t.closed_at, t.opened_at)))[0]
    return SummaryLine(name, stats.total_closed, stats.win_count, stats.loss_count, stats.win_rate, stats.total_pnl,
                       summary.pnl_cost, stats.max_drawdown, drawdown_cost if in_quote else None,
                       min((t.opened_at for t in trades), default=None),
                       max((t.closed_at for t in trades), default=None))


def summarize_pairs(pairs: Sequence[tuple[str, Sequence[dict[str, Any]]]]) -> list[SummaryLine]:
    """One line per (name, journal records) pair, then the portfolio line over every closed trade."""
    lines, everything = [], []
    for name, records in pairs:
        trades = closed_trades(records)
        everything += trades
        lines.append(summary_line(name, trades))
    lines.append(summary_line(PORTFOLIO, everything))
    return lines


def _quote(value: float | None) -> str:
    return "N/A" if value is None else f"{value:+,.2f}"


def summary_markdown(lines: Sequence[SummaryLine], title: str = "Summary: every pair, and the portfolio") -> str:
    """The summary table: one row per pair, the portfolio row last (in bold)."""
    out = [f"# {title}", "",
           "| Pair | Trades | Wins | Losses | Win rate | PnL % (sum) | PnL (quote) | Max drawdown | "
           "Drawdown (quote) | First open | Last close |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for line in lines:
        name = f"**{line.name}**" if line.name == PORTFOLIO else line.name.replace("|", "\\|")
        out.append(f"| {name} | {line.trades} | {line.wins} | {line.losses} | {format_stat(line.win_rate, 'percent')} "
                   f"| {format_stat(line.pnl, 'pnl')} | {_quote(line.pnl_cost)} | "
                   f"{format_stat(line.max_drawdown, 'points')} | "
                   f"{'N/A' if line.drawdown_cost is None else f'{line.drawdown_cost:,.2f}'} | "
                   f"{format_time(line.first_at)} | {format_time(line.last_at)} |")
    out += ["", "PnL % (sum) adds up the positions' percentages; PnL (quote) is in quote currency (from the fills in "
            "sandbox/live, from each position's cost otherwise). The portfolio's drawdowns run over every pair's "
            "closed trades together, in close order.", ""]
    return redact("\n".join(out))
