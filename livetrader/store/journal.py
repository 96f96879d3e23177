"""The per-pair append-only event journal: the write-ahead log of docs/behaviour.md §9.

One JSON object per line in ``<data_dir>/journal/<symbol>_<strategy>_<exchange>.jsonl`` (each part
encoded, see ``livetrader.store.names``).
Each ``append`` is a single ``os.write`` on an ``O_APPEND`` descriptor followed by
``fdatasync``, so when it returns the record survives a crash or power loss; the engine changes
its snapshot only after that. A crash during ``append`` can leave at most one partial last
line, which was never acknowledged and is therefore safe to cut (``repair_truncated_tail``).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from livetrader.core.orders import ORDER_EVENTS
from livetrader.errors import StoreReadError, StoreWriteError
from livetrader.store import disk
from livetrader.store.atomic import as_path, describe_os_error, ensure_dir, fsync_dir
from livetrader.store.names import stem_of

JOURNAL_DIR = "journal"
JOURNAL_SUFFIX = ".jsonl"
#: A pair's transitions, and its orders' intents and answers (sandbox/live modes).
EVENTS = frozenset({"scheduled", "opened", "adjusted", "closed", "cancelled"}) | ORDER_EVENTS
_SNIPPET = 80  # bytes of a bad line quoted in a problem report


def journal_path(data_dir: Path, symbol: str, strategy: str, exchange: str) -> Path:
    """``<data_dir>/journal/<symbol>_<strategy>_<exchange>.jsonl``, each part encoded so that
    distinct pairs never share a file (``livetrader.store.names``)."""
    return Path(data_dir) / JOURNAL_DIR / (stem_of(symbol, strategy, exchange) + JOURNAL_SUFFIX)


def record_problem(record: object) -> str | None:
    """Why ``record`` is not a valid journal record, or None if it is.

    Valid: a dict with ``event`` in ``EVENTS`` and ``at`` a
    non-negative integer (ms UTC), as produced by ``livetrader.core.signal.record_of``.
    """
    if not isinstance(record, dict):
        return f"not a JSON object ({type(record).__name__})"
    if "event" not in record:
        return "missing 'event'"
    if record["event"] not in EVENTS:
        return f"unknown event {record['event']!r}"
    if "at" not in record:
        return "missing 'at'"
    at = record["at"]
    if isinstance(at, bool) or not isinstance(at, int) or at < 0:
        return f"'at' must be a non-negative integer of ms, got {at!r}"
    return None


class Journal:
    """An open, append-only journal file; keep one per pair for the life of the pair.

    Not safe for two writers on one file: the data directory lock guarantees one process,
    and the internal lock serialises threads of that process.
    """

    def __init__(self, path: Path) -> None:
        self.path = as_path(path)
        self._mutex = threading.Lock()
        try:
            try:
                # A restart opens thousands of existing journals: that case first, in one open.
                # Never through a planted symlink (O_NOFOLLOW), never into a FIFO or a device.
                self._fd: int | None = disk.open_regular(self.path, os.O_WRONLY | os.O_APPEND)
            except FileNotFoundError:
                ensure_dir(self.path.parent)
                try:
                    self._fd = disk.open_regular(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL)
                except FileExistsError:
                    self._fd = disk.open_regular(self.path, os.O_WRONLY | os.O_APPEND)
                else:
                    # A new file's directory entry must be durable too, or fsync'ed appends could vanish with it.
                    fsync_dir(self.path.parent)
        except OSError as exc:
            raise StoreWriteError(self.path, describe_os_error(exc)) from exc

    def append(self, record: dict[str, Any]) -> None:
        """Append one record durably; when this returns the record is on disk.

        Raises ``ValueError`` for an invalid record (see ``record_problem``), ``TypeError`` if
        it is not JSON-serialisable, and ``StoreWriteError`` if the write or fsync fails — in
        which case the journal is cut back to its previous length so no partial line remains.
        """
        size_before = self.write(record)
        try:
            self.sync()
        except StoreWriteError as exc:
            raise StoreWriteError(self.path, f"{exc.reason}; {self.cut_back(size_before)}") from exc

    def write(self, record: dict[str, Any]) -> int:
        """Write one record's line without waiting for the disk; return the journal's length before it.

        The caller makes it durable: ``sync`` here, or a commit log entry (``CommitLog``), and
        on failure ``cut_back`` to the returned length. Raises like ``append``.
        """
        problem = record_problem(record)
        if problem is not None:
            raise ValueError(f"refusing to journal an invalid record: {problem}")
        line = orjson.dumps(record) + b"\n"
        with self._mutex:
            fd = self._fd
            if fd is None:
                raise StoreWriteError(self.path, "the journal is closed")
            size_before = os.fstat(fd).st_size
            try:
                # One write of the whole line: a crash leaves at most one partial line, at the end.
                written = disk.DISK.write(fd, line)
                if written != len(line):
                    raise OSError(0, f"short write ({written} of {len(line)} bytes)")
            except OSError as exc:
                kept = self._cut_back(fd, size_before)
                raise StoreWriteError(self.path, f"{describe_os_error(exc)}; {kept}") from exc
        return size_before

    def sync(self) -> None:
        """Make every line written so far durable (``fdatasync``: the data and the new length).

        A closed journal has nothing left to sync (``close`` syncs). Raises ``StoreWriteError``.
        """
        with self._mutex:
            if self._fd is None:
                return
            try:
                disk.DISK.fdatasync(self._fd)
            except OSError as exc:
                raise StoreWriteError(self.path, describe_os_error(exc)) from exc

    def cut_back(self, size: int) -> str:
        """Remove what was written after ``size`` (a line whose commit failed); say what was kept."""
        with self._mutex:
            if self._fd is None:
                return "the journal is closed; restart to repair it"
            return self._cut_back(self._fd, size)

    def _cut_back(self, fd: int, size: int) -> str:
        # Remove what the failed append left, so the next append does not glue onto a partial line.
        try:
            disk.DISK.ftruncate(fd, size)
            disk.DISK.fsync(fd)
        except OSError:
            # The file may now end in a partial line; stop writing and let recovery repair it.
            disk.DISK.close(fd)
            self._fd = None
            return "the journal may end in a partial line and is closed; restart to repair it"
        return "the record was not journaled"

    def close(self) -> None:
        """Sync what was written, then close the descriptor; idempotent."""
        with self._mutex:
            fd, self._fd = self._fd, None
        if fd is not None:
            try:
                disk.DISK.fdatasync(fd)
            except OSError:
                pass  # every acknowledged line was made durable already (by ``sync`` or its commit entry)
            finally:
                disk.DISK.close(fd)

    @property
    def closed(self) -> bool:
        """True once closed (or after an unrecoverable write failure)."""
        return self._fd is None

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@dataclass(slots=True, frozen=True)
class JournalProblem:
    """An invalid line: 1-based ``line`` number, byte ``offset``, ``reason``, start of the ``text``."""

    line: int
    offset: int
    reason: str
    text: str


@dataclass(slots=True, frozen=True)
class TruncatedTail:
    """A last line without its newline, left by a crash mid-append: ``size`` bytes at ``offset``."""

    line: int
    offset: int
    size: int


@dataclass(slots=True, frozen=True)
class JournalRead:
    """What ``read_journal`` found: valid ``records`` in file order, ``problems``, a ``truncated_tail``,
    or that the file is ``missing``."""

    path: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    problems: list[JournalProblem] = field(default_factory=list)
    truncated_tail: TruncatedTail | None = None
    #: True when there is no file (a new pair, or one whose files still carry an older name).
    missing: bool = False

    @property
    def ok(self) -> bool:
        """True if no line is invalid (a truncated tail alone is expected after a crash)."""
        return not self.problems


def read_journal(path: Path) -> JournalRead:
    """Parse a journal, keeping every valid record and reporting every bad line.

    A last line without a trailing newline is reported as ``truncated_tail`` and skipped,
    even if it happens to parse: ``append`` writes the newline in the same write, so such a
    line was never acknowledged. A missing file reads as an empty journal (a new pair); a
    symlink or any other non-regular file is one problem (damage: it is never followed);
    any other read error raises ``StoreReadError``.
    """
    path = as_path(path)
    records: list[dict[str, Any]] = []
    problems: list[JournalProblem] = []
    tail: TruncatedTail | None = None
    try:
        handle = open(disk.open_regular(path, os.O_RDONLY), "rb")
    except FileNotFoundError:
        return JournalRead(path=path, missing=True)
    except disk.NotRegularFile as exc:
        return JournalRead(path=path, problems=[JournalProblem(line=0, offset=0, reason=exc.strerror or str(exc),
                                                                   text="")])
    except OSError as exc:
        raise StoreReadError(path, describe_os_error(exc)) from exc
    offset = 0
    with handle:
        try:
            # Iterating a binary file streams lines, so a long journal is never read whole.
            for number, raw in enumerate(handle, start=1):
                start, offset = offset, offset + len(raw)
                if not raw.endswith(b"\n"):
                    tail = TruncatedTail(line=number, offset=start, size=len(raw))
                    break
                reason, record = _parse_line(raw)
                if reason is None:
                    records.append(record)
                else:
                    text = raw[:_SNIPPET].decode("utf-8", "replace").rstrip("\n")
                    problems.append(JournalProblem(line=number, offset=start, reason=reason, text=text))
        except OSError as exc:
            raise StoreReadError(path, describe_os_error(exc)) from exc
    return JournalRead(path=path, records=records, problems=problems, truncated_tail=tail)


def _parse_line(raw: bytes) -> tuple[str | None, dict[str, Any]]:
    if not raw.strip():
        return "empty line", {}
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return f"invalid JSON: {exc}", {}
    problem = record_problem(record)
    return (problem, {}) if problem else (None, record)


def repair_truncated_tail(path: Path) -> int:
    """Cut a partial last line (everything after the last newline), fsync, return bytes cut.

    Returns 0 when the journal ends cleanly or does not exist. Call it before opening a
    ``Journal`` on the file, while holding the data directory lock.
    """
    path = Path(path)
    try:
        fd = disk.open_regular(path, os.O_RDWR)
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise StoreWriteError(path, describe_os_error(exc)) from exc
    try:
        size = os.fstat(fd).st_size
        keep = _end_of_last_line(fd, size)
        if keep == size:
            return 0
        disk.DISK.ftruncate(fd, keep)
        disk.DISK.fsync(fd)
        return size - keep
    except OSError as exc:
        raise StoreWriteError(path, describe_os_error(exc)) from exc
    finally:
        disk.DISK.close(fd)


def _end_of_last_line(fd: int, size: int, chunk: int = 64 * 1024) -> int:
    # Scan backwards so repairing a large journal does not read all of it.
    end = size
    while end > 0:
        start = max(0, end - chunk)
        data = os.pread(fd, end - start, start)
        cut = data.rfind(b"\n")
        if cut != -1:
            return start + cut + 1
        end = start
    return 0
