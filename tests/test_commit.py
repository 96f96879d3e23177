"""Group commit (livetrader/store/commit.py): one fdatasync for a pass of transitions, nothing
acknowledged before it, journals completed from the log after a crash, the log emptied once
the journals hold it all."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import orjson
import pytest

from livetrader.core.signal import SignalRow, TickResult, record_of
from livetrader.errors import StoreWriteError
from livetrader.live.pair import Pair
from livetrader.store import disk
from livetrader.store.commit import CommitLog, commit_log_path, replay_commit_log
from livetrader.store.journal import read_journal
from livetrader.store.layout import pair_paths
from livetrader.store.state import FilePairStore
from livetrader.store.writer import BackgroundWriter
from livetrader.strategy.risk import RiskProfile, max_positions

T0 = 1_704_067_200_000
M = 60_000


def opened(symbol: str, at: int, strategy: str = "s1") -> dict:
    row = SignalRow(f"{symbol}-{at}", symbol, strategy, "sim", "long", 100.0, 102.0, 99.0, 60, at, at)
    return record_of(TickResult("opened", symbol, strategy, "sim", at, 100.0, row))


def closed(symbol: str, at: int, opened_at: int) -> dict:
    row = SignalRow(f"{symbol}-{opened_at}", symbol, "s1", "sim", "long", 100.0, 102.0, 99.0, 60, opened_at,
                    opened_at)
    return record_of(TickResult("closed", symbol, "s1", "sim", at, 102.0, row, close_reason="take_profit",
                                price_close=102.0, pnl_percentage=1.6))


class Storage:
    """Stores for ``count`` pairs sharing one commit log and writer, as the engine builds them."""

    def __init__(self, data_dir: Path, count: int) -> None:
        self.data_dir = data_dir
        self.commits = CommitLog(commit_log_path(data_dir))
        self.writer = BackgroundWriter(self.commits)
        self.stores = [FilePairStore(data_dir, (f"SYM{i}USDT", "s1", "sim"), 0, writer=self.writer)
                       for i in range(count)]

    def close(self) -> None:
        self.writer.close(30)
        for store in self.stores:
            store.close()
        self.commits.close()


def test_a_pass_of_transitions_shares_one_write_and_one_fdatasync(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CommitLog, "checkpointed", lambda self, size: False)  # keep the log to read it
    storage = Storage(tmp_path, 200)
    synced: list[int] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(disk.DISK, "fdatasync", counting)

    async def main() -> None:
        await asyncio.gather(*(store.write_ahead(opened(store.key[0], T0)) for store in storage.stores))

    asyncio.run(main())
    monkeypatch.setattr(disk.DISK, "fdatasync", real)
    assert storage.commits.batches == 1
    # One fdatasync acknowledged all 200; the journals are flushed later, by the writer thread.
    assert synced.count(storage.commits._fd) == 1  # type: ignore[attr-defined]
    entries = [orjson.loads(line) for line in commit_log_path(tmp_path).read_bytes().splitlines()]
    assert len(entries) == 200 and {e["n"] for e in entries} == {1}
    assert all(store.journal_records == 1 for store in storage.stores)
    storage.close()
    for store in storage.stores:
        assert read_journal(store.journal.path).records == [opened(store.key[0], T0)]


def test_a_failed_commit_acknowledges_nothing_and_takes_the_journal_lines_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = Storage(tmp_path, 5)

    async def commit_all(at: int) -> list[BaseException | None]:
        return await asyncio.gather(*(store.write_ahead(opened(store.key[0], at)) for store in storage.stores),
                                    return_exceptions=True)

    assert asyncio.run(commit_all(T0)) == [None] * 5
    assert storage.writer.flush(30)
    log_size = commit_log_path(tmp_path).stat().st_size
    journal_sizes = [store.journal.path.stat().st_size for store in storage.stores]
    real = os.fdatasync
    log_fd = storage.commits._fd  # type: ignore[attr-defined]

    def failing(fd: int) -> None:
        if fd == log_fd:
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    monkeypatch.setattr(disk.DISK, "fdatasync", failing)
    outcomes = asyncio.run(commit_all(T0 + 2 * M))
    monkeypatch.setattr(disk.DISK, "fdatasync", real)
    assert all(isinstance(o, StoreWriteError) and "EIO" in str(o) for o in outcomes), outcomes
    assert [store.journal_records for store in storage.stores] == [1] * 5
    assert commit_log_path(tmp_path).stat().st_size == log_size
    assert [store.journal.path.stat().st_size for store in storage.stores] == journal_sizes
    # The storage works again: the next transition commits and is record 2.
    assert asyncio.run(commit_all(T0 + 3 * M)) == [None] * 5
    storage.close()
    for store in storage.stores:
        assert [r["at"] for r in read_journal(store.journal.path).records] == [T0, T0 + 3 * M]


def test_the_writer_empties_the_log_once_the_journals_hold_every_line(tmp_path: Path) -> None:
    storage = Storage(tmp_path, 50)

    async def main() -> None:
        for minute in range(3):
            await asyncio.gather(*(store.write_ahead(opened(store.key[0], T0 + minute * M))
                                   for store in storage.stores))

    asyncio.run(main())
    assert storage.writer.flush(30)
    assert commit_log_path(tmp_path).stat().st_size == 0 and storage.commits.size == 0
    storage.close()
    for store in storage.stores:
        assert len(read_journal(store.journal.path).records) == 3


def test_journals_that_lost_committed_lines_are_completed_from_the_log(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A power loss after the commit, before the journals were flushed: the journals keep a
    prefix (maybe ending in a torn line); the log puts back the rest, once."""
    with monkeypatch.context() as patch:
        patch.setattr(CommitLog, "checkpointed", lambda self, size: False)  # the crash came before the writer's pass
        storage = Storage(tmp_path, 3)
        records = {store.key[0]: [opened(store.key[0], T0), closed(store.key[0], T0 + 5 * M, T0)]
               for store in storage.stores}

        async def main() -> None:
            for i in range(2):
                await asyncio.gather(*(store.write_ahead(records[store.key[0]][i]) for store in storage.stores))

        asyncio.run(main())
        storage.close()
    first, second, third = (store.journal.path for store in storage.stores)
    whole = first.read_bytes()
    first.write_bytes(b"")  # lost both lines
    second.write_bytes(whole[:0] + second.read_bytes().split(b"\n")[0] + b"\n" + b'{"event":"clo')  # torn
    assert commit_log_path(tmp_path).stat().st_size > 0

    dry = replay_commit_log(tmp_path, repair=False)
    assert dry.restored == {first: 2, second: 1} and not dry.problems and dry.present == 3
    assert first.read_bytes() == b""  # a dry run writes nothing

    done = replay_commit_log(tmp_path)
    assert done.restored == {first: 2, second: 1} and not done.problems
    for store, path in zip(storage.stores, (first, second, third), strict=True):
        read = read_journal(path)
        assert read.records == records[store.key[0]] and read.truncated_tail is None
    assert commit_log_path(tmp_path).stat().st_size == 0
    again = replay_commit_log(tmp_path)
    assert not again.restored and not again.problems


