"""Durable storage: atomic writes under failure and SIGKILL, the journal, the lock, quarantine."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import orjson
import pytest

from livetrader.core.signal import SignalRow, TickResult, record_of, row_of
from livetrader.errors import DataDirLocked, LivetraderError, StoreReadError, StoreWriteError
from livetrader.store import disk
from livetrader.store.atomic import clean_temp_files, read_json, write_atomic, write_json_atomic
from livetrader.store.journal import (
    Journal,
    journal_path,
    read_journal,
    repair_truncated_tail,
)
from livetrader.store.lock import DataDirLock, LockHolder, is_locked, read_lock_holder
from livetrader.store.quarantine import quarantine

REPO = Path(__file__).resolve().parents[1]
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def _spawn(code: str, *args: str) -> subprocess.Popen[str]:
    """A real child Python process running ``code`` with the repo importable."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_ready(proc: subprocess.Popen[str]) -> None:
    line = proc.stdout.readline() if proc.stdout else ""
    if line.strip() != "ready":
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"child did not start: {line!r} {err}")


def _sigkill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()


# --- atomic writes -------------------------------------------------------------------------


def test_write_atomic_replaces_content_and_leaves_no_tmp(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_atomic(target, b"first")
    write_atomic(target, b"second, longer content")
    assert target.read_bytes() == b"second, longer content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_write_json_atomic_round_trip(tmp_path: Path) -> None:
    target = tmp_path / "s.json"
    obj = {"a": 1, "b": [1.5, None, "x"], "c": {"d": True}}
    write_json_atomic(target, obj)
    assert read_json(target) == obj


def test_write_atomic_overwrites_a_stale_tmp(tmp_path: Path) -> None:
    target = tmp_path / "s.json"
    (tmp_path / "s.json.tmp").write_bytes(b"x" * 10_000)  # left by an earlier crash
    write_atomic(target, b"{}")
    assert target.read_bytes() == b"{}"
    assert not (tmp_path / "s.json.tmp").exists()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EIO])
def test_failed_write_keeps_previous_content_and_removes_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    target = tmp_path / "state.json"
    write_json_atomic(target, {"version": 1})

    def failing_fsync(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(disk.DISK, "fdatasync", failing_fsync)  # the flush of the new content
    with pytest.raises(StoreWriteError) as info:
        write_json_atomic(target, {"version": 2, "pad": "y" * 5000})
    monkeypatch.undo()

    message = str(info.value)
    assert str(target) in message
    assert errno.errorcode[code] in message and os.strerror(code) in message
    assert "previous content is kept" in message
    assert info.value.exit_code == 1 and isinstance(info.value.__cause__, OSError)
    assert read_json(target) == {"version": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_failed_write_of_new_file_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write

    def short_then_fail(fd: int, data: bytes) -> int:
        if len(data) > 10:
            return real_write(fd, bytes(data[:10]))  # a partial write, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(disk.DISK, "write", short_then_fail)
    with pytest.raises(StoreWriteError, match="ENOSPC.*not created"):
        write_atomic(tmp_path / "new.json", b"0123456789abcdef")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_write_atomic_into_missing_directory_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreWriteError, match="ENOENT"):
        write_atomic(tmp_path / "nope" / "x.json", b"{}")


def test_read_json_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "absent.json")  # "no state yet" is not damage
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"a": 1')
    with pytest.raises(StoreReadError, match="invalid JSON") as info:
        read_json(bad)
    assert info.value.path == bad and str(bad) in str(info.value)
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    with pytest.raises(StoreReadError, match="empty"):
        read_json(empty)
    with pytest.raises(StoreReadError, match="EISDIR"):
        read_json(tmp_path)


_WRITER = """
import sys
from pathlib import Path
import orjson
from livetrader.store.atomic import write_atomic

target = Path(sys.argv[1])
payloads = [orjson.dumps({"which": w, "blob": w * 1_500_000}) for w in "AB"]
write_atomic(target, payloads[0])
print("ready", flush=True)
i = 0
while True:
    i += 1
    write_atomic(target, payloads[i % 2])
"""


@pytest.mark.e2e
def test_sigkill_during_write_atomic_always_leaves_a_complete_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    payloads = {orjson.dumps({"which": w, "blob": w * 1_500_000}) for w in "AB"}
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    tmp_left = 0
    for attempt in range(20):
        proc = _spawn(_WRITER, str(target))
        _wait_ready(proc)
        time.sleep(rng.uniform(0.0, 0.05))
        _sigkill(proc)
        data = target.read_bytes()
        assert data in payloads, f"kill {attempt} (seed {seed}) left {len(data)} bytes that are no payload"
        assert orjson.loads(data)["which"] in ("A", "B")
        assert read_json(target) == orjson.loads(data)
        tmp = tmp_path / "state.json.tmp"
        if tmp.exists():
            tmp_left += 1
            assert clean_temp_files(tmp_path) == [tmp]
        assert not tmp.exists()
    # Proves the kills landed inside write_atomic, not only between writes.
    assert tmp_left >= 1, f"no kill interrupted a write (seed {seed})"


