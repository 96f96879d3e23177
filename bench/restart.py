"""Benchmark 4: restart, from process start to every pair restored with its open position.

Method. The parent prepares a data directory the way the engine writes it: ``N`` pairs
(``ceil(N / 3)`` synthetic symbols x ``bench-hold``, ``bench-hold-short``, ``bench-hold-near``),
each ticked once so that each holds an open position, journal and snapshot on disk. It then
starts a fresh interpreter (``python -m bench.restart --child ...``) and measures, on the
system-wide monotonic clock, from just before spawning it to the moment the child has:

1. started (interpreter up, ``bench.restart`` imported: stdlib only),
2. imported the engine (livetrader, strategies' base, structlog, orjson),
3. built the Engine, loaded the strategies and restored every pair (``add_pair`` each:
   journal and snapshot read and checked, journal reopened for appends, ``restore_absent_pairs()``),
   which is "all pairs ready, no catch-up needed" (target under 2 s), and
4. ticked every pair once one minute later (the tick after which the daemon signals
   READY=1), with the candles read from a file the parent wrote (that loading is not timed).

Each ``add_pair`` call is timed (``_growth``): the cost of restoring a pair while the engine
holds few is told apart from any part that grows with the pairs already added (restoring
was quadratic once; it should stay linear, and this figure shows it).

The command line (``livetrader run SYMBOLS... --strategy ...``) is not used because the
sim behind it has seven symbols, and 10,000 pairs would need 1,429 strategies; what runs
is the engine code ``livetrader run`` calls, in a fresh process. Bare interpreter start-up
(``python -c pass``) is measured beside it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 2.0
HOLD_STRATEGIES = ("bench-hold", "bench-hold-short", "bench-hold-near")
ROOT = Path(__file__).resolve().parent.parent


def prepare(data_dir: Path, candles_file: Path, pairs: int) -> None:
    """Write a data directory where ``pairs`` pairs each hold an open position, and the candles file."""
    import asyncio

    import orjson

    from bench.harness import ORIGIN_MS, build_engine, daemon_logging, layout, no_fsync, sweep
    from livetrader.core.price import MINUTE_MS

    with daemon_logging(data_dir.parent / "prepare.log"), no_fsync():
        engine, clock = build_engine(data_dir, layout(pairs, HOLD_STRATEGIES), ORIGIN_MS, 2)
        try:
            asyncio.run(sweep(engine, ORIGIN_MS))
            not_open = [p.key for p in engine.pairs if p.state != "open"]
            if not_open:
                raise RuntimeError(f"{len(not_open)} pairs did not open a position, e.g. {not_open[0]}")
        finally:
            asyncio.run(engine.close())
    rows = engine.sources["sim"].rows
    first = ORIGIN_MS - 10 * MINUTE_MS
    candles_file.write_bytes(orjson.dumps({s: [list(c) for c in r if c.timestamp >= first] for s, r in rows.items()}))


def child(data_dir: str, candles_file: str, pairs: int) -> None:
    """Runs in the fresh process: restore every pair, tick them once, print the timeline as JSON."""
    started = time.monotonic()
    import asyncio
    from dataclasses import replace

    import orjson

    from bench.harness import (
        ORIGIN_MS,
        ManualClock,
        PreloadedSim,
        daemon_logging,
        layout,
        registry,
        sweep,
        synthetic_symbols,
    )
    from livetrader.config import Config
    from livetrader.core.price import MINUTE_MS, Candle
    from livetrader.events import EventBus
    from livetrader.live.collector import collector_paused
    from livetrader.live.engine import Engine
    from livetrader.market.feed import CandleFeed
    from livetrader.market.sim import SimSource

    imported = time.monotonic()
    now = ORIGIN_MS + MINUTE_MS
    chosen = layout(pairs, HOLD_STRATEGIES)
    stamps: dict[str, object] = {"started": started, "imported": imported}
    with daemon_logging(Path(data_dir).parent / "restart.log"):
        sim = SimSource(seed=42, symbols=synthetic_symbols(len({s for s, _ in chosen})))
        engine = Engine(replace(Config(), data_dir=Path(data_dir)), registry(), clock=ManualClock(now),
                        bus=EventBus(), data_dir=Path(data_dir))
        engine.sources["sim"] = CandleFeed(sim)
        stamps["built"] = time.monotonic()
        durations = []
        with collector_paused():  # as `livetrader run` restores its pairs
            for symbol, strategy in chosen:
                began = time.monotonic()
                engine.add_pair(symbol, strategy, "sim")
                durations.append(time.monotonic() - began)
        stamps["added"] = time.monotonic()
        engine.restore_absent_pairs()
        stamps["restored"] = time.monotonic()
        stamps["add_pair_growth"] = _growth(durations)
        stamps["open_after_restore"] = sum(1 for p in engine.pairs if p.state == "open")
        source = PreloadedSim(sim, ORIGIN_MS - 10 * MINUTE_MS, now + MINUTE_MS)
        data = orjson.loads(Path(candles_file).read_bytes())
        source.rows = {s: [Candle(*c) for c in rows] for s, rows in data.items()}
        feed = CandleFeed(source)
        for pair in engine.pairs:
            pair.source = feed
        stamps["loaded"] = time.monotonic()
        asyncio.run(sweep(engine, now))
        stamps["ticked"] = time.monotonic()
        stamps["open_after_tick"] = sum(1 for p in engine.pairs if p.state == "open")
        stamps["fetches_outside_preloaded_candles"] = source.misses
        asyncio.run(engine.close())
    print(json.dumps(stamps))


def _growth(durations: list[float]) -> dict[str, object]:
    """How the cost of one ``add_pair`` grows with the pairs added before it.

    ``per_pair`` is the median cost of the first tenth of the calls (a median, so a garbage
    collection landing on one call does not count): restoring a pair while the engine holds
    few. ``growing`` is what the whole loop cost beyond ``n * per_pair``: the part that
    grows with the pairs already added. ``tenths`` are the median costs per tenth of the calls.
    """
    n = len(durations)
    tenth = max(1, n // 10)
    tenths = [sorted(chunk)[len(chunk) // 2] for chunk in (durations[i:i + tenth] for i in range(0, n, tenth))]
    per_pair = tenths[0]
    return {"per_pair": per_pair, "growing": max(0.0, sum(durations) - n * per_pair), "tenths": tenths}


def _spawn(data_dir: Path, candles_file: Path, pairs: int) -> tuple[float, dict]:
    """Start the child; return the monotonic time just before spawning it and its timeline."""
    argv = [sys.executable, "-m", "bench.restart", "--child", str(data_dir), str(candles_file), str(pairs)]
    spawn = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode != 0:
        raise RuntimeError(f"restart child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return spawn, json.loads(proc.stdout.strip().splitlines()[-1])


def interpreter_start(runs: int = 5) -> float:
    """Median seconds of ``python -c pass``."""
    times = []
    for _ in range(runs):
        began = time.monotonic()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.monotonic() - began)
    return sorted(times)[len(times) // 2]


def measure(pairs: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="livetrader-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        candles_file = Path(tmp) / "candles.json"
        began = time.monotonic()
        prepare(data_dir, candles_file, pairs)
        prepared = time.monotonic() - began
        # The files were just written (without fsync, see ``no_fsync``): let the kernel write
        # them back now, untimed, not while the child reads them. A real restart meets files
        # written long before; the earlier benchmarks' temporary files are written back too.
        os.sync()
        spawn, t = _spawn(data_dir, candles_file, pairs)
    if t["open_after_restore"] != pairs:
        raise RuntimeError(f"only {t['open_after_restore']} of {pairs} pairs were restored open")
    growth = t["add_pair_growth"]
    return {
        "pairs": pairs,
        "prepare_seconds": prepared,
        "to_started_seconds": t["started"] - spawn,
        "imports_seconds": t["imported"] - t["started"],
        "engine_and_strategies_seconds": t["built"] - t["imported"],
        "add_pairs_seconds": t["added"] - t["built"],
        "absent_pairs_seconds": t["restored"] - t["added"],
        "to_restored_seconds": t["restored"] - spawn,
        "first_tick_seconds": t["ticked"] - t["loaded"],
        "to_ready_seconds": t["restored"] - spawn + t["ticked"] - t["loaded"],
        "candle_loading_seconds_excluded": t["loaded"] - t["restored"],
        "open_after_restore": t["open_after_restore"],
        "open_after_tick": t["open_after_tick"],
        "fetches_outside_preloaded_candles": t["fetches_outside_preloaded_candles"],
        "add_pair_seconds_per_pair_estimated": growth["per_pair"],
        "add_pair_median_seconds_per_tenth_of_the_pairs": growth["tenths"],
        "add_pairs_growing_seconds_estimated": growth["growing"],
        "to_restored_without_growing_part_seconds_estimated": t["restored"] - spawn - growth["growing"],
        "interpreter_start_seconds": interpreter_start(),
    }


def run(pairs: int = 10_000):  # type: ignore[no-untyped-def]
    from bench.common import Result

    out = Result("restart", f"Restart: process start to {pairs:,} pairs restored, each with an open position")
    figures = measure(pairs)
    out.details.update(figures)
    out.add("process start -> all pairs restored", figures["to_restored_seconds"], "s", TARGET_SECONDS)
    out.add("  interpreter start (python -c pass, measured apart)", figures["interpreter_start_seconds"], "s")
    out.add("  imports", figures["imports_seconds"], "s")
    out.add("  engine + strategies loaded", figures["engine_and_strategies_seconds"], "s")
    out.add("  add_pair for every pair (restore)", figures["add_pairs_seconds"], "s")
    out.add("    of which growing with the pairs already added", figures["add_pairs_growing_seconds_estimated"], "s",
            sane="nonnegative")
    out.add("    one add_pair while few pairs are added (median)", figures["add_pair_seconds_per_pair_estimated"], "s")
    out.add("  process start -> restored, without the growing part",
            figures["to_restored_without_growing_part_seconds_estimated"], "s")
    out.add("  pairs not run, scanned", figures["absent_pairs_seconds"], "s")
    out.add("+ first tick of every pair (READY=1)", figures["to_ready_seconds"], "s")
    out.notes.append(
        "fresh interpreter running the engine code of `livetrader run` (see bench/restart.py for why not the CLI); "
        "warm page cache; candles for the first tick read from a file, not timed"
    )
    return out


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit("usage: python -m bench.restart --child DATA_DIR CANDLES_FILE PAIRS (run by the benchmark)")
