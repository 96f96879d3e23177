"""Durable state under failing system calls and damaged files, found by a review: the commit log's
checkpoint and cut-back when a call fails, a damaged journal line where committed records belong,
and an operator's adopt carried out once across restarts. Each test states the promise it checks;
each failed before its fix."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
from test_commit import T0, M, closed, opened

from livetrader.errors import StoreWriteError
from livetrader.events import EventBus
from livetrader.live.halt import Halts
from livetrader.store import disk
from livetrader.store.commit import CommitLog, commit_log_path, replay_commit_log
from livetrader.store.control import append_control
from livetrader.store.layout import pair_paths
from livetrader.store.state import StateDamaged, restore_pair


def _log_symbols(data_dir: Path) -> list[str]:
    return [orjson.loads(line)["record"]["symbol"] for line in commit_log_path(data_dir).read_bytes().splitlines()]


# --- 1. CommitLog.checkpointed when a system call fails ---------------------------------------------------


def _commit(commits: CommitLog, symbol: str) -> None:
    asyncio.run(commits.commit(1, opened(symbol, T0)))


def _two_commits(data_dir: Path) -> tuple[CommitLog, int]:
    """A commit log holding AAAUSDT's line then BBBUSDT's; and its size after the first."""
    commits = CommitLog(commit_log_path(data_dir))
    _commit(commits, "AAAUSDT")
    first = commits.size
    _commit(commits, "BBBUSDT")
    return commits, first


def test_a_checkpoint_that_cannot_open_its_new_file_keeps_the_log_whole_and_in_use(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shortened log cannot be opened (EMFILE: thousands of journals are open). Nothing is
    renamed: the log is kept whole, and later commits go on into the file a restart reads."""
    commits, first = _two_commits(tmp_path)
    real_open = disk.DISK.open

    def open_(path, flags, mode=0o644):  # type: ignore[no-untyped-def]
        if str(path).endswith(".tmp"):
            raise OSError(errno.EMFILE, "Too many open files")
        return real_open(path, flags, mode)

    monkeypatch.setattr(disk.DISK, "open", open_)
    assert not commits.checkpointed(first)
    monkeypatch.setattr(disk.DISK, "open", real_open)
    _commit(commits, "CCCUSDT")
    assert _log_symbols(tmp_path) == ["AAAUSDT", "BBBUSDT", "CCCUSDT"]
    assert commits.checkpointed(commits.size) and _log_symbols(tmp_path) == []
    commits.close()


