"""``livetrader walk``: many backtests (strategies x symbols x parameter grids) in parallel, ranked.

Every run is one ``run_backtest`` of one (strategy, symbol, parameters) over the same range,
exactly what ``livetrader backtest --param ...`` runs for it (tests compare them). Runs go to
a pool of worker processes, one per core by default (``concurrent.futures``), or to a Dask
distributed cluster (``--cluster tcp://HOST:PORT``). Either way each worker receives the
candles once (a pool initializer; ``Client.scatter(..., broadcast=True)``), never per run,
and builds its strategies once. A run that raises is a row with its ``error``; the others go on.

With a hold-out (``--holdout 25%``) the grid runs on the first part of the range only; the
best runs are then run again, unchanged, on the last part, so a reader sees side by side
whether what looked best was tuned to the past.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import shutil
import tempfile
import time
import uuid
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livetrader.backtest.replay import BacktestResult, run_backtest
from livetrader.core.machine import DEFAULT_RULES, Rules
from livetrader.core.pnl import pnl_percentage
from livetrader.core.price import MINUTE_MS, Candle
from livetrader.core.stats import ClosedTrade, compute_stats, summarize_trades
from livetrader.errors import UsageError
from livetrader.strategy.base import Param, instantiate_with, load_strategies
from livetrader.strategy.risk import build_profiles

#: What ``--rank`` accepts: the statistic (a ``Stats`` field, or ``pnl_cost``) and whether more is better.
RANKS: dict[str, tuple[str, bool]] = {
    "sharpe": ("sharpe", True),
    "annualized_sharpe": ("annualized_sharpe", True),
    "sqn": ("sqn", True),
    "pnl": ("total_pnl", True),
    "pnl_cost": ("pnl_cost", True),
    "avg_pnl": ("avg_pnl", True),
    "expectancy": ("expectancy", True),
    "profit_factor": ("profit_factor", True),
    "win_rate": ("win_rate", True),
    "certainty_ratio": ("certainty_ratio", True),
    "expected_yearly_returns": ("expected_yearly_returns", True),
    "max_drawdown": ("max_drawdown", False),
    "trades": ("total_closed", True),
}


# -- the grid ------------------------------------------------------------------------------------


def parse_param_option(text: str) -> tuple[str, str]:
    """``fast=5:30:5`` -> ``("fast", "5:30:5")``; a UsageError for anything else."""
    name, sep, values = text.partition("=")
    name, values = name.strip(), values.strip()
    if not sep or not name or not values:
        raise UsageError(f"--param {text!r}: write NAME=VALUES, e.g. fast=5:30:5 (start:stop:step, stop included), "
                         "slow=20,50,100 (a list) or fast=7 (one value)")
    return name, values


def expand_values(name: str, spec: str, kind: type) -> list[Any]:
    """The values ``spec`` stands for, as ``kind``: ``a:b:s`` (from a to b inclusive by s; numbers
    only), ``x,y,z``, or one value. A UsageError says what is wrong, with the parameter's name."""
    def one(text: str) -> Any:
        text = text.strip()
        try:
            if kind is bool:
                lowered = text.lower()
                if lowered in ("true", "yes", "1", "on"):
                    return True
                if lowered in ("false", "no", "0", "off"):
                    return False
                raise ValueError(text)
            value = kind(text)
        except ValueError:
            raise UsageError(f"--param {name}={spec}: {text!r} is not a {kind.__name__} "
                             f"(the parameter is declared {name}: {kind.__name__})") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"--param {name}={spec}: {text!r} is not a finite number")
        return value

    if ":" in spec and kind in (int, float):
        parts = spec.split(":")
        if len(parts) != 3:
            raise UsageError(f"--param {name}={spec}: a range is START:STOP:STEP, e.g. 5:30:5")
        first, last, step = (one(p) for p in parts)
        if step <= 0 or last < first:
            raise UsageError(f"--param {name}={spec}: the step must be above 0 and STOP at least START")
        count = int(math.floor((last - first) / step + 1e-9)) + 1
        if kind is int:
            return [first + i * step for i in range(count)]
        # Multiplied, not summed, and rounded: 0.1:0.3:0.1 gives 0.1, 0.2, 0.3, not 0.30000000000000004.
        return [round(first + i * step, 12) for i in range(count)]
    values = [one(part) for part in spec.split(",") if part.strip()]
    if not values:
        raise UsageError(f"--param {name}={spec}: no value")
    return list(dict.fromkeys(values))


