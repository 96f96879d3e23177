"""Benchmark 4: restart, from process start to every pair restored with its open position.

Method. The parent prepares a data directory the way the engine writes it: ``N`` pairs
(``ceil(N / 3)`` synthetic symbols x ``bench-hold``, ``bench-hold-short``, ``bench-hold-near``),
each ticked once so that each holds an open position, journal and snapshot on disk. It then
starts a fresh interpreter (``python -m bench.restart --child ...``) and measures, on the
system-wide monotonic clock, from just before spawning it to the moment the child has:

1. started (interpreter up, ``bench.restart`` imported: stdlib only),
2. imported the engine (livetrader, strategies' base, structlog, orjson),
3. built the Engine, loaded the strategies and restored every pair (``add_pair`` each:
   journal and snapshot read and checked, journal reopened for appends, ``orphans()``),
   which is "all pairs ready, no catch-up needed" (target under 2 s), and
4. ticked every pair once one minute later (the tick after which the daemon signals
   READY=1), with the candles read from a file the parent wrote (that loading is not timed).

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

    from bench.harness import ORIGIN_MS, PreloadedSim, build_engine, daemon_logging, layout, sweep
    from livetrader.core.price import MINUTE_MS, Candle

    imported = time.monotonic()
    now = ORIGIN_MS + MINUTE_MS
    log = Path(data_dir).parent / "restart.log"
    with daemon_logging(log):
        engine, clock = build_engine(Path(data_dir), layout(pairs, HOLD_STRATEGIES), now, 1, preload=False)
        engine.not_running = engine.orphans()
        restored = time.monotonic()
        open_positions = sum(1 for p in engine.pairs if p.state == "open")
        scan = _duplicate_scan_seconds(engine)
        import orjson

        sim = engine.sources["sim"]
        source = PreloadedSim(sim, ORIGIN_MS - 10 * MINUTE_MS, now + MINUTE_MS)
        source.rows = {s: [Candle(*c) for c in r] for s, r in orjson.loads(Path(candles_file).read_bytes()).items()}
        for pair in engine.pairs:
            pair.source = source
        loaded = time.monotonic()
        asyncio.run(sweep(engine, now))
        ticked = time.monotonic()
        still_open = sum(1 for p in engine.pairs if p.state == "open")
        asyncio.run(engine.close())
    print(json.dumps({"started": started, "imported": imported, "restored": restored, "loaded": loaded,
                      "ticked": ticked, "pairs": len(engine.pairs), "open_after_restore": open_positions,
                      "open_after_tick": still_open, "duplicate_scan": scan}))


def _duplicate_scan_seconds(engine) -> float:  # type: ignore[no-untyped-def]
    """Seconds of one scan of every pair for a key, as ``Engine`` does on each ``add_pair``.

    A diagnostic: ``add_pair`` checks the new key against every pair added before it,
    so restoring N pairs scans N * (N - 1) / 2 pairs in all.
    """
    missing = ("", "", "")
    runs = 5
    began = time.monotonic()
    for _ in range(runs):
        any(p.key == missing for p in engine.pairs)
    return (time.monotonic() - began) / runs


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
        spawn = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "bench.restart", "--child", str(data_dir), str(candles_file), str(pairs)],
            cwd=ROOT, capture_output=True, text=True, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        exited = time.monotonic()
        if proc.returncode != 0:
            raise RuntimeError(f"restart child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        t = json.loads(proc.stdout.strip().splitlines()[-1])
    if t["open_after_restore"] != pairs:
        raise RuntimeError(f"only {t['open_after_restore']} of {pairs} pairs were restored open")
    return {
        "pairs": pairs,
        "prepare_seconds": prepared,
        "to_started_seconds": t["started"] - spawn,
        "imports_seconds": t["imported"] - t["started"],
        "restore_seconds": t["restored"] - t["imported"],
        "to_restored_seconds": t["restored"] - spawn,
        "first_tick_seconds": t["ticked"] - t["loaded"],
        "to_ready_seconds": t["restored"] - spawn + t["ticked"] - t["loaded"],
        "candle_loading_seconds_excluded": t["loaded"] - t["restored"],
        "process_total_seconds": exited - spawn,
        "open_after_restore": t["open_after_restore"],
        "open_after_tick": t["open_after_tick"],
        "interpreter_start_seconds": interpreter_start(),
        # add_pair i scans the i pairs before it: N * (N - 1) / 2 pair visits, ~ N / 2 full scans.
        "duplicate_checks_seconds_estimated": t["duplicate_scan"] * (pairs - 1) / 2,
    }


def run(pairs: int = 10_000):  # type: ignore[no-untyped-def]
    from bench.common import Result

    out = Result("restart", f"Restart: process start to {pairs:,} pairs restored, each with an open position")
    figures = measure(pairs)
    out.details.update(figures)
    out.add("process start -> all pairs restored", figures["to_restored_seconds"], "s", TARGET_SECONDS)
    out.add("  of which interpreter start (python -c pass)", figures["interpreter_start_seconds"], "s")
    out.add("  of which imports", figures["imports_seconds"], "s")
    out.add("  of which engine build + restore", figures["restore_seconds"], "s")
    out.add("  of which add_pair duplicate checks (estimated)", figures["duplicate_checks_seconds_estimated"], "s")
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
