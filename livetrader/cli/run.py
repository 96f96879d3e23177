"""``livetrader run``: check everything, start one loop per pair, stop gracefully on a signal."""

from __future__ import annotations

import asyncio
import faulthandler
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from livetrader.config import Config
from livetrader.core.price import MINUTE_MS
from livetrader.errors import LivetraderError, StrategyLoadError, UsageError
from livetrader.live.clock import Clock, SimClock, saved_clock
from livetrader.live.collector import collector_paused, freeze_startup_objects
from livetrader.live.engine import Engine
from livetrader.market.sources import BUILT_IN
from livetrader.store.state import StateDamaged
from livetrader.strategy.base import load_strategies

if TYPE_CHECKING:
    from livetrader.service.stall import StallWatcher
    from livetrader.service.systemd import Notifier
    from livetrader.store.lock import DataDirLock

log = structlog.get_logger("livetrader.run")

#: Minutes of the candle file kept as history before a ``files`` replay starts ticking.
REPLAY_HISTORY_MINUTES = 60


class DataDirError(LivetraderError):
    """The data directory cannot be created or written."""


@dataclass(slots=True, frozen=True)
class RunRequest:
    """What the user asked for on the command line."""

    symbols: list[str]
    strategies: list[str]
    exchange: str | None
    data_dir: Path | None
    speed: float | None
    candles: Path | None
    live_view: bool | None = None


def check_data_dir(path: Path) -> Path:
    """Create the data directory if needed and prove it is writable, before any loop starts."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise DataDirError(
            f"data directory {path} is not writable ({exc.strerror}); fix its permissions or choose "
            "another with --data-dir or LIVETRADER_DATA_DIR"
        ) from None
    return path


def make_clock(
    request: RunRequest, exchange: str, engine_bounds: tuple[int, int] | None, data_dir: Path | None = None
) -> Clock:
    """The wall clock, or a simulated one: with ``--speed`` (``sim`` and ``files`` only) or a file replay.

    A simulated timeline is saved in the data directory and continued on restart, the
    downtime elapsing in simulated time too, so a restart catches up exactly as it would
    on the wall clock.
    """
    if request.speed is not None and not request.speed > 0:
        raise UsageError(f"--speed must be a positive number, got {request.speed}")
    if request.speed is None and not (exchange == "files" and engine_bounds is not None):
        return Clock()
    # A file in real time would wait years to reach "now": replay it from its start.
    speed = request.speed or 1.0
    wall = int(time.time() * 1000)
    saved = saved_clock(data_dir) if data_dir is not None else None
    if saved is not None:
        now_sim = saved.now_ms()
        clock = SimClock(wall, now_sim, speed) if saved.speed != speed else saved
    else:
        origin = _replay_origin(engine_bounds) if engine_bounds is not None else wall - wall % MINUTE_MS
        clock = SimClock(wall, origin, speed)
    if data_dir is not None:
        from livetrader.store.atomic import write_json_atomic
        from livetrader.store.layout import CLOCK_FILE

        (data_dir / CLOCK_FILE).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(data_dir / CLOCK_FILE, clock.to_dict())
    return clock


def _replay_origin(bounds: tuple[int, int]) -> int:
    return bounds[0] + REPLAY_HISTORY_MINUTES * MINUTE_MS


def _local_exchange(config: Config, exchange: str) -> bool:
    """True for a ccxt exchange pointed at a server on this machine (a test exchange), which may
    run on a simulated clock; a real exchange's candles follow the wall clock."""
    base = str(config.exchange_options(exchange).get("urls", {}).get("api_base", ""))
    return base.startswith(("http://127.", "http://localhost", "http://[::1]"))


def _add_pairs(engine: Engine, request: RunRequest, exchange: str, broken: dict[str, StrategyLoadError],
               damaged: list[StateDamaged]) -> None:
    """Add every requested pair; a broken strategy's pairs only monitor, a damaged pair is left out."""
    for symbol in request.symbols:
        for name in request.strategies:
            try:
                if name in broken:
                    # The other pairs run; this one only guards a signal it already holds.
                    pair = engine.add_monitor_only(symbol, name, exchange, str(broken[name]))
                    log.error("strategy failed to load", symbol=symbol, strategy=name, error=str(broken[name]),
                              monitoring=pair is not None)
                else:
                    engine.add_pair(symbol, name, exchange)
            except StateDamaged as exc:
                # The other pairs start; this one waits for a person (see `livetrader recover`).
                log.error("pair not started: damaged state", symbol=symbol, strategy=name, error=str(exc))
                damaged.append(exc)


