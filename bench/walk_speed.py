"""Benchmark: ``livetrader walk`` of many one-year runs, in one process, on a local process pool,
and on a Dask ``LocalCluster`` (issue 23: speed-up over one worker >= 1.8x on 2 cores; the
cluster's overhead against the pool <= 20 %).

The candles are the reference workload's (generated, never read from disk); the strategy is a
parametrised one written to a temporary strategies folder, as a user's would be. Each timing is
the whole ``Walker`` (start the pool or scatter the payload, run every run, collect the rows);
the LocalCluster is started before its timing starts, as ``--cluster`` finds a running one. The
one-worker baseline runs in this process (no pool to start: the most favourable baseline). All
three run ``repeats`` times, in turn (one, pool, cluster, one, ...), and the best of each is
compared: on a shared machine a neighbour's burst lands on one timing or another.
"""

from __future__ import annotations

import contextlib
import itertools
import tempfile
import time
from pathlib import Path

from bench import workload
from bench.common import Result
from livetrader.backtest.walk import Walker, WalkPayload, WalkRun, candle_columns

SPEEDUP_TARGET = 1.8
DASK_OVERHEAD_TARGET = 20.0  # percent

#: A cheap strategy with two parameters: a long when the price is ``gap`` % above its
#: exponential average of ``span`` asks, TP/SL ``width`` % away. Cheap per ask, so a run's time is
#: mostly the engine's and the walk's own overhead (what this benchmark is about) shows.
STRATEGY = '''
from livetrader import Signal, Strategy


class BenchWalk(Strategy):
    name = "bench-walk"
    interval = "5m"
    span: int = 20
    width: float = 1.0
    gap: float = 0.1

    def __init__(self):
        self.average = None

    async def get_signal(self, ctx):
        p = ctx.price
        alpha = 2 / (self.span + 1)
        self.average = p if self.average is None else self.average + alpha * (p - self.average)
        if p > self.average * (1 + self.gap / 100):
            return Signal("long", take_profit=p * (1 + self.width / 100), stop_loss=p * (1 - self.width / 100),
                          minutes=240)
        return None
'''


def _grid(runs: int) -> list[dict[str, float | int]]:
    spans = [10 * (i + 1) for i in range(10)]
    widths = [0.6 + 0.2 * i for i in range(10)]
    return [{"span": s, "width": round(w, 3)} for s, w in itertools.islice(itertools.product(spans, widths), runs)]


def _timed(walker_args: dict, payload: WalkPayload, runs: list[WalkRun]) -> tuple[float, list[dict]]:
    began = time.perf_counter()
    with Walker(payload, **walker_args) as walker:
        rows = walker.run(runs)
    return time.perf_counter() - began, rows


def _same(a: list[dict], b: list[dict]) -> bool:
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    return strip(a) == strip(b)


def run(runs: int = 100, days: int = 365, workers: int = 2, dask: bool = True, repeats: int = 2) -> Result:
    """Walk ``runs`` runs of ``days`` days each: one process, ``workers`` processes, a Dask LocalCluster
    (the last two ``repeats`` times each, alternately)."""
    out = Result("walk", f"walk of {runs} runs x {days} days: process pool and Dask against one worker")
    candles = workload.candles(days)
    start, end = workload.frame_range(days)
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "bench_walk.py").write_text(STRATEGY)
        payload = WalkPayload({workload.SYMBOL: candle_columns(candles)}, folder, None)
        plan = [WalkRun(i, "bench-walk", workload.SYMBOL, params, start, end) for i, params in enumerate(_grid(runs))]
        ones: list[float] = []
        rows: list[dict] = []
        pools: list[float] = []
        dasks: list[float] = []
        started = 0.0
        with contextlib.ExitStack() as stack:
            client = None
            if dask:
                from distributed import Client, LocalCluster

                began = time.perf_counter()
                cluster = stack.enter_context(LocalCluster(processes=True, n_workers=workers, threads_per_worker=1,
                                                           dashboard_address=None, silence_logs=40))
                client = stack.enter_context(Client(cluster))
                started = time.perf_counter() - began
            for _ in range(repeats):
                seconds, rows = _timed({"workers": 1}, payload, plan)
                if any(r["error"] for r in rows):
                    raise AssertionError(f"a run failed: {next(r['error'] for r in rows if r['error'])}")
                ones.append(seconds)
                seconds, pool_rows = _timed({"workers": workers}, payload, plan)
                if not _same(rows, pool_rows):
                    raise AssertionError("the process pool's rows differ from one process's")
                pools.append(seconds)
                if client is not None:
                    # A new payload (a new token) each time, as each `walk --cluster` is: the workers
                    # build their state again rather than reuse the last timing's.
                    shipped = WalkPayload(payload.columns, folder, {"bench_walk.py": STRATEGY.encode()})
                    seconds, dask_rows = _timed({"cluster": client}, shipped, plan)
                    if not _same(rows, dask_rows):
                        raise AssertionError("the Dask cluster's rows differ from one process's")
                    dasks.append(seconds)
        one, pool = min(ones), min(pools)
        out.details.update(runs=runs, days=days, workers=workers, one_worker_seconds=ones, pool_seconds=pools,
                           trades=sum(r["stats"]["total_closed"] for r in rows))
        out.add("one worker: runs/s", runs / one, "runs/s")
        out.add(f"{workers} processes: runs/s", runs / pool, "runs/s")
        out.add(f"speed-up, {workers} processes over one", one / pool, "x", SPEEDUP_TARGET, "min")
        if dask:
            on_dask = min(dasks)
            overhead = (on_dask / pool - 1) * 100
            out.details.update(dask_seconds=dasks, dask_cluster_start_seconds=started)
            out.add(f"Dask LocalCluster ({workers} workers): runs/s", runs / on_dask, "runs/s")
            out.add("Dask overhead against the process pool", overhead, "%", DASK_OVERHEAD_TARGET, "max", "finite")
    out.notes.append(f"{runs} runs of {days} days ({runs * days * 1440:,} simulated minutes); one worker "
                     f"{one:.1f} s in this process, {workers} processes {pool:.1f} s (pool start and candle "
                     "shipping included)" + (f", Dask {on_dask:.1f} s (cluster started beforehand)" if dask else ""))
    return out
