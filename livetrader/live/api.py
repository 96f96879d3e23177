"""The Python API, mirroring the seed's ``Live``: run, background, get_data, get_report, dump.

::

    from livetrader import Live

    async for result in Live.run("BTCUSDT", strategy="my-strategy", exchange="sim"):
        if result.action == "closed" and result.pnl_percentage < -10:
            break                      # stops that loop cleanly

    stop = Live.background("BTCUSDT", strategy="my-strategy")
    ...
    stop()   # finish the current tick, accept no new signal, cancel a waiting scheduled one

All pairs started through ``Live`` in one process share one engine (one clock, one source
per exchange, shared risk profiles), configured with ``Live.configure`` before first use
(``speed``, ``data_dir``, ``strategies_dir``, ``log_level``). Runnable versions of these
snippets: ``examples/live_run.py`` and ``examples/live_background.py``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, ClassVar

from livetrader.config import load_config
from livetrader.core.signal import TickResult
from livetrader.core.stats import Stats
from livetrader.live.clock import Clock, SimClock
from livetrader.live.engine import Engine
from livetrader.live.pair import Pair
from livetrader.market.sources import register_secrets
from livetrader.strategy.base import load_strategies

#: What ``Live.run`` yields: the results a user acts on.
YIELDED = frozenset({"opened", "closed", "cancelled"})


def _set_log_level(level: str) -> None:
    """Show the library's log lines from ``level`` up: structlog's level filter, nothing else changed."""
    import logging

    import structlog

    number = logging.getLevelName(level.upper()) if isinstance(level, str) else None
    if not isinstance(number, int) or level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"unknown log level {level!r}: use one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(number))


class _Handle:
    """One pair started through the API: its task and its own stop flag."""

    def __init__(self, engine: Engine, pair: Pair) -> None:
        self.engine = engine
        self.pair = pair
        self.task: asyncio.Task[None] | None = None
        self.done = threading.Event()

    async def run(self) -> None:
        try:
            await self.engine.run_pair(self.pair)
        finally:
            self.done.set()

    def stop(self) -> None:
        self.pair.request_stop()


class Live:
    """Live trading from Python code; see the module docstring."""

    _engine: Engine | None = None
    # Class state on purpose: one engine per process, shared by every call (``Live`` is not instantiated).
    _options: ClassVar[dict[str, Any]] = {}
    _pairs: ClassVar[dict[tuple[str, str], Pair]] = {}

    @classmethod
    def configure(
        cls,
        *,
        config: Path | None = None,
        strategies_dir: Path | None = None,
        clock: Clock | None = None,
        data_dir: Path | str | None = None,
        speed: float | None = None,
        log_level: str | None = None,
    ) -> None:
        """Set the engine's options; must be called before the first pair starts.

        Args:
            config: the TOML config file (default: ``config/livetrader.toml`` if present).
            strategies_dir: where strategy modules are loaded from (default: the config's
                ``strategies_dir``, ``./strategies``).
            clock: the engine's clock; default the wall clock (real time, one tick a minute).
            data_dir: journals, snapshots and reports (default: the config's ``data_dir``,
                ``./dump``). Pairs resume what they find there.
            speed: run on a simulated clock ``speed`` times faster than real time, starting at
                the current minute (the ``--speed`` of ``livetrader run``); not with ``clock``.
            log_level: the lowest level of the library's log lines on stdout (DEBUG, INFO,
                WARNING, ERROR, CRITICAL); ``"CRITICAL"`` silences all but fatal ones.
        """
        if cls._engine is not None:
            raise RuntimeError("Live.configure must be called before the first Live.run or Live.background")
        if speed is not None:
            if clock is not None:
                raise ValueError("Live.configure: give clock or speed, not both")
            if not speed > 0:
                raise ValueError(f"Live.configure: speed must be a positive number, got {speed}")
            wall = int(time.time() * 1000)
            clock = SimClock(wall, wall - wall % 60_000, float(speed))
        if log_level is not None:
            _set_log_level(log_level)
        cls._options = {
            "config": config,
            "strategies_dir": strategies_dir,
            "clock": clock,
            "data_dir": Path(data_dir) if data_dir is not None else None,
        }

    @classmethod
    def engine(cls) -> Engine:
        """The process's engine, built from the options on first use."""
        if cls._engine is None:
            opts = cls._options
            config = load_config(opts.get("config"))
            register_secrets(config)  # before the strategies are imported
            registry = load_strategies(opts.get("strategies_dir") or config.strategies_dir)
            cls._engine = Engine(config, registry, clock=opts.get("clock"), data_dir=opts.get("data_dir"))
        return cls._engine

    @classmethod
    def use_engine(cls, engine: Engine | None) -> None:
        """Make ``engine`` the one the API reports on (the CLI's daemon does this); None resets."""
        cls._engine = engine
        cls._pairs = {(p.symbol, p.strategy_name): p for p in engine.pairs} if engine else {}

    @classmethod
    def _start(cls, symbol: str, strategy: str, exchange: str | None) -> _Handle:
        engine = cls.engine()
        pair = engine.add_pair(symbol, strategy, exchange)
        if not engine.absent_pairs_read:  # once: positions of pairs this process does not run count too
            engine.restore_absent_pairs()
        cls._pairs[(pair.symbol, pair.strategy_name)] = pair
        cls._pairs[(symbol, strategy)] = pair
        return _Handle(engine, pair)

    @classmethod
    async def run(cls, symbol: str, strategy: str, exchange: str | None = None) -> AsyncIterator[TickResult]:
        """Run one pair; yield its ``opened``, ``closed`` and ``cancelled`` results as they happen.

        Leaving the ``async for`` (break, return, an exception) stops the loop as ``stop``
        does; use ``contextlib.aclosing`` to have that happen at the break itself.
        """
        handle = cls._start(symbol, strategy, exchange)
        queue: asyncio.Queue[TickResult] = asyncio.Queue()
        handle.pair.listeners.append(lambda r: queue.put_nowait(r) if r.action in YIELDED else None)
        handle.task = asyncio.create_task(handle.run())
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, handle.task}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                    continue
                getter.cancel()
                while not queue.empty():
                    yield queue.get_nowait()
                await handle.task  # re-raises a failure of the loop
                return
        finally:
            handle.stop()
            if handle.task is not None and not handle.task.done():
                await handle.task

    @classmethod
    def background(cls, symbol: str, strategy: str, exchange: str | None = None) -> Callable[[], None]:
        """Start one pair and return ``stop``.

        Inside a running event loop the pair runs as a task of that loop; otherwise in a
        thread of its own. ``stop()`` lets the current tick finish, accepts no new signal,
        cancels a waiting scheduled signal and leaves an open position persisted. Outside a
        loop, ``stop()`` also waits (up to 30 s) until the loop has ended.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            handle = cls._start(symbol, strategy, exchange)
            handle.task = loop.create_task(handle.run())
            return handle.stop
        holder: dict[str, Any] = {}
        ready = threading.Event()

        async def main() -> None:
            try:
                holder["handle"] = cls._start(symbol, strategy, exchange)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread, which raises it
                holder["error"] = exc
                ready.set()
                return
            holder["loop"] = asyncio.get_running_loop()
            ready.set()
            await holder["handle"].run()

        thread = threading.Thread(target=asyncio.run, args=(main(),), name=f"livetrader {symbol}", daemon=True)
        thread.start()
        ready.wait()
        if "error" in holder:
            raise holder["error"]

        def stop() -> None:
            holder["loop"].call_soon_threadsafe(holder["handle"].stop)
            thread.join(30)

        return stop

    @classmethod
    def _pair(cls, symbol: str, strategy: str) -> Pair:
        pair = cls._pairs.get((symbol, strategy))
        if pair is None:
            known = ", ".join(f"{s}/{n}" for s, n in cls._pairs) or "none"
            raise KeyError(f"no live pair {symbol}/{strategy} in this process (running: {known})")
        return pair

    @classmethod
    def get_data(cls, symbol: str, strategy: str) -> Stats:
        """The statistics of the pair's in-memory event window."""
        from livetrader.report.markdown import stats_for

        return stats_for(cls._pair(symbol, strategy).window.events())

    @classmethod
    def get_report(cls, symbol: str, strategy: str) -> str:
        """The markdown report of the pair's in-memory event window."""
        return cls.engine().report_text(cls._pair(symbol, strategy))

    @classmethod
    def dump(cls, symbol: str, strategy: str, path: Path | None = None) -> Path:
        """Write the pair's report (default: ``<data-dir>/reports/live/<pair>_<time>.md``); return the path."""
        return cls.engine().write_report(cls._pair(symbol, strategy), path)
