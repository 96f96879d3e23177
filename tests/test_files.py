"""Candle replay from CSV/JSON files: formats, the real test data, gaps, and precise errors."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from livetrader.core.price import MINUTE_MS, Candle, validate_candles
from livetrader.errors import CandleSourceError, UnknownSymbolError
from livetrader.market.files import FileSource

REAL = Path(__file__).resolve().parent / "data" / "UNITTEST_BTC-1m.json"
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
HEADER = "timestamp,open,high,low,close,volume"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _csv(tmp_path: Path, *rows: str, name: str = "c.csv") -> Path:
    return _write(tmp_path, name, "\n".join((HEADER, *rows)) + "\n")


def _row(minute: int, o: object = 10, h: object = 12, low: object = 9, c: object = 11, v: object = 5) -> str:
    return f"{T0 + minute * MINUTE_MS},{o},{h},{low},{c},{v}"


def _error(path: Path) -> str:
    with pytest.raises(CandleSourceError) as info:
        FileSource(path)
    return str(info.value)


# -- formats ----------------------------------------------------------------------------------


def test_csv_with_millisecond_timestamps(tmp_path: Path) -> None:
    src = FileSource(_csv(tmp_path, _row(0), _row(1, 11, 13, 10, 12, 7.5)))
    assert src.format == "csv" and src.rows == 2
    assert src.candles == [Candle(T0, 10, 12, 9, 11, 5), Candle(T0 + MINUTE_MS, 11, 13, 10, 12, 7.5)]
    assert src.times == [T0, T0 + MINUTE_MS]
    assert src.gaps == 0 and src.filled_minutes == 0


def test_csv_with_iso_timestamps_naive_is_utc_and_offsets_apply(tmp_path: Path) -> None:
    path = _csv(
        tmp_path,
        "2024-01-01T00:00:00Z,1,1,1,1,1",
        "2024-01-01 00:01:00,1,1,1,1,1",  # naive: UTC
        "2024-01-01T02:02:00+02:00,1,1,1,1,1",  # 00:02 UTC
        "2023-12-31T19:03:00-05:00,1,1,1,1,1",  # 00:03 UTC
        "2024-01-01T00:04:00.000Z,1,1,1,1,1",
    )
    assert FileSource(path).times == [T0 + i * MINUTE_MS for i in range(5)]


def test_csv_columns_found_by_header_any_order_extra_ignored(tmp_path: Path) -> None:
    text = (
        "\ufeffVolume,close,Timestamp,symbol,open,high,low\r\n"  # BOM, CRLF, mixed case: as spreadsheets save
        f"5,11,{T0},X,10,12,9\r\n"
        "\r\n"  # a blank line is harmless
        f'6,"12",{T0 + MINUTE_MS},X,11,13,10\r\n'
    )
    src = FileSource(_write(tmp_path, "c.csv", text))
    assert src.candles == [Candle(T0, 10, 12, 9, 11, 5), Candle(T0 + MINUTE_MS, 11, 13, 10, 12, 6)]


def test_json_rows_with_numbers_and_strings(tmp_path: Path) -> None:
    rows = [
        [T0, 0.0012, 0.0013, 0.0011, 0.00125, 100],
        [str(T0 + MINUTE_MS), "0.00125", "0.0013", "0.0012", "0.0012", "0"],
    ]
    src = FileSource(_write(tmp_path, "c.json", json.dumps(rows)))
    assert src.format == "json"
    assert src.candles == [
        Candle(T0, 0.0012, 0.0013, 0.0011, 0.00125, 100.0),
        Candle(T0 + MINUTE_MS, 0.00125, 0.0013, 0.0012, 0.0012, 0.0),
    ]
    assert all(isinstance(x, float) for c in src.candles for x in c[1:])
    assert all(type(c.timestamp) is int for c in src.candles)


def test_format_sniffed_when_the_extension_says_nothing(tmp_path: Path) -> None:
    as_json = FileSource(_write(tmp_path, "data.txt", f"  [[{T0}, 1, 1, 1, 1, 1]]"))
    as_csv = FileSource(_write(tmp_path, "data", f"{HEADER}\n{_row(0)}\n"))
    assert (as_json.format, as_json.times) == ("json", [T0])
    assert (as_csv.format, as_csv.times) == ("csv", [T0])


# -- the real data file -----------------------------------------------------------------------


def test_real_file_loads_fast_and_fills_every_gap() -> None:
    raw = json.loads(REAL.read_text())
    stamps = [row[0] for row in raw]
    steps = [(b - a) // MINUTE_MS - 1 for a, b in zip(stamps, stamps[1:], strict=False)]
    expected_gaps = sum(1 for s in steps if s > 0)
    expected_missing = sum(s for s in steps if s > 0)
    assert (len(raw), expected_gaps) == (13_681, 538)  # what the data README promises

    started = time.perf_counter()
    src = FileSource(REAL)
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5, f"{elapsed:.3f} s"

    assert src.rows == 13_681
    assert src.gaps == expected_gaps
    assert src.filled_minutes == expected_missing == 717
    assert len(src.candles) == 13_681 + 717
    first, end = src.bounds("ALT/BTC")
    assert (first, end) == (stamps[0], stamps[-1] + MINUTE_MS)
    validate_candles(src.candles, first, end)  # gap-free, ordered, sound
    original = {row[0]: Candle(*row) for row in raw}
    previous: Candle | None = None
    for candle in src.candles:
        if candle.timestamp in original:
            assert candle == original[candle.timestamp]
        else:  # a filled minute: flat at the previous close, nothing traded
            assert previous is not None
            p = previous.close
            assert candle[1:] == (p, p, p, p, 0.0)
        previous = candle
    assert 0.0015 < min(c.low for c in src.candles) < max(c.high for c in src.candles) < 0.0037


def test_real_file_strict_names_the_first_gap() -> None:
    raw = json.loads(REAL.read_text())
    index = next(i for i in range(1, len(raw)) if raw[i][0] - raw[i - 1][0] > MINUTE_MS)
    with pytest.raises(CandleSourceError) as info:
        FileSource(REAL, strict=True)
    message = str(info.value)
    assert f"row index {index}:" in message
    assert str(raw[index - 1][0] + MINUTE_MS) in message
    assert "use without --strict to fill gaps" in message


# -- gaps -------------------------------------------------------------------------------------


def test_gaps_are_filled_with_flat_zero_volume_candles(tmp_path: Path) -> None:
    path = _csv(tmp_path, _row(0, c=11), _row(3), _row(4, c=10.5), _row(6))
    src = FileSource(path)
    assert (src.rows, src.gaps, src.filled_minutes) == (4, 2, 3)
    assert src.times == [T0 + i * MINUTE_MS for i in range(7)]
    # Minutes 1-2 sit at minute 0's close, minute 5 at minute 4's close; nothing traded.
    assert src.candles[1] == Candle(T0 + 1 * MINUTE_MS, 11, 11, 11, 11, 0.0)
    assert src.candles[2] == Candle(T0 + 2 * MINUTE_MS, 11, 11, 11, 11, 0.0)
    assert src.candles[5] == Candle(T0 + 5 * MINUTE_MS, 10.5, 10.5, 10.5, 10.5, 0.0)
    assert src.candles[3] == Candle(T0 + 3 * MINUTE_MS, 10, 12, 9, 11, 5)
    validate_candles(src.candles, T0, T0 + 7 * MINUTE_MS)


def test_strict_refuses_a_gap_and_accepts_a_complete_file(tmp_path: Path) -> None:
    with pytest.raises(CandleSourceError) as info:
        FileSource(_csv(tmp_path, _row(0), _row(1), _row(4)), strict=True)
    message = str(info.value)
    assert "line 4:" in message and "2 minute(s) missing" in message
    assert "2024-01-01T00:02:00Z" in message and "use without --strict to fill gaps" in message
    complete = FileSource(_csv(tmp_path, _row(0), _row(1), _row(2), name="ok.csv"), strict=True)
    assert complete.rows == 3 and complete.gaps == 0


# -- malformed files: every message names the file and the line -------------------------------

MALFORMED_CSV = [
    ("missing column", ["timestamp,open,high,low,close", f"{T0},1,1,1,1"], 1, "volume"),
    ("no header", [_row(0), _row(1)], 1, "has no header; add the line timestamp,open,high,low,close,volume"),
    ("non-numeric", [HEADER, _row(0), _row(1, c="abc")], 3, "close 'abc' is not a number"),
    ("empty value", [HEADER, _row(0), f"{T0 + MINUTE_MS},1,,1,1,1"], 3, "high '' is not a number"),
    ("nan", [HEADER, _row(0, h="nan")], 2, "high is 'nan'; values must be finite"),
    ("infinite", [HEADER, _row(0, v="inf")], 2, "volume is 'inf'; values must be finite"),
    ("zero price", [HEADER, _row(0), _row(1), _row(2, low=0)], 4, "low '0' is not positive"),
    ("negative price", [HEADER, _row(0, o=-1)], 2, "open '-1' is not positive"),
    ("negative volume", [HEADER, _row(0, v=-3)], 2, "volume -3 is negative"),
    ("high below low", [HEADER, _row(0, h=8, low=9, o=8.5, c=8.5)], 2, "high 8.0 is below low 9.0"),
    ("open outside", [HEADER, _row(0, o=13)], 2, "open 13.0 lies outside the low-high range [9.0, 12.0]"),
    ("close outside", [HEADER, _row(0), _row(1, c=8)], 3, "close 8.0 lies outside the low-high range"),
    ("unordered", [HEADER, _row(0), _row(2), _row(1)], 4, "comes before the one on line 3; sort the rows"),
    ("duplicate", [HEADER, _row(0), _row(1), _row(1)], 4, "duplicate timestamp 1704067260000 (2024-01-01T00:01:00Z)"),
    ("off-minute", [HEADER, _row(0), f"{T0 + 90_000},10,12,9,11,5"], 3, "not on a minute boundary"),
    ("seconds", [HEADER, f"{T0 // 1000},10,12,9,11,5"], 2, "looks like seconds"),
    ("off-minute iso", [HEADER, "2024-01-01T00:00:30Z,1,1,1,1,1"], 2, "not on a minute boundary"),
    ("bad timestamp", [HEADER, "yesterday,1,1,1,1,1"], 2, "timestamp 'yesterday' is neither integer milliseconds"),
    ("short row", [HEADER, _row(0), f"{T0 + MINUTE_MS},1,1"], 3, "has 3 field(s) but the header names 6"),
]


@pytest.mark.parametrize(("case", "rows", "line", "fragment"), MALFORMED_CSV, ids=[c[0] for c in MALFORMED_CSV])
def test_malformed_csv_names_file_line_and_fix(
    tmp_path: Path, case: str, rows: list[str], line: int, fragment: str
) -> None:
    path = _write(tmp_path, "bad.csv", "\n".join(rows) + "\n")
    message = _error(path)
    assert str(path) in message
    assert f"line {line}:" in message
    assert fragment in message


def test_csv_error_after_blank_lines_reports_the_physical_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "bad.csv", f"{HEADER}\n\n{_row(0)}\n\n\n{_row(1, c='x')}\n")
    assert "line 6:" in _error(path)


MALFORMED_JSON = [
    ("string not a number", f'[[{T0},1,1,1,1,1],[{T0 + MINUTE_MS},"x",1,1,1,1]]', "row index 1:", "open 'x'"),
    ("null value", f"[[{T0},1,1,null,1,1]]", "row index 0:", "low None is not a number"),
    ("boolean value", f"[[{T0},1,1,1,1,true]]", "row index 0:", "volume True is not a number"),
    ("short row", f"[[{T0},1,1,1,1,1],[{T0 + MINUTE_MS},1,1]]", "row index 1:", "not a row of six values"),
    ("object row", f'[[{T0},1,1,1,1,1],{{"t":{T0}}}]', "row index 1:", "not a row of six values"),
    ("unordered", f"[[{T0 + MINUTE_MS},1,1,1,1,1],[{T0},1,1,1,1,1]]", "row index 1:", "row index 0; sort"),
    ("not an array", f'{{"data": [[{T0},1,1,1,1,1]]}}', "", "holds a JSON dict, not an array"),
    ("invalid JSON", f"[[{T0},1,1,1,1,1],", "", "is not valid JSON"),
    ("empty array", "[]", "", "holds no candles"),
]


@pytest.mark.parametrize(("case", "text", "where", "fragment"), MALFORMED_JSON, ids=[c[0] for c in MALFORMED_JSON])
def test_malformed_json_names_file_row_and_fix(tmp_path: Path, case: str, text: str, where: str, fragment: str) -> None:
    path = _write(tmp_path, "bad.json", text)
    message = _error(path)
    assert str(path) in message and where in message and fragment in message


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        ("empty.csv", "", "is empty; it needs a header line timestamp,open,high,low,close,volume"),
        ("blank.json", " \n\n", "is empty; it needs a JSON array"),
        ("header.csv", HEADER + "\n", "holds no candles"),
    ],
)
def test_empty_files(tmp_path: Path, name: str, text: str, fragment: str) -> None:
    assert fragment in _error(_write(tmp_path, name, text))


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "candles.csv"
    message = _error(path)
    assert str(path) in message and "does not exist" in message
    assert "is a directory" in _error(tmp_path)


# -- fetch, bounds, symbols -------------------------------------------------------------------


@pytest.fixture()
def ten(tmp_path: Path) -> FileSource:
    """Ten complete minutes, T0 .. T0 + 9m."""
    return FileSource(_csv(tmp_path, *(_row(i) for i in range(10))))


def test_fetch_slices_half_open_and_clips(ten: FileSource) -> None:
    m = MINUTE_MS
    assert [c.timestamp for c in ten.fetch_sync("X", T0 + 2 * m, T0 + 5 * m)] == [T0 + 2 * m, T0 + 3 * m, T0 + 4 * m]
    assert [c.timestamp for c in ten.fetch_sync("X", T0 + 2 * m + 1, T0 + 4 * m + 1)] == [T0 + 3 * m, T0 + 4 * m]
    assert ten.fetch_sync("X", T0 - 100 * m, T0 + 100 * m) == ten.candles
    assert ten.fetch_sync("X", T0 + 10 * m, T0 + 20 * m) == []
    assert ten.fetch_sync("X", T0 - 5 * m, T0) == []
    assert ten.fetch_sync("X", T0 + 5 * m, T0 + 5 * m) == []
    assert ten.bounds("X") == (T0, T0 + 10 * m)
    assert asyncio.run(ten.fetch("X", T0, T0 + 3 * m)) == ten.candles[:3]
    asyncio.run(ten.close())


def test_any_symbol_names_the_files_market(ten: FileSource) -> None:
    assert ten.resolve_symbol("btc/usdt") == "BTCUSDT"
    assert ten.resolve_symbol("ETHBTC") == "ETHBTC"


def test_symbol_given_at_construction_is_enforced(tmp_path: Path) -> None:
    src = FileSource(_csv(tmp_path, _row(0)), symbol="alt/btc")
    assert src.resolve_symbol("ALTBTC") == "ALTBTC"
    assert src.resolve_symbol("alt/btc") == "ALTBTC"
    with pytest.raises(UnknownSymbolError, match="is for ALTBTC, not ETHBTC"):
        src.resolve_symbol("ETH/BTC")
    with pytest.raises(UnknownSymbolError):
        src.fetch_sync("ETHBTC", T0, T0 + MINUTE_MS)
    with pytest.raises(UnknownSymbolError):
        src.bounds("ETHBTC")


def test_rows_may_omit_trailing_extra_columns(tmp_path: Path) -> None:
    path = _write(tmp_path, "c.csv", f"{HEADER},note,exchange\n{_row(0)},hello\n{_row(1)}\n")
    assert FileSource(path).rows == 2
