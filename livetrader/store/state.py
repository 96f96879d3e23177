"""A pair's durable state: the journal (write-ahead log), the snapshot, and restoring both.

Layout under the data directory::

    journal/<symbol>_<strategy>_<exchange>.jsonl   every transition, fsync'ed, append-only
    state/pairs/<symbol>_<strategy>_<exchange>.json the pair's snapshot (atomic rewrite)
    state/risk/<profile>.json                       a risk profile's open positions

Each name part is encoded so that no two pairs (or profiles) share a file
(``livetrader.store.names``). Files found under the earlier, lossy names are renamed when
the pair is restored with repairs (``adopt_legacy``), if their content names that pair.

The journal is the truth: a transition is appended (and fsync'ed) before anything else
changes, and the snapshot records how many journal records it reflects. On restore, records
beyond that count are an interrupted transition, completed by replaying them; a snapshot
that claims more records than the journal holds means the journal lost data, which needs
a person. A file that cannot be read or fails validation is quarantined, never deleted,
and the pair does not start on a guess.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from livetrader.core.orders import ORDER_EVENTS
from livetrader.core.signal import SignalRow, row_of
from livetrader.errors import LivetraderError, StoreReadError, StoreWriteError
from livetrader.store import disk
from livetrader.store.atomic import as_path, ensure_dir, fsync_dir, read_json, write_json_atomic
from livetrader.store.journal import JOURNAL_DIR, JOURNAL_SUFFIX, Journal, read_journal, repair_truncated_tail
from livetrader.store.layout import (
    PAIRS_DIR,
    Key,
    adopt_legacy,
    pair_paths,
    risk_path,
    snapshot_path,
)
from livetrader.store.names import legacy_part, pair_stem
from livetrader.store.quarantine import quarantine
from livetrader.store.writer import BackgroundWriter


class StateDamaged(LivetraderError):
    """A pair's durable state is damaged; it was quarantined (or needs a person) and the pair does not start."""


def snapshot_dict(
    key: Key, row: SignalRow | None, last_bucket: int | None, last_opened_id: str | None
) -> dict[str, Any]:
    """The snapshot of a pair: its signal, throttle bucket and whipsaw guard."""
    return {
        "symbol": key[0],
        "strategy": key[1],
        "exchange": key[2],
        "signal": None if row is None else {name: getattr(row, name) for name in row.__slots__},
        "last_bucket": last_bucket,
        "last_opened_id": last_opened_id,
    }