def strategy_grid(strategy: str, declared: dict[str, Param], options: dict[str, str]) -> list[dict[str, Any]]:
    """Every combination of the ``options`` (name -> spec) that ``strategy`` declares, in order
    (the last parameter varies fastest); ``[{}]`` when it declares none of them."""
    names = [name for name in options if name in declared]
    axes = [expand_values(name, options[name], declared[name].type) for name in names]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes)]


def check_params(options: dict[str, str], declared: dict[str, dict[str, Param]]) -> None:
    """A UsageError for a ``--param`` no chosen strategy declares, listing what each declares."""
    unknown = [name for name in options if not any(name in params for params in declared.values())]
    if unknown:
        known = "; ".join(f"{s}: {', '.join(p) or 'none'}" for s, p in declared.items())
        raise UsageError(f"--param {', '.join(unknown)}: no chosen strategy declares it (parameters: {known}). "
                         "A parameter is an annotated class attribute with a default, e.g. `fast: int = 10`")


def holdout_split(start: int, end: int, holdout: str | None) -> int | None:
    """The first minute of the hold-out part of ``[start, end)`` for ``--holdout 25%`` (or ``0.25``);
    None without a hold-out. A UsageError when either part would be empty."""
    if holdout is None:
        return None
    text = holdout.strip()
    try:
        share = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise UsageError(f"--holdout {holdout!r}: give a share of the range, e.g. 25% or 0.25") from None
    if not 0 < share < 1:
        raise UsageError(f"--holdout {holdout!r}: the share must be between 0 and 100 % (exclusive)")
    minutes = (end - start) // MINUTE_MS
    split = start + (minutes - round(minutes * share)) * MINUTE_MS
    if not start < split < end:
        raise UsageError(f"--holdout {holdout!r}: the range of {minutes} minutes is too short to split")
    return split


# -- runs and what each worker holds -------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class WalkRun:
    """One backtest of a walk: which strategy, symbol and parameters, over ``[start, end)``."""

    index: int
    strategy: str
    symbol: str
    params: dict[str, Any]
    start: int
    end: int
    phase: str = "main"


@dataclass(slots=True)
class WalkPayload:
    """What every worker receives once: candles per symbol (as columns: compact to ship), where
    the strategies are (a folder on this machine, or their source files for a cluster), the PnL
    rules and the risk tables. ``token`` names it, so a worker builds its state once."""

    columns: dict[str, tuple[array, ...]]
    strategies_dir: str
    strategy_files: dict[str, bytes] | None
    rules: Rules = DEFAULT_RULES
    risk_tables: dict[str, Any] = field(default_factory=dict)
    #: Each strategy's own rules where they differ from ``rules`` (its position cost).
    strategy_rules: dict[str, Rules] = field(default_factory=dict)
    exchange: str = "sim"
    strict: bool = False
    token: str = field(default_factory=lambda: uuid.uuid4().hex)


def candle_columns(candles: Sequence[Candle]) -> tuple[array, ...]:
    """Candles as six typed columns (timestamp, open, high, low, close, volume)."""
    return (array("q", (c[0] for c in candles)), *(array("d", (c[k] for c in candles)) for k in range(1, 6)))


def candles_of(columns: tuple[array, ...]) -> list[Candle]:
    """The candles back from :func:`candle_columns`."""
    return list(map(Candle._make, zip(*columns, strict=True)))


def strategy_sources(directory: Path) -> dict[str, bytes]:
    """The ``*.py`` files of a strategies folder, by name: what a cluster's workers load."""
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.py"))}