def test_a_torn_last_entry_is_ignored_and_garbage_quarantines_the_log(tmp_path: Path) -> None:
    path = commit_log_path(tmp_path)
    path.parent.mkdir(parents=True)
    good = orjson.dumps({"n": 1, "record": opened("AAAUSDT", T0)}) + b"\n"
    path.write_bytes(good + b'{"n": 1, "record": {"event": "op')
    done = replay_commit_log(tmp_path)
    assert done.restored == {pair_paths(tmp_path, ("AAAUSDT", "s1", "sim"))[0]: 1} and not done.problems

    path.write_bytes(b"not json\n" + orjson.dumps({"n": 1, "record": opened("BBBUSDT", T0)}) + b"\n")
    done = replay_commit_log(tmp_path)
    assert done.problems == [f"{path}: line 1 is not a commit entry"]
    assert done.restored == {pair_paths(tmp_path, ("BBBUSDT", "s1", "sim"))[0]: 1}
    assert not path.exists()
    kept = list((tmp_path / "quarantine").glob("*commit.log"))
    assert len(kept) == 1 and kept[0].read_bytes().startswith(b"not json")


def test_an_opening_position_counts_for_other_pairs_while_it_commits(tmp_path: Path) -> None:
    """Pairs of one risk profile deciding in the same pass: the first to open is counted at
    once, so max_positions(1) lets exactly one open even though the commit is shared."""
    storage = Storage(tmp_path, 4)
    profile = RiskProfile("one", [max_positions(1)])
    pairs = []
    for store in storage.stores:
        pair = Pair(store.key[0], _strategy(), "sim", _NoSource(), risk=profile, store=store)
        pairs.append(pair)

    async def main() -> list[str]:
        async def decide(pair: Pair) -> str:
            row = SignalRow(f"{pair.symbol}-x", pair.symbol, "s1", "sim", "long", 100.0, 102.0, 99.0, 60, T0, T0)
            if pair._gate(row, 100.0, T0) is not None:
                return "rejected"
            await pair.apply(TickResult("opened", pair.symbol, "s1", "sim", T0, 100.0, row))
            return "opened"
        return list(await asyncio.gather(*(decide(p) for p in pairs)))

    outcomes = asyncio.run(main())
    assert outcomes == ["opened", "rejected", "rejected", "rejected"]
    assert list(profile.positions) == ["SYM0USDT-x"]
    storage.close()