class FilePairStore:
    """The durable storage of one pair: the journal and the snapshot (implements ``PairStore``)."""

    def __init__(self, data_dir: Path, key: Key, records: int, risk: str | None = None,
                 paths: tuple[Path, Path] | None = None, writer: BackgroundWriter | None = None) -> None:
        self.data_dir = as_path(data_dir)
        #: Set when a commit was interrupted (cancelled): whether it landed is known only after a restart.
        self.uncertain = False
        #: Writes the snapshot behind the loop when given; without one, ``snapshot`` writes it before returning.
        self.writer = writer
        self.key = key
        self.risk = risk
        #: Records the journal holds (the snapshot is stamped with it).
        self.journal_records = records
        journal, self.path = paths or pair_paths(self.data_dir, key)
        self.journal = Journal(journal)
        ensure_dir(self.path.parent)
        #: The strategy state's file (``save_checkpoint``), made at its first save: most strategies define none.
        self.checkpoint_file: Path | None = None

    async def write_ahead(self, record: dict[str, Any]) -> None:
        """Append the transition to the journal; when this returns it survives a crash.

        With a writer whose commit log is open, the line is written to the journal and
        committed in a group with the other pairs' (``CommitLog``); the writer flushes the
        journal later. Without one, the journal is flushed here. Raises ``StoreWriteError``
        with nothing journaled.
        """
        if self.uncertain:
            raise StoreWriteError(self.journal.path, "an earlier transition was interrupted while being committed; "
                                  "restart to reconcile the journal")
        commits = self.writer.commits if self.writer is not None else None
        if commits is None:
            self.journal.append(record)
            self.journal_records += 1
            return
        assert self.writer is not None
        failed = self.writer.failure(self.journal.path)
        if failed is not None:
            raise failed  # the background flush of this journal failed: storage is not working
        size_before = self.journal.write(record)
        self.writer.journal_written(self.journal)
        try:
            await commits.commit(self.journal_records + 1, record)
        except StoreWriteError as exc:
            kept = self.journal.cut_back(size_before)
            raise StoreWriteError(self.journal.path, f"{exc.reason}; {kept}") from exc
        except BaseException:
            self.uncertain = True
            raise
        self.journal_records += 1

    def snapshot(self, state: dict[str, Any], *, now: bool = False) -> None:
        """Rewrite the snapshot atomically, stamped with the journal records it reflects.

        ``now`` writes it before returning, writer or not (recovery completing a transition).
        With a writer the snapshot is queued (the journal already holds the transition), and
        a failure of this file's previous background write is raised here, so the pair
        learns its storage fails at its next transition; the queued write retries it.
        """
        data = {**state, "risk": self.risk, "journal_records": self.journal_records}
        if self.writer is None or now:
            write_json_atomic(self.path, data)
            return
        failed = self.writer.failure(self.path)
        self.writer.put(self.path, data)
        if failed is not None:
            raise failed

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Replace the strategy's saved state (``store.checkpoint``) atomically, through the
        snapshot writer when there is one (in the same batches as the snapshots). A failure of
        the previous background write of the file is raised here, like ``snapshot``'s."""
        from livetrader.store.checkpoint import checkpoint_document, checkpoint_path

        path = self.checkpoint_file
        if path is None:
            path = self.checkpoint_file = checkpoint_path(self.data_dir, self.key)
            ensure_dir(path.parent)
        data = checkpoint_document(self.key, state)
        if self.writer is None:
            write_json_atomic(path, data)
            return
        failed = self.writer.failure(path)
        self.writer.put(path, data)
        if failed is not None:
            raise failed

    def records(self) -> list[dict[str, Any]]:
        """Every record of the journal file, oldest first (what was written, read back)."""
        return read_journal(self.journal.path).records

    def close(self) -> None:
        """Close the journal."""
        self.journal.close()


@dataclass(slots=True)
class Restored:
    """What a pair resumes from, and what recovery had to do to get there."""

    key: Key
    row: SignalRow | None = None
    last_asked_at: int | None = None
    last_opened_id: str | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    snapshot_records: int = 0
    #: The journal and snapshot files read.
    paths: tuple[Path, Path] | None = None
    notes: list[str] = field(default_factory=list)
    risk: str | None = None
    #: A valid snapshot was read (else none exists, or a damaged one was set aside).
    snapshot_found: bool = False

    @property
    def interrupted(self) -> bool:
        """True when the journal holds transitions the snapshot does not reflect yet."""
        return len(self.records) > self.snapshot_records


def replay(records: list[dict[str, Any]],
           rows: list[SignalRow] | None = None) -> tuple[SignalRow | None, str | None, int | None]:
    """The signal, last opened id and last ask time that a journal's records lead to.

    ``rows``: each record's ``row_of``, when the caller built them already (a restore checks
    every record first: 10,000 pairs are not parsed twice).
    """
    row: SignalRow | None = None
    last_opened: str | None = None
    last_asked: int | None = None
    for i, rec in enumerate(records):
        event = rec["event"]
        if event in ORDER_EVENTS:
            continue  # an order's story changes the signal only through its opened/closed/cancelled
        if event in ("scheduled", "opened", "adjusted"):  # adjusted: the open position's new levels
            row = rows[i] if rows is not None else row_of(rec)
            last_asked = max(last_asked or 0, row.scheduled_at)
            if event == "opened":
                last_opened = row.id
        else:
            row = None
    return row, last_opened, last_asked


