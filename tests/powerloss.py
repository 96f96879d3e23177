"""Power loss, simulated: a disk that keeps only what was flushed (tests' ``livetrader.store.disk.Disk``).

``PowerLossDisk`` performs every operation on the real files, so the code under test reads
and writes as usual, and records what each flush made durable, as a kernel's page cache
and a disk would:

- a file's data (and length) is durable as of its last ``fdatasync``/``fsync``;
- a directory's entries (creates, renames, unlinks, subdirectories) as of its last
  directory ``fsync``;
- everything else is lost at a cut.

``cut_at`` picks the operation at which the power goes: that operation and every later one
fail with ``EIO`` (the process may run on, but nothing it does reaches the disk any more).
``crash()`` then rebuilds the data directory from the durable state alone. With ``torn``,
data written after the last flush of a file survives as a random prefix (a torn write),
as on a real disk that had written some sectors.

Files the code never opened through the disk (test set-up, the lock file) count as durable
as they were when first seen.
"""

from __future__ import annotations

import errno
import itertools
import os
import random
import shutil
import threading
from pathlib import Path

DIR = -1  # a directory's token in a directory map


class PowerCut(OSError):
    """Every operation after the cut: the disk is gone."""

    def __init__(self) -> None:
        super().__init__(errno.EIO, "Input/output error (simulated power cut)")


class PowerLossDisk:
    """Real file operations, with the durable state tracked beside them (see the module docstring)."""

    def __init__(self, root: Path, *, cut_at: int | None = None, torn: bool = False, seed: int = 0) -> None:
        self.root = os.path.abspath(root)
        self.made: set[str] = set()
        self.cut_at = cut_at
        self.torn = torn
        self.rng = random.Random(seed)
        self.ops = 0
        self.dead = False
        self._lock = threading.RLock()
        self._tokens = itertools.count(1)
        self.names: dict[str, int] = {}  # path -> token (files and directories, as the process sees them)
        self.fds: dict[int, int] = {}  # open descriptor -> token
        self.data: dict[int, bytes] = {}  # token -> durable bytes
        self.dirs: dict[str, dict[str, int]] = {}  # directory path -> durable {name: token or DIR}
        for directory, subdirs, files in os.walk(self.root):
            entries: dict[str, int] = {}
            for name in subdirs:
                entries[name] = DIR
                self.names[os.path.join(directory, name)] = DIR
            for name in files:
                entries[name] = self._known(os.path.join(directory, name))
            self.dirs[directory] = entries

    # --- bookkeeping ----------------------------------------------------------------------

    def _tick(self) -> None:
        self.ops += 1
        if self.dead:
            raise PowerCut
        if self.cut_at is not None and self.ops >= self.cut_at:
            self.dead = True
            raise PowerCut

    def _known(self, path: str) -> int:
        """The token of an existing file; one never seen is taken as durable as it is now."""
        token = self.names.get(path)
        if token is None or token == DIR:
            token = next(self._tokens)
            self.names[path] = token
            try:
                with open(path, "rb") as handle:
                    self.data[token] = handle.read()
            except OSError:
                self.data[token] = b""
        return token

    @staticmethod
    def _path(path: str | os.PathLike[str]) -> str:
        return os.path.abspath(os.fspath(path))

    # --- the Disk interface ---------------------------------------------------------------

    def open(self, path: str | os.PathLike[str], flags: int, mode: int = 0o644) -> int:
        with self._lock:
            path = self._path(path)
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC):
                self._tick()
            existed = os.path.lexists(path)
            fd = os.open(path, flags, mode)
            if not existed or path not in self.names:
                if existed:
                    token = self._known(path)
                else:
                    token = next(self._tokens)  # a new file: nothing of it is durable yet
                    self.names[path] = token
            else:
                token = self.names[path]
            self.fds[fd] = token
            return fd

    def write(self, fd: int, data: bytes | memoryview) -> int:
        with self._lock:
            self._tick()
            return os.write(fd, data)

    def fdatasync(self, fd: int) -> None:
        with self._lock:
            self._tick()
            os.fdatasync(fd)
            self._flushed(fd)

    def fsync(self, fd: int) -> None:
        with self._lock:
            self._tick()
            os.fsync(fd)
            self._flushed(fd)

    def _flushed(self, fd: int) -> None:
        token = self.fds.get(fd)
        if token is not None:
            with open(f"/proc/self/fd/{fd}", "rb") as handle:  # the same file, even renamed since
                self.data[token] = handle.read()

    def ftruncate(self, fd: int, length: int) -> None:
        with self._lock:
            self._tick()
            os.ftruncate(fd, length)

    def close(self, fd: int) -> None:
        with self._lock:
            self.fds.pop(fd, None)
            os.close(fd)

    def replace(self, src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        with self._lock:
            self._tick()
            src, dst = self._path(src), self._path(dst)
            token = self._known(src)
            os.replace(src, dst)
            self.names.pop(src, None)
            self.names[dst] = token

    def unlink(self, path: str | os.PathLike[str]) -> None:
        with self._lock:
            self._tick()
            path = self._path(path)
            os.unlink(path)
            self.names.pop(path, None)

    def mkdir(self, path: str | os.PathLike[str], mode: int = 0o777) -> None:
        with self._lock:
            self._tick()
            path = self._path(path)
            os.mkdir(path, mode)
            self.names[path] = DIR
            self.dirs[path] = {}  # its entries are durable only once it is fsync'ed

    def fsync_dir(self, path: str | os.PathLike[str]) -> None:
        with self._lock:
            self._tick()
            path = self._path(path)
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            entries: dict[str, int] = {}
            for name in os.listdir(path):
                full = os.path.join(path, name)
                entries[name] = DIR if os.path.isdir(full) and not os.path.islink(full) else self._known(full)
            self.dirs[path] = entries

    # --- the cut --------------------------------------------------------------------------

    def crash(self) -> dict[str, int]:
        """Cut the power (if not already) and leave on disk only what was durable; return counts."""
        with self._lock:
            self.dead = True
            current = {token: path for path, token in self.names.items() if token != DIR}
            volatile: dict[int, bytes] = {}
            for token, path in current.items():
                try:
                    with open(path, "rb") as handle:
                        volatile[token] = handle.read()
                except OSError:
                    pass
            gone = self.root + ".lost"
            shutil.rmtree(gone, ignore_errors=True)
            os.rename(self.root, gone)
            counts = {"files": 0, "torn": 0}
            self._rebuild(self.root, volatile, counts)
            shutil.rmtree(gone, ignore_errors=True)
            return counts

    def _rebuild(self, directory: str, volatile: dict[int, bytes], counts: dict[str, int]) -> None:
        os.mkdir(directory)
        for name, token in self.dirs.get(directory, {}).items():
            path = os.path.join(directory, name)
            if token == DIR:
                self._rebuild(path, volatile, counts)
                continue
            data = self.data.get(token, b"")
            later = volatile.get(token)
            if self.torn and later is not None and len(later) > len(data) and later.startswith(data):
                data = later[: self.rng.randint(len(data), len(later))]
                counts["torn"] += 1
            with open(path, "wb") as handle:
                handle.write(data)
            counts["files"] += 1
