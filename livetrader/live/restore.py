"""Bringing pairs back from the data directory (docs/behaviour.md §9): taking the directory,
replaying the commit log into the pair journals, restoring each pair, counting the open
positions in their risk profiles, and reading the pairs on disk that this process does not run.

The file part (reading, checking and repairing one pair's journal and snapshot) is
``store.state.restore_pair``; this module puts what it read into a live ``Pair`` and into
the risk profiles, and owns the storage the pairs write through while they run (the commit
log, the background writer and the directory's lock), closed by :meth:`Restorer.close`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from livetrader.core.price import MINUTE_MS
from livetrader.errors import StoreError, StoreWriteError
from livetrader.logs import get_logger
from livetrader.store.layout import Key
from livetrader.store.names import pair_stem
from livetrader.store.state import StateDamaged
from livetrader.strategy.risk import OpenPosition, RiskProfile
from livetrader.strategy.tracing import describe

if TYPE_CHECKING:
    from livetrader.live.pair import Pair, PairStore
    from livetrader.store.commit import CommitLog
    from livetrader.store.lock import DataDirLock
    from livetrader.store.writer import BackgroundWriter

log = get_logger(__name__)


class ModeChanged(StateDamaged):
    """A pair holding a position, a scheduled signal or an order made in another mode than this
    run's (docs/behaviour.md §12): it does not start, the others do."""


#: "restored" lines logged at start; beyond, one line says more follow (10,000 lines help nobody).
RESTORED_LOG_LINES = 100
#: Longest wait at exit for queued snapshots (10,000 need about 5 s on a slow disk).
SNAPSHOT_FLUSH_SECONDS = 60.0