def build_engine(request: RunRequest, config: Config, strategies_dir: Path, *, lock: DataDirLock | None = None,
                 notifier: Notifier | None = None) -> Engine:
    """Check every input and build the engine with its pairs; raises before any loop starts.

    ``lock``: the data directory's lock, taken before the strategies are imported (their
    import may take long, and runs user code). ``notifier``: told before each strategy
    module is imported, so systemd extends its start timeout.
    """
    exchange = request.exchange or ("files" if request.candles else config.exchange)
    if request.speed is not None and exchange not in BUILT_IN and not _local_exchange(config, exchange):
        raise UsageError(f"--speed only works with the sim and files sources, not with a real exchange ({exchange})")

    def importing(file: Path) -> None:
        if notifier is not None:
            notifier.send(EXTEND_TIMEOUT_USEC=int(IMPORT_TIMEOUT_SECONDS * 1_000_000),
                          STATUS=f"importing strategy module {file.name}")

    # Only the modules declaring the requested strategies, when a static scan can tell.
    registry = load_strategies(strategies_dir, names=request.strategies, on_import=importing)
    broken: dict[str, StrategyLoadError] = {}
    for name in request.strategies:
        try:
            registry.get(name)
        except StrategyLoadError as exc:  # a misspelt name (UnknownStrategyError) still stops here
            broken[name] = exc
    if registry.problems:
        log.warning("some strategy files failed to load", problems=[str(p) for p in registry.problems])
    engine = Engine(config, registry, candles=request.candles, data_dir=request.data_dir or config.data_dir)
    source = engine.source(exchange)
    bounds = source.bounds(source.resolve_symbol(request.symbols[0]))
    engine.open(lock)
    engine.clock = make_clock(request, exchange, bounds, engine.data_dir)
    engine.started_at = engine.clock.now_ms()
    damaged: list[StateDamaged] = []
    with collector_paused():
        _add_pairs(engine, request, exchange, broken, damaged)
    if not engine.pairs:
        if broken:
            raise next(iter(broken.values()))
        raise damaged[0] if damaged else UsageError("no pair to run")
    engine.restore_absent_pairs()
    for orphan in engine.not_running:
        log.warning("a pair not run by this process holds a signal; it is not monitored until you run it",
                    **orphan)
    return engine


#: Seconds of start time asked of systemd (``EXTEND_TIMEOUT_USEC``) before each strategy
#: module is imported: a slow import (a heavy library) does not fail the start, a module
#: whose import never ends still does.
IMPORT_TIMEOUT_SECONDS = 120.0
SIGHUP_MESSAGE = "SIGHUP received: ignored; reload is not supported yet, use SIGTERM to stop"


def run(request: RunRequest, config: Config, strategies_dir: Path) -> int:
    """Run until SIGINT/SIGTERM; write the reports; return the exit code."""
    from livetrader.live.engine import take_data_dir
    from livetrader.service.console import configure_logging
    from livetrader.service.stall import log_hard_exits
    from livetrader.service.systemd import Notifier

    configure_logging()
    faulthandler.enable()  # a crash in native code leaves its Python stack on stderr (the journal)
    log_hard_exits(log)  # before any strategy module is imported: an os._exit() in them says so
    # A closed terminal or a `kill -HUP` must not kill the daemon like a crash, not even
    # while it starts (the event loop installs its own handler, saying the same).
    signal.signal(signal.SIGHUP, lambda signum, frame: log.warning(SIGHUP_MESSAGE))
    data_dir = check_data_dir(request.data_dir or config.data_dir)
    notifier = Notifier.from_env()
    lock = take_data_dir(data_dir)  # before any strategy code runs: one daemon per directory
    try:
        engine = build_engine(request, config, strategies_dir, lock=lock, notifier=notifier)
    except BaseException:
        lock.release()  # a start refused with an error message is a clean stop, not an abnormal end
        raise
    return asyncio.run(_main(engine, data_dir, request, notifier))


#: Real seconds a graceful stop waits for the current ticks before cancelling them (under
#: systemd's TimeoutStopSec=90, so a stop never ends in SIGKILL).
STOP_GRACE_SECONDS = 30.0
#: Real seconds between rewrites of the status file (and systemd STATUS= lines).
STATUS_INTERVAL = 1.0
#: Longest a status write waits for a running sweep to end.
STATUS_DEFER_LIMIT = 5.0


