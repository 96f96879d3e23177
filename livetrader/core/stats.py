"""Statistics over closed trades, for reports (docs/behaviour.md §10).

Pure arithmetic: no I/O, no clock, no logging. Callers turn their own records into
:class:`ClosedTrade` values and call :func:`compute_stats`.

Every figure that would be NaN or infinite, or that rests on too little data, is ``None``
(``null`` in JSON, ``N/A`` when printed) — never a misleading number:

* ratios (sharpe, annualized_sharpe, certainty_ratio, profit_factor, sqn) need at least
  :data:`MIN_TRADES_FOR_RATIOS` closed trades;
* annualised figures (annualized_sharpe, expected_yearly_returns) need at least
  :data:`MIN_DAYS_FOR_ANNUAL` days of history;
* the sample standard deviation needs at least two closed trades.

PnL values are percentages (``1.5`` means +1.5 %), so sums, averages, deviations and
drawdowns are in percentage points.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

MIN_TRADES_FOR_RATIOS = 10
"""Closed trades needed before any ratio (sharpe, certainty, profit factor, SQN) is reported."""

MIN_DAYS_FOR_ANNUAL = 14
"""Days of history needed before any figure is annualised."""

DAY_MS = 86_400_000
DAYS_PER_YEAR = 365


@dataclass(slots=True, frozen=True)
class ClosedTrade:
    """One closed trade as statistics see it: its PnL in percent and its times in integer ms UTC;
    why it closed and its PnL in quote currency when known (for :func:`summarize_trades`)."""

    pnl_percentage: float
    opened_at: int
    closed_at: int
    close_reason: str | None = None
    pnl_cost: float | None = None


@dataclass(slots=True, frozen=True)
class Stats:
    """Statistics over the closed trades of one pair; every ``None`` is printed ``N/A``.

    See :func:`compute_stats` for each formula and :data:`STAT_EXPLANATIONS` for the
    one-line explanations printed in the report.
    """

    total_events: int
    total_closed: int
    win_count: int
    loss_count: int
    win_rate: float | None
    avg_pnl: float | None
    total_pnl: float | None
    std_dev: float | None
    sharpe: float | None
    annualized_sharpe: float | None
    certainty_ratio: float | None
    expected_yearly_returns: float | None
    max_drawdown: float | None
    profit_factor: float | None
    expectancy: float | None
    sqn: float | None

    def to_dict(self) -> dict[str, int | float | None]:
        """The statistics as a JSON-ready dict, in field order; ``None`` stays ``None``."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _finite(value: float | None) -> float | None:
    """``value`` as a float when it is a finite number, else ``None``."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _attempt(compute: Callable[[], float | None]) -> float | None:
    """Run ``compute``; ``None`` when it fails arithmetically or yields NaN or an infinity."""
    try:
        return _finite(compute())
    except (ArithmeticError, ValueError):  # ZeroDivisionError, OverflowError, StatisticsError
        return None


def _max_drawdown(pnls_in_close_order: Sequence[float]) -> float | None:
    """Largest peak-to-trough fall of the cumulative PnL curve, starting from 0.

    ``equity_k = pnl_1 + … + pnl_k`` with ``equity_0 = 0``;
    ``max_drawdown = max over k of (max(equity_0..equity_k) - equity_k)``, which is ``0``
    when the curve never falls.
    """
    equity = 0.0
    peak = 0.0
    worst = 0.0
    for pnl in pnls_in_close_order:
        equity += pnl
        if not math.isfinite(equity):
            return None
        peak = max(peak, equity)
        worst = max(worst, peak - equity)
    return _finite(worst)


def compute_stats(
    trades: Sequence[ClosedTrade],
    *,
    total_events: int | None = None,
    first_at: int | None = None,
    last_at: int | None = None,
    min_trades_for_ratios: int = MIN_TRADES_FOR_RATIOS,
    min_days_for_annual: float = MIN_DAYS_FOR_ANNUAL,
) -> Stats:
    """Compute :class:`Stats` from closed trades (in any order).

    With ``n`` closed trades of PnL ``p_i`` (percent), wins ``W = {p_i > 0}`` and losses
    ``L = {p_i < 0}`` (a zero PnL is neither):

    * ``total_events`` = the argument, defaulting to ``n``; ``total_closed = n``;
    * ``win_count = |W|``, ``loss_count = |L|``;
    * ``win_rate = |W| / (|W| + |L|) · 100`` — None without a decisive trade;
    * ``avg_pnl = Σp / n``, ``total_pnl = Σp`` — None without trades;
    * ``std_dev = sqrt(Σ(p - avg)² / (n - 1))`` (sample) — None below 2 trades;
    * ``sharpe = avg_pnl / std_dev``;
    * ``annualized_sharpe = sharpe · sqrt(trades_per_year)``;
    * ``certainty_ratio = avg(W) / |avg(L)|`` — None without a win or without a loss;
    * ``expected_yearly_returns = avg_pnl · trades_per_year``;
    * ``max_drawdown`` = largest fall of the cumulative sum of PnL (trades ordered by
      ``closed_at``), starting from 0, as positive percentage points; 0 if it never falls;
    * ``profit_factor = ΣW / |ΣL|`` — None without a loss;
    * ``expectancy = win_rate/100 · avg(W) − loss_rate · |avg(L)|`` with
      ``loss_rate = |L| / (|W| + |L|)``, i.e. the mean PnL of decisive trades;
    * ``sqn = sqrt(n) · avg_pnl / std_dev``.

    ``trades_per_year = n / history_days · 365`` with
    ``history_days = (last_at − first_at) / 86_400_000``; ``first_at`` defaults to the
    earliest ``opened_at`` and ``last_at`` to the latest ``closed_at``.

    Guards: sharpe, annualized_sharpe, certainty_ratio, profit_factor and sqn need
    ``n >= min_trades_for_ratios``; annualized_sharpe and expected_yearly_returns need
    ``history_days >= min_days_for_annual``; any figure that would be NaN or infinite
    (a zero deviation, an overflow) is None.
    """
    ordered = sorted(trades, key=lambda t: (t.closed_at, t.opened_at))
    pnls = [t.pnl_percentage for t in ordered]
    wins = [p for p in pnls if p > 0]
    losses = [p for p in pnls if p < 0]
    decisive = [p for p in pnls if p != 0]
    n = len(pnls)

    if first_at is None and ordered:
        first_at = min(t.opened_at for t in ordered)
    if last_at is None and ordered:
        last_at = max(t.closed_at for t in ordered)
    history_days = None if first_at is None or last_at is None else (last_at - first_at) / DAY_MS

    enough_trades = n >= min_trades_for_ratios
    enough_history = history_days is not None and history_days >= min_days_for_annual

    avg_pnl = _attempt(lambda: statistics.mean(pnls)) if n else None
    total_pnl = _attempt(lambda: math.fsum(pnls)) if n else None
    std_dev = _attempt(lambda: statistics.stdev(pnls)) if n >= 2 else None
    avg_win = _attempt(lambda: statistics.mean(wins)) if wins else None
    avg_loss = _attempt(lambda: statistics.mean(losses)) if losses else None

    win_rate = _attempt(lambda: len(wins) / len(decisive) * 100) if decisive else None
    expectancy = _attempt(lambda: statistics.mean(decisive)) if decisive else None

    trades_per_year = None
    if enough_history and history_days is not None and history_days > 0:
        trades_per_year = _attempt(lambda: n / history_days * DAYS_PER_YEAR)

    sharpe = certainty_ratio = profit_factor = sqn = annualized_sharpe = None
    if enough_trades:
        if avg_pnl is not None and std_dev is not None:
            sharpe = _attempt(lambda: avg_pnl / std_dev)
            sqn = _attempt(lambda: math.sqrt(n) * avg_pnl / std_dev)
        if avg_win is not None and avg_loss is not None:
            certainty_ratio = _attempt(lambda: avg_win / abs(avg_loss))
        if losses:
            profit_factor = _attempt(lambda: math.fsum(wins) / abs(math.fsum(losses)))
        if sharpe is not None and trades_per_year is not None:
            annualized_sharpe = _attempt(lambda: sharpe * math.sqrt(trades_per_year))

    expected_yearly_returns = None
    if avg_pnl is not None and trades_per_year is not None:
        expected_yearly_returns = _attempt(lambda: avg_pnl * trades_per_year)

    return Stats(
        total_events=n if total_events is None else int(total_events),
        total_closed=n,
        win_count=len(wins),
        loss_count=len(losses),
        win_rate=win_rate,
        avg_pnl=avg_pnl,
        total_pnl=total_pnl,
        std_dev=std_dev,
        sharpe=sharpe,
        annualized_sharpe=annualized_sharpe,
        certainty_ratio=certainty_ratio,
        expected_yearly_returns=expected_yearly_returns,
        max_drawdown=_max_drawdown(pnls) if n else None,
        profit_factor=profit_factor,
        expectancy=expectancy,
        sqn=sqn,
    )


STAT_EXPLANATIONS: tuple[tuple[str, str, str], ...] = (
    ("total_events", "Total events", "Events counted: the journal's transitions (scheduled, opened, closed, "
                                      "cancelled) in a report from the journal; the events kept in memory, idle and "
                                      "active ticks included, in a live report's window."),
    ("total_closed", "Closed trades", "Signals that closed with a PnL."),
    ("win_count", "Wins", "Closed trades with PnL above zero."),
    ("loss_count", "Losses", "Closed trades with PnL below zero."),
    ("win_rate", "Win rate", "Wins / (wins + losses) × 100; N/A without a winning or losing trade."),
    ("avg_pnl", "Average PnL", "Mean PnL per closed trade; N/A without closed trades."),
    ("total_pnl", "Total PnL", "Sum of the PnL percentages of closed trades; N/A without closed trades."),
    ("std_dev", "Standard deviation", "Sample (n−1) standard deviation of PnL; N/A below 2 closed trades."),
    (
        "sharpe",
        "Sharpe ratio",
        f"Average PnL / standard deviation; N/A below {MIN_TRADES_FOR_RATIOS} closed trades "
        "or with zero deviation.",
    ),
    (
        "annualized_sharpe",
        "Annualized Sharpe",
        "Sharpe × √(trades per year); N/A when Sharpe is N/A or with under "
        f"{MIN_DAYS_FOR_ANNUAL} days of history.",
    ),
    (
        "certainty_ratio",
        "Certainty ratio",
        f"Average win / |average loss|; N/A below {MIN_TRADES_FOR_RATIOS} closed trades "
        "or without both a win and a loss.",
    ),
    (
        "expected_yearly_returns",
        "Expected yearly returns",
        f"Average PnL × trades per year; N/A with under {MIN_DAYS_FOR_ANNUAL} days of history.",
    ),
    (
        "max_drawdown",
        "Max drawdown",
        "Largest peak-to-trough fall of cumulative PnL from 0, in points; N/A without closed trades.",
    ),
    (
        "profit_factor",
        "Profit factor",
        f"Sum of wins / |sum of losses|; N/A below {MIN_TRADES_FOR_RATIOS} closed trades or without a loss.",
    ),
    (
        "expectancy",
        "Expectancy",
        "Win rate × average win − loss rate × |average loss|; N/A without a winning or losing trade.",
    ),
    (
        "sqn",
        "SQN",
        f"√n × average PnL / standard deviation; N/A below {MIN_TRADES_FOR_RATIOS} closed trades "
        "or with zero deviation.",
    ),
)
"""(field name, label, one-line explanation with its guard) for every :class:`Stats` field, in order."""

STAT_KINDS: dict[str, str] = {
    "total_events": "count",
    "total_closed": "count",
    "win_count": "count",
    "loss_count": "count",
    "win_rate": "percent",
    "avg_pnl": "pnl",
    "total_pnl": "pnl",
    "std_dev": "points",
    "sharpe": "ratio",
    "annualized_sharpe": "ratio",
    "certainty_ratio": "ratio",
    "expected_yearly_returns": "pnl",
    "max_drawdown": "points",
    "profit_factor": "ratio",
    "expectancy": "pnl",
    "sqn": "ratio",
}
"""The :func:`format_stat` kind of every :class:`Stats` field."""


def format_stat(value: float | None, kind: str) -> str:
    """Format one statistic for a report; ``None`` (or NaN/infinity) prints ``N/A``.

    Kinds: ``count`` → ``12``; ``percent`` → ``63.64%``; ``pnl`` (signed percentage
    points) → ``+1.000%``; ``points`` (unsigned percentage points) → ``2.449%``;
    ``ratio`` → ``0.408``.
    """
    if kind not in ("count", "percent", "pnl", "points", "ratio"):
        raise ValueError(f"unknown statistic kind {kind!r}")
    if value is None or not math.isfinite(value):
        return "N/A"
    if kind == "count":
        return str(int(value))
    if kind == "percent":
        return f"{value:.2f}%"
    if kind == "pnl":
        return f"{value:+.3f}%"
    if kind == "points":
        return f"{value:.3f}%"
    return f"{value:.3f}"


# -- what a trader reads beside the statistics (``summarize_trades``) ----------------------------


@dataclass(slots=True, frozen=True)
class ReasonLine:
    """The closed trades of one exit reason: how many, their average PnL (percent), their PnL in
    quote currency (None when no trade of them carries it), wins and losses."""

    reason: str
    count: int
    avg_pnl: float | None
    pnl_cost: float | None
    wins: int
    losses: int


@dataclass(slots=True, frozen=True)
class TradeSummary:
    """A trader's view of closed trades; see :func:`summarize_trades`. Times in integer ms UTC."""

    trades: int
    pnl_cost: float | None
    by_reason: tuple[ReasonLine, ...]
    avg_duration_ms: float | None
    median_duration_ms: float | None
    best: ClosedTrade | None
    worst: ClosedTrade | None
    longest_win_streak: int
    longest_loss_streak: int
    max_drawdown: float | None
    drawdown_start: int | None
    drawdown_end: int | None
    buy_and_hold: float | None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: trades as ``{pnl_percentage, pnl_cost, opened_at, closed_at, close_reason}``."""

        def trade(t: ClosedTrade | None) -> dict[str, object] | None:
            if t is None:
                return None
            return {"pnl_percentage": t.pnl_percentage, "pnl_cost": t.pnl_cost, "opened_at": t.opened_at,
                    "closed_at": t.closed_at, "close_reason": t.close_reason}

        return {
            "trades": self.trades,
            "pnl_cost": self.pnl_cost,
            "by_reason": [{"reason": r.reason, "count": r.count, "avg_pnl": r.avg_pnl, "pnl_cost": r.pnl_cost,
                           "wins": r.wins, "losses": r.losses} for r in self.by_reason],
            "avg_duration_ms": self.avg_duration_ms,
            "median_duration_ms": self.median_duration_ms,
            "best": trade(self.best),
            "worst": trade(self.worst),
            "longest_win_streak": self.longest_win_streak,
            "longest_loss_streak": self.longest_loss_streak,
            "max_drawdown": self.max_drawdown,
            "drawdown_start": self.drawdown_start,
            "drawdown_end": self.drawdown_end,
            "buy_and_hold": self.buy_and_hold,
        }


def _sum_known(values: Sequence[float | None]) -> float | None:
    """The sum of the known (finite) values; None when none is known."""
    known = [v for v in values if v is not None and math.isfinite(v)]
    return _attempt(lambda: math.fsum(known)) if known else None


def _streaks(pnls: Sequence[float]) -> tuple[int, int]:
    """The longest run of consecutive wins and of consecutive losses; a zero PnL ends both."""
    best_win = best_loss = wins = losses = 0
    for p in pnls:
        wins = wins + 1 if p > 0 else 0
        losses = losses + 1 if p < 0 else 0
        best_win, best_loss = max(best_win, wins), max(best_loss, losses)
    return best_win, best_loss


def drawdown_span(trades_in_close_order: Sequence[ClosedTrade]) -> tuple[float | None, int | None, int | None]:
    """The largest fall of the cumulative PnL (as :func:`compute_stats`' ``max_drawdown``) and when
    it ran: from the peak (the close of the trade that set it, or the first trade's opening when
    the curve fell from its start at 0) to the close of the trade at the bottom. ``(0, None, None)``
    when the curve never falls; ``(None, None, None)`` without trades."""
    if not trades_in_close_order:
        return None, None, None
    equity = peak = worst = 0.0
    peak_at: int = trades_in_close_order[0].opened_at
    start = end = None
    for t in trades_in_close_order:
        equity += t.pnl_percentage
        if not math.isfinite(equity):
            return None, None, None
        if equity > peak:
            peak, peak_at = equity, t.closed_at
        elif peak - equity > worst:
            worst, start, end = peak - equity, peak_at, t.closed_at
    return _finite(worst), start, end


def _mean_pnl(trades: Sequence[ClosedTrade]) -> float | None:
    return _attempt(lambda: statistics.mean(t.pnl_percentage for t in trades))


def summarize_trades(trades: Sequence[ClosedTrade], *, buy_and_hold: float | None = None) -> TradeSummary:
    """What a trader reads beside :class:`Stats`, from closed trades in any order.

    * ``pnl_cost``: the sum of the trades' PnL in quote currency (those that carry one);
    * ``by_reason``: per ``close_reason`` (``?`` when unknown), sorted by reason: count, average
      PnL %, PnL in quote, wins (PnL > 0) and losses (PnL < 0);
    * ``avg_duration_ms``/``median_duration_ms``: of ``closed_at - opened_at``;
    * ``best``/``worst``: the trades of highest and lowest PnL % (the first closed on a tie);
    * ``longest_win_streak``/``longest_loss_streak``: consecutive wins/losses in close order;
    * ``max_drawdown``, ``drawdown_start``, ``drawdown_end``: :func:`drawdown_span`;
    * ``buy_and_hold``: passed through (the PnL % of holding the range, computed by the caller,
      who knows the prices).
    """
    ordered = sorted(trades, key=lambda t: (t.closed_at, t.opened_at))
    groups: dict[str, list[ClosedTrade]] = {}
    for t in ordered:
        groups.setdefault(t.close_reason or "?", []).append(t)
    by_reason = tuple(
        ReasonLine(reason, len(group), _mean_pnl(group),
                   _sum_known([t.pnl_cost for t in group]),
                   sum(1 for t in group if t.pnl_percentage > 0), sum(1 for t in group if t.pnl_percentage < 0))
        for reason, group in sorted(groups.items())
    )
    durations = [t.closed_at - t.opened_at for t in ordered]
    wins, losses = _streaks([t.pnl_percentage for t in ordered])
    drawdown, start, end = drawdown_span(ordered)
    return TradeSummary(
        trades=len(ordered),
        pnl_cost=_sum_known([t.pnl_cost for t in ordered]),
        by_reason=by_reason,
        avg_duration_ms=_attempt(lambda: statistics.mean(durations)) if durations else None,
        median_duration_ms=_attempt(lambda: statistics.median(durations)) if durations else None,
        best=max(ordered, key=lambda t: t.pnl_percentage) if ordered else None,
        worst=min(ordered, key=lambda t: t.pnl_percentage) if ordered else None,
        longest_win_streak=wins,
        longest_loss_streak=losses,
        max_drawdown=drawdown,
        drawdown_start=start,
        drawdown_end=end,
        buy_and_hold=_finite(buy_and_hold),
    )
