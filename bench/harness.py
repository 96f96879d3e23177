"""Building blocks of the live benchmarks: the market, the clock, the pairs and the engine.

Pairs: ``N`` pairs are ``ceil(N / 3)`` synthetic sim symbols times three strategies
(``bench-reference``, the shipped ``my-strategy`` and ``dip-buyer``): market entries,
entries that read 35 candles, and scheduled (limit) entries that read 60. The sim has only
seven symbols, and 10,000 pairs on seven symbols would take 1,429 strategies; a process
carrying 10,000 pairs runs many symbols with a few strategies each, so that is the shape
used. ``mean-reversion`` is left out: its ``conservative`` risk profile allows three open
positions across every pair using it, which with thousands of pairs turns nearly every
ask into a risk rejection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from livetrader.config import Config
from livetrader.core.price import MINUTE_MS, Candle
from livetrader.events import EventBus
from livetrader.live.clock import ManualClock
from livetrader.live.engine import Engine
from livetrader.market.feed import CandleFeed
from livetrader.market.sim import SimSource
from livetrader.strategy.base import StrategyRegistry, load_strategies

ROOT = Path(__file__).resolve().parent.parent
BENCH_STRATEGIES = Path(__file__).resolve().parent / "strategies"
SHIPPED_STRATEGIES = ROOT / "strategies"
STRATEGIES = ("bench-reference", "my-strategy", "dip-buyer")
#: The simulated minute the live benchmarks start at (2024-01-11T00:00Z): fixed, so runs repeat.
ORIGIN_MS = 1_704_931_200_000
#: Candles the strategies look back (dip-buyer reads 60 minutes), with room to spare.
HISTORY_MINUTES = 120


def synthetic_symbols(count: int) -> dict[str, float]:
    """``count`` sim symbols with base prices spread from 0.01 to 10,000, as real markets are."""
    return {f"SIM{i:05d}USDT": round(10 ** ((i * 7919) % 1000 / 1000 * 6 - 2), 8) for i in range(count)}


def layout(pairs: int, strategies: tuple[str, ...] = STRATEGIES) -> list[tuple[str, str]]:
    """The first ``pairs`` (symbol, strategy) pairs: every strategy on each symbol in turn."""
    symbols = list(synthetic_symbols(math.ceil(pairs / len(strategies))))
    return [(s, k) for s in symbols for k in strategies][:pairs]


class PreloadedSim:
    """The sim market's own candles, generated in bulk per symbol up front and served by slicing.

    ``SimSource`` generates every fetch afresh from its noise layers: about 0.1 ms for a
    5-candle fetch with its 7 symbols, about 1 ms with thousands (its per-symbol block
    cache holds 128 blocks). That is the simulator's cost, not the engine's, and it would
    hide the engine entirely; so the live benchmarks generate each symbol's candles once,
    in bulk (untimed, like the backtest's candles), and fetch by slicing, as a source with
    a local candle store would. The candles are exactly the sim's. The raw sim's cost per
    fetch is measured beside it (``sim_fetch_cost``).
    """

    name = "sim"

    def __init__(self, sim: SimSource, first_ms: int, end_ms: int) -> None:
        self.sim = sim
        self.first = first_ms
        self.end = end_ms
        self.rows: dict[str, list[Candle]] = {}
        #: Fetches outside the preloaded range, served by the plain sim (slow): should stay 0.
        self.misses = 0

    def preload(self, symbols: list[str]) -> None:
        for symbol in symbols:
            if symbol not in self.rows:
                self.rows[symbol] = self.sim.fetch_sync(symbol, self.first, self.end)

    def resolve_symbol(self, symbol: str) -> str:
        return self.sim.resolve_symbol(symbol)

    def bounds(self, symbol: str) -> tuple[int, int] | None:
        return None

    async def fetch(self, symbol: str, start_ms: int, end_ms: int) -> list[Candle]:
        return self.fetch_sync(symbol, start_ms, end_ms)

    def fetch_sync(self, symbol: str, start_ms: int, end_ms: int) -> list[Candle]:
        """The preloaded candles (an in-process source, as the sim it stands for)."""
        rows = self.rows.get(symbol)
        if rows is None or start_ms < self.first or end_ms > self.end:
            self.misses += 1
            return self.sim.fetch_sync(symbol, start_ms, end_ms)
        return rows[-(-(start_ms - self.first) // MINUTE_MS):-(-(end_ms - self.first) // MINUTE_MS)]

    async def close(self) -> None:
        """Nothing to release."""


def registry() -> StrategyRegistry:
    """The shipped strategies plus the bench's own."""
    shipped = load_strategies(SHIPPED_STRATEGIES)
    own = load_strategies(BENCH_STRATEGIES)
    own.raise_problems()
    shipped.strategies.update(own.strategies)
    return shipped


def build_engine(data_dir: Path, pairs: list[tuple[str, str]], now_ms: int, minutes: int,
                 *, preload: bool = True) -> tuple[Engine, ManualClock]:
    """An engine on ``data_dir`` (persistence on) with ``pairs`` added, on a manual clock at ``now_ms``.

    With ``preload`` the pairs' candles are served by ``PreloadedSim`` for ``minutes``
    minutes from ``now_ms``; without, by the plain ``SimSource``.
    """
    symbols = sorted({s for s, _ in pairs})
    sim = SimSource(seed=42, symbols=synthetic_symbols(len(symbols)))
    source: Any = sim
    if preload:
        source = PreloadedSim(sim, now_ms - HISTORY_MINUTES * MINUTE_MS, now_ms + (minutes + 1) * MINUTE_MS)
        source.preload(symbols)
    clock = ManualClock(now_ms)
    config = replace(Config(), data_dir=data_dir)
    engine = Engine(config, registry(), clock=clock, bus=EventBus(), data_dir=data_dir)
    engine.sources["sim"] = CandleFeed(source)
    for symbol, strategy in pairs:
        engine.add_pair(symbol, strategy, "sim")
    return engine, clock


async def sweep(engine: Engine, now_ms: int) -> None:
    """Tick every pair for the minute ``now_ms``, concurrently, as the engine's loops do."""
    await asyncio.gather(*(pair.tick(now_ms) for pair in engine.pairs))


@contextlib.contextmanager
def daemon_logging(path: Path) -> Iterator[None]:
    """Log as the daemon does (JSON lines at INFO), into ``path``; restore the previous setup after."""
    import structlog

    from livetrader.service.console import configure_logging

    saved = structlog.get_config()
    handlers = list(logging.getLogger().handlers)
    with open(path, "a", encoding="utf-8") as stream:
        configure_logging(json_lines=True, level="INFO", stream=stream)
        try:
            yield
        finally:
            structlog.configure(**saved)
            root = logging.getLogger()
            for handler in list(root.handlers):
                if handler not in handlers:
                    root.removeHandler(handler)


@contextlib.contextmanager
def no_fsync() -> Iterator[None]:
    """Skip fsync while preparing files the benchmark then measures reading (never while timing writes).

    The files are byte-for-byte what the engine writes; only their durability is not waited for.
    """
    real = os.fsync
    os.fsync = lambda fd: None  # type: ignore[assignment]
    try:
        yield
    finally:
        os.fsync = real
        os.sync()
