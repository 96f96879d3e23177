"""Snapshots written behind the event loop, by one thread, newest state per file.

The journal is the write-ahead log (SPEC §9): a transition is durable once its journal
line is, and a snapshot only saves recovery the work of replaying the journal. So the
loop hands snapshots to this writer and goes on; the writer replaces each file atomically
(``name.tmp``, ``fdatasync``, rename) and then fsyncs each directory once for the whole
batch. A pair that changes twice before its snapshot is written has only its newest state
written. A crash before a snapshot lands leaves the snapshot behind its journal, which
recovery completes (``restore_pair``: "completed an interrupted transition").

Why a thread: the system calls release the GIL, so the disk works while the loop ticks
the other pairs; and because the thread needs the GIL back between calls, it naturally
yields to a busy loop and catches up when the loop idles between minutes.
"""

from __future__ import annotations

import threading
from pathlib import Path

import orjson

from livetrader.errors import StoreWriteError
from livetrader.store.atomic import describe_os_error, fsync_dir, replace_file


class SnapshotWriter:
    """One background thread writing JSON snapshots atomically; ``put`` never blocks on the disk."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._pending: dict[Path, object] = {}
        self._busy = False
        self._closed = False
        #: The last failure per file not yet reported through ``failure`` (the write is retried by the next put).
        self._failures: dict[Path, StoreWriteError] = {}
        self.written = 0
        self._thread = threading.Thread(target=self._run, name="livetrader-snapshots", daemon=True)
        self._thread.start()

    def put(self, path: Path, obj: object) -> None:
        """Queue ``obj`` to replace ``path``; a newer ``put`` of the same path before it is written wins."""
        with self._lock:
            if self._closed:
                raise StoreWriteError(path, "the snapshot writer is closed")
            self._pending[path] = obj
            self._lock.notify()

    def failure(self, path: Path) -> StoreWriteError | None:
        """The failure of the last background write of ``path``, once (None when it was written)."""
        if not self._failures:
            return None
        with self._lock:
            return self._failures.pop(path, None)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued snapshot is written (or failed); False if ``timeout`` passed first."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._pending and not self._busy, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Write what is queued, then stop the thread; idempotent. False if ``timeout`` passed first."""
        flushed = self.flush(timeout)
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._thread.join(timeout)
        return flushed

    @property
    def pending(self) -> int:
        """Snapshots queued and not yet written."""
        return len(self._pending)

    def _run(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._pending or self._closed)
                if not self._pending:
                    return  # closed and drained
                batch, self._pending = self._pending, {}
                self._busy = True
            try:
                self._write(batch)
            finally:
                with self._lock:
                    self._busy = False
                    self._lock.notify_all()

    def _write(self, batch: dict[Path, object]) -> None:
        directories: dict[Path, list[Path]] = {}
        for path, obj in batch.items():
            try:
                replace_file(path, orjson.dumps(obj))
            except (StoreWriteError, TypeError) as exc:
                self._fail(path, exc if isinstance(exc, StoreWriteError) else StoreWriteError(path, str(exc)))
                continue
            directories.setdefault(path.parent, []).append(path)
        for directory, paths in directories.items():
            # One directory fsync makes every rename of the batch in it durable.
            try:
                fsync_dir(directory)
            except OSError as exc:
                reason = f"{describe_os_error(exc)}; the new content is in place but may not survive a power loss"
                for path in paths:
                    self._fail(path, StoreWriteError(path, reason))
                continue
            self.written += len(paths)

    def _fail(self, path: Path, error: StoreWriteError) -> None:
        with self._lock:
            self._failures[path] = error