class _Worker:
    """A worker's state for one payload: its candles and strategy classes, built once."""

    def __init__(self, payload: WalkPayload) -> None:
        self.payload = payload
        self.candles = {symbol: candles_of(cols) for symbol, cols in payload.columns.items()}
        self.folder: str | None = None
        directory = Path(payload.strategies_dir)
        if payload.strategy_files is not None:
            # On a cluster the machine may not have the folder: its files came with the payload.
            self.folder = tempfile.mkdtemp(prefix="livetrader-walk-")
            directory = Path(self.folder)
            for name, source in payload.strategy_files.items():
                (directory / Path(name).name).write_bytes(source)
        self.registry = load_strategies(directory)

    def run(self, run: WalkRun) -> dict[str, Any]:
        """One run as a row; whatever it raises is the row's ``error``."""
        started = time.perf_counter()
        try:
            row = self._backtest(run)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a failing run is reported in its row
            error = f"{type(exc).__name__}: {exc}"
            if self.folder is not None:  # name the user's file, not this worker's copy of it
                error = error.replace(self.folder, self.payload.strategies_dir)
            row = {"error": error}
        return {**describe_run(run), **row, "seconds": round(time.perf_counter() - started, 6)}

    def _backtest(self, run: WalkRun) -> dict[str, Any]:
        payload = self.payload
        cls = self.registry.get(run.strategy)
        strategy = instantiate_with(cls, run.params)
        risk = None
        if cls.risk:
            if cls.risk not in payload.risk_tables:
                raise UsageError(f"strategy {run.strategy!r} names the risk profile {cls.risk!r}, "
                                 "which the config does not define")
            risk = build_profiles(payload.risk_tables)[cls.risk]
        candles = self.candles[run.symbol]
        rules = payload.strategy_rules.get(run.strategy, payload.rules)
        result = asyncio.run(run_backtest(strategy, candles, run.symbol, run.start, run.end,
                                          exchange=payload.exchange, rules=rules, risk=risk, strict=payload.strict))
        return result_row(result, candles, rules)

    def close(self) -> None:
        """Remove the strategy files written for a cluster payload."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


_WORKERS: dict[str, _Worker] = {}


def _worker_for(payload: WalkPayload) -> _Worker:
    worker = _WORKERS.get(payload.token)
    if worker is None:
        for old in _WORKERS.values():  # one walk at a time per worker process: free the last one's candles
            old.close()
        _WORKERS.clear()
        worker = _WORKERS[payload.token] = _Worker(payload)
        if worker.folder is not None:
            import atexit

            atexit.register(worker.close)  # the last walk's copy of the strategies goes with the worker process
    return worker


def _init_pool_worker(payload: WalkPayload) -> None:
    """A pool process's initializer: the payload arrives here once per process."""
    _worker_for(payload)


def _run_in_pool(run: WalkRun) -> dict[str, Any]:
    (worker,) = _WORKERS.values()
    return worker.run(run)


def run_on_worker(run: WalkRun, payload: WalkPayload) -> dict[str, Any]:
    """One run on a Dask worker: ``payload`` is the scattered one, the same object for every run."""
    return _worker_for(payload).run(run)


# -- results ---------------------------------------------------------------------------------------


def trades_of(result: BacktestResult) -> list[ClosedTrade]:
    """The closed trades of a backtest as statistics see them."""
    return [ClosedTrade(t.pnl_percentage or 0.0, t.signal.pending_at or t.at, t.at, t.close_reason, t.pnl_cost)
            for t in result.trades if t.signal]


