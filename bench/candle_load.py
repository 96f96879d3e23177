"""Benchmark 7: loading a year of 1-minute candles, and ``livetrader backtest`` end to end (issue 23).

The reference workload's candles (``bench/workload.py``) for ``days`` days, generated here and
written three ways: the candle store (``market.store``, as ``livetrader download`` leaves it), a
JSON file (ccxt's ``fetch_ohlcv`` shape) and a CSV file. Timed in this process, best of
``repeats``: each load, validation included (the store's was done on the way in), through the
bulk loader and through the row-by-row one it falls back to (the loader before issue 23), and
from the parsed copy a first load keeps (``market.parsed``: the second load of the same bytes).
Timed as commands, median of ``runs`` after a warm-up run: ``livetrader backtest`` of
``my-strategy`` over the whole range from the store and from the JSON file (its first run, which
parses it, each in a new data directory; and again, from the parsed copy), beside ``python -c
"import livetrader"``, the start-up every command pays. The commands run with bytecode caching
on, as an installed package has its modules compiled (``PYTHONDONTWRITEBYTECODE`` set here
would compile every livetrader module on every run: +0.05 s).
"""

from __future__ import annotations

import array
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench import workload
from bench.common import Result, median
from livetrader.core.format import format_minute
from livetrader.core.price import MINUTE_MS
from livetrader.market import files
from livetrader.market.files import FileSource
from livetrader.market.store import CANDLE, DAY_MS, MINUTES_PER_DAY, CandleStore, Day, open_stored

TARGET_LOAD_SECONDS = 0.3
TARGET_COMMAND_SECONDS = 1.0
ROOT = Path(__file__).resolve().parent.parent
EXCHANGE = "sim"


def write_store(root: Path, candles: list[Any]) -> None:
    """The candles as ``livetrader download`` stores them: whole days, every minute a candle."""
    store = CandleStore(root)
    store.remember_symbol(EXCHANGE, workload.SYMBOL)
    by_day: dict[int, list[Any]] = {}
    for c in candles:
        by_day.setdefault(c[0] - c[0] % DAY_MS, []).append(c)
    for start, rows in by_day.items():
        day = Day(start)
        if len(rows) == MINUTES_PER_DAY:
            day.status[:] = bytes([CANDLE]) * MINUTES_PER_DAY
            day.columns = [array.array("d", [r[k] for r in rows]) for k in range(1, 6)]
        else:
            for r in rows:
                day.put(r)
        store.write_day(EXCHANGE, workload.SYMBOL, day)


def best_of(repeats: int, load: Callable[[], object]) -> tuple[float, object]:
    times = []
    result: object = None
    for _ in range(repeats):
        began = time.perf_counter()
        result = load()
        times.append(time.perf_counter() - began)
        if len(times) < repeats:
            del result
    return min(times), result


