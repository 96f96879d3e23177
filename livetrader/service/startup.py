"""Starting ``livetrader run``: every input checked and the engine built with its pairs
restored, before any loop starts (docs/behaviour.md §9). ``service.daemon`` runs what this builds.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from livetrader.config import DEMO_DATA_DIR, Config, data_dir_chosen
from livetrader.core.price import MINUTE_MS
from livetrader.errors import LivetraderError, StrategyLoadError, UsageError
from livetrader.live.clock import Clock, SimClock, check_timeline, saved_clock
from livetrader.live.collector import collector_paused
from livetrader.live.engine import Engine
from livetrader.live.restore import ModeChanged
from livetrader.logs import get_logger
from livetrader.market.sources import BUILT_IN
from livetrader.store.state import StateDamaged
from livetrader.strategy.base import load_strategies

if TYPE_CHECKING:
    from livetrader.service.systemd import Notifier
    from livetrader.store.lock import DataDirLock

__all__ = ["DataDirError", "RunRequest", "build_engine", "check_data_dir", "make_clock"]

log = get_logger(__name__)

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
    #: Run although the data directory was written on the other clock (``--switch-clock``).
    switch_clock: bool = False

    def exchange_of(self, config: Config) -> str:
        """The candle source: ``--exchange``, else ``files`` with ``--candles``, else the config's."""
        return self.exchange or ("files" if self.candles else config.exchange)

    def simulated(self, config: Config) -> bool:
        """True when the run goes on a simulated clock: ``--speed``, or a candle file replayed."""
        return self.speed is not None or self.exchange_of(config) == "files"

    def data_dir_of(self, config: Config) -> Path:
        """``--data-dir``, else the configured one; a simulated run left to the default uses ./dump-demo."""
        if self.data_dir is not None:
            return self.data_dir
        if self.simulated(config) and not data_dir_chosen(config):
            return DEMO_DATA_DIR
        return config.data_dir


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


def _forget_simulated_timeline(data_dir: Path) -> None:
    """A real-time run told to continue a simulated run's directory: from now on it follows the
    real clock, so later real-time starts need no flag (the timeline is kept in the log)."""
    from livetrader.store.layout import CLOCK_FILE

    saved = saved_clock(data_dir)
    try:
        (data_dir / CLOCK_FILE).unlink()
    except FileNotFoundError:
        return
    log.warning("this data directory now follows the real clock; its simulated timeline was dropped",
                timeline=saved.to_dict() if saved is not None else None)


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
                what = "mode changed" if isinstance(exc, ModeChanged) else "damaged state"
                log.error(f"pair not started: {what}", symbol=symbol, strategy=name, error=str(exc))
                damaged.append(exc)


def build_engine(request: RunRequest, config: Config, strategies_dir: Path, *, lock: DataDirLock | None = None,
                 notifier: Notifier | None = None) -> Engine:
    """Check every input and build the engine with its pairs; raises before any loop starts.

    ``lock``: the data directory's lock, taken before the strategies are imported (their
    import may take long, and runs user code). ``notifier``: told before each strategy
    module is imported, so systemd extends its start timeout.
    """
    exchange = request.exchange_of(config)
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
    engine = Engine(config, registry, candles=request.candles, data_dir=request.data_dir_of(config))
    source = engine.source(exchange)
    bounds = source.bounds(source.resolve_symbol(request.symbols[0]))
    simulated = request.speed is not None or (exchange == "files" and bounds is not None)
    # Before any repair: a refused start leaves the directory as it was.
    check_timeline(engine.data_dir, simulated, request.switch_clock)
    engine.open(lock)
    engine.clock = make_clock(request, exchange, bounds, engine.data_dir)
    if request.switch_clock and not simulated:
        _forget_simulated_timeline(engine.data_dir)
    engine.started_at = engine.clock.now_ms()
    damaged: list[StateDamaged] = []
    fit_open_files(len(request.symbols) * len(request.strategies))
    with collector_paused():
        _add_pairs(engine, request, exchange, broken, damaged)
    if not engine.pairs:
        if broken:
            raise next(iter(broken.values()))
        raise damaged[0] if damaged else UsageError("no pair to run")
    engine.restore_absent_pairs()
    _announce_orders(engine)
    for orphan in engine.not_running:
        log.warning("a pair not run by this process holds a signal; it is not monitored until you run it",
                    **orphan)
    return engine


#: Open files beyond one journal per pair: the commit log, the control socket and its clients,
#: connections to exchanges and webhooks, the metrics server, snapshots being written, logs.
OPEN_FILES_BESIDE_PAIRS = 256


def fit_open_files(pairs: int) -> None:
    """Make room for ``pairs`` journals, each kept open for its pair's life: the soft limit of
    open files is raised to the hard one (systemd starts a service at 1,024, too few for a
    thousand pairs). Raises ``UsageError`` when even the hard limit is too low."""
    import resource

    needed = pairs + OPEN_FILES_BESIDE_PAIRS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    # The hard limit, or (unlimited) a generous figure; where the system caps it lower (macOS's
    # kern.maxfilesperproc), what the pairs need.
    wanted = soft
    for candidate in (max(needed, 65_536) if hard == resource.RLIM_INFINITY else hard, needed):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (candidate, hard))
        except (ValueError, OSError):
            continue
        wanted = candidate
        break
    if wanted < needed:
        raise UsageError(f"{pairs} pairs need about {needed} open files (a journal each, kept open), and this "
                         f"process may open {wanted}: raise the limit (systemd: LimitNOFILE={needed} in the unit's "
                         f"[Service] section; a shell: ulimit -n {needed}), or run fewer pairs per process")
    log.info("open files limit raised", soft=wanted, was=soft, pairs=pairs)


def _announce_orders(engine: Engine) -> None:
    """The banner of a run that places orders: exchange, mode, account, pairs, cost per position."""
    for exchange in sorted({p.exchange for p in engine.pairs}):
        mode = engine.mode(exchange)
        if mode == "paper":
            continue
        pairs = [p for p in engine.pairs if p.exchange == exchange]
        costs = sorted({p.executor.cost for p in pairs if p.executor is not None})
        source = engine.source(exchange)
        account = getattr(getattr(source, "source", source), "account", "")
        what = "REAL ORDERS, REAL MONEY" if mode == "live" else "real orders on the exchange's test network"
        log.warning(f"{mode} mode: {what}", exchange=exchange, mode=mode, account=account, pairs=len(pairs),
                    cost_per_position=", ".join(f"{c:g}" for c in costs))


#: Seconds of start time asked of systemd (``EXTEND_TIMEOUT_USEC``) before each strategy
#: module is imported: a slow import (a heavy library) does not fail the start, a module
#: whose import never ends still does.
IMPORT_TIMEOUT_SECONDS = 120.0
