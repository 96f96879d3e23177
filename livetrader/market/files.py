"""Candle replay from a CSV or JSON file (``files``): one market per file, parsed once.

CSV: a header naming ``timestamp,open,high,low,close,volume`` (any order, extra columns
ignored); timestamps in integer ms or ISO-8601 (naive means UTC). JSON: an array of
``[timestamp_ms, open, high, low, close, volume]`` rows, the shape ccxt ``fetch_ohlcv``
returns; numbers may be strings. Every problem is a ``CandleSourceError`` naming the file,
the line (CSV) or row index (JSON), and what to fix. Missing minutes (real markets have
minutes without trades) are filled with flat zero-volume candles at the previous close,
unless ``strict``.

Loading is two-speed. The bulk path (``_bulk_columns`` then ``_columns_to_candles``) parses whole
columns at once and checks them with C-level passes (``sum``, ``min``, ``map(operator.le, ...)``);
it only ever accepts a file the row path would accept, and builds the very same candles. On any
doubt (a value it cannot convert, a row that fails a bulk check, quoting it does not handle) it
gives up and the row path (``_load``) reads the file from the start: the one place that words
errors, so every message and row number is the row path's. The garbage collector is paused while
a file loads: a year is millions of new objects, none in a cycle, and its passes over them cost
more than the parsing.
"""

from __future__ import annotations

import csv
import gc
import io
import math
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from itertools import islice, repeat
from operator import itemgetter, le, sub
from pathlib import Path

import orjson

from livetrader.core.format import format_time
from livetrader.core.price import MINUTE_MS, Candle
from livetrader.errors import CandleSourceError, UnknownSymbolError

COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
#: Files this large (~100,000 rows and more) get a parsed copy (``market.parsed``); smaller ones load in milliseconds.
_COPY_FROM_BYTES = 5_000_000
_PRICES = ("open", "high", "low", "close")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
# Row locations as the user sees them: ("line", 12) for CSV, ("row index", 3) for JSON.
_Where = tuple[str, int]
_Row = tuple[_Where, Sequence[object]]


def normalize_symbol(symbol: str) -> str:
    """``btc/usdt`` -> ``BTCUSDT``."""
    return symbol.strip().upper().replace("/", "")