def test_a_checkpoint_whose_rename_is_not_made_durable_stops_the_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shortened log replaced the old one, but the directory fsync failed: a power cut could
    bring the old file back, without what is appended from now on. So no commit is acknowledged
    any more (each is refused, saying why) until a restart; what was committed is in the file."""
    commits, first = _two_commits(tmp_path)

    def failing(path):  # type: ignore[no-untyped-def]
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(disk.DISK, "fsync_dir", failing)
    assert not commits.checkpointed(first)
    with pytest.raises(StoreWriteError, match="not made durable"):
        _commit(commits, "CCCUSDT")
    assert _log_symbols(tmp_path) == ["BBBUSDT"]
    commits.close()


def test_a_failed_fdatasync_after_emptying_the_log_does_not_lose_later_commits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``ftruncate(fd, 0)`` succeeds, the ``fdatasync`` after it fails: the
    method returns False with ``self.size`` still the old length while the file is empty. The
    next checkpoint behind a newer commit ``pread``s at that stale offset, past the end, and
    replaces the log with nothing: the newer commit is dropped before its journal is flushed."""
    commits = CommitLog(commit_log_path(tmp_path))
    _commit(commits, "A-LONG-SYMBOL-SO-THE-FIRST-LINE-IS-LONGER-USDT")
    real_sync = disk.DISK.fdatasync
    calls = []

    def failing_once(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(errno.EIO, "Input/output error")
        real_sync(fd)

    monkeypatch.setattr(disk.DISK, "fdatasync", failing_once)
    assert not commits.checkpointed(commits.size)  # the truncate happened, its flush failed
    monkeypatch.setattr(disk.DISK, "fdatasync", real_sync)
    _commit(commits, "BBBUSDT")
    pass_read = commits.size  # a writer pass reads the size, flushes the journals...
    _commit(commits, "CCCUSDT")  # ...while the loop commits again
    commits.checkpointed(pass_read)
    assert "CCCUSDT" in _log_symbols(tmp_path), "a commit newer than the checkpoint was dropped from the log"
    commits.close()


# --- 2. replay_commit_log: a damaged journal line at a committed position empties the only good copy --------


def test_a_damaged_journal_line_at_a_committed_position_keeps_the_committed_record(tmp_path: Path) -> None:
    """After a power cut the journal's unflushed middle is lost as
    zeros (ext4 data=writeback, XFS, a bad sector) while a later line survived: line 2 is
    garbage. The commit log holds records 1..3 intact. ``_complete`` counts the bad line as
    record 2 "present" (no comparison when the journal has problems), the log is then
    truncated, and ``restore_pair`` quarantines the journal. Record 2 now exists nowhere: the
    journal copy is zeros, the commit log copy was deleted (promise: damaged files are
    quarantined, never deleted; a power cut never loses a trade)."""
    key = ("AAAUSDT", "s1", "sim")
    journal = pair_paths(tmp_path, key)[0]
    journal.parent.mkdir(parents=True)
    records = [opened("AAAUSDT", T0), closed("AAAUSDT", T0 + 5 * M, T0), opened("AAAUSDT", T0 + 6 * M)]
    lines = [orjson.dumps(r) + b"\n" for r in records]
    journal.write_bytes(lines[0] + b"\0" * len(lines[1]) + lines[2])
    commit_log_path(tmp_path).write_bytes(b"".join(orjson.dumps({"n": n, "record": r}) + b"\n"
                                                   for n, r in enumerate(records, start=1)))
    replay_commit_log(tmp_path)
    with pytest.raises(StateDamaged):
        restore_pair(tmp_path, key)  # the pair is refused: fine
    kept = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert orjson.dumps(records[1]) in kept, "the committed 'closed' record was deleted with the commit log"


# --- 3. positions adopt journaled while stopped is carried out again at a later restart ---------------------


def test_an_adopt_carried_out_in_the_minute_it_was_journaled_is_not_redone_at_the_next_start(tmp_path: Path) -> None:
    """``livetrader positions adopt`` while no daemon runs stamps the record
    with the wall clock (12:00:30.5); the daemon starts at 12:00:40 and its catch-up tick
    (``Engine.first_tick``, ``Pair.tick`` -> ``_settle`` -> ``Executor.adopt``) stamps
    ``position_adopted`` with the MINUTE, 12:00:00. At the next start ``Halts._settle`` looks for
    a ``position_adopted`` at or after the record's time, finds none, and adopts again: the
    protective stop is cancelled and replaced, another record journaled, the amount re-read
    (promise: an operator record is applied exactly once)."""
    record_at = T0 + 30_500
    append_control(tmp_path, {"event": "adopt", "at": record_at, "signal_id": "sig-1", "by": "operator",
                              "reason": ""})
    adopted = {"event": "position_adopted", "at": T0, "signal_id": "sig-1"}  # Executor._record(now=minute)
    broker = object()
    pair = SimpleNamespace(executor=SimpleNamespace(broker=broker), row=SimpleNamespace(id="sig-1", pending_at=T0 - M),
                           store=SimpleNamespace(records=lambda: [adopted]), settle=None, symbol="AAAUSDT",
                           strategy_name="s1", risk=None, halted=None)
    halts = Halts(tmp_path, lambda: T0 + 5 * M, EventBus())
    halts.pairs = [pair]
    halts.poll(force=True)  # what Halts.start does at the second start
    assert pair.settle is None, "the adopt is carried out a second time"


# --- 4. a commit log left ending in a partial line glues the next batch onto it ------------------------------


def test_a_partial_batch_that_cannot_be_cut_back_stops_the_log_and_is_read_as_a_torn_tail(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch is written in part (ENOSPC) and cutting it back fails too. A next batch appended
    after that partial line would join it into one unreadable line, losing an acknowledged
    record: so the log takes no more commits, loudly. The next start reads the partial line as a
    torn last entry: the earlier commits are put back, and the log is not quarantined."""
    commits = CommitLog(commit_log_path(tmp_path))
    asyncio.run(commits.commit(1, opened("AAAUSDT", T0)))
    real_write, real_truncate = disk.DISK.write, disk.DISK.ftruncate
    state = {"writes": 0}

    def write(fd, data):  # type: ignore[no-untyped-def]
        state["writes"] += 1
        if state["writes"] == 1:
            return real_write(fd, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    def truncate(fd, size):  # type: ignore[no-untyped-def]
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(disk.DISK, "write", write)
    monkeypatch.setattr(disk.DISK, "ftruncate", truncate)
    with pytest.raises(StoreWriteError, match="takes no more commits"):
        asyncio.run(commits.commit(1, opened("BBBUSDT", T0)))
    monkeypatch.setattr(disk.DISK, "write", real_write)
    monkeypatch.setattr(disk.DISK, "ftruncate", real_truncate)
    with pytest.raises(StoreWriteError, match="could not be cut back"):
        asyncio.run(commits.commit(1, opened("CCCUSDT", T0)))
    commits.close()
    assert commit_log_path(tmp_path).read_bytes().count(b"\n") == 1  # AAAUSDT's line, then the partial one
    done = replay_commit_log(tmp_path)  # a power cut: no journal holds its line
    assert not done.problems and list(done.restored) == [pair_paths(tmp_path, ("AAAUSDT", "s1", "sim"))[0]]


def test_an_adopt_is_matched_to_its_own_request_by_the_time_it_names() -> None:
    """``position_adopted`` names the request it carried out (``requested_at``): a restart skips
    that request, and not a later one made in the same minute."""
    from livetrader.live.halt import _answers

    request = {"event": "adopt", "at": T0 + 30_500, "signal_id": "sig-1"}
    later = {**request, "at": T0 + 45_000}
    done = {"event": "position_adopted", "at": T0, "signal_id": "sig-1", "requested_at": T0 + 30_500}
    assert _answers(done, request) and not _answers(done, later)
