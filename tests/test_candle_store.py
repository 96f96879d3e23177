"""The candle store (``market.store``): day files, what is missing, gaps, damage, and reading a range."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from livetrader.core.price import MINUTE_MS, Candle, validate_candles
from livetrader.errors import CandleSourceError, UsageError
from livetrader.market.files import FileSource
from livetrader.market.sim import SimSource
from livetrader.market.store import (
    CANDLE,
    DAY_MS,
    GAP,
    CandleStore,
    Day,
    download,
    open_stored,
    page_fetcher,
)

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z, a day boundary
M = MINUTE_MS


def sim_download(store: CandleStore, start: int, end: int, fetch=None):
    sim = SimSource(seed=7)
    return asyncio.run(download(store, "sim", "BTCUSDT", start, end, fetch or page_fetcher(sim)))


def test_a_day_file_round_trips_and_is_columnar(tmp_path: Path) -> None:
    store = CandleStore(tmp_path)
    day = Day(T0)
    day.put(Candle(T0 + 5 * M, 1.5, 2.0, 1.0, 1.75, 3.0))
    day.status[6] = GAP
    store.write_day("sim", "BTC/USDT", day)
    back = store.read_day("sim", "btcusdt", T0)
    assert back is not None and back.status == day.status and back.columns == day.columns
    assert back.status[5] == CANDLE and back.status[6] == GAP and back.status.count(0) == 1438
    assert [c[5] for c in back.columns] == [1.5, 2.0, 1.0, 1.75, 3.0]
    path = tmp_path / "sim" / "BTCUSDT" / "2024-01-01.day"
    assert path.stat().st_size == 24 + 1440 + 5 * 1440 * 8
    assert store.read_day("sim", "BTCUSDT", T0 + DAY_MS) is None


@pytest.mark.parametrize(("damage", "why"), [
    (lambda b: b[:-1], "bytes, not"),
    (lambda b: b"XXXXXXXX" + b[8:], "not a livetrader day file"),
    (lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:], "checksum mismatch"),
])
def test_a_damaged_day_file_is_named_never_used(tmp_path: Path, damage, why: str) -> None:
    store = CandleStore(tmp_path)
    sim_download(store, T0, T0 + 10 * M)
    path = tmp_path / "sim" / "BTCUSDT" / "2024-01-01.day"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CandleSourceError) as info:
        store.load("sim", "BTCUSDT", T0, T0 + 10 * M)
    assert str(path) in str(info.value) and why in str(info.value) and "livetrader download" in str(info.value)
    # A day file renamed to another day is damaged too.
    path.rename(path.with_name("2024-01-02.day"))
    with pytest.raises(CandleSourceError, match="not the day its name says|bytes, not|not a livetrader|checksum"):
        store.read_day("sim", "BTCUSDT", T0 + DAY_MS)


def test_download_stores_what_the_source_serves_and_a_second_run_fetches_nothing(tmp_path: Path) -> None:
    store = CandleStore(tmp_path)
    start, end = T0 + 1000 * M, T0 + DAY_MS + 1500 * M  # across a day boundary, neither end on one
    calls: list[tuple[int, int]] = []
    inner = page_fetcher(SimSource(seed=7))

    async def counted(symbol: str, since: int, stop: int):
        calls.append((since, stop))
        return await inner(symbol, since, stop)

    report = sim_download(store, start, end, counted)
    assert (report.fetched, report.already, report.new_gap_minutes, report.gaps) == (1940, 0, 0, [])
    assert len(calls) == 2
    stored = store.load("sim", "BTCUSDT", start, end)
    assert stored is not None and stored.candles == SimSource(seed=7).fetch_sync("BTCUSDT", start, end)
    assert list(stored.times) == list(range(start, end, M)) and stored.filled_minutes == 0
    calls.clear()
    again = sim_download(store, start, end, counted)
    assert (calls, again.fetched, again.already) == ([], 0, 1940)
    # Wider on both sides: only the new minutes are asked for.
    wider = sim_download(store, start - 30 * M, end + 20 * M, counted)
    assert calls == [(start - 30 * M, start), (end, end + 20 * M)]
    assert (wider.fetched, wider.already) == (50, 1940)
    assert store.missing("sim", "BTCUSDT", start - 30 * M, end + 20 * M) == []
    assert store.missing("sim", "BTCUSDT", start - 40 * M, end + 20 * M) == [(start - 40 * M, start - 30 * M)]


def test_gaps_are_recorded_not_refetched_and_filled_as_a_candle_file_fills_them(tmp_path: Path) -> None:
    store = CandleStore(tmp_path)
    sim = SimSource(seed=7)
    start, end = T0, T0 + 3000 * M
    holes = {*range(T0 + 10 * M, T0 + 13 * M, M), T0 + 1500 * M, *range(T0 + 2990 * M, end, M)}
    asked: list[int] = []

    async def holey(symbol: str, since: int, stop: int):
        asked.append(since)
        return [c for c in sim.fetch_sync(symbol, since, min(stop, since + 1000 * M)) if c.timestamp not in holes]

    report = asyncio.run(download(store, "sim", "BTCUSDT", start, end, holey))
    assert report.new_gap_minutes == len(holes) == 14
    assert report.gaps == [(T0 + 10 * M, T0 + 13 * M), (T0 + 1500 * M, T0 + 1501 * M), (T0 + 2990 * M, end)]
    asked.clear()
    again = asyncio.run(download(store, "sim", "BTCUSDT", start, end, holey))
    assert asked == [] and again.gaps == report.gaps and again.new_gap_minutes == 0

    stored = store.load("sim", "BTCUSDT", start, end)
    assert stored is not None
    # The same candles as a candle file with the same minutes missing (trailing gap minutes are not
    # candles of the file, so the file ends at the last candle: so does the store's read).
    rows = [list(c) for c in sim.fetch_sync("BTCUSDT", start, end) if c.timestamp not in holes]
    path = tmp_path / "same.json"
    path.write_text(json.dumps(rows))
    from_file = FileSource(path)
    assert stored.candles == from_file.candles and list(stored.times) == from_file.times
    assert (stored.gaps, stored.filled_minutes) == (from_file.gaps, from_file.filled_minutes) == (2, 4)
    validate_candles(stored.candles, start, T0 + 2990 * M)


def test_reading_a_range_needs_every_minute_fetched(tmp_path: Path) -> None:
    store = CandleStore(tmp_path)
    sim_download(store, T0, T0 + 100 * M)
    assert store.load("sim", "BTCUSDT", T0, T0 + 101 * M) is None
    assert store.load("sim", "BTCUSDT", T0 - M, T0 + 100 * M) is None
    assert open_stored(tmp_path, "sim", "btc/usdt", T0 + 10 * M, T0 + 20 * M) is not None
    assert open_stored(tmp_path, "sim", "ETHUSDT", T0, T0 + 10 * M) is None
    assert open_stored(tmp_path, "binance", "BTCUSDT", T0, T0 + 10 * M) is None
    source = open_stored(tmp_path, "sim", "BTCUSDT", T0 + 10 * M, T0 + 20 * M)
    assert source is not None and source.resolve_symbol("btc/usdt") == "BTCUSDT"
    got = asyncio.run(source.fetch("BTCUSDT", T0 + 12 * M, T0 + 15 * M))
    assert [c.timestamp for c in got] == [T0 + 12 * M, T0 + 13 * M, T0 + 14 * M]


def test_an_impossible_candle_stops_the_download_and_keeps_what_came_before(tmp_path: Path) -> None:
    store = CandleStore(tmp_path)
    sim = SimSource(seed=7)
    bad_at = T0 + 50 * M

    async def damaged(symbol: str, since: int, stop: int):
        page = sim.fetch_sync(symbol, since, min(stop, since + 1000 * M))
        return [c._replace(high=c.low / 2) if c.timestamp == bad_at else c for c in page]

    with pytest.raises(CandleSourceError, match="2024-01-01T00:50:00Z is unusable"):
        asyncio.run(download(store, "sim", "BTCUSDT", T0, T0 + 100 * M, damaged))
    assert store.missing("sim", "BTCUSDT", T0, T0 + 100 * M) == [(bad_at, T0 + 100 * M)]


def test_one_download_writes_a_store_at_a_time(tmp_path: Path) -> None:
    with CandleStore(tmp_path).lock(), pytest.raises(UsageError, match="another `livetrader download`"):
        CandleStore(tmp_path).lock().__enter__()
    with CandleStore(tmp_path).lock():
        pass  # released


def test_history_begins_after_the_last_minute_never_fetched(tmp_path: Path) -> None:
    """``load(..., needed_from)``: the range must be whole from ``needed_from``; before it, the
    candles begin just after the last minute never fetched, across day files and missing days."""
    store = CandleStore(tmp_path)
    sim = SimSource(seed=7)
    # Fetched: a piece of day 0, then day 2 from minute 100 on, day 3 whole; day 1 never.
    sim_download(store, T0 + 50 * M, T0 + 60 * M)
    sim_download(store, T0 + DAY_MS * 2 + 100 * M, T0 + DAY_MS * 4)
    end = T0 + DAY_MS * 4
    needed = T0 + DAY_MS * 3
    for start in (T0, T0 + 55 * M, T0 + DAY_MS, T0 + DAY_MS * 2):
        stored = store.load("sim", "BTCUSDT", start, end, needed_from=needed)
        assert stored is not None
        assert stored.times[0] == T0 + DAY_MS * 2 + 100 * M
        assert stored.candles == sim.fetch_sync("BTCUSDT", stored.times[0], end)
    # Only the range from ``needed_from`` has to be whole: a minute missing inside it refuses.
    assert store.load("sim", "BTCUSDT", T0, end + M, needed_from=needed) is None
    assert store.load("sim", "BTCUSDT", T0, end, needed_from=T0 + DAY_MS * 2 + 99 * M) is None
    assert store.load("sim", "BTCUSDT", T0, end, needed_from=T0 + DAY_MS * 2 + 100 * M) is not None
    # Without ``needed_from`` every minute must be there.
    assert store.load("sim", "BTCUSDT", T0, end) is None
    # Inside one day file: the candles begin after minute 49, the last one never fetched.
    piece = store.load("sim", "BTCUSDT", T0, T0 + 60 * M, needed_from=T0 + 50 * M)
    assert piece is not None and list(piece.times) == list(range(T0 + 50 * M, T0 + 60 * M, M))
    assert store.load("sim", "BTCUSDT", T0, T0 + 70 * M, needed_from=T0 + 60 * M) is None
