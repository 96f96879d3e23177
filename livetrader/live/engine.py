"""The live engine: every pair's loop, supervised, on one clock, in one process (docs/behaviour.md §8).

Each pair ticks right after every minute boundary of the clock. A tick that fails is
reported and the loop carries on; a loop that crashes is restarted with exponential
backoff, and parked after too many crashes in a row, without the other pairs noticing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from livetrader.config import Config
from livetrader.core.price import MINUTE_MS
from livetrader.errors import UsageError
from livetrader.events import BUS, DoneEvent, ErrorEvent, EventBus
from livetrader.execution.executor import Executor
from livetrader.live.clock import Clock
from livetrader.live.collector import SweepCollector
from livetrader.live.commands import Commands
from livetrader.live.halt import DailyLimit, Halts
from livetrader.live.metronome import Express, Metronome
from livetrader.live.pair import Pair, PairSettings
from livetrader.live.restore import Restorer
from livetrader.logs import get_logger
from livetrader.market.feed import CandleFeed
from livetrader.market.source import CandleSource
from livetrader.market.sources import open_source, register_secrets
from livetrader.redaction import redact
from livetrader.report.markdown import EventWindow
from livetrader.strategy.base import Strategy, StrategyRegistry, instantiate
from livetrader.strategy.risk import RiskProfile, build_profiles
from livetrader.strategy.tracing import describe

if TYPE_CHECKING:
    from livetrader.store.lock import DataDirLock

log = get_logger(__name__)


@dataclass(slots=True, frozen=True)
class Supervision:
    """How crashed loops are restarted (real seconds) and when they are parked instead."""

    first_backoff: float = 1.0
    max_backoff: float = 60.0
    max_crashes: int = 5
    #: Real seconds after a minute boundary before ticking, so the exchange has closed the candle.
    tick_delay: float = 0.0


def settings_of(config: Config) -> PairSettings:
    """Pair settings from the ``[engine]`` section."""
    e = config.engine
    rules = e.rules()
    return PairSettings(rules, e.strategy_timeout_seconds, e.max_events)


class Engine:
    """All pairs of one process: their sources, risk profiles, clock, loops and reports."""

    def __init__(
        self,
        config: Config,
        registry: StrategyRegistry,
        *,
        clock: Clock | None = None,
        bus: EventBus = BUS,
        supervision: Supervision = Supervision(),
        candles: Path | None = None,
        data_dir: Path | None = None,
    ) -> None:
        register_secrets(config)  # the Python API builds engines without the CLI: register here too
        self.config = config
        self.registry = registry
        self.clock = clock or Clock()
        self.bus = bus
        self.supervision = supervision
        self.candles = candles
        self.data_dir = data_dir or config.data_dir
        self.settings = settings_of(config)
        self.sources: dict[str, CandleSource] = {}
        #: One order path per sandbox/live exchange, shared by its pairs.
        self.brokers: dict[str, Any] = {}
        self.profiles: dict[str, RiskProfile] = build_profiles(config.risk_tables())
        self.pairs: list[Pair] = []
        self.keys: set[tuple[str, str, str]] = set()
        # Opens the data directory's storage and restores the pairs (and closes the storage at exit).
        self.restorer = Restorer(self.data_dir, self.profiles)
        self.tasks: list[asyncio.Task[None]] = []
        self.metronome = Metronome([SweepCollector(), bus], self._next_wait, lambda: self.clock.now_ms())
        #: Let the minute boundaries tick pairs in place when nothing needs awaiting
        #: (``Pair.tick_in_place``); off, every tick wakes its pair's task (as tests compare).
        self.ticks_in_place = True
        self.started_at = self.clock.now_ms()
        # The candle files whose end was logged: one line per file, however many pairs replay it.
        self.files_ended: set[str] = set()
        # `livetrader halt` / `resume` and the daily loss limits (docs/behaviour.md §13).
        #: The last hot reload (``reload``), None before any: shown in the status file.
        self.last_reload: Reload | None = None
        self.halts = Halts(self.data_dir, lambda: self.clock.now_ms(), bus, {
            name: DailyLimit(profile.max_daily_loss_percent, profile.capital)
            for name, profile in config.risk.items()
            if profile.max_daily_loss_percent is not None and profile.capital is not None})
        # --- operator commands: close, cancel, pause, resume (``live.commands``) ---
        #: Requests from the control socket, each carried out by its pair's loop between two ticks.
        self.commands = Commands(lambda: self.pairs, lambda: self.clock.now_ms())
        # --- candle streams (``market.ccxt.stream``): one per exchange that pushes its candles ---
        #: The open candle streams by exchange; their pairs wake when their symbol's candle arrives.
        self.streams: dict[str, Any] = {}

    # --- building -------------------------------------------------------------------------

    def source(self, exchange: str) -> CandleSource:
        """The one source of ``exchange``, shared by every pair on it."""
        if exchange not in self.sources:
            source = open_source(exchange, self.config, self.candles)
            if hasattr(source, "clock"):
                # The source judges "closed candles" and clock skew by the engine's clock.
                source.clock = lambda: self.clock.now_ms()
            self.sources[exchange] = CandleFeed(source)
        return self.sources[exchange]

    def open(self, lock: DataDirLock | None = None) -> None:
        """Take the data directory and open its storage (``Restorer.open``), once.

        ``lock``: the directory's lock, already taken (``take_data_dir``). Raises
        ``DataDirLocked`` naming the process that holds it.
        """
        writer = self.restorer.open(lock)
        if writer is not None:
            self.metronome.pauses.add(writer)

    def add_pair(self, symbol: str, strategy: str, exchange: str | None = None) -> Pair:
        """Create the pair and restore its durable state.

        Every usage error (strategy, symbol, exchange, risk) is raised here, and
        ``StateDamaged`` when the pair's files are damaged (they are quarantined first).
        """
        exchange = exchange or self.config.exchange
        cls = self.registry.get(strategy)
        return self._add(symbol, cls, exchange)

    def add_monitor_only(self, symbol: str, strategy: str, exchange: str | None, why: str) -> Pair | None:
        """A pair whose strategy cannot be loaded: if it holds a signal on disk, keep checking
        that signal (take-profit, stop-loss, expiry) but ask for nothing new. None when it holds none."""
        exchange = exchange or self.config.exchange
        resolved = self.source(exchange).resolve_symbol(symbol)
        self.open()
        if not self.restorer.holds_signal((resolved, strategy, exchange)):
            return None
        placeholder = type("Unavailable", (Strategy,), {
            "name": strategy, "__doc__": "Stands in for a strategy that failed to load.",
            "get_signal": _no_signal, "__module__": __name__,
        })
        pair = self._add(resolved, placeholder, exchange)
        pair.accepting = False
        pair.degraded = redact(f"strategy unavailable, only its open signal is monitored: {why}")
        pair.report_error(self.clock.now_ms(), pair.degraded, "strategy")
        return pair

    def _add(self, symbol: str, cls: type[Strategy], exchange: str) -> Pair:
        source = self.source(exchange)
        resolved = source.resolve_symbol(symbol)
        if (resolved, cls.name, exchange) in self.keys:
            raise UsageError(f"pair {resolved} / {cls.name} / {exchange} was given twice")
        risk = None
        if cls.risk:
            self.config.risk_profile(cls.risk)  # a clear error for a profile missing from the config
            risk = self.profiles[cls.risk]
        pair = Pair(resolved, instantiate(cls), exchange, source, settings=self.settings, risk=risk, bus=self.bus,
                    window=EventWindow(self.settings.max_events))
        pair.executor = self._executor(pair, cls)
        pair.code_version = self.registry.version_of(cls.name) if cls.name in self.registry else "unavailable"
        self.open()
        self.restorer.restore(pair, cls.risk, self.clock.now_ms())
        self.pairs.append(pair)
        self.keys.add(pair.key)
        if risk is not None:
            self.restorer.watch_risk(risk, pair)
        return pair

    def mode(self, exchange: str) -> str:
        """``paper``, ``sandbox`` or ``live``: whether ``exchange``'s pairs place orders (docs/behaviour.md §12)."""
        return str(getattr(self.source(exchange), "mode", "paper"))

    def _executor(self, pair: Pair, cls: type[Strategy]) -> Executor | None:
        """The order path of a pair on a sandbox/live exchange (one broker per exchange); None in paper mode."""
        source = self.source(pair.exchange)
        mode = self.mode(pair.exchange)
        if mode == "paper":
            return None
        from livetrader.execution.broker import CcxtBroker

        broker = self.brokers.get(pair.exchange)
        if broker is None:
            broker = self.brokers[pair.exchange] = CcxtBroker(getattr(source, "source", source))

        async def write(record: dict[str, Any]) -> None:
            assert pair.store is not None, "the pair is restored (and has its store) before it ticks"
            await pair.store.write_ahead(record)

        settings = getattr(getattr(source, "source", source), "settings", None)
        minutes = getattr(settings, "unknown_order_minutes", 10.0)
        profile = self.config.risk.get(cls.risk) if cls.risk else None
        cost = cls.cost or (profile.cost if profile is not None else None) or self.config.engine.cost
        return Executor(pair.key, broker, mode=mode, cost=cost,
                        unknown_order_minutes=minutes, write=write, report_error=pair.report_error,
                        protective_stop=getattr(settings, "protective_stop", "auto"),
                        stop_limit_gap_percent=getattr(settings, "stop_limit_gap_percent", 0.5),
                        stop_check_minutes=getattr(settings, "stop_check_minutes", 1.0))

    def restore_absent_pairs(self) -> None:
        """Once every pair is added: the pairs on disk that this process does not run
        (``Restorer.restore_absent_pairs``); those holding a signal are in ``not_running``."""
        self.restorer.restore_absent_pairs(self.keys)

    @property
    def not_running(self) -> list[dict[str, Any]]:
        """Pairs on disk holding a signal that this process does not run (found once, at start)."""
        return self.restorer.not_running

    @property
    def absent_pairs_read(self) -> bool:
        """True once ``restore_absent_pairs`` ran."""
        return self.restorer.absent_pairs_read

    # --- running --------------------------------------------------------------------------

    async def run(self, pairs: Iterable[Pair] | None = None, on_ready: Callable[[], None] | None = None) -> None:
        """Run the loops of ``pairs`` (default: all) until ``stop()``, then finish each gracefully.

        Every pair holding a signal first ticks once, which applies its downtime catch-up;
        ``on_ready`` is called when all have (systemd's READY=1 means "recovered and caught
        up"). No strategy is asked before it.
        """
        chosen = list(pairs) if pairs is not None else list(self.pairs)
        self._open_streams(chosen)
        await self.resolve_protection(chosen)
        self.halts.start(chosen)  # before any strategy is asked: a halt journaled while stopped holds
        watcher = asyncio.create_task(self.halts.watch(), name="operator journal")
        reconciling: asyncio.Task[None] | None = None
        streams_later: asyncio.Task[None] | None = None
        try:
            await asyncio.gather(*(self.first_tick(p) for p in chosen))
            await self.reconcile(chosen)  # orders asked for first (the first ticks did), then the balances
            if on_ready is not None:
                on_ready()
            self.tasks = [asyncio.create_task(self.run_pair(p), name=f"pair {p.key}") for p in chosen]
            reconciling = asyncio.create_task(self._reconcile_every(chosen), name="reconcile")
            streams_later = asyncio.create_task(self._open_streams_later(chosen), name="candle streams")
            results = await asyncio.gather(*self.tasks, return_exceptions=True)
        finally:
            watcher.cancel()
            if streams_later is not None:
                streams_later.cancel()
            if reconciling is not None:
                reconciling.cancel()
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result

    def _open_streams(self, pairs: list[Pair], *, quiet: bool = False) -> None:
        """Open the candle stream of every exchange of ``pairs`` that pushes its candles (``market.ccxt.stream``)."""
        from livetrader.market.ccxt.stream import grace_seconds, open_stream

        by_exchange: dict[str, set[str]] = {}
        for pair in pairs:
            by_exchange.setdefault(pair.exchange, set()).add(pair.symbol)
        for exchange, symbols in by_exchange.items():
            if exchange in self.streams or exchange not in self.sources:
                continue
            stream = open_stream(exchange, self.sources[exchange], sorted(symbols), self._candle_closed(exchange),
                                 lambda: self.clock.now_ms(), quiet=quiet)
            if stream is not None:
                self.streams[exchange] = stream
                self.metronome.grace = grace_seconds(self.clock.real_seconds)
                if quiet:
                    log.info("candle stream opened: markets loaded", exchange=exchange, symbols=len(symbols))

    async def _open_streams_later(self, pairs: list[Pair]) -> None:
        """An exchange whose markets were not loaded at start (unreachable then) is polled until they
        are: try its stream again once a minute of the clock, until every streamable exchange has one."""
        from livetrader.market.ccxt.stream import can_stream

        minute = self.clock.real_seconds(MINUTE_MS)
        if minute == float("inf"):
            return  # a clock moved by hand (tests, benchmarks): no minute passes by itself
        every = min(minute, 60.0)
        while any(p.exchange not in self.streams and can_stream(self.sources.get(p.exchange)) for p in pairs):
            await asyncio.sleep(every)
            self._open_streams(pairs, quiet=True)

    def _candle_closed(self, exchange: str) -> Callable[[str, int], int]:
        """What a stream calls when a symbol's candle closing at a boundary is in: wake its pairs."""
        fire = self.metronome.fire_key
        return lambda symbol, boundary: fire(boundary, (exchange, symbol))

    async def reconcile(self, pairs: list[Pair]) -> None:
        """Reconcile the open positions of sandbox/live ``pairs`` with their accounts (``live.reconcile``)."""
        placing = [p for p in pairs if p.executor is not None]
        if not placing:
            return
        from livetrader.live.reconcile import reconcile

        try:
            await reconcile(placing, self.clock.now_ms(), self.data_dir)
        except Exception as exc:  # noqa: BLE001 - a failed round is said and tried again at the next
            log.warning("reconciliation failed", error=describe(exc))

    async def _reconcile_every(self, pairs: list[Pair]) -> None:
        """``reconcile`` every ``reconcile_minutes`` (of the exchange settings; the shortest wins)."""
        placing = [p for p in pairs if p.executor is not None]
        if not placing:
            return
        minutes = min(getattr(getattr(getattr(self.source(p.exchange), "source", None), "settings", None),
                              "reconcile_minutes", 15.0) for p in placing)
        while True:
            now = self.clock.now_ms()
            await self.clock.sleep_until(now + int(minutes * MINUTE_MS))
            await self.reconcile(pairs)

    async def resolve_protection(self, pairs: list[Pair]) -> None:
        """Ask each sandbox/live market, once at start, which protective stop it takes: a market
        that takes none is said at start (a warning), not when the first position opens."""
        executors = [p.executor for p in pairs if p.executor is not None]
        for executor in executors:
            try:
                await executor.resolve_protection()
            except Exception as exc:  # noqa: BLE001 - asked again when a position needs it
                log.warning("protective stop type not known yet", symbol=executor.key[0], error=describe(exc))

    def abort(self) -> None:
        """Cancel ticks still running after a graceful stop took too long.

        Safe at any await: a transition is journaled and snapshotted without awaiting.
        """
        for task in self.tasks:
            if not task.done():
                log.warning("cancelling a tick that outlasted the graceful stop", task=task.get_name())
                task.cancel()

    async def first_tick(self, pair: Pair) -> None:
        """The catch-up tick before the loops start, for a pair holding a signal: every minute it
        lived through while the process was down is checked, in order (a crash here is left to
        the supervisor). A pair holding nothing has nothing to catch up: its first tick, which
        asks its strategy, is its loop's, so a strategy that hangs holds neither the other pairs
        nor READY=1."""
        if pair.row is None and (pair.executor is None or not pair.executor.busy):
            return
        try:
            await pair.tick(self.clock.now_ms())
        except Exception as exc:  # noqa: BLE001 - one pair's first tick failing must not stop the start-up
            log.error("first tick failed", symbol=pair.symbol, strategy=pair.strategy_name, error=describe(exc))

    async def run_pair(self, pair: Pair) -> None:
        """Run one pair's supervised loop until it is stopped, finishes or is parked.

        Then cancel its waiting scheduled signal (``user``); an open position stays as it is.
        """
        try:
            await self.supervise(pair)
        finally:
            pair.accepting = False
            now = self.clock.now_ms()
            try:
                await pair.cancel_scheduled(now - now % MINUTE_MS)
            except Exception as exc:  # noqa: BLE001 - reported as a storage error; the stop goes on
                pair.report_error(now, f"could not cancel the scheduled signal: {describe(exc)}", "storage")

    def stop(self) -> None:
        """Ask every loop to stop after its current tick; no new signal is accepted from now on."""
        for pair in self.pairs:
            pair.request_stop()

    async def supervise(self, pair: Pair) -> None:
        """Run ``pair``'s loop; restart it with backoff when it crashes, park it when it keeps crashing."""
        crashes = 0
        backoff = self.supervision.first_backoff
        reason = "stopped"
        while not pair.stopping.is_set():
            ticks_before = pair.ticks
            try:
                reason = await self.loop(pair)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a crashed loop is restarted (or given up), never the daemon ended
                # A loop that ticked fine for a while before crashing starts its count afresh.
                crashes = 1 if pair.ticks - ticks_before > 10 else crashes + 1
                message = redact(f"loop crashed ({crashes}/{self.supervision.max_crashes}): {describe(exc)}")
                pair.error_count += 1
                pair.last_error = message
                log.error("loop crashed", symbol=pair.symbol, strategy=pair.strategy_name, error=describe(exc),
                          crashes=crashes)
                self.bus.emit("error", ErrorEvent(*pair.key, self.clock.now_ms(), message, "crash"))
                if crashes >= self.supervision.max_crashes:
                    pair.state = "parked"
                    reason = "parked"
                    pair.last_error = redact(f"parked after {crashes} crashes in a row: {describe(exc)}")
                    log.error("loop parked", symbol=pair.symbol, strategy=pair.strategy_name)
                    self.bus.emit("error", ErrorEvent(*pair.key, self.clock.now_ms(), pair.last_error, "parked"))
                    break
                if await self._sleep_real(pair, backoff):
                    break
                backoff = min(backoff * 2, self.supervision.max_backoff)
        if pair.state != "parked":
            pair.state = "stopped" if reason == "stopped" else reason
        self.bus.emit("done", DoneEvent(*pair.key, self.clock.now_ms(), reason))

    async def loop(self, pair: Pair) -> str:
        """Tick ``pair`` once now, then right after every minute boundary, until stopped.

        A tick that overruns the minute is followed by the next boundary, not by the
        missed ones: ticks never pile up, and ``pair.lag_ms`` says how late each one was.
        Between wakes, the boundaries may tick the pair in place (``Pair.tick_in_place``).
        Returns why it ended.
        """
        due = self.clock.now_ms()
        swept: int | None = None  # the boundary whose sweep the next tick belongs to
        finite = pair.source.bounds(pair.symbol) is not None  # a candle file ends; markets do not
        # A candle file ends (``_exhausted``): its pairs always wake, and find out.
        express = pair.tick_in_place if self.ticks_in_place and not finite else None
        try:
            while not pair.stopping.is_set():
                now = self.clock.now_ms()
                # A minute ticked already (the catch-up tick's), or a clock gone back: wait for the
                # first minute after the last ticked one (``Pair.held_back`` logs a step back).
                resume = pair.held_back(now)
                if resume is None:
                    pair.lag_ms = max(0, now - due)
                    if finite and self._exhausted(pair, now):
                        self._file_ended(pair)
                        return "finished"
                    await pair.tick(now)
                    pair.decision_lag_ms = max(0, self.clock.now_ms() - (now - now % MINUTE_MS))
                if swept is not None:
                    self.metronome.ticked(swept)
                    swept = None
                if self.commands.waiting(pair):  # an operator's request, between two ticks (``live.commands``)
                    await self.commands.serve(pair)
                now = self.clock.now_ms()
                due = now - now % MINUTE_MS + MINUTE_MS
                if resume is not None:
                    # Waiting for the clock is progress too (the watchdog): wake at every boundary.
                    pair.progress_at = time.monotonic()
                    due = min(due, resume)
                swept = await self._sleep_until(pair, due, express)
                due = swept if swept is not None else due
        finally:
            if swept is not None:  # woken for a sweep it will not tick in (stopped, crashed)
                self.metronome.ticked(swept)
        return "stopped"

    def _next_wait(self) -> tuple[int, float]:
        """The next minute boundary and the real seconds until it (plus the tick delay)."""
        now = self.clock.now_ms()
        due = now - now % MINUTE_MS + MINUTE_MS
        return due, self.clock.real_seconds(due - now) + self.supervision.tick_delay

    def _exhausted(self, pair: Pair, now: int) -> bool:
        """True when a finite source (a candle file) has no candle left for this minute."""
        bounds = pair.source.bounds(pair.symbol)
        return bounds is not None and now - now % MINUTE_MS > bounds[1]

    def _file_ended(self, pair: Pair) -> None:
        """Log, once per candle file, that its replay reached the end (so the run is about to finish)."""
        source = pair.source
        path = str(getattr(source, "path", None) or self.candles or source)
        if path in self.files_ended:
            return
        self.files_ended.add(path)
        bounds = source.bounds(pair.symbol)
        last = bounds[1] - MINUTE_MS if bounds is not None else None
        log.info("candle file ended", file=path, last_minute=_iso(last) if last is not None else None)

    async def _sleep_until(self, pair: Pair, due_ms: int, express: Express | None = None) -> int | None:
        """Sleep until the clock reaches ``due_ms`` (plus the tick delay), or the pair stops.

        Returns the boundary whose timer woke the loop (its tick is part of that sweep):
        ``due_ms``, or a later one when ``express`` ticked the pair in place meanwhile; None
        when it was not a boundary (a stop, or ``due_ms`` already past).
        """
        if pair.stopping.is_set():
            return None
        real = self.clock.real_seconds(due_ms - self.clock.now_ms()) + self.supervision.tick_delay
        if real <= 0:
            return None
        stream = self.streams.get(pair.exchange)
        key = (pair.exchange, pair.symbol) if stream is not None and stream.up else None  # wait for its candle
        pair.wake = self.metronome.wait(due_ms, real, express, key)
        try:
            woke = await pair.wake
        finally:
            pair.wake = None
        return None if woke is False else int(woke)

    async def _sleep_real(self, pair: Pair, seconds: float) -> bool:
        if seconds <= 0:
            return pair.stopping.is_set()
        try:
            await asyncio.wait_for(pair.stopping.wait(), seconds)
        except TimeoutError:
            return False
        return True

    # --- hot reload (SIGHUP; docs/behaviour.md, "Reload") ---------------------------------------

    def reload(self) -> Reload:
        """Import the strategies folder again; each pair whose module changed takes the new class
        at its next ask (``Pair._take_reload``), with its saved state.

        A module that no longer imports (or whose class is now invalid) leaves its pairs on the
        code they run: each problem is logged and reported with its file and line. Positions and
        journals are not touched. Returns what happened (also kept in ``last_reload`` for status).
        """
        from livetrader.strategy.base import load_strategies

        directory = self.registry.directory
        fresh: StrategyRegistry | None = None
        try:
            fresh = load_strategies(directory)
            problems = [str(p) for p in fresh.problems]
        except Exception as exc:  # noqa: BLE001 - the folder itself unreadable: every pair keeps its code
            problems = [f"{directory}: {describe(exc)}"]
        outcome = Reload(self.clock.now_ms(), problems=problems)
        for problem in problems:
            log.error("strategy reload failed", problem=problem, hint="the pairs of this file keep their code")
        for pair in self.pairs:
            if pair.code_version == "unavailable" or fresh is None:
                continue  # a placeholder for a strategy that failed to load at start: a restart brings it
            self._reload_pair(pair, fresh, outcome)
        if fresh is not None:
            # New names, and the new classes of files that loaded (a broken one keeps its old entry).
            self.registry.strategies.update(fresh.strategies)
            self.registry.versions.update({f: v for f, v in fresh.versions.items()
                                           if not any(p.file == f for p in fresh.problems)})
        self.last_reload = outcome
        log.info("strategies reloaded", directory=str(directory), changed=outcome.changed, kept=outcome.kept,
                 problems=len(problems))
        return outcome

    def _reload_pair(self, pair: Pair, fresh: StrategyRegistry, outcome: Reload) -> None:
        """Set ``pair`` to take its reloaded class at its next ask, if its module changed."""
        name = pair.strategy_name
        info = fresh.strategies.get(name)
        if info is None:
            loaded_from = self.registry.strategies[name].file if name in self.registry else None
            why = next((str(p) for p in fresh.problems if p.name == name or p.file == loaded_from), None)
            message = (f"reload: {why}; it keeps running {pair.code_version}" if why else
                       f"reload: strategy '{name}' is no longer in {fresh.directory}; it keeps running "
                       f"{pair.code_version}")
            pair.report_error(self.clock.now_ms(), message, "strategy")
            outcome.kept += 1
            return
        version = fresh.versions.get(info.file, "unreadable")
        if _source_hash(version) == _source_hash(pair.code_version):
            pair.reload_to = None  # back to the code it runs (a change undone before its next ask)
            return
        if info.cls.risk != type(pair.strategy).risk:
            pair.report_error(self.clock.now_ms(), f"reload: {info.file}:{info.line}: the risk profile changed "
                              f"({type(pair.strategy).risk} -> {info.cls.risk}); restart to apply it; it keeps "
                              f"running {pair.code_version}", "strategy")
            outcome.kept += 1
            return
        pair.reload_to = (info.cls, version)
        outcome.changed += 1
        log.info("strategy reload pending", symbol=pair.symbol, strategy=name, exchange=pair.exchange,
                 version=version, running=pair.code_version, when="at its next ask")

    # --- reports (written by ``report.live``) --------------------------------------------

    def report_text(self, pair: Pair, now_ms: int | None = None) -> str:
        """The markdown report of ``pair``'s in-memory event window (statistics: its whole journal),
        stamped on the engine's clock like its events."""
        from livetrader.report.live import live_report_text

        now, clock_note = self._report_clock()
        journaled = pair.store.records() if pair.store is not None else None
        return live_report_text(pair.key, pair.window.events(), journaled, pair.settings.max_events,
                                now if now_ms is None else now_ms, clock_note)

    def write_report(self, pair: Pair, path: Path | None = None) -> Path:
        """Write ``pair``'s report atomically (default: under ``<data-dir>/reports/live``).

        Its file name and "Generated" stamp are on the engine's clock, the clock of the events
        inside: under ``--speed`` or ``--candles`` a simulated time, which the report says.
        """
        from livetrader.report.live import live_report_path, write_live_report

        now, clock_note = self._report_clock()
        halted = self.halts.report_note(pair)
        if halted is not None:
            clock_note = f"{clock_note} {halted}" if clock_note else halted
        journaled = pair.store.records() if pair.store is not None else None
        path = path if path is not None else live_report_path(self.data_dir, pair.key, now)
        return write_live_report(path, pair.key,
                                 pair.window.events(), journaled, pair.settings.max_events, now, clock_note)

    def _report_clock(self) -> tuple[int, str | None]:
        """A report's time on the engine's clock, and the note saying that clock is simulated."""
        from livetrader.report.live import simulated_clock_note

        now = self.clock.now_ms()
        if not self.clock.simulated:
            return now, None
        return now, simulated_clock_note(self.clock.speed, int(time.time() * 1000))

    def write_reports(self) -> list[Path]:
        """One report per pair; returns the files written."""
        return [self.write_report(pair) for pair in self.pairs]

    def flush_snapshots(self, timeout: float | None = None) -> bool:
        """Wait until every queued snapshot is on disk; False if ``timeout`` passed first."""
        return self.restorer.flush(timeout)

    async def close(self) -> None:
        """Write the queued snapshots, close every source and journal, and release the data directory."""
        self.metronome.pauses.resume()  # a sweep cut short by the stop leaves them paused
        for stream in self.streams.values():
            await stream.close()
        writer = self.restorer.writer
        await self.restorer.close(pair.store for pair in self.pairs if pair.store is not None)
        if writer is not None:
            self.metronome.pauses.remove(writer)
        for source in self.sources.values():
            try:
                await source.close()
            except Exception as exc:  # noqa: BLE001 - closing is best effort; report, do not mask the exit
                log.warning("closing source failed", error=describe(exc))

    def watchdog_deadline(self) -> float:
        """Real seconds within which a healthy loop completes a tick: two minutes, the strategy
        timeout and a grace for exchange calls. A loop stuck past it lets systemd's watchdog fire."""
        return (self.clock.real_seconds(2 * MINUTE_MS) + self.settings.strategy_timeout_seconds
                + self.config.engine.watchdog_grace_seconds)

    def summary(self) -> dict[str, Any]:
        """A one-line view for STATUS= and logs."""
        open_positions = sum(1 for p in self.pairs if p.state == "open")
        last = max((p.last_tick_at or 0 for p in self.pairs), default=0)
        return {"pairs": len(self.pairs), "open": open_positions, "last_tick_at": last}


@dataclass(slots=True)
class Reload:
    """What the last hot reload did: when (engine clock), how many pairs will take new code
    (``changed``) or keep theirs for a problem (``kept``), and each problem with file:line."""

    at: int
    changed: int = 0
    kept: int = 0
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """For the status file."""
        return {"at": self.at, "changed": self.changed, "kept": self.kept, "problems": self.problems}


def _source_hash(version: str | None) -> str | None:
    """The source part of a ``code_version`` (a ``touch`` alone changes nothing)."""
    return version.split("@", 1)[0] if version else None


async def _no_signal(self: Strategy, ctx: Any) -> None:
    return None


def _iso(ms: int) -> str:
    """Integer ms UTC as ``YYYY-mm-ddTHH:MMZ`` (what a log line shows a person)."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%MZ")
