"""Atomic, durable file replacement and tolerant reads (docs/behaviour.md §9).

A write goes to ``name.tmp`` in the same directory, is fsync'ed, renamed over ``name`` and
the directory is fsync'ed. ``rename`` within one filesystem is atomic, so a reader (or a
restart after SIGKILL or power loss) sees either the whole old file or the whole new one,
never a mix. Only one process writes a data directory at a time (``DataDirLock``), which is
why a fixed ``.tmp`` name is safe.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import orjson

from livetrader.errors import StoreReadError, StoreWriteError
from livetrader.store import disk

TMP_SUFFIX = ".tmp"
# Never scanned by clean_temp_files: quarantined files are evidence, kept whatever their name.
_QUARANTINE_DIR = "quarantine"


def describe_os_error(exc: OSError) -> str:
    """A short, greppable text for an OS error: ``No space left on device [ENOSPC]``."""
    code = errno.errorcode.get(exc.errno, str(exc.errno)) if exc.errno else None
    text = exc.strerror or str(exc) or type(exc).__name__
    return f"{text} [{code}]" if code else text


def fsync_dir(directory: Path) -> None:
    """Make directory entries (a create, rename or unlink inside ``directory``) durable.

    Without this a crash can undo a rename even though the file's data was fsync'ed.
    """
    disk.DISK.fsync_dir(directory)


def as_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path, without rebuilding one it already is (hot when restoring thousands of pairs)."""
    return path if isinstance(path, Path) else Path(path)


def ensure_dir(directory: Path) -> None:
    """Create ``directory`` (and its parents) unless this process already made sure it exists.

    Restoring thousands of pairs asks for the same two directories thousands of times;
    one ``mkdir`` each is enough. A directory created here is made durable in its parent
    (a directory fsync), or a power cut could take it, and every file in it, away.
    """
    made = disk.DISK.made
    key = str(directory)
    if key not in made:
        _make_dirs(Path(directory))
        made.add(key)


def _make_dirs(directory: Path) -> None:
    if directory.is_dir():
        return
    _make_dirs(directory.parent)
    try:
        disk.DISK.mkdir(directory)
    except FileExistsError:
        if not directory.is_dir():
            raise
        return
    fsync_dir(directory.parent)


def tmp_path_of(path: Path) -> Path:
    """The temporary sibling ``name.tmp`` that ``write_atomic`` writes before renaming."""
    return path.with_name(path.name + TMP_SUFFIX)


def _write_all(fd: int, data: bytes) -> None:
    # os.write may write less than asked (signals, near-full disks); loop until all is out.
    view = memoryview(data)
    while view:
        written = disk.DISK.write(fd, view)
        view = view[written:]


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    On any OS failure (disk full, read-only filesystem, I/O error) the previous ``path`` is
    left as it was, the partial ``name.tmp`` is removed, and ``StoreWriteError`` is raised
    naming the path and the OS error. The parent directory must exist.
    """
    path = as_path(path)
    replace_file(path, data)
    try:
        fsync_dir(path.parent)
    except OSError as exc:
        # The rename happened but may not survive a power loss; the content itself is whole.
        raise StoreWriteError(path, f"{describe_os_error(exc)}; the new content is in place but its directory "
                                    "entry may not be durable") from exc


def replace_file(path: Path, data: bytes) -> None:
    """``write_atomic`` without the directory fsync: for a batch of files in one directory,
    fsynced once after the last (``fsync_dir``). Until then a power loss may undo the rename,
    never tear the file.
    """
    tmp = tmp_path_of(path)
    try:
        # O_TRUNC: a stale tmp from an earlier crash is simply overwritten (O_NOFOLLOW: never a
        # file a planted symlink points at).
        fd = disk.open_regular(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            # Unbuffered os.write: there is no user-space buffer to flush before fsync.
            _write_all(fd, data)
            disk.DISK.fdatasync(fd)  # the data and its length; the rename is made durable by the directory fsync
        finally:
            disk.DISK.close(fd)
        disk.DISK.replace(tmp, path)
    except OSError as exc:
        _remove_quietly(tmp)
        kept = "the previous content is kept" if os.path.exists(path) else "the file was not created"
        raise StoreWriteError(path, f"{describe_os_error(exc)}; {kept}") from exc


def write_json_atomic(path: Path, obj: object) -> None:
    """Serialise ``obj`` with orjson and ``write_atomic`` it (``TypeError`` if not serialisable)."""
    write_atomic(path, orjson.dumps(obj))


def read_json(path: Path) -> object:
    """Read and parse a JSON file written by ``write_json_atomic``.

    Raises ``FileNotFoundError`` unchanged when the file does not exist: a missing file means
    "no state yet", not damage, and must not be quarantined. Any other read error and any
    invalid JSON (including an empty file) raise ``StoreReadError(path, reason)``.
    """
    path = as_path(path)
    try:
        data = disk.read_regular(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StoreReadError(path, describe_os_error(exc)) from exc
    if not data:
        raise StoreReadError(path, "file is empty")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise StoreReadError(path, f"invalid JSON: {exc}") from exc


def clean_temp_files(directory: Path) -> list[Path]:
    """Remove stale ``*.tmp`` files left by a crash anywhere under ``directory``; return them.

    Call it only while holding the data directory lock, otherwise it could remove the
    in-flight temporary file of another process. The ``quarantine`` folder at the top of
    ``directory`` is skipped: nothing there is ever deleted. Symlinked folders are not followed.
    """
    directory = Path(directory)
    removed: list[Path] = []
    for root, dirs, files in os.walk(directory):
        if Path(root) == directory and _QUARANTINE_DIR in dirs:
            dirs.remove(_QUARANTINE_DIR)
        dirs.sort()
        touched = False
        for name in sorted(files):
            if not name.endswith(TMP_SUFFIX):
                continue
            candidate = Path(root) / name
            try:
                if not stat.S_ISREG(candidate.lstat().st_mode):
                    continue
                disk.DISK.unlink(candidate)
            except FileNotFoundError:
                continue
            removed.append(candidate)
            touched = True
        if touched:
            # Make the removals durable so a crash cannot resurrect a half-written tmp.
            fsync_dir(Path(root))
    return removed


def _remove_quietly(path: Path) -> None:
    # Best effort during error handling: the original error is what the caller must see.
    try:
        disk.DISK.unlink(path)
    except OSError:
        pass