def _check_records(records: list[dict[str, Any]], key: Key, rows: list[SignalRow]) -> str | None:
    """Why the journal's records cannot be trusted, or None; each record's signal goes to ``rows``."""
    for number, rec in enumerate(records, start=1):
        if (rec.get("symbol"), rec.get("strategy"), rec.get("exchange")) != key:
            return f"record {number} belongs to another pair ({rec.get('symbol')}/{rec.get('strategy')})"
        try:
            rows.append(row_of(rec))
        except (KeyError, TypeError, ValueError) as exc:
            return f"record {number} ({rec.get('event')}) lacks a valid signal: {type(exc).__name__}: {exc}"
    return None


def _check_snapshot(data: object, key: Key) -> tuple[str | None, SignalRow | None]:
    if not isinstance(data, dict):
        return "not a JSON object", None
    if (data.get("symbol"), data.get("strategy"), data.get("exchange")) != key:
        return "it belongs to another pair", None
    count = data.get("journal_records")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        return "journal_records is missing or not a count", None
    signal = data.get("signal")
    if signal is None:
        return None, None
    try:
        return None, row_of({**signal, "signal_id": signal.get("id")})
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        return f"its signal is invalid: {type(exc).__name__}: {exc}", None


def restore_pair(data_dir: Path, key: Key, *, repair: bool = True,  # noqa: C901 - every recovery case in the order it must be checked (docs/behaviour.md)
                 put_back: list[dict[str, Any]] | None = None) -> Restored:
    """Read, check and reconcile a pair's journal and snapshot.

    With ``repair`` (the daemon, ``recover`` without ``--dry-run``) a truncated last
    journal line is cut, damaged files are quarantined and an interrupted transition is
    completed by rewriting the snapshot; without it nothing is changed and the notes say
    what would be done. ``put_back``: committed records the commit log holds for this
    journal and a dry run did not write (``CommitReplay.missing``); the pair is read as if
    they had been. Raises ``StateDamaged`` when the pair must not start.
    """
    data_dir = as_path(data_dir)
    jpath, spath = pair_paths(data_dir, key)
    notes: list[str] = []
    read = read_journal(jpath)
    if read.missing:
        jpath, note = adopt_legacy(data_dir, key, "journal", repair=repair)
        if note is not None:
            notes.append(note)
            read = read_journal(jpath)
    if put_back:
        read.records.extend(put_back)
    out = Restored(key, paths=(jpath, spath), notes=notes)
    if read.truncated_tail is not None:
        size = read.truncated_tail.size
        if repair:
            repair_truncated_tail(jpath)
            out.notes.append(f"cut a partial last journal line ({size} bytes) left by a crash mid-append")
        else:
            out.notes.append(f"would cut a partial last journal line ({size} bytes) left by a crash mid-append")
    problem = None
    rows: list[SignalRow] = []
    if read.problems:
        first = read.problems[0]
        problem = (f"the journal is {first.reason}" if first.line == 0 else
                   f"{len(read.problems)} invalid journal line(s), first at line {first.line}: {first.reason}")
    else:
        problem = _check_records(read.records, key, rows)
    if problem is not None:
        _damaged(data_dir, jpath, problem, repair)
    out.records = read.records

    snapshot: dict[str, Any] | None = None
    # The journal passed its checks above: it is the truth, and a damaged snapshot (its copy) is
    # set aside and rebuilt from it rather than refusing the pair.
    try:
        data = read_json(spath)
    except FileNotFoundError:
        data = None
        spath, note = adopt_legacy(data_dir, key, "snapshot", repair=repair)
        if note is not None:
            out.notes.append(note)
            out.paths = (jpath, spath)
            try:
                data = read_json(spath)
            except FileNotFoundError:
                data = None
            except StoreReadError as exc:
                _set_aside(data_dir, spath, f"unreadable snapshot: {exc.reason}", repair, out)
                data = None
    except StoreReadError as exc:
        _set_aside(data_dir, spath, f"unreadable snapshot: {exc.reason}", repair, out)
        data = None
    if data is not None:
        reason, _ = _check_snapshot(data, key)
        if reason:
            _set_aside(data_dir, spath, f"invalid snapshot: {reason}", repair, out)
            data = None
        snapshot = data if isinstance(data, dict) else None  # a dict: _check_snapshot refuses anything else

    row, last_opened, last_asked = replay(out.records, rows if len(rows) == len(out.records) else None)
    out.row, out.last_opened_id = row, last_opened
    if snapshot is not None:
        out.snapshot_found = True
        out.snapshot_records = snapshot["journal_records"]
        out.risk = snapshot.get("risk")
        bucket = snapshot.get("last_bucket")
        if isinstance(bucket, int) and not isinstance(bucket, bool):
            last_asked = max(last_asked or 0, bucket)
    out.last_asked_at = last_asked
    if out.snapshot_records > len(out.records):
        raise StateDamaged(
            f"{pair_stem(key)}: the snapshot reflects {out.snapshot_records} journal records but the journal "
            f"{jpath} holds {len(out.records)}: the journal lost records (restored from an old backup?). "
            "Put the complete journal back, or move both files aside to start the pair afresh."
        )
    if out.interrupted:
        missing = out.records[out.snapshot_records:]
        what = ", ".join(f"{r['event']} {r.get('signal_id')}" for r in missing)
        verb = "completed" if repair else "would complete"
        out.notes.append(f"{verb} an interrupted transition: {what} (journaled, not yet in the snapshot)")
    return out