def wall_times(argv: list[str], runs: int, cwd: Path, fresh_data_dir: bool = False) -> list[float]:
    """Wall seconds of ``runs`` runs of ``argv`` after a warm-up run; ``fresh_data_dir``: each in a
    new, empty data directory (no parsed copy to find)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run(argv, capture_output=True, check=True, cwd=cwd, env=env)
    times = []
    for run in range(runs):
        if fresh_data_dir:
            env["LIVETRADER_DATA_DIR"] = str(cwd / f"fresh-{run}")
        began = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True, cwd=cwd, env=env)
        times.append(time.perf_counter() - began)
    return times


def run(days: int = 365, repeats: int = 3, runs: int = 5, row_path: bool = True) -> Result:
    """Load ``days`` days of candles from the store, JSON and CSV; then time the backtest command."""
    out = Result("candles", f"Loading {days} days of 1-minute candles; `livetrader backtest` end to end")
    # Exactly ``days`` days of candles; the backtest starts a day in, so the day of history it
    # loads before its first frame (``cli.backtest.HISTORY_MINUTES``) is in the data too.
    first, end = workload.frame_range(days)
    candles = [workload.candle(ts) for ts in range(first, end, MINUTE_MS)]
    start = first + DAY_MS
    out.details.update({"days": days, "rows": len(candles), "repeats": repeats, "runs": runs})
    with tempfile.TemporaryDirectory(prefix="lt-bench-candles-") as tmp:
        folder = Path(tmp)
        store = folder / "store"
        write_store(store, candles)
        as_json = folder / "year.json"
        as_json.write_bytes(orjson.dumps([list(c) for c in candles]))
        as_csv = folder / "year.csv"
        as_csv.write_text("timestamp,open,high,low,close,volume\n" + "".join(
            f"{c[0]},{c[1]!r},{c[2]!r},{c[3]!r},{c[4]!r},{c[5]!r}\n" for c in candles))
        out.details["bytes"] = {"store": sum(p.stat().st_size for p in store.rglob("*.day")),
                                "json": as_json.stat().st_size, "csv": as_csv.stat().st_size}
        del candles

        def from_store() -> object:
            source = open_stored(store, EXCHANGE, workload.SYMBOL, first, end)
            assert source is not None
            return source

        copies = folder / "copies"

        def first_load(path: Path) -> Callable[[], object]:
            def load() -> object:
                shutil.rmtree(copies, ignore_errors=True)
                return FileSource(path, parsed_copies=copies)
            return load

        loads: list[tuple[str, Callable[[], object], float | None]] = [
            ("store", from_store, TARGET_LOAD_SECONDS),
            ("JSON, bulk", lambda: FileSource(as_json), None),
            ("CSV, bulk", lambda: FileSource(as_csv), None),
            ("JSON, first load (parsed, a copy kept)", first_load(as_json), None),
            ("JSON, its parsed copy", lambda: FileSource(as_json, parsed_copies=copies), TARGET_LOAD_SECONDS),
            ("CSV, first load (parsed, a copy kept)", first_load(as_csv), None),
            ("CSV, its parsed copy", lambda: FileSource(as_csv, parsed_copies=copies), TARGET_LOAD_SECONDS),
        ]
        if row_path:
            loads += [("JSON, row by row (before)", lambda: FileSource(as_json, bulk=False), None),
                      ("CSV, row by row (before)", lambda: FileSource(as_csv, bulk=False), None)]
        reference: list[Any] | None = None
        # Copies for any size here: a quick run's few days are below the size that gets one.
        files._COPY_FROM_BYTES = 0
        for name, load, target in loads:
            seconds, source = best_of(repeats, load)
            if name.endswith("parsed copy") and not source.from_copy:  # type: ignore[attr-defined]
                raise AssertionError(f"{name}: the file was parsed again")
            got = asyncio.run(source.fetch(workload.SYMBOL, first, end))  # type: ignore[attr-defined]
            if reference is None:
                reference = got
            elif got != reference:
                raise AssertionError(f"{name}: loaded other candles than the store")
            out.add(f"load from {name}", seconds, "s", target)
            out.details[f"load_{name}"] = seconds
            del source, got

        argv = [sys.executable, "-m", "livetrader.cli.app", "backtest", workload.SYMBOL, "--strategy", "my-strategy",
                "--from", format_minute(start), "--to", format_minute(end),
                "--strategies-dir", str(ROOT / "strategies"), "--config", str(ROOT / "config" / "livetrader.toml")]
        commands = {
            "backtest from the store": [*argv, "--exchange", EXCHANGE, "--store", str(store)],
            "backtest from the JSON file, first run (parsed)": [*argv, "--candles", str(as_json)],
            "backtest from the JSON file, again (its parsed copy)": [*argv, "--candles", str(as_json)],
            'python -c "import livetrader" (start-up)': [sys.executable, "-c", "import livetrader"],
        }
        for name, command in commands.items():
            times = wall_times(command, runs, folder, fresh_data_dir="first run" in name)
            target = TARGET_COMMAND_SECONDS if name.startswith("backtest") and "first run" not in name else None
            out.add(f"{name} (median wall)", median(times), "s", target)
            out.details[name] = times
    out.notes.append(f"loads: best of {repeats}, this process; commands: median of {runs} runs after a warm-up, "
                     f"`livetrader backtest {workload.SYMBOL} --strategy my-strategy` over {days} days")
    return out
