"""Where every durable file of a data directory lives: one place for the paths.

    journal/<pair stem>.jsonl        every transition of a pair, append-only (``store.journal``)
    journal/commit.log               the group commit's log (``store.commit``)
    state/pairs/<pair stem>.json     a pair's snapshot (``store.state``)
    state/risk/<profile>.json        a risk profile's open positions
    state/clock.json                 the simulated timeline of a ``--speed`` run
    state/reconciliation.json        the last reconciliation's degraded positions (sandbox/live)

A pair's stem encodes (symbol, strategy, exchange) so that no two pairs share a file
(``store.names``); files found under the earlier, lossy names are adopted (``adopt_legacy``).
"""

from __future__ import annotations

import functools
import os
import stat
from pathlib import Path
from typing import Any

from livetrader.errors import StoreReadError, StoreWriteError
from livetrader.store import disk
from livetrader.store.atomic import as_path, describe_os_error, fsync_dir, read_json
from livetrader.store.journal import JOURNAL_DIR, JOURNAL_SUFFIX, read_journal
from livetrader.store.names import legacy_pair_stem, pair_stem, stem_of

PAIRS_DIR = Path("state") / "pairs"
RISK_DIR = Path("state") / "risk"
CLOCK_FILE = Path("state") / "clock.json"
#: The last reconciliation's discrepancies (``live.reconcile``): read by ``livetrader recover``.
RECONCILIATION_FILE = Path("state") / "reconciliation.json"

Key = tuple[str, str, str]


def pair_paths(data_dir: Path, key: Key) -> tuple[Path, Path]:
    """The pair's journal and snapshot paths (the file names made once)."""
    stem = pair_stem(key)
    journals, snapshots = _directories(as_path(data_dir))
    return journals / f"{stem}{JOURNAL_SUFFIX}", snapshots / f"{stem}.json"


@functools.lru_cache(maxsize=8)
def _directories(data_dir: Path) -> tuple[Path, Path]:
    return data_dir / JOURNAL_DIR, data_dir / PAIRS_DIR


def snapshot_path(data_dir: Path, key: Key) -> Path:
    """Where the pair's snapshot lives."""
    return Path(data_dir) / PAIRS_DIR / f"{pair_stem(key)}.json"


def risk_path(data_dir: Path, profile: str) -> Path:
    """Where a risk profile's open positions live (the name encoded like a pair's, ``stem_of``)."""
    return Path(data_dir) / RISK_DIR / f"{stem_of(profile)}.json"


def adopt_legacy(data_dir: Path, key: Key, which: str, *, repair: bool = True) -> tuple[Path, str | None]:
    """The pair's ``which`` file (``"journal"`` or ``"snapshot"``), found under its earlier name
    when none exists under its own.

    Call it only when the file under the pair's own name is missing (new pairs are rare, so
    restoring stays a single read per file). Returns the path to read and a note: when the file
    under the earlier name (``legacy_pair_stem``) names this pair (a journal's first record, or,
    for a journal without records, the snapshot of the same earlier name; a snapshot's fields),
    it is renamed to the pair's own name and the directory fsync'ed; without ``repair`` nothing
    moves, and the earlier path is returned to be read. A file that names another pair is left
    for that pair. The journal moves before the snapshot, so a crash between leaves the snapshot
    to be adopted at the next start.
    """
    data_dir = as_path(data_dir)
    journal, snapshot = pair_paths(data_dir, key)
    path = journal if which == "journal" else snapshot
    try:
        old_stem = legacy_pair_stem(key)
    except ValueError:
        return path, None
    if old_stem == path.name.removesuffix(JOURNAL_SUFFIX if which == "journal" else ".json"):
        return path, None  # the common case: the name did not change
    old_snapshot = snapshot.with_name(old_stem + ".json")
    old = journal.with_name(old_stem + JOURNAL_SUFFIX) if which == "journal" else old_snapshot
    try:
        if not stat.S_ISREG(os.lstat(old).st_mode):
            return path, None
    except OSError:
        return path, None
    if which == "journal":
        read = read_journal(old)
        owner = _record_key(read.records[0]) if read.records else None
        if not read.records and not read.problems:
            owner = _snapshot_key(old_snapshot)  # an empty journal is the pair's whose snapshot is beside it
    else:
        owner = _snapshot_key(old)
    if owner != key:
        return path, None
    if not repair:
        return old, f"would rename {old.name} to {path.name} (file names now encode each pair uniquely)"
    try:
        disk.DISK.replace(old, path)
        fsync_dir(path.parent)
    except OSError as exc:
        raise StoreWriteError(path, f"cannot rename {old} to its new name: {describe_os_error(exc)}") from exc
    return path, f"renamed {old.name} to {path.name} (file names now encode each pair uniquely)"


def _record_key(record: dict[str, Any]) -> Key | None:
    symbol, strategy, exchange = record.get("symbol"), record.get("strategy"), record.get("exchange")
    if isinstance(symbol, str) and isinstance(strategy, str) and isinstance(exchange, str):
        return symbol, strategy, exchange
    return None


def _snapshot_key(path: Path) -> Key | None:
    try:
        data = read_json(path)
    except (FileNotFoundError, StoreReadError):
        return None
    return _record_key(data) if isinstance(data, dict) else None