def _set_aside(data_dir: Path, path: Path, reason: str, repair: bool, out: Restored) -> None:
    """A damaged snapshot beside an intact journal: quarantined (never deleted) and rebuilt from
    the journal (the pair is read as if it had none); without ``repair`` the note says so."""
    count = len(out.records)
    if repair:
        moved = quarantine(data_dir, path, reason)
        out.notes.append(f"{reason}; moved to {moved} (nothing deleted) and rebuilt from the journal's "
                         f"{count} record(s)")
    else:
        out.notes.append(f"{reason}; would be quarantined and rebuilt from the journal's {count} record(s)")


def _damaged(data_dir: Path, path: Path, reason: str, repair: bool) -> NoReturn:
    if repair:
        moved = quarantine(data_dir, path, reason)
        raise StateDamaged(f"{path}: {reason}; moved to {moved} (nothing deleted). The pair does not start: "
                           "inspect the file, then restart (the pair starts from what remains).")
    raise StateDamaged(f"{path}: {reason}; it would be quarantined")


def complete_snapshot(data_dir: Path, restored: Restored) -> None:
    """Rewrite a pair's snapshot from its journal (an interrupted transition completed), for a
    pair no loop runs: ``recover``, and the pairs on disk a daemon does not run. The snapshot
    read is the one rewritten (it may still carry its earlier name when nothing was repaired)."""
    path = restored.paths[1] if restored.paths is not None else snapshot_path(data_dir, restored.key)
    try:
        old = read_json(path)
    except (FileNotFoundError, StoreReadError):
        old = {}
    bucket = old.get("last_bucket") if isinstance(old, dict) else None
    state = snapshot_dict(restored.key, restored.row, bucket, restored.last_opened_id)
    ensure_dir(path.parent)
    write_json_atomic(path, {**state, "risk": restored.risk, "journal_records": len(restored.records)})


def keys_on_disk(data_dir: Path, skip_stems: frozenset[str] | set[str] = frozenset()) -> tuple[list[Key], list[str]]:
    """Every pair with a journal or a snapshot in ``data_dir`` (its key read from the files, which
    may still carry an earlier, lossy name), except the file stems in ``skip_stems``; and the files
    that name none."""
    keys, unnamed = scan_pairs(data_dir, skip_stems)
    return keys, [f"{path}: {reason}; `livetrader recover` moves it to quarantine/" for path, reason in unnamed]