def buy_and_hold(candles: Sequence[Candle], start: int, end: int, rules: Rules) -> float | None:
    """The PnL % of buying at the open of the first candle of ``[start, end)`` and selling at the
    close of its last one, with the same fees and slippage as the trades; None without candles."""
    if not candles:
        return None
    base = candles[0].timestamp
    first = max(0, (start - base) // MINUTE_MS)
    last = min(len(candles), (end - base) // MINUTE_MS) - 1
    if last < first:
        return None
    return pnl_percentage("long", candles[first].open, candles[last].close, rules.costs)


def result_row(result: BacktestResult, candles: Sequence[Candle], rules: Rules) -> dict[str, Any]:
    """What a walk keeps of one backtest: its statistics, its trader's summary, its counts."""
    trades = trades_of(result)
    stats = compute_stats(trades, first_at=result.start, last_at=result.end)
    summary = summarize_trades(trades, buy_and_hold=buy_and_hold(candles, result.start, result.end, rules))
    return {
        "error": None,
        "stats": stats.to_dict(),
        "summary": summary.to_dict(),
        "pnl_cost": summary.pnl_cost,
        "cancelled": len(result.cancelled),
        "strategy_calls": result.strategy_calls,
        "strategy_errors": dict(sorted(result.errors.items())),
    }


def describe_run(run: WalkRun) -> dict[str, Any]:
    """The identifying fields of a run's row."""
    return {"run": run.index, "phase": run.phase, "strategy": run.strategy, "symbol": run.symbol,
            "params": dict(run.params), "from": run.start, "to": run.end}


def rank_value(row: dict[str, Any], rank: str) -> float | None:
    """The figure ``rank`` names in ``row``; None for a failed run or a figure that is N/A."""
    if row.get("error"):
        return None
    key, _ = RANKS[rank]
    value = row.get("pnl_cost") if key == "pnl_cost" else row.get("stats", {}).get(key)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def ranked(rows: Iterable[dict[str, Any]], rank: str) -> list[dict[str, Any]]:
    """The rows best first by ``rank`` (ties by run); then those whose figure is N/A, then the failed."""
    _, higher_is_better = RANKS[rank]

    def key(row: dict[str, Any]) -> tuple[int, float, int]:
        value = rank_value(row, rank)
        if value is None:
            return (2 if row.get("error") else 1, 0.0, row["run"])
        return (0, -value if higher_is_better else value, row["run"])

    return sorted(rows, key=key)


# -- running ---------------------------------------------------------------------------------------


def default_workers() -> int:
    """One worker per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def execute(runs: Sequence[WalkRun], payload: WalkPayload, *, workers: int = 1, cluster: str | Any | None = None,
            progress: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run every run, return their rows in run order; ``progress`` is called with each row as it ends.

    ``cluster``: a Dask scheduler address (``tcp://HOST:PORT``) or a ``distributed.Client``;
    else ``workers`` local processes (1: in this process, no pool).
    """
    with Walker(payload, workers=workers, cluster=cluster) as walker:
        return walker.run(runs, progress)


class Walker:
    """Where runs go, kept open between batches (the grid, then its hold-out): this process
    (``workers=1``), a pool of ``workers`` processes, or a Dask cluster (an address or a
    ``distributed.Client``). The payload reaches each worker once, when it starts or is scattered."""

    def __init__(self, payload: WalkPayload, *, workers: int = 1, cluster: str | Any | None = None) -> None:
        self.payload, self.workers, self.cluster = payload, workers, cluster
        self.local: _Worker | None = None
        self.pool: Any = None
        self.client: Any = None
        self.shipped: Any = None

    def __enter__(self) -> Walker:
        if self.cluster is not None:
            try:
                from distributed import Client
            except ImportError:
                raise UsageError("--cluster needs Dask: pip install 'livetrader[cluster]'") from None
            self.client = self.cluster if isinstance(self.cluster, Client) else _connect(Client, self.cluster)
            self.shipped = self.client.scatter(self.payload, broadcast=True)  # the candles travel once per worker
        elif self.workers <= 1:
            self.local = _Worker(self.payload)
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # forkserver: clean worker processes (no copy of this process's threads, such as the
            # progress bar's); the payload reaches each through its initializer, once.
            self.pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context(
                "forkserver"), initializer=_init_pool_worker, initargs=(self.payload,))
        return self

    def run(self, runs: Sequence[WalkRun], progress: Callable[[dict[str, Any]], None] | None = None
            ) -> list[dict[str, Any]]:
        """The rows of ``runs``, in run order; ``progress`` gets each row as it ends."""
        rows: list[dict[str, Any]] = []
        if not runs:
            return rows
        if self.local is not None:
            futures: Iterable[Any] = ()
            for run in runs:
                rows.append(self.local.run(run))
                if progress is not None:
                    progress(rows[-1])
        else:
            if self.client is not None:
                from distributed import as_completed as finished

                futures = finished(self.client.map(run_on_worker, list(runs), payload=self.shipped, pure=False))
            else:
                from concurrent.futures import as_completed

                futures = as_completed([self.pool.submit(_run_in_pool, run) for run in runs])
            for future in futures:
                rows.append(future.result())
                if progress is not None:
                    progress(rows[-1])
        return sorted(rows, key=lambda row: row["run"])

    def __exit__(self, *exc: object) -> None:
        if self.local is not None:
            self.local.close()
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
        if self.client is not None and self.client is not self.cluster:
            self.client.close()


def _connect(client_type: Any, address: str) -> Any:
    import socket
    from urllib.parse import urlsplit

    where = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        # A plain connect first: a refused port fails at once, where Client would retry until its timeout.
        socket.create_connection((where.hostname or "127.0.0.1", where.port or 8786), timeout=10).close()
        return client_type(address, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise UsageError(f"--cluster {address}: cannot reach the Dask scheduler ({exc}); start one with "
                         "`dask scheduler` and workers with `dask worker ADDRESS`") from None
