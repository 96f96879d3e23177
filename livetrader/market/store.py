"""The local candle store: 1-minute candles downloaded once (``livetrader download``), read in a blink.

Layout, under the store's root (default: ``<data dir>/candles``)::

    <exchange>/<SYMBOL>/symbol.json       {"exchange": "binance", "symbol": "BTC/USDT"}: the exchange's spelling
    <exchange>/<SYMBOL>/2024-01-01.day    one UTC day, columnar (``_DAY``)

(``<SYMBOL>`` is ``BTCUSDT`` for ``BTC/USDT``, both names made file-safe by ``store.names.stem_of``.)

A day file holds every minute of its day: a header (magic, the day's opening ms, a CRC-32 of the
rest), one status byte per minute (``UNKNOWN``: never fetched; ``CANDLE``; ``GAP``: fetched, and
the exchange has no candle for it) and five little-endian float64 columns (open, high, low,
close, volume) of 1,440 values each. Opening times are implied by the position. Reading a range
is one ``read`` per day and an ``array.frombytes`` per column straight from its bytes: a year
loads in about a quarter of a second, with no library beyond the standard one (measured against
numpy and pyarrow: README "Downloading candles: the local candle store").

Every day file is replaced atomically (``store.atomic.write_atomic``), so a download killed at any
instant leaves whole files: the minutes written before the kill are kept, the others are still
``UNKNOWN`` and the next download fetches them. Candles are validated once, on the way in
(``core.price.candle_problem``); a file that fails its CRC on the way out is reported, never used.

Gaps are recorded, not refetched: a minute the exchange answered around without a candle is a
``GAP``. A backtest fills it as a candle file's missing minute is filled (flat, zero volume, at the
previous close; ``market.files.fill_gaps``) and says how many it filled.
"""

from __future__ import annotations

import array
import fcntl
import os
import struct
import sys
import zlib
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import compress, repeat
from pathlib import Path
from typing import Any

import orjson

from livetrader.core.format import format_time
from livetrader.core.price import MINUTE_MS, Candle, candle_problem
from livetrader.errors import CandleSourceError, UnknownSymbolError, UsageError
from livetrader.market.files import fill_gaps, gc_paused, normalize_symbol
from livetrader.store.atomic import ensure_dir, write_atomic
from livetrader.store.names import stem_of

DAY_MS = 1440 * MINUTE_MS
MINUTES_PER_DAY = 1440
#: Status of a minute in a day file.
UNKNOWN, CANDLE, GAP = 0, 1, 2
_MAGIC = b"LTCANDL1"
_HEADER = struct.Struct("<8sqI4x")  # magic, day opening ms, CRC-32 of everything after the header
_COLUMN_BYTES = MINUTES_PER_DAY * 8
_DAY = _HEADER.size + MINUTES_PER_DAY + 5 * _COLUMN_BYTES
_SUFFIX = ".day"
_SYMBOL_FILE = "symbol.json"
_LOCK_FILE = "download.lock"
#: Candles asked per request from a source without pages of its own (sim, files).
DEFAULT_PAGE = 1000
_ALL_CANDLES = bytes([CANDLE]) * MINUTES_PER_DAY
# status -> 1 for a candle, 0 otherwise: the mask ``compress`` keeps candles by.
_IS_CANDLE = bytes(1 if i == CANDLE else 0 for i in range(256))


def default_root(data_dir: Path) -> Path:
    """Where the candle store lives in a data directory."""
    return Path(data_dir) / "candles"


@dataclass(slots=True)
class Day:
    """One UTC day of one symbol: a status byte and five values per minute (index = minute of the day)."""

    start: int
    status: bytearray = field(default_factory=lambda: bytearray(MINUTES_PER_DAY))
    columns: list[array.array[float]] = field(
        default_factory=lambda: [array.array("d", bytes(_COLUMN_BYTES)) for _ in range(5)]
    )

    def put(self, candle: Candle) -> None:
        """Record a candle of this day."""
        i = (candle[0] - self.start) // MINUTE_MS
        self.status[i] = CANDLE
        for column, value in zip(self.columns, candle[1:], strict=True):
            column[i] = value

    def encode(self) -> bytes:
        """The day file's bytes."""
        columns = self.columns
        if sys.byteorder == "big":  # the file is little-endian on every machine
            columns = [array.array("d", c) for c in columns]
            for c in columns:
                c.byteswap()
        body = bytes(self.status) + b"".join(c.tobytes() for c in columns)
        return _HEADER.pack(_MAGIC, self.start, zlib.crc32(body)) + body


