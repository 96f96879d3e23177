"""Moving damaged files aside, never deleting them (docs/behaviour.md §9).

A file that cannot be read or fails validation is moved to ``<data_dir>/quarantine/`` under
a UTC-timestamped name, with a ``.why.txt`` note beside it, so a human can inspect it and
the pair never starts on a guess.
"""

from __future__ import annotations

import errno
import os
from datetime import UTC, datetime
from pathlib import Path

from livetrader.errors import StoreWriteError
from livetrader.store import disk
from livetrader.store.atomic import describe_os_error, ensure_dir, fsync_dir, write_atomic

QUARANTINE_DIR = "quarantine"
WHY_SUFFIX = ".why.txt"


def quarantine_dir(data_dir: Path) -> Path:
    """The quarantine folder of a data directory."""
    return Path(data_dir) / QUARANTINE_DIR


def quarantine(data_dir: Path, path: Path, reason: str) -> Path:
    """Move ``path`` into the quarantine folder and explain why; return its new path.

    The new name is ``<YYYYmmddTHHMMSSZ>_<original name>`` (``-2``, ``-3``... added to the
    stamp if taken, so nothing already quarantined is ever overwritten). A sibling
    ``<new name>.why.txt`` records the reason, the original path and the time. Both the
    source and quarantine directories are fsync'ed so the move survives a crash. Raises
    ``StoreWriteError`` if the move fails (the file then stays where it was).

    Call it while holding the data directory lock: the free-name check and the rename are
    two steps, safe only with a single actor.
    """
    data_dir, path = Path(data_dir), Path(path)
    qdir = quarantine_dir(data_dir)
    now = datetime.now(tz=UTC)
    try:
        ensure_dir(qdir)
        target = _free_name(qdir, now.strftime("%Y%m%dT%H%M%SZ"), path.name)
        _move(path, target)
        fsync_dir(path.parent)
        if path.parent != qdir:
            fsync_dir(qdir)
    except OSError as exc:
        raise StoreWriteError(path, f"cannot quarantine: {describe_os_error(exc)}") from exc
    note = (
        f"reason: {reason}\n"
        f"original path: {path.absolute()}\n"
        f"quarantined at: {now.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}\n"
        f"pid: {os.getpid()}\n"
    )
    # write_atomic fsyncs the quarantine directory once more, covering the note's entry.
    write_atomic(target.with_name(target.name + WHY_SUFFIX), note.encode("utf-8"))
    return target


def _free_name(qdir: Path, stamp: str, name: str) -> Path:
    # Two files quarantined in the same second (or two of the same name) must both be kept.
    candidate = qdir / f"{stamp}_{name}"
    n = 1
    while os.path.lexists(candidate) or os.path.lexists(candidate.with_name(candidate.name + WHY_SUFFIX)):
        n += 1
        candidate = qdir / f"{stamp}-{n}_{name}"
    return candidate


def _move(src: Path, dst: Path) -> None:
    try:
        disk.DISK.replace(src, dst)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    # Another filesystem: copy durably, then remove the original — a move, never a loss.
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        try:
            while chunk := fin.read(1024 * 1024):
                fout.write(chunk)
            fout.flush()
            os.fsync(fout.fileno())
        except OSError:
            # A half copy is evidence of nothing; the original is still in place.
            os.unlink(dst)
            raise
    os.unlink(src)