class FileSource:
    """Closed 1-minute candles replayed from a CSV or JSON file; implements ``CandleSource``.

    After construction: ``candles`` and the parallel ``times`` (opening ms), ``format``
    (``"csv"``/``"json"``), ``rows`` (candles read from the file), ``gaps`` (runs of missing
    minutes) and ``filled_minutes`` (flat candles added to fill them).
    """

    name = "files"

    def __init__(self, path: str | Path, symbol: str | None = None, strict: bool = False, *, bulk: bool = True,
                 parsed_copies: Path | None = None) -> None:
        """Read and check the whole file; ``bulk=False`` reads it row by row only (the reference
        path the bulk one is tested against; same result, several times slower).

        ``parsed_copies``: a folder of parsed copies (``market.parsed``): a large file is loaded
        from its copy when one was kept for exactly these bytes (``from_copy`` is then True),
        and a copy is kept after it loads otherwise."""
        self.path = Path(path)
        self.symbol = normalize_symbol(symbol) if symbol else None
        self.strict = strict
        self.candles: list[Candle] = []
        self.times: Sequence[int] = []
        self.rows = 0
        self.gaps = 0
        self.filled_minutes = 0
        self.from_copy = False
        with gc_paused():
            if parsed_copies is not None and bulk and self._worth_a_copy():
                self._load_with_copy(strict, parsed_copies)
            else:
                data = self._read()
                self.format = _detect_format(self.path, data)
                self._parse(data, bulk, strict)

    def _worth_a_copy(self) -> bool:
        try:
            return self.path.stat().st_size >= _COPY_FROM_BYTES
        except OSError:
            return False  # the read says what is wrong

    def _load_with_copy(self, strict: bool, folder: Path) -> None:
        """From the parsed copy of exactly the file's bytes when ``folder`` holds one; else parsed,
        and a copy kept, named by the bytes parsed."""
        from livetrader.market import parsed

        copy = parsed.load(self.path, folder)
        if copy is not None and not (strict and copy.gaps):  # strict refuses gaps: the loader says so, in words
            self.candles, self.times, self.rows = copy.candles, copy.times, copy.rows
            self.gaps, self.filled_minutes, self.from_copy = copy.gaps, copy.filled_minutes, True
            self.format = copy.format
            return
        identity = parsed.identity_of(self.path)  # before the read: a file changed meanwhile is only a miss later
        data = self._read()
        self.format = _detect_format(self.path, data)
        columns = self._parse(data, True, strict)
        # Every minute from the first candle to the last, gaps filled: a range of times.
        times = range(self.times[0], self.times[-1] + MINUTE_MS, MINUTE_MS)
        parsed.write(folder, parsed.key_of(data), parsed.Parsed(self.candles, times, self.rows, self.gaps,
                                                                 self.filled_minutes, self.format), columns, identity)

    def _parse(self, data: bytes, bulk: bool, strict: bool) -> Columns | None:
        """Parse and check ``data``: the bulk path first (unless ``bulk`` is False), the row path on
        any doubt. Returns the bulk path's columns when the candles are exactly those (no gap filled)."""
        columns = _bulk_columns(data, self.format) if bulk else None
        loaded = _columns_to_candles(*columns, strict=strict) if columns is not None else None
        if loaded is not None:
            self.candles, self.times, self.gaps, self.filled_minutes = loaded
            self.rows = len(columns[0]) if columns is not None else 0
        else:
            rows = self._json_rows(data) if self.format == "json" else self._csv_rows(data)
            self._load(rows)
        if not self.candles:
            raise self._error(f"holds no candles; it needs {_shape(self.format)}")
        return columns if loaded is not None and not self.filled_minutes else None

    # -- CandleSource -------------------------------------------------------------------------

    def resolve_symbol(self, symbol: str) -> str:
        """The symbol, normalized (``btc/usdt`` -> ``BTCUSDT``); the file carries no symbol of its own.

        If the source was created for a symbol, any other raises UnknownSymbolError.
        """
        canonical = normalize_symbol(symbol)
        if not canonical:
            raise UnknownSymbolError(f"empty symbol for candle file {self.path}")
        if self.symbol is not None and canonical != self.symbol:
            raise UnknownSymbolError(
                f"candle file {self.path} is for {self.symbol}, not {canonical}; "
                f"use symbol {self.symbol} or another file"
            )
        return canonical

    def bounds(self, symbol: str) -> tuple[int, int] | None:
        """``(first opening, last opening + 1 minute)`` of the candles in the file."""
        self.resolve_symbol(symbol)
        return self.times[0], self.times[-1] + MINUTE_MS

    async def fetch(self, symbol: str, start_ms: int, end_ms: int) -> list[Candle]:
        """Candles opening in ``[start_ms, end_ms)`` that the file holds; see ``fetch_sync``."""
        return self.fetch_sync(symbol, start_ms, end_ms)

    def fetch_sync(self, symbol: str, start_ms: int, end_ms: int) -> list[Candle]:
        """Candles opening in ``[start_ms, end_ms)``, clipped to what the file holds."""
        self.resolve_symbol(symbol)
        lo = bisect_left(self.times, start_ms)
        hi = bisect_left(self.times, end_ms, lo)
        return self.candles[lo:hi]

    async def close(self) -> None:
        """Nothing to release: the file was read whole at construction."""

    # -- parsing --------------------------------------------------------------------------------

    def _error(self, message: str, where: _Where | None = None) -> CandleSourceError:
        at = f" {where[0]} {where[1]}" if where else ""
        return CandleSourceError(f"candle file {self.path}{at}: {message}")

    def _read(self) -> bytes:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise CandleSourceError(f"candle file {self.path} does not exist; check the path") from None
        except IsADirectoryError:
            raise CandleSourceError(f"candle file {self.path} is a directory; give a .csv or .json file") from None
        except OSError as exc:
            raise CandleSourceError(f"candle file {self.path} cannot be read: {exc.strerror}") from None
        if not data.strip():
            raise CandleSourceError(
                f"candle file {self.path} is empty; it needs {_shape(_detect_format(self.path, data))}"
            )
        return data

    def _json_rows(self, data: bytes) -> Iterator[_Row]:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise self._error(f"is not valid JSON ({exc}); it needs {_shape('json')}") from None
        if not isinstance(doc, list):
            raise self._error(f"holds a JSON {type(doc).__name__}, not an array; it needs {_shape('json')}")
        for index, row in enumerate(doc):
            where = ("row index", index)
            if not isinstance(row, list) or len(row) < len(COLUMNS):
                raise self._error(
                    f"{_short(row)} is not a row of six values; each row must be "
                    "[timestamp_ms, open, high, low, close, volume]",
                    where,
                )
            yield where, row

    def _csv_rows(self, data: bytes) -> Iterator[_Row]:
        try:
            text = data.decode("utf-8-sig")  # -sig: spreadsheets often start the file with a BOM
        except UnicodeDecodeError as exc:
            raise self._error(f"is not UTF-8 text (byte {exc.start}); save it as UTF-8 CSV") from None
        reader = csv.reader(io.StringIO(text, newline=""))
        header: list[str] | None = None
        columns: list[int] = []
        needed = 0  # fields a row must have to reach every required column
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue  # blank lines are harmless
            where = ("line", reader.line_num)
            if header is None:
                header = [f.strip().lower() for f in fields]
                columns = self._columns(header, where)
                needed = max(columns) + 1
                continue
            if len(fields) < needed:
                raise self._error(
                    f"has {len(fields)} field(s) but the header names {len(header)}; "
                    "fill in the missing values or remove the row",
                    where,
                )
            yield where, [fields[i] for i in columns]

    def _columns(self, header: list[str], where: _Where) -> list[int]:
        """Positions of the required columns in the header."""
        missing = [c for c in COLUMNS if c not in header]
        if not missing:
            return [header.index(c) for c in COLUMNS]
        if _is_number(header[0]):
            raise self._error(f"has no header; add the line {','.join(COLUMNS)} before the first row", where)
        raise self._error(
            f"the header lacks column(s) {', '.join(missing)} (it has: {', '.join(header)}); "
            f"the header must name {','.join(COLUMNS)}",
            where,
        )

    def _load(self, rows: Iterator[_Row]) -> None:
        """Check each row and append it, filling or refusing gaps; raises at the first bad row."""
        candles = self.candles
        times: list[int] = []
        self.times = times
        previous: Candle | None = None
        previous_where: _Where | None = None
        new = tuple.__new__  # Candle tuples without the Python-level __new__, for load speed
        for where, row in rows:
            ts = self._timestamp(row[0], where)
            o, h, low, c = (self._price(row[i], name, where) for i, name in enumerate(_PRICES, 1))
            v = self._number(row[5], "volume", where)
            if v < 0:
                raise self._error(f"volume {row[5]} is negative; volume must be zero or more", where)
            if h < low:
                raise self._error(f"high {h} is below low {low}; check the row (columns swapped?)", where)
            if not (low <= o <= h):
                raise self._error(f"open {o} lies outside the low-high range [{low}, {h}]; fix the row", where)
            if not (low <= c <= h):
                raise self._error(f"close {c} lies outside the low-high range [{low}, {h}]; fix the row", where)
            if previous is not None:
                step = ts - previous.timestamp
                if step <= 0:
                    self._raise_order(ts, step, previous_where, where)
                if step > MINUTE_MS:
                    self._gap(previous, ts, where, times)
            candle: Candle = new(Candle, (ts, o, h, low, c, v))
            candles.append(candle)
            times.append(ts)
            self.rows += 1
            previous = candle
            previous_where = where

    def _raise_order(self, ts: int, step: int, before: _Where | None, where: _Where) -> None:
        earlier = f"{before[0]} {before[1]}" if before else "the previous row"
        if step == 0:
            raise self._error(
                f"duplicate timestamp {ts} ({format_time(ts)}), already on {earlier}; remove one of the two rows", where
            )
        raise self._error(
            f"timestamp {ts} ({format_time(ts)}) comes before the one on {earlier}; sort the rows by timestamp", where
        )

    def _gap(self, previous: Candle, ts: int, where: _Where, times: list[int]) -> None:
        """Fill the minutes missing before ``ts`` with flat candles, or refuse in strict mode."""
        missing = (ts - previous.timestamp) // MINUTE_MS - 1
        if self.strict:
            after = previous.timestamp + MINUTE_MS
            raise self._error(
                f"{missing} minute(s) missing from {after} ({format_time(after)}) to before {ts} ({format_time(ts)}); "
                "use without --strict to fill gaps with flat zero-volume candles",
                where,
            )
        # Nothing traded: the price stays at the last close (what an exchange reports too).
        p = previous.close
        new = tuple.__new__
        for t in range(previous.timestamp + MINUTE_MS, ts, MINUTE_MS):
            self.candles.append(new(Candle, (t, p, p, p, p, 0.0)))
            times.append(t)
        self.gaps += 1
        self.filled_minutes += missing

    def _timestamp(self, value: object, where: _Where) -> int:
        """Opening time in integer ms from ms (int, float or text) or ISO-8601 text."""
        ms = _parse_timestamp(value)
        if ms is None:
            raise self._error(
                f"timestamp {_short(value)} is neither integer milliseconds nor an ISO-8601 time "
                "like 2024-01-01T00:00:00Z",
                where,
            )
        if ms >= LATEST_MS:
            raise self._error(
                f"timestamp {_short(value)} is after the year 3000 (it looks like microseconds: divide by 1000); "
                "each candle is stamped with the start of its minute in milliseconds",
                where,
            )
        if ms % MINUTE_MS:
            hint = " (it looks like seconds: multiply by 1000)" if abs(ms) < 100_000_000_000 else ""
            raise self._error(
                f"timestamp {_short(value)} is not on a minute boundary{hint}; "
                "each candle is stamped with the start of its minute, a multiple of 60000 ms",
                where,
            )
        return ms

    def _number(self, value: object, column: str, where: _Where) -> float:
        """A finite float from a JSON number or numeric text (``"0.0012"``)."""
        try:
            # Exact types: bool is an int subclass, and true/false are not numbers here.
            if type(value) is float or type(value) is int or type(value) is str:
                x = float(value)  # float() also strips spaces
            else:
                raise ValueError
        except ValueError:
            raise self._error(f"{column} {_short(value)} is not a number; fix or remove the row", where) from None
        except OverflowError:
            x = math.inf
        if not math.isfinite(x):
            raise self._error(f"{column} is {_short(value)}; values must be finite numbers", where)
        return x

    def _price(self, value: object, column: str, where: _Where) -> float:
        x = self._number(value, column, where)
        if x <= 0:
            raise self._error(f"{column} {_short(value)} is not positive; prices must be above zero", where)
        return x


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for a bulk load (restored as it was, whatever happens).

    Loading a year of candles creates millions of tuples and floats, none in a reference cycle;
    without the pause the collector walks them over and over as they pile up (measured: it more
    than doubles the load time).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