async def _main(engine: Engine, data_dir: Path, request: RunRequest, notifier: Notifier) -> int:
    from livetrader.live.api import Live
    from livetrader.service.status import one_line, write_status
    from livetrader.service.systemd import PairProgress, WatchdogGate, watchdog_loop

    Live.use_engine(engine)
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1 and signum == signal.SIGINT:
            # Every write is atomic and every journal line fsync'ed: leaving now loses nothing.
            sys.stderr.write("second interrupt: exiting at once\n")
            os._exit(130)
        if signals_seen > 1:
            return
        log.info("stopping", signal=signal.Signals(signum).name)
        notifier.stopping("stopping: finishing the current ticks")
        engine.stop()
        loop.call_later(STOP_GRACE_SECONDS, engine.abort)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    loop.add_signal_handler(signal.SIGHUP, log.warning, SIGHUP_MESSAGE)
    watcher = _stall_watcher(engine)
    watcher.start()
    log.info("started", pairs=[f"{p.symbol}/{p.strategy_name}/{p.exchange}" for p in engine.pairs],
             data_dir=str(data_dir), speed=engine.clock.speed)
    started = time.monotonic()

    def progress() -> dict[str, PairProgress]:
        deadline = engine.watchdog_deadline()
        return {f"{p.symbol}/{p.strategy_name}": PairProgress(p.progress_at, deadline)
                for p in engine.pairs if p.state != "parked" and not p.stopping.is_set()}

    async def extend_while_catching_up() -> None:
        # Catch-up after a long downtime may outlast TimeoutStartSec: keep asking for more.
        while True:
            notifier.extend_timeout(60)
            await asyncio.sleep(20)

    async def report_status() -> None:
        while True:
            # Between sweeps: a mid-sweep file would show half the pairs ticked, and building it
            # (tens of ms with 10,000 pairs) would delay the ticks still to run.
            await engine.metronome.between_sweeps(STATUS_DEFER_LIMIT)
            try:
                write_status(engine)
            except Exception as exc:  # noqa: BLE001 - the status file is a convenience; never let it stop trading
                log.warning("cannot write the status file", error=str(exc))
            notifier.status(one_line(engine))
            await asyncio.sleep(STATUS_INTERVAL)

    extender = asyncio.create_task(extend_while_catching_up())

    def on_ready() -> None:
        extender.cancel()
        notifier.ready(one_line(engine))
        log.info("ready", pairs=len(engine.pairs), open=engine.summary()["open"])
        helpers.append(asyncio.create_task(watchdog_loop(notifier, WatchdogGate(progress, started))))

    freeze_startup_objects()
    helpers = [extender, asyncio.create_task(report_status()), asyncio.create_task(watcher.heartbeat())]
    view = _live_view(engine, request)
    try:
        if view is not None:
            with view:
                await engine.run(on_ready=on_ready)
        else:
            await engine.run(on_ready=on_ready)
    finally:
        watcher.stop()  # writing 10,000 reports may hold the loop: that is no stall
        for task in helpers:
            task.cancel()
        notifier.stopping("writing reports")
        failures = _finish(engine)
        await engine.bus.drain(5.0)
        await engine.close()
        notifier.close()
    log.info("stopped", pairs=len(engine.pairs))
    if failures:
        raise ShutdownError("stopped, but " + "; ".join(failures))
    return 0


def _stall_watcher(engine: Engine) -> StallWatcher:
    """The thread that notices strategy code blocking the event loop, and says so: in the log
    (the strategy, where, its stack) and in the status file (``livetrader status``: stalled)."""
    from livetrader.service.stall import Stall, StallWatcher
    from livetrader.service.status import mark_stalled

    def on_stall(stall: Stall) -> None:
        fields = stall.fields()
        log.error("event loop stalled", **fields, hint="code running on the event loop has not yielded: every pair "
                  "waits and no strategy timeout can fire; make blocking work async or move it to a thread")
        try:
            mark_stalled(engine.data_dir, fields)
        except Exception as exc:  # noqa: BLE001 - the status file is a convenience
            log.warning("cannot write the status file", error=str(exc))

    def on_recover(seconds: float) -> None:
        log.warning("event loop running again", stalled_seconds=round(seconds, 1))

    return StallWatcher(engine.config.engine.stall_seconds, on_stall, on_recover)


class ShutdownError(LivetraderError):
    """The daemon stopped, but a report or the final status could not be written."""


def _finish(engine: Engine) -> list[str]:
    """Write every report and the final status; each failure is logged, none stops the others."""
    from livetrader.service.status import write_status

    failures = []
    for pair in engine.pairs:
        try:
            path = engine.write_report(pair)
            log.info("report written", path=str(path))
        except Exception as exc:  # noqa: BLE001 - one pair's report failing stops neither the others nor the shutdown
            failures.append(f"the report of {pair.symbol}/{pair.strategy_name} was not written: {exc}")
            log.error("report not written", symbol=pair.symbol, strategy=pair.strategy_name, error=str(exc))
    try:
        write_status(engine, state="stopped")
    except Exception as exc:  # noqa: BLE001 - the shutdown goes on; the failure is in the exit message
        failures.append(f"the final status was not written: {exc}")
    return failures


def _live_view(engine: Engine, request: RunRequest):
    """The rich table of pairs, on a terminal only."""
    wanted = request.live_view if request.live_view is not None else sys.stdout.isatty()
    if not wanted:
        return None
    from livetrader.service.console import LiveView, PairView

    def views() -> list[PairView]:
        out = []
        for p in engine.pairs:
            row = p.row
            last = p.last_result
            out.append(PairView(
                symbol=p.symbol, strategy=p.strategy_name, exchange=p.exchange, state=p.state, price=p.price,
                position=row.position if row else None, price_open=row.price_open if row else None,
                take_profit=row.take_profit if row else None, stop_loss=row.stop_loss if row else None,
                pnl_percentage=last.pnl_percentage if last is not None and last.action == "active" else None,
                last_tick_at=p.last_tick_at, lag_ms=p.lag_ms, error_count=p.error_count, last_error=p.last_error,
                closed_trades=p.closed_trades, realised_pnl=p.realised_pnl,
            ))
        return out

    return LiveView(views)
