"""The file operations that decide what survives a power cut, behind one small interface.

Every operation of the store that changes a file or a directory, or makes a change durable,
goes through ``DISK``: opening for writing, writing, ``fdatasync``/``fsync``, truncating,
renaming, unlinking, creating a directory and fsyncing one. Reads do not: what a process
reads back is what it wrote, durable or not.

Why an interface: a power cut keeps exactly what was flushed (file data by ``fdatasync``,
directory entries by a directory ``fsync``) and drops the rest, which no ``kill -9`` test
can show. The test suite swaps in an implementation that records what each flush made
durable and, on a simulated cut, rebuilds the directory from that alone (as SQLite's
crash-test VFS does); see ``tests/powerloss.py``. ``OsDisk`` is the real thing, at the cost
of one attribute lookup per call.

Journals, snapshots and the commit log are opened with ``O_NOFOLLOW`` and checked to be
regular files (``open_regular``): a symlink planted in the data directory is never written
through, and is treated like a damaged file.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Protocol

#: Flags every write-side open adds: never follow a planted symlink, never leak into children.
SAFE_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC


class Disk(Protocol):
    """The mutating and flushing file operations of the store (the signatures of ``os``'s)."""

    #: Directories known to exist (``ensure_dir`` asks the disk once per directory).
    made: set[str]

    def open(self, path: str | os.PathLike[str], flags: int, mode: int = 0o644) -> int: ...
    def write(self, fd: int, data: bytes | memoryview) -> int: ...
    def fdatasync(self, fd: int) -> None: ...
    def fsync(self, fd: int) -> None: ...
    def ftruncate(self, fd: int, length: int) -> None: ...
    def close(self, fd: int) -> None: ...
    def replace(self, src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None: ...
    def unlink(self, path: str | os.PathLike[str]) -> None: ...
    def mkdir(self, path: str | os.PathLike[str], mode: int = 0o777) -> None: ...
    def fsync_dir(self, path: str | os.PathLike[str]) -> None: ...


class OsDisk:
    """The real file system: each operation is the ``os`` call of the same name."""

    open = staticmethod(os.open)
    write = staticmethod(os.write)
    fdatasync = staticmethod(os.fdatasync)
    fsync = staticmethod(os.fsync)
    ftruncate = staticmethod(os.ftruncate)
    close = staticmethod(os.close)
    replace = staticmethod(os.replace)
    unlink = staticmethod(os.unlink)
    mkdir = staticmethod(os.mkdir)

    def __init__(self) -> None:
        self.made: set[str] = set()

    def fsync_dir(self, path: str | os.PathLike[str]) -> None:
        """Make the entries of directory ``path`` (creates, renames, unlinks) durable."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


#: The disk every store operation uses; tests swap it (``use``) to simulate power cuts.
DISK: Disk = OsDisk()


def use(disk: Disk) -> Disk:
    """Make ``disk`` the store's disk; return the previous one (to put back)."""
    global DISK
    previous, DISK = DISK, disk
    return previous


class NotRegularFile(OSError):
    """A journal or state file that is a symlink, a directory or a device: never written through."""


def open_regular(path: str | os.PathLike[str], flags: int, mode: int = 0o644) -> int:
    """``DISK.open`` a journal or state file, refusing anything but a regular file.

    ``O_NOFOLLOW`` refuses a symlink as the last component (``ELOOP``); ``O_NONBLOCK`` keeps
    a planted FIFO from blocking the open, and the ``fstat`` check refuses it and any other
    non-regular file. Raises ``NotRegularFile`` (an ``OSError``) saying what the file is.
    """
    try:
        fd = DISK.open(path, flags | SAFE_FLAGS | os.O_NONBLOCK, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotRegularFile(errno.ELOOP, "a symbolic link, not a regular file (never written through)",
                                 str(path)) from exc
        raise
    kind = os.fstat(fd).st_mode
    if not stat.S_ISREG(kind):
        DISK.close(fd)
        code = errno.EISDIR if stat.S_ISDIR(kind) else errno.EINVAL
        raise NotRegularFile(code, f"not a regular file ({_kind(kind)})", str(path))
    if not flags & os.O_NONBLOCK:
        os.set_blocking(fd, True)
    return fd


def read_regular(path: Path) -> bytes:
    """The bytes of a journal or state file, refusing a symlink or a non-regular file like ``open_regular``.

    Raises ``FileNotFoundError`` when it does not exist, ``NotRegularFile`` or another ``OSError``.
    """
    fd = open_regular(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        DISK.close(fd)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"