def test_clean_temp_files(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_bytes(b"{}")
    (tmp_path / "state.json.tmp").write_bytes(b"{")
    (tmp_path / "pairs" / "x").mkdir(parents=True)
    (tmp_path / "pairs" / "x" / "snap.json.tmp").write_bytes(b"")
    (tmp_path / "pairs" / "x" / "snap.json").write_bytes(b"{}")
    (tmp_path / "quarantine").mkdir()
    (tmp_path / "quarantine" / "20240101T000000Z_a.json.tmp").write_bytes(b"evidence")
    (tmp_path / "adir.tmp").mkdir()  # a directory is not a stale temp file

    removed = clean_temp_files(tmp_path)

    assert sorted(removed) == sorted([tmp_path / "state.json.tmp", tmp_path / "pairs" / "x" / "snap.json.tmp"])
    assert (tmp_path / "state.json").exists() and (tmp_path / "pairs" / "x" / "snap.json").exists()
    assert (tmp_path / "quarantine" / "20240101T000000Z_a.json.tmp").exists()
    assert (tmp_path / "adir.tmp").is_dir()
    assert clean_temp_files(tmp_path) == []


# --- journal -------------------------------------------------------------------------------


def _row(pending_at: int | None = None) -> SignalRow:
    return SignalRow(
        id="BTC/USDT-s1-20240101T0000Z",
        symbol="BTC/USDT",
        strategy="s1",
        exchange="binance",
        position="long",
        price_open=42_000.0,
        take_profit=43_000.0,
        stop_loss=41_000.0,
        minutes=60,
        scheduled_at=T0,
        pending_at=pending_at,
        note="n",
    )


def _records() -> list[dict]:
    base = {"symbol": "BTC/USDT", "strategy": "s1", "exchange": "binance"}
    return [
        record_of(TickResult(action="scheduled", at=T0, price=42_100.0, signal=_row(), **base)),
        record_of(TickResult(action="opened", at=T0 + 60_000, price=42_000.0, signal=_row(T0 + 60_000), **base)),
        record_of(
            TickResult(
                action="closed",
                at=T0 + 120_000,
                price=43_000.0,
                signal=_row(T0 + 60_000),
                close_reason="take_profit",
                price_close=43_000.0,
                pnl_percentage=2.0,
                **base,
            )
        ),
    ]


def test_journal_path_encodes_names(tmp_path: Path) -> None:
    path = journal_path(tmp_path, "BTC/USDT", "my strat:v2", "binance")
    assert path == tmp_path / "journal" / "BTC%2FUSDT_my%20strat%3Av2_binance.jsonl"
    assert journal_path(tmp_path, "a.b_c-D9", "s", "e").name == "a.b%5Fc-D9_s_e.jsonl"
    assert journal_path(tmp_path, "BTCUSDT", "my-strategy", "sim").name == "BTCUSDT_my-strategy_sim.jsonl"
    with pytest.raises(ValueError):
        journal_path(tmp_path, "", "s", "e")


def test_journal_append_read_round_trip(tmp_path: Path) -> None:
    path = journal_path(tmp_path, "BTC/USDT", "s1", "binance")
    records = _records()
    with Journal(path) as journal:
        for rec in records:
            journal.append(rec)
    assert journal.closed
    with Journal(path) as journal:  # reopening appends after what is there
        journal.append({"event": "cancelled", "at": T0 + 180_000, "reason": "user"})

    read = read_journal(path)
    assert read.ok and read.truncated_tail is None and read.problems == []
    assert read.records[:3] == records
    assert read.records[3]["event"] == "cancelled"
    assert row_of(read.records[1]) == _row(T0 + 60_000)
    assert path.read_bytes().count(b"\n") == 4


def test_journal_refuses_invalid_records(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.jsonl") as journal:
        for bad in ({"at": T0}, {"event": "idle", "at": T0}, {"event": "opened"}, {"event": "opened", "at": "x"}):
            with pytest.raises(ValueError):
                journal.append(bad)
        with pytest.raises(TypeError):
            journal.append({"event": "opened", "at": T0, "x": object()})
    assert (tmp_path / "j.jsonl").read_bytes() == b""
    with pytest.raises(StoreWriteError, match="closed"):
        journal.append({"event": "opened", "at": T0})


def test_failed_journal_fsync_cuts_the_record_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    journal.append({"event": "scheduled", "at": T0})
    real_fdatasync = os.fdatasync
    calls: list[int] = []

    def fsync_fails_once(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fdatasync(fd)

    monkeypatch.setattr(disk.DISK, "fdatasync", fsync_fails_once)
    with pytest.raises(StoreWriteError, match=r"EIO.*record was not journaled") as info:
        journal.append({"event": "opened", "at": T0 + 1})
    monkeypatch.undo()
    assert str(path) in str(info.value)
    assert not journal.closed
    journal.append({"event": "cancelled", "at": T0 + 2})
    journal.close()
    read = read_journal(path)
    assert read.ok and read.truncated_tail is None
    assert [r["event"] for r in read.records] == ["scheduled", "cancelled"]


def test_journal_closes_itself_when_it_cannot_cut_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    journal.append({"event": "scheduled", "at": T0})

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(disk.DISK, "fsync", failing_fsync)
    monkeypatch.setattr(disk.DISK, "fdatasync", failing_fsync)
    with pytest.raises(StoreWriteError, match="ENOSPC.*restart to repair"):
        journal.append({"event": "opened", "at": T0 + 1})
    monkeypatch.undo()
    assert journal.closed
    with pytest.raises(StoreWriteError, match="closed"):
        journal.append({"event": "opened", "at": T0 + 1})
    repair_truncated_tail(path)
    read = read_journal(path)
    assert read.ok and [r["event"] for r in read.records] in (["scheduled"], ["scheduled", "opened"])


def test_short_journal_write_is_cut_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    journal.append({"event": "scheduled", "at": T0})
    real_write = os.write
    monkeypatch.setattr(disk.DISK, "write", lambda fd, data: real_write(fd, data[:7]))
    with pytest.raises(StoreWriteError, match="short write"):
        journal.append({"event": "opened", "at": T0 + 1})
    monkeypatch.undo()
    assert not journal.closed
    journal.append({"event": "closed", "at": T0 + 2})
    journal.close()
    read = read_journal(path)
    assert read.ok and read.truncated_tail is None
    assert [r["event"] for r in read.records] == ["scheduled", "closed"]


def test_truncated_last_line_is_detected_and_repaired(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with Journal(path) as journal:
        for rec in _records():
            journal.append(rec)
    good = path.read_bytes()
    partial = orjson.dumps({"event": "cancelled", "at": T0 + 999, "reason": "timeout"})[:17]
    with open(path, "ab") as f:
        f.write(partial)  # a crash mid-append

    read = read_journal(path)
    assert read.ok, "a truncated tail is expected after a crash, not a problem"
    assert read.records == _records()
    assert read.truncated_tail is not None
    assert (read.truncated_tail.line, read.truncated_tail.offset, read.truncated_tail.size) == (
        4,
        len(good),
        len(partial),
    )

    assert repair_truncated_tail(path) == len(partial)
    assert path.read_bytes() == good
    assert read_journal(path).truncated_tail is None
    assert repair_truncated_tail(path) == 0


def test_complete_json_without_newline_is_still_a_truncated_tail(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_bytes(b'{"event":"opened","at":1}')  # the crash hit just before the newline
    read = read_journal(path)
    assert read.records == [] and read.truncated_tail is not None and read.truncated_tail.size == 25
    assert repair_truncated_tail(path) == 25 and path.read_bytes() == b""


def test_garbage_middle_line_is_a_problem_with_its_line_number(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    lines = [
        b'{"event":"scheduled","at":1}',
        b"\x00\x00garbage{",
        b'{"event":"opened","at":2}',
        b"[1, 2]",
        b'{"event":"teleported","at":3}',
        b'{"event":"closed"}',
        b"",
        b'{"event":"closed","at":4}',
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    read = read_journal(path)
    assert not read.ok
    assert [r["at"] for r in read.records] == [1, 2, 4]
    assert [p.line for p in read.problems] == [2, 4, 5, 6, 7]
    reasons = [p.reason for p in read.problems]
    assert reasons[0].startswith("invalid JSON")
    assert "not a JSON object" in reasons[1]
    assert "unknown event 'teleported'" in reasons[2]
    assert "missing 'at'" in reasons[3]
    assert reasons[4] == "empty line"
    assert read.problems[0].offset == len(lines[0]) + 1
    assert read.truncated_tail is None
    assert repair_truncated_tail(path) == 0  # repair never touches middle lines


def test_missing_journal_reads_empty(tmp_path: Path) -> None:
    read = read_journal(tmp_path / "none.jsonl")
    assert read.records == [] and read.ok and read.truncated_tail is None
    assert repair_truncated_tail(tmp_path / "none.jsonl") == 0


# --- data directory lock -------------------------------------------------------------------

_HOLDER = """
import sys, time
from livetrader.store.lock import DataDirLock
lock = DataDirLock(sys.argv[1])
lock.acquire()
print("ready", flush=True)
time.sleep(60)
"""


def test_lock_in_process(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert not is_locked(data) and read_lock_holder(data) is None
    with DataDirLock(data) as lock:
        assert lock.held and is_locked(data)
        holder = read_lock_holder(data)
        assert isinstance(holder, LockHolder) and holder.pid == os.getpid()
        assert abs(holder.started_at - time.time() * 1000) < 60_000
        with pytest.raises(DataDirLocked, match=f"pid {os.getpid()}"):
            DataDirLock(data).acquire()
        inode = (data / "livetrader.lock").stat().st_ino
    assert not lock.held and not is_locked(data)
    assert read_lock_holder(data) is None  # a clean release empties the record
    with DataDirLock(data):
        assert (data / "livetrader.lock").stat().st_ino == inode  # never replaced: the lock lives on the inode


@pytest.mark.e2e
def test_lock_refuses_second_process_and_dies_with_sigkill(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = _spawn(_HOLDER, str(data))
    try:
        _wait_ready(proc)
        assert is_locked(data)
        holder = read_lock_holder(data)
        assert holder is not None and holder.pid == proc.pid

        with pytest.raises(DataDirLocked) as info:
            DataDirLock(data).acquire()
        err = info.value
        assert isinstance(err, LivetraderError) and err.exit_code == 1 and err.pid == proc.pid
        message = str(err)
        assert f"data directory {data} is in use by livetrader pid {proc.pid} (started {holder.started_iso})" in message
        assert "stop it first or use another --data-dir" in message
        assert holder.started_iso.endswith("Z")
    finally:
        _sigkill(proc)

    assert not is_locked(data)
    stale = read_lock_holder(data)
    assert stale is not None and stale.pid == proc.pid  # evidence of a crash for `recover`/`status`
    with DataDirLock(data) as lock:
        assert lock.held
        new = read_lock_holder(data)
        assert new is not None and new.pid == os.getpid()


# --- quarantine ----------------------------------------------------------------------------


def test_quarantine_moves_and_explains(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "pairs").mkdir(parents=True)
    bad = data / "pairs" / "BTC-USDT_s1.json"
    bad.write_bytes(b'{"broken')

    moved = quarantine(data, bad, "invalid JSON: unexpected end of data")

    assert not bad.exists()
    assert moved.parent == data / "quarantine"
    assert moved.name.endswith("_BTC-USDT_s1.json") and moved.read_bytes() == b'{"broken'
    why = moved.with_name(moved.name + ".why.txt").read_text()
    assert "invalid JSON: unexpected end of data" in why and str(bad) in why

    # Same name again in the same second: both kept, nothing overwritten.
    bad.write_bytes(b"second")
    again = quarantine(data, bad, "again")
    assert again != moved and again.read_bytes() == b"second" and moved.read_bytes() == b'{"broken'
    assert again.with_name(again.name + ".why.txt").exists()
    assert len(list((data / "quarantine").iterdir())) == 4
    assert clean_temp_files(data) == []


def test_quarantine_of_missing_file_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreWriteError, match="cannot quarantine"):
        quarantine(tmp_path, tmp_path / "nope.json", "x")


def test_a_refused_start_names_the_winner_not_a_leftover_record(tmp_path: Path) -> None:
    """Two starts race: the winner locks first and writes its record just after. Meanwhile the
    file still names the previous holder (a process that died); the loser waits for the
    winner's record instead of naming the dead one (or nobody)."""
    import fcntl
    import threading

    data = tmp_path / "data"
    data.mkdir()
    dead = next(pid for pid in range(4_000_000, 4_100_000) if not os.path.exists(f"/proc/{pid}"))
    stale = {"pid": dead, "started_at": 1, "hostname": os.uname().nodename}
    (data / "livetrader.lock").write_bytes(orjson.dumps(stale))
    fd = os.open(data / "livetrader.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # the winner holds the lock, its record not yet written

    def write_record() -> None:
        time.sleep(0.3)
        os.ftruncate(fd, 0)
        os.pwrite(fd, orjson.dumps({"pid": os.getpid(), "started_at": 2, "hostname": os.uname().nodename}), 0)

    writer = threading.Thread(target=write_record)
    writer.start()
    try:
        with pytest.raises(DataDirLocked) as info:
            DataDirLock(data).acquire()
        assert info.value.pid == os.getpid() and f"pid {os.getpid()}" in str(info.value)
    finally:
        writer.join()
        os.close(fd)
