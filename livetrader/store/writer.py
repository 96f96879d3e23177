"""Snapshots and journal flushes done behind the event loop, by one thread.

The journal is the write-ahead log (docs/behaviour.md §9): a transition is durable once its journal
line is (in its pair's journal or, committed in a group, in the commit log), and a snapshot
only saves recovery the work of replaying the journal. So the loop hands snapshots and
written journals to this writer and goes on.

Journals: each pair journal written since the last pass is flushed (``fdatasync``), then
the commit log is emptied of what they now hold (``CommitLog.checkpointed``):
every committed line is then durable where it belongs. A commit wakes a pass even when the
journals it covers were flushed by the pass before (marked before their commit, they can be
taken by a pass that ran in between), so the log is emptied whenever the loop goes quiet.
Once a journal's flush has failed, the log is never emptied again in this process: the
failed journal's lines may exist nowhere else on disk, and the next start replays the log.

Snapshots: the writer replaces each file atomically
(``name.tmp``, ``fdatasync``, rename) and then fsyncs each directory once for the whole
batch. A pair that changes twice before its snapshot is written has only its newest state
written. A crash before a snapshot lands leaves the snapshot behind its journal, which
recovery completes (``restore_pair``: "completed an interrupted transition").

Why a thread: the system calls release the GIL, so the disk works while the loop waits.
It still needs the GIL between them, so while a sweep runs the metronome holds it
(``pause``/``resume``, a member of the sweep's pause registry ``livetrader.sweep``, which
resumes it after ``PAUSE_LIMIT_SECONDS`` whatever happens): it would take the loop's CPU
right when every pair ticks, and nothing it does is urgent (the commit log made every
transition durable already). ``flush`` and ``close`` never wait for a hold.
"""

from __future__ import annotations

import threading
from pathlib import Path

import orjson

from livetrader.errors import StoreWriteError
from livetrader.store.atomic import describe_os_error, fsync_dir, replace_file
from livetrader.store.commit import CommitLog
from livetrader.store.journal import Journal


class BackgroundWriter:
    """One background thread flushing journals and writing JSON snapshots atomically; never blocks the loop."""

    def __init__(self, commits: CommitLog | None = None) -> None:
        self._lock = threading.Condition()
        self._pending: dict[Path, object] = {}
        self._journals: set[Journal] = set()
        #: The commit log whose lines the journal flushes make redundant (emptied after each pass).
        self.commits = commits
        if commits is not None:
            commits.on_commit = self.wake
        self._busy = False
        self._closed = False
        #: A commit happened since the last pass read the commit log's size.
        self._committed = False
        #: A journal's flush failed: its lines stay in the commit log for good (see the module docstring).
        self._sync_failed = False
        # True while the metronome holds the passes; flushes waiting override it.
        self._held = False
        self._flushing = 0
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

    def journal_written(self, journal: Journal) -> None:
        """``journal`` has lines not flushed yet: flush it in the next pass (woken by ``wake``)."""
        with self._lock:
            self._journals.add(journal)

    def wake(self) -> None:
        """Start a pass now (called after each commit): the log holds lines to empty."""
        with self._lock:
            self._committed = True
            self._lock.notify()

    def pause(self) -> None:
        """Hold the next pass while a sweep runs (see the module docstring)."""
        with self._lock:
            self._held = True

    def resume(self) -> None:
        """Let the passes run again (the last sweep ended)."""
        with self._lock:
            self._held = False
            self._lock.notify_all()

    def _may_run(self) -> bool:
        return not self._held or self._flushing > 0 or self._closed

    def failure(self, path: Path) -> StoreWriteError | None:
        """The failure of the last background write of ``path``, once (None when it was written)."""
        if not self._failures:
            return None
        with self._lock:
            return self._failures.pop(path, None)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued snapshot is written (or failed); False if ``timeout`` passed first."""
        with self._lock:
            self._flushing += 1
            self._lock.notify_all()  # journals marked without a commit (it failed) wake no pass by themselves
            try:
                return self._lock.wait_for(lambda: not self._has_work() and not self._busy, timeout)
            finally:
                self._flushing -= 1

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
                while not (self._has_work() and self._may_run()) and not self._closed:
                    self._lock.wait()  # put, wake, resume, flush and close notify
                if not self._has_work():
                    return  # closed and drained
                # The commit log's size first, then the journals: every line committed up to that
                # size was written to a journal already marked, so the flushes below cover it.
                committed, self._committed = self._committed_size(), False
                batch, self._pending = self._pending, {}
                journals, self._journals = self._journals, set()
                self._busy = True
            try:
                if not self._sync(journals):
                    self._sync_failed = True
                if self.commits is not None and not self._sync_failed:
                    self.commits.checkpointed(committed)
                self._write(batch)
            finally:
                with self._lock:
                    self._busy = False
                    self._lock.notify_all()

    def _has_work(self) -> bool:
        return bool(self._pending or self._journals or (self._committed and not self._sync_failed))

    def _committed_size(self) -> int:
        if self.commits is None:
            return 0
        with self.commits.lock:
            return self.commits.size

    def _sync(self, journals: set[Journal]) -> bool:
        ok = True
        for journal in journals:
            try:
                journal.sync()
            except StoreWriteError as exc:
                self._fail(journal.path, exc)  # the commit log keeps the lines: it is not emptied
                ok = False
        return ok

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