#: Opening times from here on (the year 3000, in ms) are refused: a whole minute in microseconds
#: (Binance's public kline files since 2025) is a multiple of 60,000 too, and would read as minutes
#: 1,000 apart, each gap filled.
LATEST_MS = 32_503_680_000_000

#: Parsed columns: opening times (ms) and the five value columns open, high, low, close, volume.
Columns = tuple[list[int], list[float], list[float], list[float], list[float], list[float]]


def _bulk_columns(data: bytes, fmt: str) -> Columns | None:
    """The file's columns, converted in bulk; None when anything is unusual (the row path decides)."""
    raw = _json_columns(data) if fmt == "json" else _csv_columns(data)
    if raw is None:
        return None
    stamps, *values = raw
    times = _bulk_times(stamps)
    if times is None:
        return None
    floats: list[list[float]] = []
    for column in values:
        # The row path's conversion exactly (``_number``): float() of an int, a float or text; bool,
        # None and anything else are refused there, so here they send the file to the row path.
        kinds = set(map(type, column))
        if kinds == {float}:
            floats.append(column)  # type: ignore[arg-type]
            continue
        if not kinds <= {float, int, str}:
            return None
        try:
            floats.append(list(map(float, column)))  # type: ignore[arg-type]
        except (ValueError, OverflowError):
            return None
    o, h, low, c, v = floats
    return times, o, h, low, c, v


