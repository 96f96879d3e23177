"""Benchmark 2: live scale, N pairs through the real live loop, persistence on.

The engine runs as ``livetrader run`` runs it (``Engine.run``: a supervised loop per pair,
sleeping on the metronome between minutes), on a manual clock. For each simulated minute
the benchmark moves the clock, fires that minute boundary, and takes the sweep time the
metronome records: from the boundary to the last pair's tick done. Everything a live tick
does runs: candles fetched through the shared feed and validated, VWAP, the throttle, the
strategy, the machine, every transition group-committed (one commit-log fdatasync per
pass of the loop) with the pair journals and snapshots flushed behind the loop by the
writer thread (data directory in a temporary folder; a real minute leaves that thread ~60 s,
the simulated one does not, so the benchmark waits for it between minutes, untimed, and
reports how long it took), the event window, the event bus (one ``signal`` listener attached),
logging as the daemon logs (JSON lines, to a file), and the status file rewritten every
second. Resident memory is read after a warm-up and after the run.
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.common import Result, median, percentile, rss_bytes
from bench.harness import ORIGIN_MS, build_engine, daemon_logging, layout, synthetic_symbols
from livetrader.core.price import MINUTE_MS
from livetrader.live.pair import TRANSITIONS
from livetrader.market.sim import SimSource

TARGET_SWEEP_SECONDS_AT_10K = 0.25
TARGET_GROWTH_BYTES_PER_100K_TICKS = 1_000_000


async def _drive(engine, clock, warmup: int, minutes: int) -> dict:  # type: ignore[no-untyped-def]
    """Run the engine's own loops; fire ``warmup`` then ``minutes`` minute boundaries and time each sweep.

    The clock never fires a boundary by itself (``ManualClock``): the benchmark moves it to
    the next minute and fires the boundary once every loop waits for it, then waits for the
    metronome to report that sweep complete. A status file is rewritten every second of real
    time alongside, as the daemon does.
    """
    from livetrader.live.collector import freeze_startup_objects
    from livetrader.service.daemon import STATUS_DEFER_LIMIT, STATUS_INTERVAL
    from livetrader.service.status import write_status

    events = Counter()
    transitions = Counter()  # per minute: journal appends + snapshot writes, each fsync'ed

    def count(result) -> None:  # type: ignore[no-untyped-def]
        events[result.action] += 1
        if result.action in TRANSITIONS:
            transitions[result.at - result.at % MINUTE_MS] += 1

    engine.bus.listen("signal", count)
    swept: asyncio.Queue = asyncio.Queue()
    engine.metronome.listeners.append(swept.put_nowait)
    ready = asyncio.Event()
    status_writes: list[float] = []
    flushes: list[float] = []

    async def report_status() -> None:
        while True:
            await engine.metronome.between_sweeps(STATUS_DEFER_LIMIT)  # as `livetrader run` does
            began = time.perf_counter()
            write_status(engine)
            status_writes.append(time.perf_counter() - began)
            await asyncio.sleep(STATUS_INTERVAL)

    freeze_startup_objects()
    running = asyncio.create_task(engine.run(on_ready=ready.set))
    status = asyncio.create_task(report_status())
    await ready.wait()
    now = clock.now

    async def sweep_next() -> float:
        nonlocal now
        now += MINUTE_MS
        while len(engine.metronome.waiting(now)) < len(engine.pairs):
            if running.done():
                running.result()
                raise RuntimeError("the engine stopped")
            await asyncio.sleep(0)
        clock.now = now
        engine.metronome.fire(now)
        sweep = await swept.get()
        assert sweep.minute == now and sweep.pairs == len(engine.pairs), sweep
        # A real minute leaves the background writer ~60 s to flush journals and snapshots; the
        # simulated clock does not, so wait for it here (untimed in the sweep, reported beside it).
        began = time.perf_counter()
        await asyncio.to_thread(engine.flush_snapshots, 120)
        flushes.append(time.perf_counter() - began)
        return sweep.seconds

    for _ in range(warmup):
        await sweep_next()
    await engine.bus.drain(10)
    gc.collect()
    rss_warm = rss_bytes()
    times = []
    timed = []
    flushes.clear()
    with _GcTimer(lambda: engine.metronome.sweeping) as collections:
        for _ in range(minutes):
            times.append(await sweep_next())
            timed.append(now)
    await engine.bus.drain(10)
    per_minute = [transitions[m] for m in timed]  # before the stop cancels the scheduled signals
    gc.collect()
    rss_end = rss_bytes()
    tracked = len(gc.get_objects())  # after the readings: the list it builds is large
    engine.stop()
    await running
    status.cancel()
    return {"times": times, "transitions": per_minute, "rss_warm": rss_warm,
            "rss_end": rss_end, "events": dict(events),
            "gc": collections.totals(), "tracked_objects": tracked, "status_writes": status_writes,
            "flushes": flushes}


class _GcTimer:
    """Times CPython's cyclic garbage collections (``gc.callbacks``) while in the ``with`` block,
    apart for those run while a sweep was running (``sweeping()``) and those run after.

    Observation only. The engine pauses the collector during a sweep (``livetrader.live.collector``),
    so its work lands after the sweep, in the idle rest of the minute; a collection inside a
    sweep means the pause did not hold.
    """

    def __init__(self, sweeping) -> None:  # type: ignore[no-untyped-def]
        self.sweeping = sweeping
        self.count = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self.inside_seconds = 0.0
        self._started = 0.0

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            generation = info["generation"]
            took = time.perf_counter() - self._started
            self.count[generation] += 1
            self.seconds[generation] += took
            if self.sweeping():
                self.inside_seconds += took

    def __enter__(self) -> _GcTimer:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def totals(self) -> dict:
        return {"collections": self.count, "seconds": self.seconds, "total_seconds": sum(self.seconds),
                "inside_sweeps_seconds": self.inside_seconds}


def measure(pairs: int, warmup: int, minutes: int) -> dict:
    """Build ``pairs`` pairs in a fresh data directory and sweep them; the figures of that run."""
    with tempfile.TemporaryDirectory(prefix="livetrader-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        with daemon_logging(Path(tmp) / "daemon.log"):
            began = time.perf_counter()
            engine, clock = build_engine(data_dir, layout(pairs), ORIGIN_MS, warmup + minutes + 1)
            built = time.perf_counter() - began
            try:
                run = asyncio.run(_drive(engine, clock, warmup, minutes))
                status = median(run["status_writes"])
                windows = sum(len(p.window.events()) for p in engine.pairs)
                states = Counter(p.state for p in engine.pairs)
                closed = sum(p.closed_trades for p in engine.pairs)
                journal_bytes = sum(f.stat().st_size for f in (data_dir / "journal").glob("*.jsonl"))
                misses = engine.sources["sim"].misses
            finally:
                asyncio.run(engine.close())
    times = run["times"]
    ticks = pairs * minutes
    growth = (run["rss_end"] - run["rss_warm"]) / ticks * 100_000
    return {
        "pairs": pairs,
        "warmup_minutes": warmup,
        "minutes": minutes,
        "build_seconds": built,
        "sweep_median_seconds": median(times),
        "sweep_p99_seconds": percentile(times, 99),
        "sweep_max_seconds": max(times),
        "sweep_seconds_per_minute": times,
        "transitions_per_minute": run["transitions"],
        "transitions_per_minute_median": median(run["transitions"]),
        "transitions_per_minute_max": max(run["transitions"]),
        "gc_seconds_per_minute": run["gc"]["total_seconds"] / minutes,
        "gc_seconds_inside_sweeps_per_minute": run["gc"]["inside_sweeps_seconds"] / minutes,
        "gc": run["gc"],
        "gc_tracked_objects_after_run": run["tracked_objects"],
        "pair_ticks_per_second": ticks / sum(times),
        "rss_after_warmup_bytes": run["rss_warm"],
        "rss_after_run_bytes": run["rss_end"],
        "rss_growth_bytes_per_100k_ticks": growth,
        "status_file_write_seconds": status,
        "background_flush_seconds_median": median(run["flushes"]),
        "background_flush_seconds_max": max(run["flushes"]),
        "events": run["events"],
        "states_at_end": dict(states),
        "closed_trades": closed,
        "event_window_records": windows,
        "journal_bytes": journal_bytes,
        "fetches_outside_preloaded_candles": misses,
    }


def sim_fetch_cost(symbols: int, fetches: int = 200) -> float:
    """Seconds per 5-candle fetch from the plain ``SimSource`` holding ``symbols`` symbols."""
    sim = SimSource(seed=42, symbols=synthetic_symbols(symbols))
    names = list(sim.symbols)
    began = time.perf_counter()
    for i in range(fetches):
        end = ORIGIN_MS + (i // len(names)) * MINUTE_MS
        sim.fetch_sync(names[i % len(names)], end - 5 * MINUTE_MS, end)
    return (time.perf_counter() - began) / fetches


def run(sizes: tuple[int, ...] = (1_000, 10_000), warmup: int = 20, minutes: int = 60) -> Result:
    """Measure every size in ``sizes``; the targets apply to 10,000 pairs."""
    out = Result("live", "Live scale: pairs swept per simulated minute (real tick path, persistence on)")
    for n in sizes:
        figures = measure(n, warmup, minutes)
        out.details[str(n)] = figures
        target = TARGET_SWEEP_SECONDS_AT_10K if n >= 10_000 else None
        out.add(f"{n:,} pairs: sweep median", figures["sweep_median_seconds"], "s", target)
        out.add(f"{n:,} pairs: sweep p99", figures["sweep_p99_seconds"], "s", target)
        out.add(f"{n:,} pairs: pair-ticks/s", figures["pair_ticks_per_second"], "ticks/s")
        out.add(f"{n:,} pairs: transitions per minute (median)", figures["transitions_per_minute_median"], "",
                sane="nonnegative")
        out.add(f"{n:,} pairs: transitions per minute (max)", figures["transitions_per_minute_max"], "",
                sane="nonnegative")
        out.add(f"{n:,} pairs: cyclic GC per minute, run after the sweep (mean)",
                figures["gc_seconds_per_minute"] - figures["gc_seconds_inside_sweeps_per_minute"], "s",
                sane="nonnegative")
        out.add(f"{n:,} pairs: cyclic GC per minute inside the sweep (mean)",
                figures["gc_seconds_inside_sweeps_per_minute"], "s", sane="nonnegative")
        out.add(f"{n:,} pairs: RSS after warm-up", figures["rss_after_warmup_bytes"] / 1e6, "MB")
        out.add(f"{n:,} pairs: RSS after the run", figures["rss_after_run_bytes"] / 1e6, "MB")
        # Page-sized RSS steps swamp a short run: the target needs at least 100,000 measured ticks.
        long_run = n * minutes >= 100_000
        out.add(f"{n:,} pairs: RSS growth per 100k ticks", figures["rss_growth_bytes_per_100k_ticks"] / 1e6,
                "MB", TARGET_GROWTH_BYTES_PER_100K_TICKS / 1e6 if long_run else None, sane="finite")
        out.add(f"{n:,} pairs: status file write (median)", figures["status_file_write_seconds"], "s")
        out.add(f"{n:,} pairs: journals + snapshots flushed behind, after a sweep (max)",
                figures["background_flush_seconds_max"], "s", sane="nonnegative")
    few, many = 7, max(1, -(-max(sizes) // 3))
    out.details["sim_fetch_seconds"] = {str(few): sim_fetch_cost(few), str(many): sim_fetch_cost(many)}
    out.add(f"plain SimSource 5-candle fetch ({few} symbols)", out.details["sim_fetch_seconds"][str(few)], "s")
    out.add(f"plain SimSource 5-candle fetch ({many:,} symbols)", out.details["sim_fetch_seconds"][str(many)], "s")
    out.notes.append(
        f"{warmup} warm-up minutes, then {minutes} timed minutes; pairs = symbols x "
        "(bench-reference, my-strategy, dip-buyer); candles are the sim's, pre-generated per symbol "
        "(see bench/harness.py PreloadedSim); the plain SimSource fetch cost is listed separately"
    )
    return out
