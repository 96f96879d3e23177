"""The report of a live pair (docs/behaviour.md §10): its in-memory event window, with the
statistics and trades of its whole journal.

Written by the daemon for every pair at exit, and by ``Live.dump`` on request. The caller
hands over what the pair holds (its key, its window's events, its journal's records), so
this module knows nothing of the live runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from livetrader.core.format import format_time
from livetrader.report.markdown import build_report, closed_trades, report_filename, stats_for, write_equity_png
from livetrader.store.atomic import write_atomic

#: Where the reports of live pairs go, under the data directory.
LIVE_REPORTS_DIR = Path("reports") / "live"


def live_report_text(
    key: tuple[str, str, str],
    events: list[dict[str, Any]],
    journaled: list[dict[str, Any]] | None,
    max_events: int,
    now_ms: int | None = None,
    clock_note: str | None = None,
) -> str:
    """The markdown report of one pair: the ``events`` of its window (newest first, at most
    ``max_events``), and statistics over ``journaled``, every record of its journal (None: the
    pair has no store, the statistics cover the window). ``clock_note`` says which clock its
    times are on (:func:`simulated_clock_note`), when that is not the wall clock."""
    symbol, strategy, exchange = key
    title = f"Live report: {strategy} on {symbol} ({exchange})"
    note = f"Events: the last {max_events} kept in memory (idle and active ones included)."
    if clock_note:
        note = f"{clock_note} {note}"
    if journaled is None:
        return build_report(title, events, stats=stats_for(events), now_ms=now_ms, note=note)
    # The statistics cover the whole history, as `livetrader report` does.
    note += f" Statistics: all {sum(1 for r in journaled if r['event'] == 'closed')} closed trades in the journal."
    return build_report(title, events, stats=stats_for(journaled), now_ms=now_ms, note=note,
                        trades=closed_trades(journaled), orders=journaled)


def simulated_clock_note(speed: float, wall_ms: int) -> str:
    """What a report written on a simulated clock says of its times: its name, its "Generated"
    stamp and its events are all on that clock (README, Decisions); ``wall_ms`` is when it was
    really written."""
    return (f"Clock: simulated ({speed:g}x); every time in this report, its file name and \"Generated\" included, "
            f"is simulated. Written {format_time(wall_ms)} by the wall clock.")


def live_report_path(data_dir: Path, key: tuple[str, str, str], now_ms: int) -> Path:
    """The default file of a pair's report: ``<data-dir>/reports/live/<pair>_<time>.md``, ``now_ms``
    on the run's clock (the clock of the events inside)."""
    return data_dir / LIVE_REPORTS_DIR / report_filename(*key, now_ms)


def write_live_report(
    path: Path,
    key: tuple[str, str, str],
    events: list[dict[str, Any]],
    journaled: list[dict[str, Any]] | None,
    max_events: int,
    now_ms: int,
    clock_note: str | None = None,
) -> Path:
    """Write the report (:func:`live_report_text`) to ``path`` atomically, and its equity chart
    beside it (``.png``, only with ``livetrader[charts]``); return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, live_report_text(key, events, journaled, max_events, now_ms, clock_note).encode())
    write_equity_png(path.with_suffix(".png"), journaled if journaled is not None else events)
    return path
