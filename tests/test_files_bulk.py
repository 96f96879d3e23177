"""The bulk candle-file loader agrees with the row-by-row one on every row and every error.

``FileSource(path)`` parses whole columns at once and falls back to the row path on any doubt;
``FileSource(path, bulk=False)`` is the row path alone. Every hostile file of ``test_files`` and
more aimed at the bulk checks (a bad value far into a long file, brackets, quoting, huge numbers,
random damage) goes through both: the candles, counts and error messages must be identical.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from test_files import HEADER, MALFORMED_CSV, MALFORMED_JSON, REAL, T0, _row

from livetrader.core.price import MINUTE_MS
from livetrader.errors import CandleSourceError
from livetrader.market import files
from livetrader.market.files import FileSource


def outcome(path: Path, bulk: bool, strict: bool = False) -> tuple[object, ...]:
    """Everything a load produces: the candles and counts, or the error message."""
    try:
        src = FileSource(path, strict=strict, bulk=bulk)
    except CandleSourceError as exc:
        return ("error", str(exc))
    # repr too: it tells -0.0 from 0.0, which == does not.
    return ("ok", src.format, src.rows, src.gaps, src.filled_minutes, src.times, src.candles,
            [tuple(map(type, c)) for c in src.candles], repr(src.candles))


def assert_same(path: Path) -> tuple[object, ...]:
    """Both loaders, with and without ``strict``, agree; the (non-strict) outcome."""
    results = []
    for strict in (False, True):
        fast, slow = outcome(path, True, strict), outcome(path, False, strict)
        assert fast == slow, (path.read_text()[:300], strict)
        results.append(fast)
    return results[0]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def good_rows(n: int, first: int = 0) -> list[str]:
    return [_row(first + i, 10 + i % 3, 13, 9, 11, 5 + i) for i in range(n)]


@pytest.mark.parametrize(("case", "rows", "line", "fragment"), MALFORMED_CSV, ids=[c[0] for c in MALFORMED_CSV])
def test_hostile_csv_files_give_the_same_error(tmp_path: Path, case: str, rows: list[str], line: int,
                                               fragment: str) -> None:
    result = assert_same(write(tmp_path, "bad.csv", "\n".join(rows) + "\n"))
    assert result[0] == "error" and f"line {line}:" in str(result[1]) and fragment in str(result[1])


@pytest.mark.parametrize(("case", "text", "where", "fragment"), MALFORMED_JSON, ids=[c[0] for c in MALFORMED_JSON])
def test_hostile_json_files_give_the_same_error(tmp_path: Path, case: str, text: str, where: str,
                                                fragment: str) -> None:
    result = assert_same(write(tmp_path, "bad.json", text))
    assert result[0] == "error" and where in str(result[1]) and fragment in str(result[1])


# A bad row after 3,000 good ones: the bulk checks must notice it and the row path name its line.
LATE = [
    ("nan", "nan", "high is 'nan'"),
    ("inf volume", "inf", "volume is 'inf'"),
    ("zero low", "0", "low '0' is not positive"),
    ("negative volume", "-1", "volume -1 is negative"),
    ("text", "abc", "'abc' is not a number"),
    ("empty", "", "is not a number"),
    ("huge", "1e999", "values must be finite"),
    ("inf high", "inf", "high is 'inf'; values must be finite"),
    ("minus inf low", "-inf", "low is '-inf'; values must be finite"),
]


@pytest.mark.parametrize(("case", "value", "fragment"), LATE, ids=[c[0] for c in LATE])
def test_a_bad_value_far_into_a_long_file_is_found_and_named(tmp_path: Path, case: str, value: str,
                                                             fragment: str) -> None:
    rows = good_rows(3000)
    column = {"nan": 2, "inf volume": 5, "zero low": 3, "negative volume": 5, "inf high": 2,
              "minus inf low": 3}.get(case, 4)
    fields = rows[2500].split(",")
    fields[column] = value
    rows[2500] = ",".join(fields)
    result = assert_same(write(tmp_path, "late.csv", "\n".join((HEADER, *rows)) + "\n"))
    assert result[0] == "error" and "line 2502:" in str(result[1]) and fragment in str(result[1]), result


def test_late_order_problems_and_gaps_agree(tmp_path: Path) -> None:
    rows = good_rows(3000)
    swapped = rows.copy()
    swapped[1000], swapped[1001] = swapped[1001], swapped[1000]
    assert "comes before" in str(assert_same(write(tmp_path, "order.csv", "\n".join((HEADER, *swapped)))))
    duplicate = rows.copy()
    duplicate[2000] = duplicate[1999]
    assert "duplicate timestamp" in str(assert_same(write(tmp_path, "dup.csv", "\n".join((HEADER, *duplicate)))))
    gappy = [r for i, r in enumerate(rows) if not (100 <= i < 140 or i == 2999 - 5)]
    result = assert_same(write(tmp_path, "gaps.csv", "\n".join((HEADER, *gappy)) + "\n"))
    assert result[:5] == ("ok", "csv", 3000 - 41, 2, 41)


# Legal files the bulk path declines or handles specially: the result must still be the row path's.
ODD_CSV = [
    ("quoted", f'{HEADER}\n"{T0}","10","12","9","11","5"\n'),
    ("crlf and bom", "\ufeff" + f"{HEADER}\r\n{_row(0)}\r\n{_row(1)}\r\n"),
    ("lone carriage returns", f"{HEADER}\r{_row(0)}\r{_row(1)}\r"),
    ("blank lines", f"{HEADER}\n\n{_row(0)}\n , \n{_row(1)}\n\n"),
    ("iso times", f"{HEADER}\n2024-01-01T00:00:00Z,1,2,1,2,3\n2024-01-01 00:01:00,1,2,1,2,3\n"),
    ("spaces", f"{HEADER}\n {T0} , 10 ,12, 9,11 ,5\n"),
    ("dot five", f"{HEADER}\n{T0},.5,.5,.5,.5,0\n"),
    ("plus sign", f"{HEADER}\n{T0},+10,12,9,11,5\n"),
    ("underscores", f"{HEADER}\n{T0},1_0,12,9,11,5\n"),
    ("leading zeros", f"{HEADER}\n{T0},010,12,9,11,5\n"),
    ("float times", f"{HEADER}\n{T0}.0,10,12,9,11,5\n{T0 + MINUTE_MS}.0,10,12,9,11,5\n"),
    ("brackets make two rows", f"{HEADER},a,b,c,d,e,f\n{T0},10,12,9,11,5],[{T0 + MINUTE_MS},10,12,9,11,5\n"),
    ("extra columns", f"timestamp,open,high,low,close,volume,trades\n{_row(0)},7\n{_row(1)},8\n"),
    ("other order", f"volume,close,timestamp,open,high,low\n5,11,{T0},10,12,9\n6,12,{T0 + MINUTE_MS},11,13,10\n"),
    ("short extra", f"{HEADER},note\n{_row(0)},x\n{_row(1)}\n"),
    ("trailing comma", f"{HEADER}\n{_row(0)},\n"),
    ("huge integer", f"{HEADER}\n{T0},{10**400},{10**400},{10**400},{10**400},1\n"),
    ("true", f"{HEADER}\n{T0},true,12,9,11,5\n"),
    ("null byte", f"{HEADER}\n{T0},1\x00,12,9,11,5\n"),
    ("no newline at end", f"{HEADER}\n{_row(0)}\n{_row(1)}"),
    ("minus zero volume", f"{HEADER}\n{T0},10,12,9,11,-0\n"),
]


@pytest.mark.parametrize(("case", "text"), ODD_CSV, ids=[c[0] for c in ODD_CSV])
def test_odd_csv_files_load_as_the_row_path_loads_them(tmp_path: Path, case: str, text: str) -> None:
    assert_same(write(tmp_path, "odd.csv", text))


ODD_JSON = [
    ("strings", f'[["{T0}","10","12","9","11","5"]]'),
    ("float times", f"[[{float(T0)},10,12,9,11,5],[{float(T0 + MINUTE_MS)},10,12,9,11,5]]"),
    ("iso times", '[["2024-01-01T00:00:00Z",10,12,9,11,5]]'),
    ("long rows", f"[[{T0},10,12,9,11,5,0,0,0],[{T0 + MINUTE_MS},10,12,9,11,5,1]]"),
    ("ints", f"[[{T0},10,12,9,11,5]]"),
    ("huge int", f"[[{T0},{10**30},{10**30},{10**30},{10**30},5]]"),
    ("bool time", "[[true,10,12,9,11,5]]"),
    ("nested", f"[[{T0},[10],12,9,11,5]]"),
    ("string row", '["123456"]'),
    ("gap", f"[[{T0},10,12,9,11,5],[{T0 + 3 * MINUTE_MS},10,12,9,11,5]]"),
]


@pytest.mark.parametrize(("case", "text"), ODD_JSON, ids=[c[0] for c in ODD_JSON])
def test_odd_json_files_load_as_the_row_path_loads_them(tmp_path: Path, case: str, text: str) -> None:
    assert_same(write(tmp_path, "odd.json", text))


def test_randomly_damaged_files_agree(tmp_path: Path) -> None:
    """Seeded damage of every kind at random places: one value, one timestamp, one line."""
    rng = random.Random(23)
    damage = ["nan", "-1", "0", "", "x", "1e999", "  7 ", "3.5e2", "2024-01-01T00:00:00Z", str(T0), "true"]
    for k in range(60):
        rows = good_rows(200)
        i = rng.randrange(len(rows))
        fields = rows[i].split(",")
        fields[rng.randrange(6)] = rng.choice(damage)
        rows[i] = ",".join(fields)
        if k % 3 == 0:
            del rows[rng.randrange(len(rows))]
        assert_same(write(tmp_path, f"r{k}.csv", "\n".join((HEADER, *rows)) + "\n"))
        doc = [[int(f[0]) if f[0].isdigit() else f[0], *f[1:]] for f in (r.split(",") for r in rows)]
        assert_same(write(tmp_path, f"r{k}.json", json.dumps(doc)))


def test_the_real_file_loads_the_same_and_through_the_bulk_path(tmp_path: Path) -> None:
    data = REAL.read_bytes()
    assert files._bulk_columns(data, "json") is not None  # the fast path, not a silent fallback
    result = assert_same(REAL)
    assert result[:5] == ("ok", "json", 13_681, 538, 717)
    rows = json.loads(data)
    as_csv = write(tmp_path, "real.csv", "\n".join([HEADER, *(",".join(map(str, r)) for r in rows)]) + "\n")
    assert files._bulk_columns(as_csv.read_bytes(), "csv") is not None
    assert assert_same(as_csv)[2:] == result[2:]
