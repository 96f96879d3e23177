"""Benchmark 3: what crash safety costs per state transition, beside the raw floor of the disk.

A transition is what ``Pair.apply`` makes durable: a journal append (``FilePairStore.write_ahead``)
then a snapshot rewrite (``FilePairStore.snapshot``). The floor does the same system calls
with the same bytes and nothing else: ``write`` + ``fsync`` on an ``O_APPEND`` descriptor held
open, and ``open(tmp)`` + ``write`` + ``fsync`` + ``close`` + ``rename`` + ``fsync(dir)``. Both
run in the same process, in sibling directories of one temporary folder (one disk),
interleaved transition by transition so that any drift of the disk hits both alike.

This is one transition on its own, both files flushed before it returns (a store without a
commit log). In the daemon, transitions of one pass share one commit-log flush and the
journal and snapshot flushes happen behind the loop; the live benchmark measures that.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import orjson

from bench.common import Result, median
from livetrader.core.machine import DEFAULT_RULES, accept, close
from livetrader.core.signal import Signal, record_of
from livetrader.store.state import FilePairStore, snapshot_dict

TARGET_RATIO = 1.5
KEY = ("BTCUSDT", "bench-reference", "sim")
T0 = 1_704_067_200_000


def transitions(count: int) -> list[tuple[dict, dict]]:
    """``count`` realistic transitions, alternately opened and closed: (journal record, snapshot state)."""
    out: list[tuple[dict, dict]] = []
    price = 50_000.0
    for i in range(count // 2 + 1):
        now = T0 + i * 600_000
        signal = Signal("long" if i % 2 else "short", take_profit=price * (1.01 if i % 2 else 0.99),
                        stop_loss=price * (0.99 if i % 2 else 1.01), minutes=240)
        opened = accept(signal, *KEY, f"{KEY[0]}-{KEY[1]}-{i:06d}", now, price)
        row = opened.signal
        assert row is not None
        out.append((record_of(opened), snapshot_dict(KEY, row, now, row.id)))
        price *= 1.0 + (0.003 if i % 3 else -0.004)
        closed = close(row, now + 300_000, price, price, "time_expired", DEFAULT_RULES)
        out.append((record_of(closed), snapshot_dict(KEY, None, now, row.id)))
    return out[:count]


class Floor:
    """The bare system calls of one transition, on files laid out as the store lays them out."""

    def __init__(self, data_dir: Path) -> None:
        journal = data_dir / "journal" / "floor.jsonl"
        journal.parent.mkdir(parents=True)
        self.snapshot = data_dir / "state" / "pairs" / "floor.json"
        self.snapshot.parent.mkdir(parents=True)
        self.tmp = self.snapshot.with_name(self.snapshot.name + ".tmp")
        self.journal_fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.dir_fd = os.open(self.snapshot.parent, os.O_RDONLY | os.O_DIRECTORY)

    def append(self, line: bytes) -> None:
        os.write(self.journal_fd, line)
        os.fsync(self.journal_fd)

    def replace(self, data: bytes) -> None:
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        os.rename(self.tmp, self.snapshot)
        os.fsync(self.dir_fd)

    def close(self) -> None:
        os.close(self.journal_fd)
        os.close(self.dir_fd)


def _completed(step) -> None:  # type: ignore[no-untyped-def]
    """Run a coroutine that never suspends (a store without a commit log flushes in place) to its end."""
    try:
        step.send(None)
    except StopIteration:
        return
    raise RuntimeError("the store waited for a group commit; the floor comparison needs a plain store")


def measure(count: int) -> dict:
    """Time ``count`` transitions through the store and through the floor, interleaved."""
    store_append, store_snapshot, floor_append, floor_snapshot = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="livetrader-bench-") as tmp:
        store = FilePairStore(Path(tmp) / "store", KEY, 0)
        floor = Floor(Path(tmp) / "floor")
        try:
            for n, (record, state) in enumerate(transitions(count), start=1):
                line = orjson.dumps(record) + b"\n"
                data = orjson.dumps({**state, "risk": None, "journal_records": n})
                t0 = time.perf_counter()
                _completed(store.write_ahead(record))
                t1 = time.perf_counter()
                store.snapshot(state)
                t2 = time.perf_counter()
                floor.append(line)
                t3 = time.perf_counter()
                floor.replace(data)
                t4 = time.perf_counter()
                store_append.append(t1 - t0)
                store_snapshot.append(t2 - t1)
                floor_append.append(t3 - t2)
                floor_snapshot.append(t4 - t3)
                if n == 1:  # the floor must write exactly what the store wrote
                    assert store.path.read_bytes() == data
                    assert store.journal.path.read_bytes() == line
        finally:
            store.close()
            floor.close()
    total = [a + b for a, b in zip(store_append, store_snapshot, strict=True)]
    bare = [a + b for a, b in zip(floor_append, floor_snapshot, strict=True)]
    return {
        "transitions": count,
        "store_median_seconds": median(total),
        "floor_median_seconds": median(bare),
        "store_mean_seconds": sum(total) / len(total),
        "floor_mean_seconds": sum(bare) / len(bare),
        "ratio_median": median(total) / median(bare),
        "ratio_mean": sum(total) / sum(bare),
        "journal_append_median_seconds": median(store_append),
        "bare_append_median_seconds": median(floor_append),
        "snapshot_median_seconds": median(store_snapshot),
        "bare_snapshot_median_seconds": median(floor_snapshot),
    }


def run(count: int = 500) -> Result:
    out = Result("safety", "Cost of crash safety per transition (journal append + snapshot) vs raw floor")
    figures = measure(count)
    out.details.update(figures)
    out.add("livetrader: append + snapshot (median)", figures["store_median_seconds"] * 1000, "ms")
    out.add("floor: bare append + bare atomic replace (median)", figures["floor_median_seconds"] * 1000, "ms")
    out.add("ratio livetrader / floor (median)", figures["ratio_median"], "x", TARGET_RATIO)
    out.add("ratio livetrader / floor (mean)", figures["ratio_mean"], "x", TARGET_RATIO)
    out.notes.append(
        f"{count} transitions (opened/closed alternately), same bytes, same disk, interleaved; "
        f"journal append {figures['journal_append_median_seconds'] * 1e3:.3f} ms vs bare "
        f"{figures['bare_append_median_seconds'] * 1e3:.3f} ms, snapshot "
        f"{figures['snapshot_median_seconds'] * 1e3:.3f} ms vs bare "
        f"{figures['bare_snapshot_median_seconds'] * 1e3:.3f} ms"
    )
    return out
