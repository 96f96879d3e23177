"""Checks of a data directory after crashes: what the journal and snapshots must always satisfy."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from livetrader.core.machine import check_open, check_scheduled
from livetrader.core.price import MINUTE_MS, Market, market_of
from livetrader.core.signal import row_of
from livetrader.market.sim import SimSource
from livetrader.store.atomic import read_json
from livetrader.store.journal import read_journal

NEXT = {None: {"scheduled", "opened"}, "scheduled": {"opened", "cancelled"}, "opened": {"closed"}}


def check_data_dir(data_dir: Path, source: SimSource | None = None) -> dict[str, int]:
    """Assert every invariant of docs/behaviour.md §9 over ``data_dir``; return counts of what was checked."""
    source = source or SimSource()
    counts: Counter[str] = Counter()
    for jpath in sorted((data_dir / "journal").glob("*.jsonl")):
        read = read_journal(jpath)
        assert read.ok, f"{jpath}: {read.problems}"
        assert read.truncated_tail is None, f"{jpath}: truncated tail left"
        records = read.records
        opened = Counter(r["signal_id"] for r in records if r["event"] == "opened")
        twice = [sid for sid, n in opened.items() if n > 1]
        assert not twice, f"{jpath}: opened twice: {twice}"
        closed = Counter(r["signal_id"] for r in records if r["event"] == "closed")
        assert all(n == 1 for n in closed.values()), f"{jpath}: closed twice"
        state, current = None, None
        for r in records:
            assert r["event"] in NEXT.get(state, set()) or (state is None and r["event"] in NEXT[None]), (
                f"{jpath}: {r['event']} after {state}")
            if r["event"] in ("opened", "closed", "cancelled") and current is not None:
                assert r["signal_id"] == current, f"{jpath}: {r['event']} of {r['signal_id']} while {current} held"
            state = r["event"] if r["event"] in ("scheduled", "opened") else None
            current = r["signal_id"] if state else None
            counts[r["event"]] += 1
        snapshot = read_json(data_dir / "state" / "pairs" / jpath.name.replace(".jsonl", ".json"))
        assert snapshot["journal_records"] == len(records), f"{jpath}: snapshot not caught up"
        held = snapshot["signal"]
        if state is None:
            assert held is None, f"{jpath}: snapshot holds {held} but the journal ended it"
        else:
            assert held is not None and held["id"] == current, f"{jpath}: snapshot lost {current}"
            assert (held["pending_at"] is not None) == (state == "opened")
        for r in records:
            if r["event"] == "closed":
                _check_close(r, source)
                counts["closes verified"] += 1
            elif r["event"] == "opened" and r["scheduled_at"] != r["pending_at"]:
                _check_activation(r, source)
                counts["activations verified"] += 1
    return dict(counts)


def _market(source: SimSource, symbol: str, t: int) -> Market:
    """The minute ``t``'s VWAP and the low and high of the candle that closed at ``t``."""
    return market_of(source.fetch_sync(symbol, t - 5 * MINUTE_MS, t))


def _price(source: SimSource, symbol: str, t: int) -> float:
    return _market(source, symbol, t).price


def _check_close(r: dict, source: SimSource) -> None:
    """The close happened at the first minute the core says it should, at the price it says."""
    row = row_of(r)
    t = row.pending_at + MINUTE_MS
    while t < r["at"]:
        tick = check_open(row, t, _price(source, row.symbol, t))
        assert tick.action == "active", f"{row.id} should have closed at {t} ({tick.close_reason}), not {r['at']}"
        t += MINUTE_MS
    tick = check_open(row, t, _price(source, row.symbol, t))
    assert (tick.action, tick.close_reason, tick.price_close) == ("closed", r["close_reason"], r["price_close"]), (
        f"{row.id}: journal says {r['close_reason']} at {r['price_close']}, candles say {tick}")


def _check_activation(r: dict, source: SimSource) -> None:
    """The activation happened at the first minute whose closed candle reached the entry: its low
    for a long, its high for a short (docs/behaviour.md §2), not the VWAP."""
    row = row_of({**r, "pending_at": None})
    t = row.scheduled_at + MINUTE_MS

    def check(t: int) -> str:
        m = _market(source, row.symbol, t)
        return check_scheduled(row, t, m.price, m.low, m.high).action

    while t < r["at"]:
        assert check(t) == "waiting", f"{row.id} activated late"
        t += MINUTE_MS
    assert check(t) == "opened"
