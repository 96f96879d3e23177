"""The data directory lock: one daemon per data directory, released when the process dies.

``fcntl.flock`` locks belong to the open file description, so the kernel drops the lock
when the holder exits for any reason, SIGKILL included; no stale-lock cleanup is ever
needed. The lock file records who holds it so a refused start can name that process.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import orjson

from livetrader.core.format import format_time
from livetrader.errors import DataDirLocked, StoreWriteError
from livetrader.store.atomic import describe_os_error

LOCK_NAME = "livetrader.lock"


@dataclass(slots=True, frozen=True)
class LockHolder:
    """Who holds (or last held) a data directory lock: pid, start time (ms UTC), host."""

    pid: int
    started_at: int
    hostname: str

    @property
    def started_iso(self) -> str:
        """The start time as ISO-8601 UTC, e.g. ``2026-01-02T03:04:05Z``."""
        return format_time(self.started_at)


def lock_path(directory: Path) -> Path:
    """The lock file of a data directory."""
    return Path(directory) / LOCK_NAME


def _parse_holder(data: bytes) -> LockHolder | None:
    try:
        obj = orjson.loads(data)
        if not isinstance(obj, dict):
            return None
        pid, started_at, hostname = obj["pid"], obj["started_at"], obj["hostname"]
        if not (isinstance(pid, int) and isinstance(started_at, int) and isinstance(hostname, str)):
            return None
        return LockHolder(pid=pid, started_at=started_at, hostname=hostname)
    except (orjson.JSONDecodeError, KeyError):
        return None


def read_lock_holder(directory: Path) -> LockHolder | None:
    """The holder recorded in the lock file, or None if absent, empty or unreadable.

    The record survives a crash (a clean ``release`` empties it), so pair this with
    ``is_locked``: a holder while unlocked is a daemon that died without releasing.
    """
    try:
        return _parse_holder(lock_path(directory).read_bytes())
    except OSError:
        return None


def is_locked(directory: Path) -> bool:
    """True if some live process holds the lock of ``directory`` (this process included).

    Probes with a non-blocking shared lock on a separate descriptor and drops it at once;
    the lock file is never created by this check.
    """
    try:
        fd = os.open(lock_path(directory), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


class DataDirLock:
    """An exclusive lock on a data directory, held from ``acquire`` to ``release``.

    Use as ``with DataDirLock(data_dir): ...``. A second holder, in this or another
    process, gets ``DataDirLocked`` naming the current holder. The directory is created
    if missing. The lock file is never replaced or unlinked: the lock lives on its inode,
    and unlinking would let two processes lock two different files of the same name.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = lock_path(self.directory)
        self._fd: int | None = None
        #: What the lock file recorded when ``acquire`` took it: the previous holder when it
        #: never released the lock (killed, a power cut, ``os._exit``, a crash), else None.
        self.previous: LockHolder | None = None

    @property
    def held(self) -> bool:
        """True between a successful ``acquire`` and ``release``."""
        return self._fd is not None

    def acquire(self) -> LockHolder:
        """Take the lock without waiting and record this process as holder; return the record.

        Raises ``DataDirLocked`` if another holder has it, ``StoreWriteError`` if the lock file
        cannot be created or written.
        """
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this DataDirLock")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            # Never truncate a file a planted symlink points at (O_NOFOLLOW, then a regular-file check).
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise OSError(errno.EINVAL, "not a regular file")
        except OSError as exc:
            reason = "a symbolic link, not a regular file" if exc.errno == errno.ELOOP else describe_os_error(exc)
            raise StoreWriteError(self.path, f"{reason}; move it aside") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _wait_for_record(fd)
            os.close(fd)
            raise self._locked_error(holder) from None
        except OSError as exc:
            os.close(fd)
            raise StoreWriteError(self.path, f"cannot lock: {describe_os_error(exc)}") from exc
        # A clean ``release`` empties the record: one still there is a holder that ended abnormally.
        self.previous = _read_fd(fd)
        holder = LockHolder(pid=os.getpid(), started_at=time.time_ns() // 1_000_000, hostname=socket.gethostname())
        try:
            # Rewrite in place on the locked fd: the lock is on this inode, so no tmp+rename.
            os.ftruncate(fd, 0)
            os.pwrite(
                fd, orjson.dumps({"pid": holder.pid, "started_at": holder.started_at, "hostname": holder.hostname}), 0
            )
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)  # drops the lock too
            raise StoreWriteError(self.path, describe_os_error(exc)) from exc
        self._fd = fd
        return holder

    def release(self) -> None:
        """Empty the holder record and drop the lock; a no-op if not held."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            # Clear while still locked: after unlocking, the file may already be the next holder's.
            os.ftruncate(fd, 0)
            os.fsync(fd)  # a power cut right after a clean stop must not make it look abnormal
        except OSError:
            pass  # a stale record only misleads status tools; the lock itself still goes below
        finally:
            os.close(fd)  # closing the last descriptor releases the flock

    def _locked_error(self, holder: LockHolder | None) -> DataDirLocked:
        if holder is None:
            # The holder locked but has not written its record yet, or the record is damaged.
            who = "another livetrader process"
            pid = None
        else:
            here = socket.gethostname()
            host = "" if holder.hostname == here else f" on host {holder.hostname}"
            who = f"livetrader pid {holder.pid}{host} (started {holder.started_iso})"
            pid = holder.pid
        message = f"data directory {self.directory} is in use by {who}; stop it first or use another --data-dir"
        return DataDirLocked(message, self.directory, pid)

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _wait_for_record(fd: int, patience: float = 1.0) -> LockHolder | None:
    """The holder record of a lock another process holds, waiting briefly for it to be written.

    The winner of a race takes the lock first and writes its record just after, so for a
    moment the file is empty or still names the previous holder (one that ended abnormally).
    A record naming a process of this host that no longer exists is such a leftover.
    """
    deadline = time.monotonic() + patience
    while True:
        holder = _read_fd(fd)
        if holder is not None and (holder.hostname != socket.gethostname() or _alive(holder.pid)):
            return holder
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def _read_fd(fd: int) -> LockHolder | None:
    try:
        return _parse_holder(os.pread(fd, 4096, 0))
    except OSError:
        return None