def _bulk_times(stamps: Sequence[object]) -> list[int] | None:
    """Opening times as ``_parse_timestamp`` reads them, or None when one is not a time."""
    kinds = set(map(type, stamps))
    if kinds == {int}:
        return list(stamps)  # type: ignore[arg-type]
    if kinds == {str}:
        try:
            # int() of digits (spaces around allowed) is _parse_timestamp's first try; ISO text fails here.
            return list(map(int, stamps))  # type: ignore[arg-type]
        except ValueError:
            pass
    parsed = list(map(_parse_timestamp, stamps))
    return None if None in parsed else parsed  # type: ignore[return-value]


def _json_columns(data: bytes) -> Sequence[Sequence[object]] | None:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not list or not doc or set(map(type, doc)) != {list}:
        return None
    if min(map(len, doc)) < len(COLUMNS):
        return None
    # Column by column (extra values per row are ignored, as the row path does): faster than zip(*doc).
    return [list(map(itemgetter(i), doc)) for i in range(len(COLUMNS))]


def _csv_columns(data: bytes) -> Sequence[Sequence[object]] | None:
    """Columns of a plain CSV file: no quoting, no stray carriage returns, no blank lines, every row as
    wide as the header. Anything else (legal or not) is the csv module's job, in the row path."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    if '"' in text or "\x00" in text:
        return None
    text = text.replace("\r\n", "\n")
    if "\r" in text:
        return None
    lines = text.split("\n")
    while lines and not lines[-1]:
        lines.pop()  # the newline that ends the last row
    if len(lines) < 2:
        return None
    header = [f.strip().lower() for f in lines[0].split(",")]
    if any(c not in header for c in COLUMNS):
        return None
    width = len(header)
    body = lines[1:]
    numeric = _csv_as_json(body, width)
    if numeric is not None:
        return [list(map(itemgetter(header.index(c)), numeric)) for c in COLUMNS]
    if set(map(str.count, body, repeat(","))) != {width - 1}:
        return None  # a blank line, a short or a long row: the row path says which
    flat = ",".join(body).split(",")
    return [flat[header.index(c)::width] for c in COLUMNS]


def _csv_as_json(body: list[str], width: int) -> list[list[object]] | None:
    """The rows of an all-numeric CSV body parsed by orjson (a JSON array per line), or None.

    A number JSON accepts is one ``float()`` accepts and reads as the same float (both round
    correctly); anything else (ISO times, ``nan``, ``.5``, an empty field) makes the text invalid
    JSON and the caller splits the lines instead.
    """
    text = "\n".join(body)
    # No brackets: no line can turn into two JSON rows. No minus: JSON reads "-0" as the int 0
    # where float() reads -0.0 (and a valid candle file has no negative number anyway).
    if "[" in text or "]" in text or "{" in text or "}" in text or "-" in text:
        return None
    try:
        rows = orjson.loads("[[" + text.replace("\n", "],[") + "]]")
    except orjson.JSONDecodeError:
        return None
    if set(map(len, rows)) != {width}:
        return None  # a blank line ([]), a short or a long row
    return rows


def _columns_to_candles(
    times: list[int], o: list[float], h: list[float], low: list[float], c: list[float], v: list[float],
    *, strict: bool = False,
) -> tuple[list[Candle], list[int], int, int] | None:
    """``(candles, times, gaps, filled_minutes)`` when every row passes the checks of ``FileSource._load``,
    with missing minutes filled as it fills them; None at the first doubt (the row path then words it).

    Every check is a C-level pass over a column or two. A NaN fails every comparison, so the
    ``low <= open, close <= high`` passes refuse NaN prices too; every price then lies between the
    lowest low and the highest high, so those two bound them all. ``sum`` of the volumes is not
    finite when one is NaN or infinite (or when finite ones overflow: a false alarm the row path
    then clears).
    """
    if not times:
        return None
    if not (all(map(le, low, o)) and all(map(le, o, h)) and all(map(le, low, c)) and all(map(le, c, h))):
        return None
    if not (0 < min(low) and max(h) < math.inf and math.isfinite(sum(v)) and min(v) >= 0):
        return None
    first = times[0]
    if first % MINUTE_MS or max(times) >= LATEST_MS:
        return None
    new = tuple.__new__  # Candle tuples without the Python-level __new__, as the row path builds them
    # The common case, gap-free, ordered and on the minute, in one comparison of int lists.
    if times == list(range(first, first + len(times) * MINUTE_MS, MINUTE_MS)):
        return list(map(new, repeat(Candle), zip(times, o, h, low, c, v, strict=True))), times, 0, 0
    steps = set(map(sub, islice(times, 1, None), times))
    if min(steps) <= 0 or any(step % MINUTE_MS for step in steps) or strict:
        return None  # out of order, duplicate, off the minute, or a gap refused: the row path's messages
    return fill_gaps(times, o, h, low, c, v)


def fill_gaps(
    times: list[int], o: list[float], h: list[float], low: list[float], c: list[float], v: list[float]
) -> tuple[list[Candle], list[int], int, int]:
    """Candles of ordered, minute-aligned columns, each run of missing minutes filled with flat
    zero-volume candles at the previous close (as ``FileSource._gap``): ``(candles, times, gaps, filled)``."""
    new = tuple.__new__
    breaks = [i for i, step in enumerate(map(sub, islice(times, 1, None), times), 1) if step != MINUTE_MS]
    candles: list[Candle] = []
    all_times: list[int] = []
    filled = 0
    begin = 0
    for i in [*breaks, len(times)]:
        candles.extend(map(new, repeat(Candle), zip(times[begin:i], o[begin:i], h[begin:i], low[begin:i],
                                                      c[begin:i], v[begin:i], strict=True)))
        all_times.extend(times[begin:i])
        if i < len(times):
            p = c[i - 1]
            missing = range(times[i - 1] + MINUTE_MS, times[i], MINUTE_MS)
            candles.extend(new(Candle, (t, p, p, p, p, 0.0)) for t in missing)
            all_times.extend(missing)
            filled += len(missing)
        begin = i
    return candles, all_times, len(breaks), filled


def _parse_timestamp(value: object) -> int | None:
    """Milliseconds from an int, an integral float, digits, or ISO-8601 text; None if none of these."""
    # Exact types (``type(x) is``, which mypy narrows on too): bool is an int subclass, not a time.
    if type(value) is int:
        return value
    if type(value) is float:
        return int(value) if value.is_integer() else None
    if type(value) is not str:
        return None
    text = value.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        x = float(text)
        return int(x) if x.is_integer() else None
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # naive times are UTC, as exchanges report them
    return (moment - _EPOCH) // _MS


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _detect_format(path: Path, data: bytes) -> str:
    """``json`` or ``csv``: by extension, else by the first character of the content."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".json"):
        return suffix[1:]
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    return "json" if head in (b"[", b"{") else "csv"


def _shape(fmt: str) -> str:
    if fmt == "json":
        return "a JSON array of [timestamp_ms, open, high, low, close, volume] rows"
    return f"a header line {','.join(COLUMNS)} and one row per minute"


def _short(value: object) -> str:
    """A value as it appears in the file, cut short for messages."""
    text = repr(value) if not isinstance(value, str) else repr(value.strip())
    return text if len(text) <= 40 else text[:37] + "..."