def scan_pairs(
    data_dir: Path, skip_stems: frozenset[str] | set[str] = frozenset()
) -> tuple[list[Key], list[tuple[Path, str]]]:
    """:func:`keys_on_disk` with each file that names no pair as ``(path, why)``.

    Such a file is read by no daemon (a pair's files are found from its key): a snapshot
    that does not parse or names no pair, a journal without a readable record or whose first
    record names no pair.
    """
    data_dir = as_path(data_dir)
    keys: set[Key] = set()
    unnamed: list[tuple[Path, str]] = []
    for path in _files(data_dir / PAIRS_DIR, ".json", skip_stems):
        try:
            data = read_json(path)
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            key = (data["symbol"], data["strategy"], data["exchange"])
            if not all(isinstance(part, str) for part in key):
                raise TypeError("symbol, strategy and exchange must be strings")
            keys.add(key)
        except (StoreReadError, TypeError, KeyError) as exc:
            why = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
            unnamed.append((path, f"unreadable snapshot ({why})"))
    for path in _files(data_dir / JOURNAL_DIR, JOURNAL_SUFFIX, skip_stems):
        read = read_journal(path)
        first = read.records[0] if read.records else None
        if first is not None and all(isinstance(first.get(part), str) for part in ("symbol", "strategy", "exchange")):
            keys.add((first["symbol"], first["strategy"], first["exchange"]))
        elif first is not None:
            unnamed.append((path, "its first record names no pair"))
        elif read.problems:
            unnamed.append((path, f"no readable record ({read.problems[0].reason})"))
    return sorted(keys), unnamed


def _files(directory: Path, suffix: str, skip_stems: frozenset[str] | set[str]) -> list[Path]:
    """The files ``<stem><suffix>`` of ``directory`` whose stem is not skipped, sorted by name
    (names are filtered before any ``Path`` is made: a daemon skips its 10,000 own pairs here)."""
    try:
        with os.scandir(directory) as entries:
            names = [e.name for e in entries if e.name.endswith(suffix) and e.name[: -len(suffix)] not in skip_stems]
    except FileNotFoundError:
        return []
    return [directory / name for name in sorted(names)]


def known_pairs(data_dir: Path) -> list[Path]:
    """Journal and snapshot files present, for tools that look at every pair."""
    data_dir = Path(data_dir)
    return sorted([*(data_dir / "journal").glob("*.jsonl"), *(data_dir / PAIRS_DIR).glob("*.json")])


def save_risk(data_dir: Path, profile: str, positions: list[dict[str, Any]]) -> None:
    """Persist a risk profile's open positions."""
    path = risk_path(data_dir, profile)
    ensure_dir(path.parent)
    write_json_atomic(path, {"profile": profile, "positions": positions})


def load_risk(data_dir: Path, profile: str) -> list[dict[str, Any]]:
    """A risk profile's persisted open positions (empty when none or unreadable: the signals win anyway).

    Called by the daemon, holding the data directory lock: a file under the profile's earlier
    name (``legacy_part``) that names this profile is renamed to its own name first.
    """
    path = risk_path(data_dir, profile)
    try:
        data = read_json(path)
    except FileNotFoundError:
        data = _adopt_legacy_risk(path, profile)
    except StoreReadError:
        return []
    positions = data.get("positions") if isinstance(data, dict) else None
    return [p for p in positions if isinstance(p, dict)] if isinstance(positions, list) else []


def _adopt_legacy_risk(path: Path, profile: str) -> object:
    try:
        old = path.with_name(f"{legacy_part(profile)}.json")
    except ValueError:
        return None
    if old == path:
        return None
    try:
        data = read_json(old)
    except (FileNotFoundError, StoreReadError):
        return None
    if not isinstance(data, dict) or data.get("profile") != profile:
        return None  # another profile's, under the lossy earlier name
    try:
        disk.DISK.replace(old, path)
        fsync_dir(path.parent)
    except OSError:
        pass  # read it where it is; the next save writes the new name
    return data