def _strategy():  # type: ignore[no-untyped-def]
    from livetrader.strategy.base import Strategy

    class Quiet(Strategy):
        name = "s1"
        interval = "1m"

        async def get_signal(self, ctx):  # type: ignore[no-untyped-def]
            return None

    return Quiet()


class _NoSource:
    name = "sim"

    async def fetch(self, symbol: str, start: int, end: int) -> list:
        raise AssertionError("not used")

    def bounds(self, symbol: str) -> None:
        return None


def test_a_checkpoint_behind_newer_commits_keeps_only_the_newer_lines(tmp_path: Path) -> None:
    """A busy loop commits again before the writer is done: the log drops what the journals
    hold and keeps the rest, so it stays small without ever pausing."""
    commits = CommitLog(commit_log_path(tmp_path))

    async def commit(symbol: str, n: int) -> None:
        await commits.commit(n, opened(symbol, T0 + n * M))

    asyncio.run(commit("AAAUSDT", 1))
    first = commits.size
    asyncio.run(commit("BBBUSDT", 1))
    asyncio.run(commit("CCCUSDT", 1))
    assert commits.checkpointed(first)
    kept = [orjson.loads(line)["record"]["symbol"] for line in commit_log_path(tmp_path).read_bytes().splitlines()]
    assert kept == ["BBBUSDT", "CCCUSDT"] and commits.size == commit_log_path(tmp_path).stat().st_size
    asyncio.run(commit("DDDUSDT", 1))  # appends to the new file
    kept = [orjson.loads(line)["record"]["symbol"] for line in commit_log_path(tmp_path).read_bytes().splitlines()]
    assert kept == ["BBBUSDT", "CCCUSDT", "DDDUSDT"]
    assert commits.checkpointed(commits.size) and commit_log_path(tmp_path).read_bytes() == b""
    assert not commits.checkpointed(0)
    commits.close()


def test_a_pass_between_a_journal_line_and_its_commit_still_empties_the_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer may take a journal marked for flushing before its line reaches the commit log
    (the pass runs in between): the commit itself then wakes a pass that empties the log, though
    no journal is marked any more."""
    storage = Storage(tmp_path, 5)
    real = storage.commits._flush  # type: ignore[attr-defined]
    passes_between = []

    def after_a_pass() -> None:
        passes_between.append(storage.writer.flush(30))  # takes the marked journals; the log holds nothing yet
        real()

    monkeypatch.setattr(storage.commits, "_flush", after_a_pass)

    async def main() -> None:
        await asyncio.gather(*(store.write_ahead(opened(store.key[0], T0)) for store in storage.stores))

    asyncio.run(main())
    assert passes_between == [True]  # (the commit's own pass may have emptied the log already: that is the fix)
    assert storage.writer.flush(30)
    assert commit_log_path(tmp_path).stat().st_size == 0 and storage.commits.size == 0
    storage.close()
    for store in storage.stores:
        assert len(read_journal(store.journal.path).records) == 1


def test_once_a_journal_flush_failed_the_log_keeps_every_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A journal whose fdatasync failed may have lost its lines (the kernel can drop the dirty
    pages): the commit log is then the only durable copy, so no later pass empties it, even one
    flushing only journals that work; the next start replays it."""
    storage = Storage(tmp_path, 3)
    broken = storage.stores[0]
    real = os.fdatasync

    def failing(fd: int) -> None:
        if fd == broken.journal._fd:  # type: ignore[attr-defined]
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    async def commit_all(stores: list[FilePairStore], at: int) -> None:
        await asyncio.gather(*(store.write_ahead(opened(store.key[0], at)) for store in stores))

    monkeypatch.setattr(disk.DISK, "fdatasync", failing)
    asyncio.run(commit_all(storage.stores, T0))
    assert storage.writer.flush(30)
    monkeypatch.setattr(disk.DISK, "fdatasync", real)
    with pytest.raises(StoreWriteError, match="EIO"):
        asyncio.run(broken.write_ahead(opened(broken.key[0], T0 + M)))  # storage is failing: said at once
    asyncio.run(commit_all(storage.stores[1:], T0 + 2 * M))
    assert storage.writer.flush(30)
    kept = [orjson.loads(line)["record"] for line in commit_log_path(tmp_path).read_bytes().splitlines()]
    assert [(r["symbol"], r["at"]) for r in kept] == [(s.key[0], T0) for s in storage.stores] + [
        (s.key[0], T0 + 2 * M) for s in storage.stores[1:]]
    storage.close()
