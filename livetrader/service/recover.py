"""``livetrader recover``: inspect a data directory without starting any loop, and repair it.

It finds each pair's held signal and what its first tick would re-check (downtime
catch-up), transitions a crash interrupted, partial journal lines, stale temp files,
unreadable or invalid files, and a lock held by a live daemon. With ``dry_run`` it only
says what it would do; otherwise it does it (the same repairs a daemon makes on start).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livetrader.core.orders import pending_order, protective_stop
from livetrader.core.price import MINUTE_MS
from livetrader.errors import StoreWriteError
from livetrader.live.clock import saved_clock
from livetrader.store.commit import replay_commit_log
from livetrader.store.lock import is_locked, read_lock_holder
from livetrader.store.names import pair_stem
from livetrader.store.quarantine import WHY_SUFFIX, quarantine, quarantine_dir
from livetrader.store.state import StateDamaged, complete_snapshot, restore_pair, scan_pairs

#: Exit codes of ``livetrader recover``.
NOTHING_TO_DO, REPAIRS, NEEDS_A_PERSON, LOCKED = 0, 10, 20, 1


@dataclass(slots=True)
class PairFinding:
    """What recovery found for one pair."""

    symbol: str
    strategy: str
    exchange: str
    state: str = "idle"
    signal_id: str | None = None
    since: int | None = None
    catch_up_minutes: int = 0
    journal_records: int = 0
    #: The order its journal leaves unresolved (sandbox/live modes) and what the daemon will ask.
    open_order: str | None = None
    #: The open position's protective stop on the exchange as the journal last saw it.
    protective_stop: str | None = None
    #: Why the last reconciliation with the account degraded the pair (sandbox/live), if it did.
    unreconciled: str | None = None
    repairs: list[str] = field(default_factory=list)
    damage: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Findings:
    """Everything ``recover`` found; ``exit_code`` sums it up."""

    data_dir: Path
    dry_run: bool
    locked_by: dict[str, Any] | None = None
    temp_files: list[str] = field(default_factory=list)
    #: Committed records put back (or, in a dry run, to put back) into journals a crash shortened.
    commit_log: list[str] = field(default_factory=list)
    pairs: list[PairFinding] = field(default_factory=list)
    damage: list[str] = field(default_factory=list)
    #: Files this run moved into quarantine/ (their new paths), whatever found them damaged.
    quarantined: list[str] = field(default_factory=list)
    #: The halts in force (``livetrader halt``, a daily loss limit): what a start obeys, not a repair.
    halts: list[dict[str, Any]] = field(default_factory=list)
    #: Lines of the operator journal that were skipped: most likely a line a killed ``halt`` left
    #: unfinished (never acknowledged), so shown, not counted as damage.
    control_problems: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 nothing to do, 10 repairs needed (dry run) or made, 20 damage that needs a person, 1 locked."""
        if self.locked_by is not None and not self.dry_run:
            return LOCKED
        if self.damage or any(p.damage for p in self.pairs):
            return NEEDS_A_PERSON
        if self.temp_files or self.commit_log or any(p.repairs for p in self.pairs):
            return REPAIRS
        return NOTHING_TO_DO

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of ``--json``."""
        return {
            "data_dir": str(self.data_dir),
            "dry_run": self.dry_run,
            "exit_code": self.exit_code,
            "locked_by": self.locked_by,
            "temp_files": self.temp_files,
            "commit_log": self.commit_log,
            "damage": self.damage,
            "quarantined": self.quarantined,
            "halts": self.halts,
            "control_problems": self.control_problems,
            "pairs": [{name: getattr(p, name) for name in p.__slots__} for p in self.pairs],
        }


def _halts(data_dir: Path, findings: Findings) -> list[dict[str, Any]]:
    """The halts in force by the operator journal (its skipped lines go to ``control_problems``)."""
    from livetrader.core.halt import halts_in_force
    from livetrader.errors import StoreReadError
    from livetrader.store.control import read_control

    try:
        read = read_control(data_dir)
    except StoreReadError as exc:
        findings.damage.append(f"the operator journal cannot be read: {exc}")
        return []
    findings.control_problems = read.problems
    return [h.as_dict() for _, h in sorted(halts_in_force(read.records).items())]


def inspect(data_dir: Path, *, dry_run: bool, now_ms: int | None = None) -> Findings:
    """Inspect (and unless ``dry_run``, repair) ``data_dir``; the lock must be free to repair."""
    data_dir = Path(data_dir)
    findings = Findings(data_dir, dry_run)
    clock = saved_clock(data_dir)  # a --speed timeline runs ahead of the wall clock
    now = now_ms if now_ms is not None else (clock.now_ms() if clock else int(time.time() * 1000))
    if is_locked(data_dir):
        holder = read_lock_holder(data_dir)
        findings.locked_by = {"pid": holder.pid, "started": holder.started_iso} if holder else {"pid": None}
        if not dry_run:
            return findings
        dry_run = True
    findings.temp_files = sorted(str(p) for p in data_dir.rglob("*.tmp") if "quarantine" not in p.parts)
    findings.halts = _halts(data_dir, findings)
    lock = None
    quarantined_before = _quarantined(data_dir)
    if not dry_run:
        from livetrader.store.atomic import clean_temp_files
        from livetrader.store.lock import DataDirLock

        lock = DataDirLock(data_dir)
        lock.acquire()
        clean_temp_files(data_dir)
    try:
        # Before the pairs: a journal a crash shortened is read complete only once its lines are back.
        replayed = replay_commit_log(data_dir, repair=not dry_run)
        verb = "would put back" if dry_run else "put back"
        findings.commit_log = [*replayed.renamed,
                               *(f"{path.name}: {verb} {count} committed record(s) a crash took from the journal"
                                 for path, count in sorted(replayed.restored.items()))]
        findings.damage.extend(replayed.problems)
        keys, unnamed = scan_pairs(data_dir)
        if dry_run:  # a pair whose only records are in the commit log has no readable file yet
            keys = sorted(set(keys) | set(replayed.missing))
        for key in keys:
            # A dry run wrote nothing back: read each journal with the lines it would have put back.
            put_back = replayed.missing.get(key) if dry_run else None
            findings.pairs.append(_inspect_pair(data_dir, key, dry_run, now, put_back))
        _attach_reconciliation(data_dir, findings.pairs)
        # After the pairs: a file named like a pair is that pair's to judge (and quarantine).
        stems = {pair_stem(key) for key in keys}
        for path, why in unnamed:
            if path.name.removesuffix(".jsonl").removesuffix(".json") not in stems:
                findings.damage.append(_set_aside(data_dir, path, why, dry_run))
    finally:
        if lock is not None:
            lock.release()
        # What this run really moved (pairs, the commit log, files naming no pair): the report
        # says only what was done.
        findings.quarantined = sorted(str(quarantine_dir(data_dir) / name)
                                      for name in _quarantined(data_dir) - quarantined_before)
    return findings


def _quarantined(data_dir: Path) -> set[str]:
    """The names of the quarantined files (not their notes)."""
    try:
        return {p.name for p in quarantine_dir(data_dir).iterdir() if not p.name.endswith(WHY_SUFFIX)}
    except FileNotFoundError:
        return set()


def _set_aside(data_dir: Path, path: Path, why: str, dry_run: bool) -> str:
    """Quarantine a file that names no pair (no daemon reads it); the damage line saying so."""
    problem = f"{path}: {why}; it names no pair, so no daemon reads it"
    if dry_run:
        return f"{problem}; recover would move it to {quarantine_dir(data_dir)}/"
    try:
        moved = quarantine(data_dir, path, f"{why}; it names no pair")
    except StoreWriteError as exc:
        return f"{problem}; it could not be moved to quarantine: {exc}"
    return f"{problem}; moved to {moved} (nothing deleted)"


def _attach_reconciliation(data_dir: Path, pairs: list[PairFinding]) -> None:
    """Say, per pair, what the last reconciliation with the account found against it (if the
    daemon ran one): the figures of a position the account did not hold."""
    from livetrader.core.format import format_time
    from livetrader.store.atomic import read_json
    from livetrader.store.layout import RECONCILIATION_FILE

    try:
        doc = read_json(data_dir / RECONCILIATION_FILE)
    except Exception:  # noqa: BLE001 - none yet (paper mode), or unreadable: nothing to say
        return
    if not isinstance(doc, dict):
        return
    by_key = {(p.symbol, p.strategy, p.exchange): p for p in pairs}
    for entry in doc.get("degraded") or []:
        if not isinstance(entry, dict):
            continue
        finding = by_key.get((str(entry.get("symbol")), str(entry.get("strategy")), str(entry.get("exchange"))))
        if finding is not None and finding.signal_id == entry.get("signal_id"):
            at = doc.get("at")
            when = format_time(at) if isinstance(at, int) else "?"
            finding.unreconciled = (f"degraded by the reconciliation of {when}: {entry.get('why')}; settle it "
                                    f"with `livetrader positions adopt|forget {entry.get('signal_id')}`")


def _inspect_pair(data_dir: Path, key: tuple[str, str, str], dry_run: bool, now: int,
                  put_back: list[dict[str, Any]] | None = None) -> PairFinding:
    finding = PairFinding(*key)
    try:
        restored = restore_pair(data_dir, key, repair=not dry_run, put_back=put_back)
    except StateDamaged as exc:
        finding.damage.append(str(exc))
        return finding
    finding.repairs.extend(restored.notes)
    finding.journal_records = len(restored.records)
    row = restored.row
    if row is not None:
        finding.state = "open" if row.pending_at is not None else "scheduled"
        finding.signal_id = row.id
        finding.since = row.pending_at if row.pending_at is not None else row.scheduled_at
        limit = row.minutes if row.pending_at is not None else 120
        finding.catch_up_minutes = max(0, min((now - finding.since) // MINUTE_MS, limit))
    order = pending_order(restored.records)
    if order is not None:
        if order.final and order.leg == "entry" and order.filled > 0 and order.average is None:
            finding.open_order = (f"entry {order.client_id} (attempt {order.attempt}) filled {order.filled:g} at a "
                                  "price the exchange did not say: the daemon asks for it again at start, and opens "
                                  "the position at the decided price if it never says")
        elif order.final:
            finding.open_order = (f"{order.leg} {order.client_id} (attempt {order.attempt}) {order.status}, its "
                                  f"{'opened' if order.leg == 'entry' else 'closed'} not journaled yet: the daemon "
                                  "completes it at start, asking the exchange nothing")
        else:
            finding.open_order = (f"{order.leg} {order.client_id} (attempt {order.attempt}, {order.side} "
                                  f"{order.amount:g}) {order.status}: the daemon asks the exchange for it by this "
                                  "client id before anything else, and never sends it again")
        if finding.state == "idle":
            finding.state = "entering" if order.leg == "entry" else "exiting"
            finding.signal_id = order.signal_id
            finding.since = order.intent_at
    if row is not None and row.pending_at is not None:
        stop = protective_stop(restored.records, row.id)
        if stop is not None:
            finding.protective_stop = (f"{stop.client_id} (attempt {stop.attempt}, sell {stop.amount:g} at "
                                       f"{stop.stop_price:g}) {stop.status} when last asked: the daemon asks the "
                                       "exchange for it at start; found filled, the position closes stop_loss at "
                                       "its fill")
    if restored.interrupted and not dry_run:
        complete_snapshot(data_dir, restored)
    return finding
