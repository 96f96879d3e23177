"""The operator journal: ``<data-dir>/control.jsonl``, the halts and resumes (docs/behaviour.md §13).

One JSON object per line, appended by ``livetrader halt`` / ``resume`` (while a daemon runs or
not) and by the daemon itself (a risk profile's ``max_daily_loss_percent``). It lives beside
``status.json``, not under ``journal/``: every file there is read as a pair's journal.

Two processes may append at once (the command and the daemon): each append is one ``write`` of
a whole line on an ``O_APPEND`` descriptor, then ``fdatasync``, so lines never interleave and an
acknowledged line is on disk. A writer killed mid-line leaves a last line without its newline:
readers skip it, and the next append first ends it with a newline, so it stays one bad line
(skipped) instead of spoiling the record after it. Nothing here needs the data directory lock.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from livetrader.errors import StoreReadError, StoreWriteError
from livetrader.store import disk
from livetrader.store.atomic import as_path, describe_os_error, fsync_dir

CONTROL_FILE = "control.jsonl"
#: ``halted``/``resumed`` (docs/behaviour.md §13); ``forget``/``adopt`` settle one position the
#: account no longer holds as the journal says (``livetrader positions``, §12).
CONTROL_EVENTS = frozenset({"halted", "resumed"})
POSITION_EVENTS = frozenset({"forget", "adopt"})


def control_path(data_dir: Path) -> Path:
    """Where the operator journal of ``data_dir`` lives."""
    return as_path(data_dir) / CONTROL_FILE


def control_problem(record: object) -> str | None:
    """Why ``record`` is not a valid operator record, or None if it is."""
    if not isinstance(record, dict):
        return f"not a JSON object ({type(record).__name__})"
    if record.get("event") not in CONTROL_EVENTS | POSITION_EVENTS:
        return f"unknown event {record.get('event')!r}"
    at = record.get("at")
    if isinstance(at, bool) or not isinstance(at, int) or at < 0:
        return f"'at' must be a non-negative integer of ms, got {at!r}"
    if record["event"] in POSITION_EVENTS:
        signal_id = record.get("signal_id")
        if isinstance(signal_id, str) and signal_id:
            return None
        return f"'signal_id' must be a signal id, got {signal_id!r}"
    scope = record.get("scope")
    if not isinstance(scope, str) or not (scope == "all" or (scope.startswith("profile:") and len(scope) > 8)):
        return f"'scope' must be 'all' or 'profile:NAME', got {scope!r}"
    if not isinstance(record.get("flatten", False), bool):
        return f"'flatten' must be true or false, got {record.get('flatten')!r}"
    return None


def append_control(data_dir: Path, record: dict[str, Any]) -> int:
    """Append ``record`` durably; return the byte offset just past its line (what a reader that
    has read up to there has seen). Raises ``ValueError`` for an invalid record and
    ``StoreWriteError`` when the file cannot be written."""
    problem = control_problem(record)
    if problem is not None:
        raise ValueError(f"refusing to journal an invalid operator record: {problem}")
    path = control_path(data_dir)
    line = orjson.dumps(record) + b"\n"
    try:
        try:
            fd = disk.open_regular(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL)
            created = True
        except FileExistsError:
            fd = disk.open_regular(path, os.O_RDWR | os.O_APPEND)
            created = False
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # end a line a killed writer left unfinished: it stays one bad line
            written = disk.DISK.write(fd, line)
            if written != len(line):
                raise OSError(0, f"short write ({written} of {len(line)} bytes)")
            end = os.lseek(fd, 0, os.SEEK_CUR)  # O_APPEND: just past this line, whoever else appended
            disk.DISK.fdatasync(fd)
        finally:
            disk.DISK.close(fd)
        if created:
            fsync_dir(path.parent)  # the new file's name must survive a power cut too
    except OSError as exc:
        raise StoreWriteError(path, describe_os_error(exc)) from exc
    return end


@dataclass(slots=True, frozen=True)
class ControlRead:
    """What ``read_control`` found from an offset: valid ``records`` in file order, the offset
    ``end`` just past the last complete line, and the ``problems`` (bad lines, skipped)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    end: int = 0
    problems: list[str] = field(default_factory=list)


def read_control(data_dir: Path, offset: int = 0) -> ControlRead:
    """The operator records from byte ``offset`` on. A last line without its newline is being
    written, or was left by a killed writer: it is not read (``end`` stays before it). A missing
    file reads as no record. Raises ``StoreReadError`` when the file cannot be read."""
    path = control_path(data_dir)
    try:
        fd = disk.open_regular(path, os.O_RDONLY)
    except FileNotFoundError:
        return ControlRead(end=0)
    except OSError as exc:
        raise StoreReadError(path, describe_os_error(exc)) from exc
    try:
        with open(fd, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except OSError as exc:
        raise StoreReadError(path, describe_os_error(exc)) from exc
    complete = data[: data.rfind(b"\n") + 1]
    records: list[dict[str, Any]] = []
    problems: list[str] = []
    position = offset
    for raw in complete.splitlines(keepends=True):
        at = position
        position += len(raw)
        if not raw.strip():
            continue
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            problems.append(f"{path}: byte {at}: invalid JSON ({exc}), skipped")
            continue
        problem = control_problem(record)
        if problem is not None:
            problems.append(f"{path}: byte {at}: {problem}, skipped")
            continue
        records.append(record)
    return ControlRead(records, offset + len(complete), problems)
