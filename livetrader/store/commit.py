"""Group commit: the journal lines of many pairs made durable by one ``fdatasync``.

At a busy minute boundary thousands of pairs open and close positions together. Flushing
each pair's journal file on its own costs one filesystem commit each (about 0.2 ms here,
so a second for 5,000 transitions). Instead each transition is written to its pair's
journal without waiting, and its line is also appended to one shared commit log,
``<data_dir>/journal/commit.log``; every transition the event loop produced in one pass is
written there in one write and flushed with one ``fdatasync``, and only then does any of
those pairs change state (docs/behaviour.md §9: journaled before the snapshot or anything else changes).

The pairs' journal files are flushed afterwards, behind the loop (``BackgroundWriter``),
and once every line in the commit log is durable in its pair's journal the log is emptied.
So the commit log normally holds only the last moments; after a crash or power loss,
``replay_commit_log`` (run at start, before any pair is restored, and by ``recover``) puts
back every committed line a pair journal lost.

Entry format, one JSON object per line: ``{"n": <the record's 1-based position in its
pair's journal>, "record": <the journal record>}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from livetrader.errors import StoreWriteError
from livetrader.store import disk
from livetrader.store.atomic import as_path, describe_os_error, ensure_dir, fsync_dir, tmp_path_of
from livetrader.store.journal import JOURNAL_DIR, read_journal, record_problem, repair_truncated_tail
from livetrader.store.quarantine import quarantine

COMMIT_LOG = "commit.log"


def commit_log_path(data_dir: Path) -> Path:
    """``<data_dir>/journal/commit.log``."""
    return as_path(data_dir) / JOURNAL_DIR / COMMIT_LOG


class CommitLog:
    """The open commit log of a data directory (one per process, under the data directory lock).

    ``commit`` is called from the event loop; ``size`` and ``checkpointed`` are shared with the
    background writer thread, under ``lock``.
    """

    def __init__(self, path: Path) -> None:
        self.path = as_path(path)
        self.lock = threading.Lock()
        self._lines: list[bytes] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._scheduled = False
        #: Called after each durable batch (the background writer wakes to flush the pair journals).
        self.on_commit: Any = None
        self.batches = 0
        #: Why the log takes no more commits (a failure left it in a state no append may follow).
        self.stopped: str | None = None
        #: Seconds spent writing and fdatasync'ing batches, in total (the metrics' flush time).
        self.flush_seconds = 0.0
        try:
            ensure_dir(self.path.parent)
            self._fd: int | None = disk.open_regular(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            fsync_dir(self.path.parent)
            self.size = os.fstat(self._fd).st_size
        except OSError as exc:
            raise StoreWriteError(self.path, describe_os_error(exc)) from exc

    async def commit(self, n: int, record: dict[str, Any]) -> None:
        """Return once ``record`` (the ``n``-th of its pair's journal, already written there) is durable.

        Every commit asked for while the loop runs its current pass shares one write and one
        ``fdatasync``. Raises ``StoreWriteError`` when that fails: none of the batch is committed.
        """
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._lines.append(orjson.dumps({"n": n, "record": record}) + b"\n")
        self._waiters.append(waiter)
        if not self._scheduled:
            # After the callbacks already queued: every pair woken in this pass adds its line first.
            self._scheduled = True
            loop.call_soon(self._flush)
        await waiter

    def _flush(self) -> None:
        lines, waiters = self._lines, self._waiters
        self._lines, self._waiters, self._scheduled = [], [], False
        error: StoreWriteError | None = None
        with self.lock:
            fd = self._fd
            if fd is None:
                error = StoreWriteError(self.path, self.stopped or "the commit log is closed")
            else:
                data = b"".join(lines)
                started = time.perf_counter()
                try:
                    view = memoryview(data)
                    while view:
                        view = view[disk.DISK.write(fd, view):]
                    disk.DISK.fdatasync(fd)
                    self.size += len(data)
                    self.batches += 1
                    self.flush_seconds += time.perf_counter() - started
                except OSError as exc:
                    error = StoreWriteError(self.path, f"{describe_os_error(exc)}; {self._cut_back(fd)}")
        for waiter in waiters:
            if waiter.done():
                continue
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)
        if error is None and self.on_commit is not None:
            self.on_commit()

    def _cut_back(self, fd: int) -> str:
        # Take back a partly written batch so the next one does not glue onto a partial line.
        try:
            disk.DISK.ftruncate(fd, self.size)
        except OSError:
            # A batch appended after that partial line would join it into one unreadable line:
            # the log takes no more commits (each is refused, loudly) and the next start reads
            # the partial line as a torn last entry.
            self._stop(fd, "the commit log may end in a partial line that could not be cut back; no transition "
                           "is committed until a restart")
            return "the commit log may end in a partial line (cut at the next start); it takes no more commits"
        try:
            disk.DISK.fdatasync(fd)
        except OSError:
            pass  # cut in the file already: the next batch's fdatasync makes the new length durable with it
        return "nothing of the batch was committed"

    def _stop(self, fd: int, why: str) -> None:
        """Take no more commits, saying ``why`` to each (called under ``lock``)."""
        self.stopped = why
        self._fd = None
        try:
            disk.DISK.close(fd)
        except OSError:
            pass  # closed either way

    def checkpointed(self, size: int) -> bool:
        """Every line within the log's first ``size`` bytes is now durable in its pair journal: drop them.

        When nothing was committed since, the log is emptied; otherwise it is replaced (atomically:
        ``commit.log.tmp``, fdatasync, rename, directory fsync) by the lines committed after
        ``size``, so the log stays small however busy the loop is. False when nothing was dropped.
        """
        with self.lock:
            fd = self._fd
            if fd is None or size == 0 or size > self.size:
                return False
            if self.size == size:
                try:
                    disk.DISK.ftruncate(fd, 0)
                except OSError:
                    return False  # kept whole: replaying lines already in their journals is harmless
                self.size = 0  # the file is empty now, whether or not the flush below works
                try:
                    disk.DISK.fdatasync(fd)
                except OSError:
                    return False  # the next commit's fdatasync makes the length durable with it
                return True
            return self._replace_with_newer(fd, size)

    def _replace_with_newer(self, fd: int, size: int) -> bool:
        """Replace the log by its lines after ``size``: written to ``commit.log.tmp`` through the
        descriptor kept afterwards, so that a failure anywhere leaves the commits appended to
        the file a restart reads. Called under ``lock``."""
        tmp = tmp_path_of(self.path)
        try:
            newer = os.pread(fd, self.size - size, size)
            fresh = disk.open_regular(tmp, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError:
            return False  # nothing changed: kept whole (replaying lines already in their journals is harmless)
        try:
            view = memoryview(newer)
            while view:
                view = view[disk.DISK.write(fresh, view):]
            disk.DISK.fdatasync(fresh)
            disk.DISK.replace(tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                disk.DISK.close(fresh)
            with contextlib.suppress(OSError):
                disk.DISK.unlink(tmp)  # else left: the next checkpoint's O_TRUNC open reuses it
            return False  # the rename did not happen: the old file, whole, is still the log
        # The new file is the log now, and ``fresh`` writes to it. Until the directory fsync
        # lands a power cut could bring the old file back, which holds every line but the
        # commits appended from here: so a failed directory fsync stops the log (commits are
        # refused, loudly) rather than acknowledge commits a power cut could lose.
        self._fd, self.size = fresh, len(newer)
        with contextlib.suppress(OSError):
            disk.DISK.close(fd)  # the old, unlinked file: nothing more is written to it
        try:
            fsync_dir(self.path.parent)
        except OSError as exc:
            self._stop(fresh, f"the commit log was replaced but not made durable ({describe_os_error(exc)}); no "
                              "transition is committed until a restart")
            return False
        return True

    def close(self) -> None:
        """Close the descriptor; idempotent."""
        with self.lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            disk.DISK.close(fd)


@dataclass(slots=True)
class CommitReplay:
    """What ``replay_commit_log`` found and did."""

    #: Records put back per journal file: the lines a crash took from it.
    restored: dict[Path, int] = field(default_factory=dict)
    #: What needs a person (a line that is not a commit entry; a journal that disagrees).
    problems: list[str] = field(default_factory=list)
    #: Entries already in their journals.
    present: int = 0
    #: The records each journal lacked, in order (put back unless it was a dry run, which
    #: reads each pair as if they had been: ``restore_pair(..., put_back=...)``).
    missing: dict[tuple[str, str, str], list[dict[str, Any]]] = field(default_factory=dict)
    #: Journals found under their earlier names, renamed (or, in a dry run, to rename) first.
    renamed: list[str] = field(default_factory=list)

    @property
    def notes(self) -> list[str]:
        """One line per journal renamed or completed."""
        return [*self.renamed, *(f"{path.name}: put back {count} committed record(s) a crash took from the journal"
                for path, count in sorted(self.restored.items()))]


def replay_commit_log(data_dir: Path, *, repair: bool = True) -> CommitReplay:
    """Put back into each pair journal the committed records it lost, then empty the log.

    Call before restoring any pair, holding the data directory lock. Entries already in
    their journal are checked and skipped; a missing one is appended when it is the next
    record of its journal. Without ``repair`` nothing is written and ``restored`` says what
    would be. A commit log with lines that are not entries is quarantined, never deleted. A
    journal still under its earlier file name is renamed first (``adopt_legacy``; in a dry run,
    read where it is), so its lines go back where its records are.
    """
    from livetrader.store.layout import adopt_legacy, pair_paths

    data_dir = as_path(data_dir)
    path = commit_log_path(data_dir)
    out = CommitReplay()
    try:
        raw = disk.read_regular(path)
    except FileNotFoundError:
        return out
    except OSError as exc:
        out.problems.append(f"{path}: unreadable commit log: {describe_os_error(exc)}")
        if repair and isinstance(exc, disk.NotRegularFile):
            quarantine(data_dir, path, out.problems[-1])
        return out
    entries: dict[tuple[str, str, str], list[tuple[int, dict[str, Any]]]] = {}
    lines = raw.split(b"\n")
    for number, line in enumerate(lines[:-1], start=1):  # the last piece has no newline: never acknowledged
        entry = _entry(line)
        if entry is None:
            out.problems.append(f"{path}: line {number} is not a commit entry")
            continue
        n, record = entry
        entries.setdefault((record["symbol"], record["strategy"], record["exchange"]), []).append((n, record))
    for key, items in entries.items():
        journal = pair_paths(data_dir, key)[0]
        if not os.path.lexists(journal):
            # Files under the earlier naming scheme: lines are put back into that journal (renamed
            # first when repairing), never into a new empty one that would skip its records.
            journal, note = adopt_legacy(data_dir, key, "journal", repair=repair)
            if note is not None:
                out.renamed.append(note)
        _complete(journal, items, out, repair)
    if repair:
        if out.problems:
            quarantine(data_dir, path, "; ".join(out.problems[:3]))
        elif raw:
            fd = disk.open_regular(path, os.O_WRONLY)
            try:
                disk.DISK.ftruncate(fd, 0)
                disk.DISK.fdatasync(fd)
            finally:
                disk.DISK.close(fd)
    return out


def _entry(line: bytes) -> tuple[int, dict[str, Any]] | None:
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("n"), int) or isinstance(entry.get("n"), bool):
        return None
    record = entry.get("record")
    if entry["n"] < 1 or not isinstance(record, dict) or record_problem(record) is not None:
        return None
    if not all(isinstance(record.get(k), str) and record.get(k) for k in ("symbol", "strategy", "exchange")):
        return None
    return entry["n"], record


def _complete(journal: Path, items: list[tuple[int, dict[str, Any]]], out: CommitReplay, repair: bool) -> None:
    read = read_journal(journal)
    unsafe = [p for p in read.problems if p.line == 0]
    if unsafe:  # a symlink or a device where the journal should be: never written through
        out.problems.append(f"{journal}: {unsafe[0].reason}; its committed records are kept in the commit log")
        return
    if read.problems and any(n <= len(read.records) + len(read.problems) for n, _ in items):
        # Damaged lines where committed records belong: the commit log may hold the only good
        # copy of those records (restoring the pair refuses and quarantines the journal).
        out.problems.append(f"{journal}: {len(read.problems)} damaged line(s) where committed records belong; the "
                            "commit log is kept with them")
        return
    if read.truncated_tail is not None and repair:
        repair_truncated_tail(journal)
    count = len(read.records) + len(read.problems)
    missing: list[bytes] = []
    records: list[dict[str, Any]] = []
    for n, record in items:
        if n <= count:
            if n <= len(read.records) and not read.problems and read.records[n - 1] != record:
                out.problems.append(f"{journal}: record {n} differs from its commit log entry")
            out.present += 1
        elif n == count + 1:
            missing.append(orjson.dumps(record) + b"\n")
            records.append(record)
            count += 1
        else:
            out.problems.append(f"{journal}: the journal holds {count} records but the commit log's next is {n}")
            break
    if not missing:
        return
    out.restored[journal] = len(missing)
    out.missing[(records[0]["symbol"], records[0]["strategy"], records[0]["exchange"])] = records
    if repair:
        ensure_dir(journal.parent)
        fd = disk.open_regular(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            data = memoryview(b"".join(missing))
            while data:
                data = data[disk.DISK.write(fd, data):]
            disk.DISK.fdatasync(fd)
        finally:
            disk.DISK.close(fd)
        fsync_dir(journal.parent)
