"""The live engine: every pair's loop, supervised, on one clock, in one process (docs/behaviour.md §8).

Each pair ticks right after every minute boundary of the clock. A tick that fails is
reported and the loop carries on; a loop that crashes is restarted with exponential
backoff, and parked after too many crashes in a row, without the other pairs noticing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from livetrader.config import Config
from livetrader.core.machine import Rules
from livetrader.core.pnl import Costs
from livetrader.core.price import MINUTE_MS
from livetrader.errors import StoreError, StoreWriteError, UsageError
from livetrader.events import BUS, DoneEvent, ErrorEvent, EventBus
from livetrader.live.clock import Clock
from livetrader.live.collector import SweepCollector
from livetrader.live.metronome import Express, Metronome
from livetrader.live.pair import Pair, PairSettings
from livetrader.market.feed import CandleFeed
from livetrader.market.source import CandleSource
from livetrader.market.sources import open_source, register_secrets
from livetrader.redaction import redact
from livetrader.store.commit import CommitLog
from livetrader.store.state import pair_stem
from livetrader.store.writer import BackgroundWriter
from livetrader.strategy.base import Strategy, StrategyRegistry, instantiate
from livetrader.strategy.risk import OpenPosition, RiskProfile, build_profiles
from livetrader.strategy.tracing import describe

if TYPE_CHECKING:
    from livetrader.store.lock import DataDirLock

log = structlog.get_logger("livetrader.live.engine")


#: "restored" lines logged at start; beyond, one line says more follow (10,000 lines help nobody).
RESTORED_LOG_LINES = 100
#: Longest wait at exit for queued snapshots (10,000 need about 5 s on a slow disk).
SNAPSHOT_FLUSH_SECONDS = 60.0


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
    rules = Rules(Costs(e.fee_percent, e.slippage_percent, e.cost), e.schedule_timeout_minutes)
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
        self.profiles: dict[str, RiskProfile] = build_profiles(config.risk_tables())
        self.pairs: list[Pair] = []
        self.keys: set[tuple[str, str, str]] = set()
        self._risk_stored: dict[str, set[Any]] = {}
        self.lock: Any = None
        # The commit log and the thread flushing journals and writing snapshots behind the loop
        # (opened with the first pair restored, after the commit log is replayed).
        self.commits: CommitLog | None = None
        self.snapshots: BackgroundWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.metronome = Metronome([SweepCollector(), bus], self._next_wait, lambda: self.clock.now_ms())
        #: Let the minute boundaries tick pairs in place when nothing needs awaiting
        #: (``Pair.tick_in_place``); off, every tick wakes its pair's task (as tests compare).
        self.ticks_in_place = True
        # Pairs restored holding a signal (each logged, up to RESTORED_LOG_LINES).
        self.restored = 0
        # Pairs on disk holding a signal that this process does not run (found once, at start).
        self.not_running: list[dict[str, Any]] = []
        self.absent_pairs_read = False
        self.started_at = self.clock.now_ms()
        # The candle files whose end was logged: one line per file, however many pairs replay it.
        self.files_ended: set[str] = set()

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
        """Take the data directory: lock it for this process, clean temp files left by a crash,
        and put back into the pair journals the committed lines a power cut took from them
        (``_open_storage``), so that every pair is restored from a complete journal.

        ``lock``: the directory's lock, already taken (``take_data_dir``). Raises
        ``DataDirLocked`` naming the process that holds it.
        """
        if self.lock is not None:
            return
        from livetrader.store.atomic import clean_temp_files

        lock = lock if lock is not None else take_data_dir(self.data_dir)
        for folder in ("journal", "state", "state/pairs", "state/risk", "reports", "quarantine"):
            if (self.data_dir / folder).is_symlink():  # files are opened O_NOFOLLOW; their folders must be real
                lock.release()
                raise StoreWriteError(self.data_dir / folder, "a symbolic link, not a folder: the daemon never "
                                      "writes through one; move it aside (or point --data-dir at the real place)")
        self.lock = lock
        for path in clean_temp_files(self.data_dir):
            log.warning("removed a temp file left by a crash", path=str(path))
        self._open_storage()

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
        from livetrader.store.state import restore_pair

        exchange = exchange or self.config.exchange
        resolved = self.source(exchange).resolve_symbol(symbol)
        self.open()
        if restore_pair(self.data_dir, (resolved, strategy, exchange), repair=False).row is None:
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
        pair = Pair(resolved, instantiate(cls), exchange, source, settings=self.settings, risk=risk, bus=self.bus)
        self.open()
        self._restore(pair, cls.risk)
        self.pairs.append(pair)
        self.keys.add(pair.key)
        if risk is not None:
            self._watch_risk(risk, pair)
        return pair

    def restore_absent_pairs(self) -> None:
        """Once every pair is added: the pairs on disk that this process does not run.

        Each is read as a loop would read it (a transition a crash left out of its snapshot is
        completed from the journal, nothing else is changed), its open position counts in its
        risk profile, and those holding a signal are listed in ``not_running``: reported, never
        dropped.
        """
        from livetrader.store.state import StateDamaged, complete_snapshot, keys_on_disk, restore_pair

        self.absent_pairs_read, self.not_running = True, []
        keys, unnamed = keys_on_disk(self.data_dir, skip_stems={pair_stem(key) for key in self.keys})
        for problem in unnamed:  # `livetrader recover` reports these too
            log.warning("a file of a pair not running cannot be read", problem=problem)
        changed: dict[str, RiskProfile] = {}
        for key in keys:
            try:
                restored = restore_pair(self.data_dir, key, repair=False)
                if restored.interrupted:
                    complete_snapshot(self.data_dir, restored)
            except (StateDamaged, StoreError) as exc:
                log.warning("cannot read the state of a pair not running; `livetrader recover` shows it",
                            symbol=key[0], strategy=key[1], exchange=key[2], error=describe(exc))
                continue
            row = restored.row
            if row is None:
                continue
            self.not_running.append({"symbol": key[0], "strategy": key[1], "exchange": key[2], "signal_id": row.id,
                                     "state": "open" if row.pending_at is not None else "scheduled"})
            profile = self.profiles.get(restored.risk) if restored.risk else None
            if profile is not None and row.pending_at is not None and row.id not in profile.positions:
                profile.positions[row.id] = OpenPosition.of(row)
                changed[profile.name] = profile
        for profile in changed.values():
            if profile.on_change is not None:
                profile.on_change(profile)
        self.check_risk_reconciled()

    def _open_storage(self) -> None:
        """Replay the commit log into the pair journals (a crash may have taken lines from them),
        then open it afresh with the background writer. Before any pair is restored: a pair
        restored from a journal still missing its committed lines would forget them (and open
        a second position while the first is open)."""
        from livetrader.store.commit import CommitLog, commit_log_path, replay_commit_log

        replayed = replay_commit_log(self.data_dir, repair=True)
        for note in replayed.notes:
            log.warning("recovery", note=note)
        for problem in replayed.problems:
            log.error("recovery: the commit log needs a look", problem=problem)
        self.commits = CommitLog(commit_log_path(self.data_dir))
        self.snapshots = BackgroundWriter(self.commits)
        self.metronome.quiet.append(self.snapshots)

    def _restore(self, pair: Pair, risk_name: str | None) -> None:
        # ``open()`` replayed the commit log already: every journal read here is complete.
        from livetrader.core.interval import bucket
        from livetrader.store.state import FilePairStore, restore_pair

        restored = restore_pair(self.data_dir, pair.key, repair=True)
        for note in restored.notes:
            log.warning("recovery", symbol=pair.symbol, strategy=pair.strategy_name, note=note)
        pair.row = restored.row
        pair.last_opened_id = restored.last_opened_id
        if restored.last_asked_at is not None:
            pair.last_bucket = bucket(restored.last_asked_at, pair.interval_ms)
        pair.state = "idle" if pair.row is None else ("open" if pair.row.pending_at is not None else "scheduled")
        for record in restored.records[-pair.settings.max_events:]:
            pair.window.add(record)
        if restored.records:
            # No tick at or before the last journaled minute, even on a clock behind the journal.
            last_at = max(int(r["at"]) for r in restored.records)
            pair.last_minute = last_at - last_at % MINUTE_MS
        pair.signal_ids = {str(r["signal_id"]) for r in restored.records}
        closed = [r for r in restored.records if r["event"] == "closed"]
        pair.closed_trades = len(closed)
        pair.realised_pnl = sum(r.get("pnl_percentage") or 0.0 for r in closed)
        pair.store = FilePairStore(self.data_dir, pair.key, len(restored.records), risk_name, restored.paths,
                                   self.snapshots)
        if restored.interrupted:
            pair.store.snapshot(pair.snapshot(), now=True)  # completes an interrupted transition
        elif not pair.store.path.exists():
            pair.store.snapshot(pair.snapshot())  # a new pair's first snapshot
        if pair.row is not None:
            self.restored += 1
            if self.restored <= RESTORED_LOG_LINES:
                log.info("restored", symbol=pair.symbol, strategy=pair.strategy_name, signal_id=pair.row.id,
                         state=pair.state)
            elif self.restored == RESTORED_LOG_LINES + 1:
                log.info("more pairs restored; `livetrader status` lists them all", shown=RESTORED_LOG_LINES)

    def _watch_risk(self, profile: RiskProfile, pair: Pair) -> None:
        """Count ``pair``'s restored position in its profile, and persist the profile on every change.

        The first pair of a profile reads the stored file, to be checked against the restored
        signals, which win (positions of pairs not run here are added by
        ``restore_absent_pairs``). Later pairs only add their own: restoring N pairs stays O(N).
        """
        from livetrader.store.state import load_risk, save_risk
        from livetrader.strategy.risk import position_dict

        first = profile.on_change is None
        changed = first
        if pair.row is not None and pair.row.pending_at is not None:
            profile.positions[pair.row.id] = OpenPosition.of(pair.row)
            changed = True
        if first:
            stored = {p.get("signal_id") for p in load_risk(self.data_dir, profile.name)}
            self._risk_stored[profile.name] = stored

            def persist(p: RiskProfile) -> None:
                save_risk(self.data_dir, p.name, [position_dict(x) for x in p.positions.values()])

            profile.on_change = persist
        if changed and profile.on_change is not None:
            profile.on_change(profile)

    def check_risk_reconciled(self) -> None:
        """Log where a stored risk file disagreed with the restored signals (they won)."""
        for name, stored in self._risk_stored.items():
            restored = set(self.profiles[name].positions)
            if stored != restored:
                log.warning("risk positions reconciled with the restored signals", profile=name,
                            stored=sorted(str(s) for s in stored), restored=sorted(restored))

    # --- running --------------------------------------------------------------------------

    async def run(self, pairs: Iterable[Pair] | None = None, on_ready: Callable[[], None] | None = None) -> None:
        """Run the loops of ``pairs`` (default: all) until ``stop()``, then finish each gracefully.

        Every pair first ticks once, which applies its downtime catch-up; ``on_ready`` is
        called when all have (systemd's READY=1 means "recovered and caught up").
        """
        chosen = list(pairs) if pairs is not None else list(self.pairs)
        await asyncio.gather(*(self.first_tick(p) for p in chosen))
        if on_ready is not None:
            on_ready()
        self.tasks = [asyncio.create_task(self.run_pair(p), name=f"pair {p.key}") for p in chosen]
        results = await asyncio.gather(*self.tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result

    def abort(self) -> None:
        """Cancel ticks still running after a graceful stop took too long.

        Safe at any await: a transition is journaled and snapshotted without awaiting.
        """
        for task in self.tasks:
            if not task.done():
                log.warning("cancelling a tick that outlasted the graceful stop", task=task.get_name())
                task.cancel()

    async def first_tick(self, pair: Pair) -> None:
        """The catch-up tick before the loops start; a crash here is left to the supervisor."""
        try:
            await pair.tick(self.clock.now_ms())
        except Exception as exc:
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
            except Exception as exc:
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
            except Exception as exc:
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
                if swept is not None:
                    self.metronome.ticked(swept)
                    swept = None
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
        pair.wake = self.metronome.wait(due_ms, real, express)
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

    # --- reports --------------------------------------------------------------------------

    def report_text(self, pair: Pair, now_ms: int | None = None) -> str:
        """The markdown report of ``pair``'s in-memory event window."""
        from livetrader.report.markdown import build_report, stats_for

        records = pair.window.events()
        title = f"Live report: {pair.strategy_name} on {pair.symbol} ({pair.exchange})"
        note = f"Events: the last {pair.settings.max_events} kept in memory (idle and active ones included)."
        if pair.store is not None:
            from livetrader.report.markdown import closed_trades

            # The statistics cover the whole history, as `livetrader report` does.
            journaled = self._journaled(pair)
            note += f" Statistics: all {sum(1 for r in journaled if r['event'] == 'closed')} closed trades " \
                    "in the journal."
            return build_report(title, records, stats=stats_for(journaled), now_ms=now_ms, note=note,
                                trades=closed_trades(journaled))
        return build_report(title, records, stats=stats_for(records), now_ms=now_ms, note=note)

    def write_report(self, pair: Pair, path: Path | None = None) -> Path:
        """Write ``pair``'s report atomically (default: under ``<data-dir>/reports/live``)."""
        from livetrader.report.markdown import report_filename, write_equity_png
        from livetrader.store.atomic import write_atomic

        now = int(time.time() * 1000)
        if path is None:
            path = self.data_dir / "reports" / "live" / report_filename(*pair.key, now)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, self.report_text(pair, now).encode())
        write_equity_png(path.with_suffix(".png"), self._journaled(pair))  # only with livetrader[charts]
        return path

    def _journaled(self, pair: Pair) -> list[dict[str, Any]]:
        from livetrader.store.journal import read_journal

        return read_journal(pair.store.journal.path).records if pair.store is not None else pair.window.events()

    def write_reports(self) -> list[Path]:
        """One report per pair; returns the files written."""
        return [self.write_report(pair) for pair in self.pairs]

    def flush_snapshots(self, timeout: float | None = None) -> bool:
        """Wait until every queued snapshot is on disk; False if ``timeout`` passed first."""
        return self.snapshots is None or self.snapshots.flush(timeout)

    async def close(self) -> None:
        """Write the queued snapshots, close every source and journal, and release the data directory."""
        self.metronome.resume_quiet()  # a sweep cut short by the stop leaves them paused
        if self.snapshots is not None:
            # In a thread: the loop stays responsive (signals, the watchdog) while the disk catches up.
            if not await asyncio.to_thread(self.snapshots.close, SNAPSHOT_FLUSH_SECONDS):
                log.warning("snapshots not all written at exit; the journal holds them and the next start "
                            "completes them", pending=self.snapshots.pending)
            self.metronome.quiet.remove(self.snapshots)
            self.snapshots = None
        for pair in self.pairs:
            if pair.store is not None:
                pair.store.close()
        if self.commits is not None:
            self.commits.close()
            self.commits = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        for source in self.sources.values():
            try:
                await source.close()
            except Exception as exc:  # closing is best effort; report, do not mask the exit
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


def take_data_dir(data_dir: Path) -> DataDirLock:
    """Lock ``data_dir`` for this process (``DataDirLocked`` names the holder), and warn when the
    last process that held it never recorded a clean stop."""
    from livetrader.store.lock import DataDirLock

    lock = DataDirLock(data_dir)
    lock.acquire()
    last = lock.previous
    if last is not None:
        log.warning("the last run ended abnormally", pid=last.pid, started_at=last.started_iso,
                    hostname=last.hostname, why="no clean stop was recorded (killed, power cut, os._exit or a "
                    "crash); its state is recovered now")
    return lock


async def _no_signal(self: Strategy, ctx: Any) -> None:
    return None


def _iso(ms: int) -> str:
    """Integer ms UTC as ``YYYY-mm-ddTHH:MMZ`` (what a log line shows a person)."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%MZ")
