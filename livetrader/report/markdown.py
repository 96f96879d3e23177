"""Per-pair event windows and markdown reports (docs/behaviour.md §10).

Records are the flat dicts of :func:`livetrader.core.signal.record_of` (the journal lines), so
the live window and ``livetrader report`` (which reads the journal) render the same way.
Nothing here does I/O except :func:`write_equity_png`, and nothing prints ``nan`` or ``inf``:
missing or non-finite numbers print ``-`` (values) or ``N/A`` (statistics).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from os import PathLike
from typing import Any, Final

from livetrader.core.format import format_duration, format_price, format_time
from livetrader.core.orders import ORDER_EVENTS, orders_of
from livetrader.core.signal import TickResult, record_of
from livetrader.core.stats import (
    STAT_EXPLANATIONS,
    STAT_KINDS,
    ClosedTrade,
    Stats,
    TradeSummary,
    compute_stats,
    format_stat,
    summarize_trades,
)
from livetrader.logs import get_logger
from livetrader.redaction import redact
from livetrader.store.names import stem_of

log = get_logger(__name__)

DEFAULT_MAX_EVENTS: Final = 250
"""Events kept per pair in memory (the seed's ``MAX_EVENTS``)."""

SPARK_BLOCKS: Final = "▁▂▃▄▅▆▇█"
SPARK_WIDTH: Final = 60
"""Most points an equity sparkline shows; longer curves are resampled to fit a line."""

NO_CLOSED_TRADES: Final = "No closed trades yet."

COLUMNS: Final[tuple[str, ...]] = (
    "Time (UTC)",
    "Action",
    "Symbol",
    "Signal ID",
    "Position",
    "Price",
    "Close price",
    "Open",
    "Take profit",
    "Stop loss",
    "PnL %",
    "Close reason",
    "Duration",
)
"""The report table's header, one column per field of a row. "Price" is the minute's VWAP (what
the pair saw); "Close price" what a close was priced at (its take-profit or stop-loss level, or
the VWAP when it expired)."""

# Actions whose repeated per-tick rows collapse into one per signal (see EventWindow.add).
_REPLACING: Final = frozenset({"active", "waiting"})


# -- numbers and times ---------------------------------------------------------------------------


def _num(value: Any) -> float | None:
    """``value`` as a finite float, else None (journals are read back from disk: trust nothing)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _ms(value: Any) -> int | None:
    number = _num(value)
    return None if number is None else int(number)


# -- the in-memory window ------------------------------------------------------------------------


class EventWindow:
    """The last ``max_events`` events of one pair, newest first, with the space savers of docs/behaviour.md §10.

    Memory is bounded however long the daemon runs: a ``deque(maxlen=max_events)`` drops the
    oldest event, and repeated per-tick rows collapse (see :meth:`add`). The live pair adds its
    tick results as they are (small named tuples sharing their signal) and the flat record
    of each is built only when someone reads the window: a window holds up to 250 events for
    every pair of a process, read rarely, written every minute.
    """

    __slots__ = ("max_events", "_events", "total_added")

    def __init__(self, max_events: int = DEFAULT_MAX_EVENTS) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self.max_events = max_events
        self._events: deque[dict | TickResult] = deque(maxlen=max_events)  # index 0 is the newest
        self.total_added = 0
        """Events ever passed to :meth:`add`, collapsed or not."""

    def add(self, event: dict | TickResult) -> None:
        """Add an event as the newest: a record (from ``record_of``, e.g. a journal line) or a tick result.

        * ``idle``: replaces the newest stored event when that is an ``idle`` too — nothing
          opened or was active since, so a quiet pair keeps one idle row, not one per minute.
        * ``active``: replaces the previous ``active`` row of the same signal id (and moves it to
          the front). The seed replaces *any* event with the same signal id; we restrict it to
          ``active`` so the ``opened`` row (entry time and price) and the ``closed`` row stay in
          the report — they are the rows a reader wants.
        * ``waiting`` (a scheduled signal not yet filled) collapses the same way, per signal id:
          it repeats every tick for up to two hours and would otherwise flood the window.
        * anything else is stored as is.
        """
        self.total_added += 1
        events = self._events
        if events and type(event) is TickResult:
            # The usual case, a live pair's tick after its previous one: replaced in place.
            newest = events[0]
            if type(newest) is TickResult and newest.action == event.action:
                if event.action == "idle":
                    events[0] = event
                    return
                if event.action in _REPLACING and event.signal is not None and newest.signal is not None \
                        and newest.signal.id == event.signal.id:
                    events[0] = event
                    return
        action = event.get("event") if isinstance(event, dict) else event.action
        if action == "idle":
            if events and _action_of(events[0]) == "idle":
                events[0] = event
                return
        elif action in _REPLACING:
            signal_id = _signal_id_of(event)
            front = events[0] if events else None
            if signal_id is not None and type(front) is TickResult and front.action == action \
                    and front.signal is not None and front.signal.id == signal_id:
                events[0] = event  # the usual case, a live pair's previous tick: replaced in place
                return
            if signal_id is not None:
                for i, old in enumerate(events):  # almost always i == 0; at most max_events steps
                    if _action_of(old) == action and _signal_id_of(old) == signal_id:
                        del events[i]
                        break
        events.appendleft(event)

    def extend(self, records: Iterable[dict]) -> None:
        """:meth:`add` each record, oldest first (e.g. replaying the journal on start)."""
        for record in records:
            self.add(record)

    def events(self) -> list[dict]:
        """The stored events as records, newest first."""
        return [e if isinstance(e, dict) else record_of(e) for e in self._events]

    def closed_trades(self) -> list[ClosedTrade]:
        """The closed trades in the window, oldest close first."""
        return closed_trades(reversed(self.events()))

    def stats(self) -> Stats:
        """Statistics over the window (``total_events`` counts the stored rows, as the seed does)."""
        return stats_for(self.events())

    def clear(self) -> None:
        """Forget every stored event."""
        self._events.clear()

    def __len__(self) -> int:
        return len(self._events)


def _action_of(event: dict | TickResult) -> str | None:
    return event.get("event") if isinstance(event, dict) else event.action


def _signal_id_of(event: dict | TickResult) -> str | None:
    if isinstance(event, dict):
        return event.get("signal_id")
    return event.signal.id if event.signal is not None else None


# -- statistics from records ---------------------------------------------------------------------


def closed_trade_of(record: dict) -> ClosedTrade | None:
    """The :class:`ClosedTrade` of a ``closed`` record; None for other records or a missing/non-finite PnL.

    Opened at ``pending_at`` (falling back to ``scheduled_at``, then to the close time); closed at ``at``;
    with its ``close_reason`` and ``pnl_cost`` (quote currency: from the fills in sandbox/live, from
    the position's cost otherwise) when the record has them.
    """
    if record.get("event") != "closed":
        return None
    pnl = _num(record.get("pnl_percentage"))
    closed_at = _ms(record.get("at"))
    if pnl is None or closed_at is None:
        return None
    opened_at = _ms(record.get("pending_at"))
    if opened_at is None:
        opened_at = _ms(record.get("scheduled_at"))
    reason = record.get("close_reason")
    return ClosedTrade(pnl, closed_at if opened_at is None else opened_at, closed_at,
                       reason if isinstance(reason, str) else None, _num(record.get("pnl_cost")))


def closed_trades(records: Iterable[dict]) -> list[ClosedTrade]:
    """The closed trades among ``records`` (any order), sorted by close time."""
    trades = [t for t in map(closed_trade_of, records) if t is not None]
    trades.sort(key=lambda t: (t.closed_at, t.opened_at))
    return trades


def stats_for(records: Sequence[dict]) -> Stats:
    """Statistics over the closed records among ``records``; ``total_events`` is ``len(records)``."""
    return compute_stats(closed_trades(records), total_events=len(records))


# -- markdown ------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    """Text safe inside a markdown table cell: no pipe, no line break, never empty."""
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return "-"
    text = str(value).replace("\\", "\\\\").replace("|", "\\|")
    text = " ".join(text.split())
    return text or "-"


def _duration_of(record: dict) -> str:
    action = record.get("event")
    at = _ms(record.get("at"))
    if at is None:
        return "-"
    if action == "closed":
        start = _ms(record.get("pending_at"))
        if start is None:
            start = _ms(record.get("scheduled_at"))
    elif action == "cancelled":
        start = _ms(record.get("scheduled_at"))
    else:
        return "-"
    return "-" if start is None else format_duration(at - start)


def _reason_of(record: dict) -> Any:
    action = record.get("event")
    if action == "closed":
        return record.get("close_reason")
    if action == "cancelled":
        return record.get("reason")
    return None


def _row(record: dict) -> str:
    pnl = _num(record.get("pnl_percentage"))
    cells = (
        format_time(record.get("at")),
        _cell(record.get("event")),
        _cell(record.get("symbol")),
        _cell(record.get("signal_id")),
        _cell(record.get("position")),
        format_price(record.get("price")),
        format_price(record.get("price_close")),  # what a close paid (TP/SL level), not the minute's VWAP
        format_price(record.get("price_open")),
        format_price(record.get("take_profit")),
        format_price(record.get("stop_loss")),
        "-" if pnl is None else format_stat(pnl, "pnl"),
        _cell(_reason_of(record)),
        _duration_of(record),
    )
    return "| " + " | ".join(cells) + " |"


def sparkline(values: Sequence[float], width: int = SPARK_WIDTH) -> str:
    """A unicode block sparkline (``▁▂▃▄▅▆▇█``) of finite ``values``, resampled to at most ``width`` points.

    Resampling keeps the last value of each bucket, so the line ends on the final value.
    A flat series prints mid-height blocks. Empty input gives an empty string.
    """
    points = [v for v in values if math.isfinite(v)]
    if not points:
        return ""
    if len(points) > width > 0:
        n = len(points)
        points = [points[min(n - 1, ((i + 1) * n) // width - 1)] for i in range(width)]
    lo, hi = min(points), max(points)
    if hi - lo <= 0 or not math.isfinite(hi - lo):
        return SPARK_BLOCKS[3] * len(points)
    top = len(SPARK_BLOCKS) - 1
    return "".join(SPARK_BLOCKS[max(0, min(top, round((v - lo) / (hi - lo) * top)))] for v in points)


def equity_curve(trades: Sequence[ClosedTrade]) -> list[float]:
    """Cumulative PnL (percentage points) after each trade in close order, starting from 0.

    The leading 0 makes a first losing trade show as a fall, as the max drawdown counts it.
    """
    curve = [0.0]
    total = 0.0
    for trade in sorted(trades, key=lambda t: (t.closed_at, t.opened_at)):
        if math.isfinite(trade.pnl_percentage):
            total += trade.pnl_percentage
            curve.append(total)
    return curve


def _equity_section(trades: Sequence[ClosedTrade]) -> list[str]:
    curve = equity_curve(trades)
    count = len(curve) - 1
    if count == 0:
        return []
    lines = ["## Equity", ""]
    final = format_stat(curve[-1], "pnl")
    if count < 2:
        lines.append(f"One closed trade, cumulative PnL {final}; the curve needs at least two.")
    else:
        spark = sparkline(curve)
        resampled = f", resampled to {len(spark)} points" if len(spark) < len(curve) else ""
        lines.append(f"`{spark}`")
        lines.append("")
        lines.append(
            f"Cumulative PnL over {count} closed trades{resampled}, from 0: "
            f"min {format_stat(min(curve), 'pnl')} · max {format_stat(max(curve), 'pnl')} · final {final}."
        )
    lines.append("")
    return lines


def build_report(
    title: str,
    records: Sequence[dict],
    *,
    stats: Stats,
    note: str | None = None,
    now_ms: int | None = None,
    trades: Sequence[ClosedTrade] | None = None,
    max_rows: int | None = None,
    orders: Sequence[dict] | None = None,
    summary: TradeSummary | None = None,
) -> str:
    """The markdown report of one pair: title, events table, orders (sandbox/live), equity line, statistics.

    ``records`` are ``record_of`` dicts in any order; rows are printed newest first (by ``at``;
    ties keep the given order). ``stats`` is passed in because it may cover more than the rows
    (e.g. every closed trade in the journal — say so in ``note``). ``now_ms`` stamps the report
    (default: the clock). ``trades`` are the closed trades of the equity line (default: those
    among ``records``); ``max_rows`` keeps only the newest rows of a long journal; ``orders``
    the records whose orders are listed (default: ``records``; a live window holds none);
    ``summary`` the trader's summary (default: of ``trades``; a backtest passes one with its
    buy-and-hold).
    """
    if now_ms is None:
        now_ms = int(datetime.now(tz=UTC).timestamp() * 1000)
    ordered = sorted(records, key=lambda r: -(_ms(r.get("at")) or 0))
    shown = ordered if max_rows is None else ordered[: max(0, max_rows)]

    lines = [f"# {' '.join(str(title).split())}", "", f"Generated {format_time(now_ms)}.", ""]
    if note:
        lines += [" ".join(note.split()), ""]

    lines += ["## Events", ""]
    if len(shown) < len(ordered):
        lines += [f"Showing the newest {len(shown)} of {len(ordered)} events.", ""]
    if shown:
        lines.append("| " + " | ".join(COLUMNS) + " |")
        lines.append("|" + "|".join("---" for _ in COLUMNS) + "|")
        lines += [_row(record) for record in shown]
    else:
        lines.append("No events yet.")
    lines.append("")

    lines += _orders_section(records if orders is None else orders)
    closed = closed_trades(records) if trades is None else trades
    lines += _equity_section(closed)
    lines += _trades_section(summarize_trades(closed) if summary is None else summary)

    lines += ["## Statistics", ""]
    if stats.total_closed == 0:
        lines += [NO_CLOSED_TRADES, ""]
    lines += ["| Statistic | Value | Meaning |", "|---|---|---|"]
    for name, label, explanation in STAT_EXPLANATIONS:
        value = format_stat(getattr(stats, name), STAT_KINDS[name])
        lines.append(f"| {_cell(label)} | {value} | {_cell(explanation)} |")
    lines.append("")
    # Notes, reasons and titles come from strategies: a report is an output like any other.
    return redact("\n".join(lines))


def _quote(value: float | None) -> str:
    return "N/A" if value is None else f"{value:+,.2f}"


def summary_lines(summary: TradeSummary) -> list[tuple[str, str]]:
    """The trader's summary as (label, value) lines: profit in quote currency, durations, best and
    worst trade, streaks, the drawdown's dates, buy-and-hold. Printed by ``backtest`` and reports."""
    def trade(t: ClosedTrade | None) -> str:
        if t is None:
            return "N/A"
        cost = "" if t.pnl_cost is None else f" ({_quote(t.pnl_cost)} quote)"
        reason = t.close_reason or "?"
        return f"{format_stat(t.pnl_percentage, 'pnl')}{cost}, {reason}, closed {format_time(t.closed_at)}"

    if summary.max_drawdown is None:
        drawdown = "N/A"
    elif summary.drawdown_start is None:
        drawdown = f"{format_stat(summary.max_drawdown, 'points')} (never fell)"
    else:
        drawdown = (f"{format_stat(summary.max_drawdown, 'points')} from {format_time(summary.drawdown_start)} "
                    f"to {format_time(summary.drawdown_end)}")
    return [
        ("Profit (quote currency)", _quote(summary.pnl_cost)),
        ("Average duration", format_duration(summary.avg_duration_ms)),
        ("Median duration", format_duration(summary.median_duration_ms)),
        ("Best trade", trade(summary.best)),
        ("Worst trade", trade(summary.worst)),
        ("Longest winning streak", str(summary.longest_win_streak)),
        ("Longest losing streak", str(summary.longest_loss_streak)),
        ("Drawdown", drawdown),
        ("Buy and hold (same range)", "N/A" if summary.buy_and_hold is None
         else format_stat(summary.buy_and_hold, "pnl")),
    ]


def _trades_section(summary: TradeSummary) -> list[str]:
    """Closed trades as a trader reads them: one row per exit reason, then the summary lines."""
    if summary.trades == 0:
        if summary.buy_and_hold is None:
            return []
        return ["## Trades", "", f"No closed trades; buy and hold over the same range: "
                f"{format_stat(summary.buy_and_hold, 'pnl')}.", ""]
    lines = ["## Trades", "", "| Exit reason | Trades | Average PnL % | PnL (quote) | Wins | Losses |",
             "|---|---|---|---|---|---|"]
    for r in summary.by_reason:
        lines.append(f"| {_cell(r.reason)} | {r.count} | {format_stat(r.avg_pnl, 'pnl')} | {_quote(r.pnl_cost)} | "
                     f"{r.wins} | {r.losses} |")
    lines += ["", "| What | Value |", "|---|---|"]
    lines += [f"| {label} | {_cell(value)} |" for label, value in summary_lines(summary)]
    lines.append("")
    return lines


def _orders_section(records: Sequence[dict]) -> list[str]:
    """Sandbox/live pairs: every order with its fills and fees, and the trades' PnL in quote currency."""
    chronological = sorted((r for r in records if isinstance(r, dict)), key=lambda r: _ms(r.get("at")) or 0)
    orders = orders_of([r for r in chronological if r.get("event") in ORDER_EVENTS])
    if not orders:
        return []
    lines = ["## Orders", "", "| Sent | Leg | Client id | Side | Amount | Status | Filled | Average | Fees |",
             "|---|---|---|---|---|---|---|---|---|"]
    for o in orders:
        fees = " + ".join(part for part in (f"{o.fee_base:g} base" if o.fee_base else "",
                                            f"{o.fee_quote:g} quote" if o.fee_quote else "") if part) or "-"
        lines.append(f"| {format_time(o.intent_at)} | {o.leg} #{o.attempt} | {_cell(o.client_id)} | {o.side} | "
                     f"{o.amount:g} | {_cell(o.status)} | {o.filled:g} | {format_price(o.average)} | {fees} |")
    closed = [r for r in chronological if r.get("event") == "closed" and r.get("spent") is not None]
    pnl = sum(_num(r.get("pnl_cost")) or 0.0 for r in closed)
    spent = sum(_num(r.get("spent")) or 0.0 for r in closed)
    quote_fees = sum(o.fee_quote for o in orders)
    lines += ["", f"{len(closed)} closed trade(s) from fills: PnL {pnl:+.6g} in quote currency on {spent:.6g} "
              f"spent, fees included ({quote_fees:.6g} paid in quote, base-asset fees taken off the amounts).", ""]
    return lines


def report_filename(symbol: str, strategy: str, exchange: str, now_ms: int) -> str:
    """``<symbol>_<strategy>_<exchange>_<YYYYmmddTHHMMSSZ>.md``: the pair's file stem (each part
    encoded, unique per pair, see ``livetrader.store.names``) and the UTC time.

    ``BTC/USDT`` becomes ``BTC%2FUSDT``; a name never starts with ``.`` nor leaves its folder.
    """
    stamp = datetime.fromtimestamp(now_ms / 1000, tz=UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stem_of(str(symbol), str(strategy), str(exchange))}_{stamp}.md"


def write_equity_png(path: str | PathLike[str], records: Sequence[dict]) -> bool:
    """Draw the equity curve of the closed ``records`` to a PNG at ``path``; True when written.

    Uses matplotlib only if it is installed (it is not a dependency), through its object API
    without pyplot so the host's backend and global figures are untouched. Returns False when
    matplotlib is missing, when there is no closed trade, or when drawing/writing fails (logged):
    a chart is a nicety and must never break a shutdown.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    trades = closed_trades(records)
    if not trades:
        return False
    try:
        curve = equity_curve(trades)
        figure = Figure(figsize=(8, 3), dpi=100)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot(1, 1, 1)
        axes.plot(range(len(curve)), curve, linewidth=1.5)
        axes.axhline(0.0, linewidth=0.5, color="grey")
        axes.set_xlabel("closed trades")
        axes.set_ylabel("cumulative PnL (%)")
        axes.grid(True, alpha=0.3)
        figure.tight_layout()
        figure.savefig(path, format="png")
    except Exception:
        log.warning("could not write the equity chart", path=str(path), exc_info=True)
        return False
    return True