def day_of(ms: int) -> int:
    """The opening ms of the UTC day holding ``ms``."""
    return ms - ms % DAY_MS


def _day_name(start: int) -> str:
    return datetime.fromtimestamp(start / 1000, UTC).strftime("%Y-%m-%d") + _SUFFIX


@dataclass(slots=True)
class Stored:
    """Candles read from the store for a range: gap-free (gaps filled), and what was filled."""

    candles: list[Candle]
    #: Opening times (a ``range`` when gap-free: no list of a year of ints to build).
    times: Sequence[int]
    gaps: int
    filled_minutes: int


class CandleStore:
    """The candle store rooted at ``root`` (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def folder(self, exchange: str, symbol: str) -> Path:
        """The folder of ``symbol`` (any spelling: ``btc/usdt``, ``BTCUSDT``) on ``exchange``."""
        return self.root / stem_of(exchange) / stem_of(normalize_symbol(symbol))

    def stored_symbol(self, exchange: str, symbol: str) -> str | None:
        """The exchange's spelling of ``symbol`` (``BTC/USDT``) when the store holds it, else None."""
        try:
            data = orjson.loads((self.folder(exchange, symbol) / _SYMBOL_FILE).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        name = data.get("symbol") if isinstance(data, dict) else None
        return name if isinstance(name, str) else None

    def remember_symbol(self, exchange: str, symbol: str) -> None:
        """Record the exchange's spelling of ``symbol`` (once)."""
        folder = self.folder(exchange, symbol)
        if self.stored_symbol(exchange, symbol) == symbol:
            return
        ensure_dir(folder)
        write_atomic(folder / _SYMBOL_FILE, orjson.dumps({"exchange": exchange, "symbol": symbol}))

    def read_day(self, exchange: str, symbol: str, start: int) -> Day | None:
        """The day opening at ``start``, or None when nothing of it is stored."""
        body = self._read_body(self.folder(exchange, symbol), start)
        if body is None:
            return None
        columns = []
        for k in range(5):
            column = array.array("d")
            column.frombytes(body[_column_at(k, 0):_column_at(k, MINUTES_PER_DAY)])
            if sys.byteorder == "big":
                column.byteswap()
            columns.append(column)
        return Day(start, bytearray(body[:MINUTES_PER_DAY]), columns)

    def _read_body(self, folder: Path, start: int) -> memoryview | None:
        """The checked bytes after the header of a day file (status bytes, then the columns), or None."""
        path = folder / _day_name(start)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CandleSourceError(f"candle store file {path} cannot be read: {exc.strerror}") from None
        return _checked_body(path, data, start)

    def write_day(self, exchange: str, symbol: str, day: Day) -> None:
        """Replace the day's file atomically (a crash leaves the old file or the new one, whole)."""
        folder = self.folder(exchange, symbol)
        ensure_dir(folder)
        write_atomic(folder / _day_name(day.start), day.encode())

    def days(self, exchange: str, symbol: str, start: int, end: int) -> Iterator[tuple[int, Day | None]]:
        """Every day touching ``[start, end)``, in order, with its stored content (None: nothing stored)."""
        for d in range(day_of(start), end, DAY_MS):
            yield d, self.read_day(exchange, symbol, d)

    def missing(self, exchange: str, symbol: str, start: int, end: int) -> list[tuple[int, int]]:
        """The runs ``[a, b)`` of minutes in ``[start, end)`` never fetched (neither candle nor gap)."""
        runs: list[tuple[int, int]] = []
        for d, day in self.days(exchange, symbol, start, end):
            lo = max(start, d)
            hi = min(end, d + DAY_MS)
            if day is None:
                _add_run(runs, lo, hi)
                continue
            status = day.status
            i, stop = (lo - d) // MINUTE_MS, (hi - d) // MINUTE_MS
            while i < stop:
                j = status.find(UNKNOWN, i, stop)
                if j < 0:
                    break
                k = _first_known(status, j, stop)
                _add_run(runs, d + j * MINUTE_MS, d + k * MINUTE_MS)
                i = k
        return runs

    def load(self, exchange: str, symbol: str, start: int, end: int, needed_from: int | None = None) -> Stored | None:
        """The stored candles opening in ``[start, end)`` with gaps filled, or None unless every
        minute of the range was fetched. Gap minutes before the first candle are left out (there is
        no close to fill them from).

        With ``needed_from``, only ``[needed_from, end)`` must be fetched whole: the candles begin
        at ``start`` or, when minutes before ``needed_from`` were never fetched, just after the last
        of them. Each day file is read once either way."""
        start -= start % MINUTE_MS
        end += -end % MINUTE_MS
        if start >= end:
            return None
        statuses: list[bytes] = []
        columns: list[array.array[float]] = [array.array("d") for _ in range(5)]
        folder = self.folder(exchange, symbol)
        with gc_paused():
            for d in range(day_of(start), end, DAY_MS):
                body = self._read_body(folder, d)
                i, stop = (max(start, d) - d) // MINUTE_MS, (min(end, d + DAY_MS) - d) // MINUTE_MS
                status = bytes(body[i:stop]) if body is not None else bytes(stop - i)
                if UNKNOWN in status:
                    # The minute after the last one never fetched: the range may begin there only
                    # when that is at or before ``needed_from``.
                    after = d + (i + status.rindex(UNKNOWN) + 1) * MINUTE_MS
                    if needed_from is None or after > needed_from:
                        return None
                    start = after
                    statuses.clear()
                    columns = [array.array("d") for _ in range(5)]
                    if body is None:
                        continue
                    i = (after - d) // MINUTE_MS
                    status = bytes(body[i:stop])
                assert body is not None
                statuses.append(status)
                for k, whole in enumerate(columns):  # straight from the file's bytes: one copy
                    whole.frombytes(body[_column_at(k, i):_column_at(k, stop)])
            if start >= end:
                return None
            if sys.byteorder == "big":
                for whole in columns:
                    whole.byteswap()
            status = b"".join(statuses)
            if status.count(CANDLE) == len(status):  # the common case: no gap at all
                minutes = range(start, end, MINUTE_MS)
                new = tuple.__new__
                # Straight from the arrays (their iterators make the floats): no list per column.
                candles = list(map(new, repeat(Candle), zip(minutes, *columns, strict=True)))
                return Stored(candles, minutes, 0, 0)
            mask = status.translate(_IS_CANDLE)
            times = list(compress(range(start, end, MINUTE_MS), mask))
            if not times:
                return Stored([], [], 0, 0)
            o, h, low, c, v = (list(compress(col, mask)) for col in columns)
            candles, all_times, gaps, filled = fill_gaps(times, o, h, low, c, v)
            return Stored(candles, all_times, gaps, filled)

    def gap_runs(self, exchange: str, symbol: str, start: int, end: int) -> list[tuple[int, int]]:
        """The runs ``[a, b)`` of minutes recorded as gaps (the exchange has no candle) in ``[start, end)``."""
        runs: list[tuple[int, int]] = []
        for d, day in self.days(exchange, symbol, start, end):
            if day is None:
                continue
            status = day.status
            i, stop = (max(start, d) - d) // MINUTE_MS, (min(end, d + DAY_MS) - d) // MINUTE_MS
            while i < stop:
                j = status.find(GAP, i, stop)
                if j < 0:
                    break
                k = j
                while k < stop and status[k] == GAP:
                    k += 1
                _add_run(runs, d + j * MINUTE_MS, d + k * MINUTE_MS)
                i = k
        return runs

    def lock(self) -> _StoreLock:
        """An exclusive lock on the store: one download writes it at a time."""
        return _StoreLock(self.root)


def _first_known(status: bytearray, i: int, stop: int) -> int:
    while i < stop and status[i] == UNKNOWN:
        i += 1
    return i


def _add_run(runs: list[tuple[int, int]], a: int, b: int) -> None:
    """Append ``[a, b)``, merged with the last run when they touch (runs cross day files)."""
    if runs and runs[-1][1] == a:
        runs[-1] = (runs[-1][0], b)
    else:
        runs.append((a, b))


def _column_at(k: int, minute: int) -> int:
    """Where value ``minute`` of column ``k`` starts in a day file's body."""
    return MINUTES_PER_DAY + k * _COLUMN_BYTES + minute * 8


def _checked_body(path: Path, data: bytes, start: int) -> memoryview:
    def damaged(why: str) -> CandleSourceError:
        return CandleSourceError(
            f"candle store file {path} is damaged ({why}); delete it and run `livetrader download` again for its day"
        )

    if len(data) != _DAY:
        raise damaged(f"{len(data)} bytes, not {_DAY}")
    magic, day_start, crc = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise damaged("not a livetrader day file")
    if day_start != start:
        raise damaged(f"it holds {format_time(day_start)}, not the day its name says")
    body = memoryview(data)[_HEADER.size:]
    if zlib.crc32(body) != crc:
        raise damaged("checksum mismatch")
    return body


class _StoreLock:
    """``flock`` on ``<root>/download.lock``: released by the kernel when the holder dies (SIGKILL too)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fd: int | None = None

    def __enter__(self) -> _StoreLock:
        ensure_dir(self.root)
        fd = os.open(self.root / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UsageError(f"another `livetrader download` is writing the candle store {self.root}; "
                             "wait for it to finish") from None
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# --- download ---------------------------------------------------------------------------------

#: ``fetch_page(symbol, since, end)``: the candles the exchange has from ``since`` on, before ``end``
#: (one request's worth, gaps and all), oldest first.
PageFetcher = Callable[[str, int, int], Awaitable[list[Candle]]]


@dataclass(slots=True)
class DownloadReport:
    """What one symbol's download did; times in ms."""

    exchange: str
    symbol: str
    start: int
    end: int
    #: Minutes of the range already stored (candle or gap) before this run.
    already: int = 0
    fetched: int = 0
    requests: int = 0
    #: Minutes this run found the exchange has no candle for (recorded as gaps).
    new_gap_minutes: int = 0
    #: Every gap recorded in the range (this run's and earlier ones'): runs ``[a, b)``.
    gaps: list[tuple[int, int]] = field(default_factory=list)


def page_fetcher(source: Any) -> PageFetcher:
    """How to fetch one page from ``source``: its own ``fetch_page`` (ccxt: one request, as the
    exchange answers), else ``fetch`` over at most ``DEFAULT_PAGE`` minutes (sim, files)."""
    own = getattr(source, "fetch_page", None)
    if own is not None:
        return own

    async def fetch(symbol: str, since: int, end: int) -> list[Candle]:
        return list(await source.fetch(symbol, since, min(end, since + DEFAULT_PAGE * MINUTE_MS)))

    return fetch


async def download(
    store: CandleStore,
    exchange: str,
    symbol: str,
    start: int,
    end: int,
    fetch_page: PageFetcher,
    progress: Callable[[DownloadReport, int], None] | None = None,
    settled: int | None = None,
) -> DownloadReport:
    """Fetch the minutes of ``[start, end)`` the store lacks into it; ``symbol`` is the exchange's spelling.

    Only minutes never fetched are asked for (``CandleStore.missing``); each answer is validated
    and stored; minutes the exchange answered around are recorded as gaps. A day file is written
    (atomically) as soon as the download moves past it, and whatever was fetched is written when
    anything goes wrong, so a killed or failed download resumes where it stopped. ``progress`` is
    called after each page with the report and the minutes still to fetch. Minutes from
    ``settled`` on (the last few before now) are never recorded as gaps when the exchange sends
    nothing for them: its clock may be a moment behind, and they are fetched next time instead.
    """
    start -= start % MINUTE_MS
    end -= end % MINUTE_MS
    report = DownloadReport(exchange, symbol, start, end)
    store.remember_symbol(exchange, symbol)
    runs = store.missing(exchange, symbol, start, end)
    to_fetch = sum(b - a for a, b in runs) // MINUTE_MS
    report.already = (end - start) // MINUTE_MS - to_fetch
    open_days: dict[int, Day] = {}

    def day(ms: int) -> Day:
        d = day_of(ms)
        found = open_days.get(d)
        if found is None:
            found = store.read_day(exchange, symbol, d) or Day(d)
            open_days[d] = found
        return found

    def flush(before: int | None = None) -> None:
        """Write the open days ending at or before ``before`` (all when None)."""
        for d in sorted(open_days):
            if before is None or d + DAY_MS <= before:
                store.write_day(exchange, symbol, open_days.pop(d))

    def mark_gap(a: int, b: int) -> None:
        for t in range(a, b, MINUTE_MS):
            target = day(t)
            i = (t - target.start) // MINUTE_MS
            if target.status[i] == UNKNOWN:
                target.status[i] = GAP
                report.new_gap_minutes += 1

    try:
        for a, b in runs:
            since = a
            while since < b:
                page = await fetch_page(symbol, since, b)
                report.requests += 1
                rows = [c for c in page if since <= c[0] < b]
                if not rows:
                    # Nothing more before the end of this run (but too recent minutes stay unknown).
                    mark_gap(since, b if settled is None else max(since, min(b, settled)))
                    to_fetch -= (b - since) // MINUTE_MS
                    since = b
                else:
                    expected = since
                    for candle in rows:
                        _check(exchange, symbol, candle, expected)
                        mark_gap(expected, candle[0])
                        day(candle[0]).put(candle)
                        report.fetched += 1
                        expected = candle[0] + MINUTE_MS
                    to_fetch -= (expected - since) // MINUTE_MS
                    since = expected
                flush(before=since)
                if progress is not None:
                    progress(report, to_fetch)
    finally:
        flush()
    report.gaps = store.gap_runs(exchange, symbol, start, end)
    return report


def _check(exchange: str, symbol: str, candle: Candle, expected: int) -> None:
    """Validate one candle on its way into the store."""
    ts = candle[0]
    problem = candle_problem(candle)
    if problem is None and ts % MINUTE_MS:
        problem = "not on a minute boundary"
    if problem is None and ts < expected:
        problem = "out of order or duplicated"
    if problem is not None:
        raise CandleSourceError(
            f"{exchange} {symbol}: the candle at {format_time(ts)} is unusable ({problem}); nothing from it on "
            "was stored: try again later, or download a range that ends before it"
        )


# --- reading for a backtest ---------------------------------------------------------------------


class StoreSource:
    """Candles of one symbol read from the store for a range; implements ``CandleSource``.

    ``where`` says where they came from (for the one line ``backtest`` prints), ``filled_minutes``
    how many gap minutes were filled flat.
    """

    def __init__(self, store: CandleStore, exchange: str, symbol: str, stored: Stored) -> None:
        self.name = exchange
        self.symbol = symbol
        self.candles = stored.candles
        self.times = stored.times
        self.gaps = stored.gaps
        self.filled_minutes = stored.filled_minutes
        self.where = store.folder(exchange, symbol)

    def resolve_symbol(self, symbol: str) -> str:
        """The stored spelling (``BTC/USDT``) for any spelling of the same symbol."""
        if normalize_symbol(symbol) != normalize_symbol(self.symbol):
            raise UnknownSymbolError(f"the candles read from {self.where} are for {self.symbol}, not {symbol}")
        return self.symbol

    def bounds(self, symbol: str) -> tuple[int, int] | None:
        """None: like the exchange it stands for, the range was chosen before reading."""
        return None

    async def fetch(self, symbol: str, start_ms: int, end_ms: int) -> list[Candle]:
        """Candles opening in ``[start_ms, end_ms)`` of those read."""
        self.resolve_symbol(symbol)
        lo = bisect_left(self.times, start_ms)
        hi = bisect_left(self.times, end_ms, lo)
        return self.candles if (lo, hi) == (0, len(self.candles)) else self.candles[lo:hi]

    async def close(self) -> None:
        """Nothing to release."""


def open_stored(root: Path, exchange: str, symbol: str, start: int, end: int,
                needed_from: int | None = None) -> StoreSource | None:
    """A ``StoreSource`` of ``symbol`` on ``exchange`` from the store at ``root``, or None.

    Without ``needed_from``: when the store holds every minute of ``[start, end)``. With it: when
    it holds every minute of ``[needed_from, end)``; the candles then begin at ``start`` or, when
    the store lacks minutes before ``needed_from``, just after the last of them (history is what
    the store has, as a candle file gives what it holds).
    """
    store = CandleStore(root)
    name = store.stored_symbol(exchange, symbol)
    if name is None:
        return None
    stored = store.load(exchange, name, start, end, needed_from)
    if stored is None or not stored.candles:
        return None
    return StoreSource(store, exchange, name, stored)


def missing_minutes(root: Path, exchange: str, symbol: str, start: int, end: int) -> int | None:
    """How many minutes of ``[start, end)`` the store lacks for ``symbol``; None when it holds none of it."""
    store = CandleStore(root)
    name = store.stored_symbol(exchange, symbol)
    if name is None:
        return None
    return sum(b - a for a, b in store.missing(exchange, name, start, end)) // MINUTE_MS