class Restorer:
    """Restores the pairs of one data directory, and holds the storage they write through.

    One per engine. ``open`` first (lock, temp files, commit log replayed), then ``restore``
    each pair and ``watch_risk`` its profile, then ``restore_absent_pairs`` once; ``close``
    at exit.
    """

    def __init__(self, data_dir: Path, profiles: dict[str, RiskProfile]) -> None:
        self.data_dir = data_dir
        self.profiles = profiles
        self.lock: DataDirLock | None = None
        # The commit log and the thread flushing journals and writing snapshots behind the loop
        # (opened before the first pair is restored, after the commit log is replayed).
        self.commits: CommitLog | None = None
        self.writer: BackgroundWriter | None = None
        # Pairs restored holding a signal (each logged, up to RESTORED_LOG_LINES).
        self.restored = 0
        # Pairs on disk holding a signal that this process does not run (found once, at start).
        self.not_running: list[dict[str, Any]] = []
        self.absent_pairs_read = False
        # Per risk profile: the signal ids its stored file listed (checked against the restored ones).
        self._risk_stored: dict[str, set[Any]] = {}

    # --- opening --------------------------------------------------------------------------

    def open(self, lock: DataDirLock | None = None) -> BackgroundWriter | None:
        """Take the data directory: lock it for this process, clean temp files left by a crash,
        and put back into the pair journals the committed lines a power cut took from them
        (``_open_storage``), so that every pair is restored from a complete journal.

        ``lock``: the directory's lock, already taken (``take_data_dir``). Raises
        ``DataDirLocked`` naming the process that holds it. Returns the background writer
        opened now; None when the directory was open already.
        """
        if self.lock is not None:
            return None
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
        return self._open_storage()

    def _open_storage(self) -> BackgroundWriter:
        """Replay the commit log into the pair journals (a crash may have taken lines from them),
        then open it afresh with the background writer. Before any pair is restored: a pair
        restored from a journal still missing its committed lines would forget them (and open
        a second position while the first is open)."""
        from livetrader.store.commit import CommitLog, commit_log_path, replay_commit_log
        from livetrader.store.writer import BackgroundWriter

        replayed = replay_commit_log(self.data_dir, repair=True)
        for note in replayed.notes:
            log.warning("recovery", note=note)
        for problem in replayed.problems:
            log.error("recovery: the commit log needs a look", problem=problem)
        self.commits = CommitLog(commit_log_path(self.data_dir))
        self.writer = BackgroundWriter(self.commits)
        return self.writer

    # --- restoring ------------------------------------------------------------------------

    def holds_signal(self, key: Key) -> bool:
        """True when the pair ``key`` holds a signal on disk (read only, nothing repaired)."""
        from livetrader.store.state import restore_pair

        return restore_pair(self.data_dir, key, repair=False).row is not None

    def restore(self, pair: Pair, risk_name: str | None, now: int | None = None) -> None:
        """Put ``pair``'s durable state back into it, and give it its store.

        ``open()`` replayed the commit log already: every journal read here is complete.
        Raises ``StateDamaged`` when the pair's files are damaged (they are quarantined first).
        ``now``: the engine's clock, for the errors said (a damaged strategy state).
        """
        from livetrader.core.interval import bucket
        from livetrader.store.state import FilePairStore, restore_pair

        restored = restore_pair(self.data_dir, pair.key, repair=True)
        for note in restored.notes:
            log.warning("recovery", symbol=pair.symbol, strategy=pair.strategy_name, note=note)
        pair.row = restored.row
        pair.last_opened_id = restored.last_opened_id
        self._restore_orders(pair, restored.records)
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
        pnls = [r.get("pnl_percentage") or 0.0 for r in closed]
        pair.won_trades = sum(pnl > 0 for pnl in pnls)
        pair.lost_trades = sum(pnl < 0 for pnl in pnls)
        pair.realised_pnl = sum(pnls)
        store = FilePairStore(self.data_dir, pair.key, len(restored.records), risk_name, restored.paths,
                              self.writer)
        pair.store = store
        if restored.interrupted:
            store.snapshot(pair.snapshot(), now=True)  # completes an interrupted transition
        elif not restored.snapshot_found and not store.path.exists():
            store.snapshot(pair.snapshot())  # a new pair's first snapshot
        if pair.checkpoints:
            self._restore_strategy(pair, now)
        if pair.row is not None:
            self.restored += 1
            if self.restored <= RESTORED_LOG_LINES:
                log.info("restored", symbol=pair.symbol, strategy=pair.strategy_name, signal_id=pair.row.id,
                         state=pair.state)
            elif self.restored == RESTORED_LOG_LINES + 1:
                log.info("more pairs restored; `livetrader status` lists them all", shown=RESTORED_LOG_LINES)

    def _restore_strategy(self, pair: Pair, now: int | None) -> None:
        """Give the strategy its saved state (``store.checkpoint``), if it has any: a damaged file
        is quarantined and the strategy starts without ``restore`` being called (said in the
        log and in the pair's errors, at ``now`` on the engine's clock)."""
        from livetrader.store.checkpoint import read_checkpoint

        state, note = read_checkpoint(self.data_dir, pair.key, repair=True)
        now = now if now is not None else (pair.last_minute or 0)
        if note is not None:
            log.warning("recovery", symbol=pair.symbol, strategy=pair.strategy_name, note=note)
            pair.report_error(now, note, "storage")
        if state is not None and pair.restore_strategy(state, now):
            log.info("strategy state restored", symbol=pair.symbol, strategy=pair.strategy_name,
                     exchange=pair.exchange)

    def _restore_orders(self, pair: Pair, records: list[dict[str, Any]]) -> None:
        """Give the pair's executor its orders back, after checking the pair's journal was written
        in the mode it now runs in (an open position is never carried on in another mode).

        Raises ``ModeChanged`` (this pair does not start, the others do) on a mode change while
        the pair holds a signal or an order.
        """
        from livetrader.core.orders import pending_order

        mode = pair.executor.mode if pair.executor is not None else "paper"
        recorded = next((str(r["mode"]) for r in reversed(records) if "mode" in r), "paper")
        holds = pair.row is not None or pending_order(records) is not None
        if holds and recorded != mode:
            what = "an open position" if pair.row is not None and pair.row.pending_at is not None else \
                "an order" if pair.row is None else "a scheduled signal"
            raise ModeChanged(
                f"{pair.symbol}/{pair.strategy_name} on {pair.exchange} holds {what} made in {recorded} mode, and "
                f"this run is in {mode} mode: it is not carried on in another mode. Run it in {recorded} mode until "
                f"it closes, or close it yourself and move the pair's journal and snapshot aside")
        if pair.executor is not None:
            pair.executor.restore(records, pair.row)

    def watch_risk(self, profile: RiskProfile, pair: Pair) -> None:
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
        executor = pair.executor
        if executor is not None and executor.order is not None and executor.order.leg == "entry" \
                and executor.row is not None:
            # An entry still out counts as a position, as it did before the restart (Pair._carry_out).
            profile.positions[executor.row.id] = OpenPosition.of(executor.row)
            changed = True
        if first:
            stored = {p.get("signal_id") for p in load_risk(self.data_dir, profile.name)}
            self._risk_stored[profile.name] = stored

            def persist(p: RiskProfile) -> None:
                save_risk(self.data_dir, p.name, [position_dict(x) for x in p.positions.values()])

            profile.on_change = persist
        if changed and profile.on_change is not None:
            profile.on_change(profile)

    def restore_absent_pairs(self, running: Iterable[Key]) -> None:
        """Once every pair is restored: the pairs on disk that are not in ``running``.

        Each is read as a loop would read it (a transition a crash left out of its snapshot is
        completed from the journal, nothing else is changed), its open position counts in its
        risk profile, and those holding a signal are listed in ``not_running``: reported, never
        dropped.
        """
        from livetrader.store.state import StateDamaged, complete_snapshot, keys_on_disk, restore_pair

        self.absent_pairs_read, self.not_running = True, []
        keys, unnamed = keys_on_disk(self.data_dir, skip_stems={pair_stem(key) for key in running})
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

    def check_risk_reconciled(self) -> None:
        """Log where a stored risk file disagreed with the restored signals (they won)."""
        for name, stored in self._risk_stored.items():
            restored = set(self.profiles[name].positions)
            if stored != restored:
                log.warning("risk positions reconciled with the restored signals", profile=name,
                            stored=sorted(str(s) for s in stored), restored=sorted(restored))

    # --- closing --------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued snapshot is on disk; False if ``timeout`` passed first."""
        return self.writer is None or self.writer.flush(timeout)

    async def close(self, stores: Iterable[PairStore]) -> None:
        """Write the queued snapshots, close ``stores`` (the pairs' journals) and the commit log,
        and release the data directory."""
        if self.writer is not None:
            # In a thread: the loop stays responsive (signals, the watchdog) while the disk catches up.
            if not await asyncio.to_thread(self.writer.close, SNAPSHOT_FLUSH_SECONDS):
                log.warning("snapshots not all written at exit; the journal holds them and the next start "
                            "completes them", pending=self.writer.pending)
            self.writer = None
        for store in stores:
            store.close()
        if self.commits is not None:
            self.commits.close()
            self.commits = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None


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
