"""Snapshots written behind the loop (livetrader/store/writer.py): newest state wins, one
directory fsync per batch, failures reported to the pair, nothing lost at close."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import orjson
import pytest

import livetrader.store.writer as writer_module
from livetrader.errors import StoreWriteError
from livetrader.store.state import FilePairStore
from livetrader.store.writer import BackgroundWriter
from livetrader.sweep import SweepPauses

KEY = ("BTCUSDT", "s1", "sim")


def test_queued_snapshots_land_whole_and_the_newest_wins(tmp_path: Path) -> None:
    writer = BackgroundWriter()
    try:
        paths = [tmp_path / f"p{i}.json" for i in range(50)]
        for version in range(5):
            for path in paths:
                writer.put(path, {"path": path.name, "version": version})
        assert writer.flush(10)
        for path in paths:
            assert orjson.loads(path.read_bytes()) == {"path": path.name, "version": 4}
        assert not list(tmp_path.glob("*.tmp"))
        assert 50 <= writer.written <= 250
    finally:
        writer.close(10)


def test_one_directory_fsync_per_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the thread writes one file, 100 more queue up; they land as one batch, one directory fsync."""
    gate, entered = threading.Event(), threading.Event()
    real_replace = writer_module.replace_file
    synced: list[Path] = []

    def slow_first(path: Path, data: bytes) -> None:
        if path.name == "first.json":
            entered.set()
            gate.wait(10)
        real_replace(path, data)

    def count_fsync(directory: Path) -> None:
        synced.append(directory)

    monkeypatch.setattr(writer_module, "replace_file", slow_first)
    monkeypatch.setattr(writer_module, "fsync_dir", count_fsync)
    writer = BackgroundWriter()
    try:
        writer.put(tmp_path / "first.json", {"n": 0})
        assert entered.wait(10)
        for i in range(100):
            writer.put(tmp_path / f"p{i}.json", {"n": i})
        assert writer.pending == 100
        gate.set()
        assert writer.flush(10)
        assert synced == [tmp_path, tmp_path]
        assert writer.written == 101
        assert all(orjson.loads((tmp_path / f"p{i}.json").read_bytes()) == {"n": i} for i in range(100))
    finally:
        gate.set()
        writer.close(10)


def test_a_failed_background_write_reaches_the_pair_at_its_next_snapshot(tmp_path: Path) -> None:
    writer = BackgroundWriter()
    try:
        journal = tmp_path / "journal" / "p.jsonl"
        gone = tmp_path / "missing" / "p.json"  # its directory does not exist: the write fails
        store = FilePairStore(tmp_path, KEY, 0, paths=(journal, tmp_path / "state" / "p.json"), writer=writer)
        store.path = gone
        store.snapshot({"signal": None})  # queued: this call cannot know yet
        assert writer.flush(10)
        gone.parent.mkdir()  # the operator fixes the disk
        with pytest.raises(StoreWriteError) as raised:
            store.snapshot({"signal": None})  # the previous write's failure is reported now; this one is queued
        assert str(gone) in str(raised.value) and "ENOENT" in str(raised.value)
        assert writer.flush(10)
        assert writer.failure(gone) is None
        assert orjson.loads(gone.read_bytes())["journal_records"] == 0
        store.close()
    finally:
        writer.close(10)


def test_close_writes_everything_queued_and_refuses_more(tmp_path: Path) -> None:
    writer = BackgroundWriter()
    for i in range(200):
        writer.put(tmp_path / f"p{i}.json", {"n": i})
    assert writer.close(30)
    assert len(list(tmp_path.glob("p*.json"))) == 200
    with pytest.raises(StoreWriteError):
        writer.put(tmp_path / "late.json", {})
    assert writer.close(1)  # idempotent


def test_flush_finishes_for_a_journal_written_whose_commit_failed(tmp_path: Path) -> None:
    """A failed commit wakes no pass; flush (as at shutdown) must still see the journal flushed."""
    from livetrader.store.journal import Journal

    writer = BackgroundWriter()
    journal = Journal(tmp_path / "j.jsonl")
    try:
        journal.write({"event": "opened", "at": 1})
        writer.journal_written(journal)
        assert writer.flush(5)
    finally:
        writer.close(5)
        journal.close()


def test_a_sweep_holds_the_writer_until_it_ends_but_never_a_flush(tmp_path: Path) -> None:
    """While the pairs tick the writer keeps off the CPU; a flush, or a hold past its limit, writes anyway."""
    import time

    writer = BackgroundWriter()
    try:
        writer.pause()
        writer.put(tmp_path / "a.json", {"v": 1})
        time.sleep(0.3)
        assert not (tmp_path / "a.json").exists() and writer.pending == 1  # held
        writer.resume()
        deadline = time.monotonic() + 10
        while not (tmp_path / "a.json").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert orjson.loads((tmp_path / "a.json").read_bytes()) == {"v": 1}

        writer.pause()
        writer.put(tmp_path / "b.json", {"v": 2})
        assert writer.flush(10)  # the engine's close and the benchmark do not wait for the sweep
        assert (tmp_path / "b.json").exists()

        async def hung_sweep() -> None:
            SweepPauses([writer], limit=0.2).pause()  # as the metronome does: the registry keeps the limit
            writer.put(tmp_path / "c.json", {"v": 3})  # held: this sweep hangs
            await asyncio.sleep(0.1)
            assert not (tmp_path / "c.json").exists()
            deadline = time.monotonic() + 10
            while not (tmp_path / "c.json").exists() and time.monotonic() < deadline:  # noqa: ASYNC110 - another thread writes it
                await asyncio.sleep(0.05)

        asyncio.run(hung_sweep())
        assert (tmp_path / "c.json").exists()  # written past the limit
    finally:
        writer.close(10)
