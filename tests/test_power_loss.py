"""Power cuts: only what was flushed survives (``tests/powerloss.py``), and nothing is lost or done twice.

A ``kill -9`` keeps every byte the process wrote (the kernel still has it); a power cut keeps
only what ``fdatasync``/``fsync`` and directory fsyncs made durable. These tests leave the
data directory as a cut would, at fixed and at random instants, and check the invariants
of the crash torture: no signal opened or closed twice, nothing announced then lost, every
close re-derived from the candles.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time

import orjson
import pytest
from daemon import FIXTURE_STRATEGIES, events, run, start, stop, wait_for, wait_running, workdir
from invariants import check_data_dir
from powerloss import PowerLossDisk

from livetrader.config import Config
from livetrader.core.price import MINUTE_MS
from livetrader.errors import LivetraderError
from livetrader.events import EventBus
from livetrader.live.clock import SimClock
from livetrader.live.engine import Engine
from livetrader.service.recover import inspect
from livetrader.store import disk
from livetrader.store.journal import read_journal
from livetrader.strategy.base import load_strategies

T0 = 1_704_067_200_000  # 2024-01-01T00:00Z


def _cut_after_the_group_commit(data_dir, stem):
    """Leave ``stem``'s last transition only in the commit log, as a cut right after the group
    commit's fdatasync and before the pair journal's (and its snapshot's) flush leaves it."""
    journal = data_dir / "journal" / f"{stem}.jsonl"
    records = read_journal(journal).records
    last = records[-1]
    snapshot_file = data_dir / "state" / "pairs" / f"{stem}.json"
    snapshot = json.loads(snapshot_file.read_text())
    # The journal as its last flush left it: every line but the last.
    journal.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records[:-1]))
    snapshot["journal_records"] = len(records) - 1
    if last["event"] in ("opened", "scheduled"):
        snapshot["signal"] = None
    snapshot_file.write_text(json.dumps(snapshot))
    (data_dir / "journal" / "commit.log").write_bytes(orjson.dumps({"n": len(records), "record": last}) + b"\n")
    return last


@pytest.mark.e2e
def test_a_transition_left_only_in_the_commit_log_is_restored_not_forgotten(tmp_path):
    cwd = workdir(tmp_path)
    data = cwd / "lt-data"
    args = ("run", "BTCUSDT", "--strategy", "always-long", "--speed", "600", "--data-dir", str(data))
    journal = data / "journal" / "BTCUSDT_always-long_sim.jsonl"
    proc = start(cwd, *args)
    assert wait_for(lambda: journal.exists() and b'"opened"' in journal.read_bytes(), 30)
    code, _, err = stop(proc)
    assert code == 0, err
    records = read_journal(journal).records
    if records[-1]["event"] != "opened":  # stopped between a close and the next open: cut the close instead
        assert records[-1]["event"] == "closed"
    last = _cut_after_the_group_commit(data, "BTCUSDT_always-long_sim")

    # `recover --dry-run` reads the pair as the put-back will leave it, and changes nothing.
    before = journal.read_bytes()
    dry = run(cwd, "recover", "--dry-run", "--json", "--data-dir", str(data))
    assert dry.returncode == 10, dry.stdout + dry.stderr
    found = json.loads(dry.stdout)
    assert any("put back 1 committed record" in note for note in found["commit_log"])
    (pair,) = found["pairs"]
    assert pair["state"] == ("open" if last["event"] == "opened" else "idle"), pair
    assert pair["journal_records"] == len(records)
    assert journal.read_bytes() == before

    proc = start(cwd, *args)
    assert wait_running(data, proc)
    time.sleep(2.0)
    code, out, err = stop(proc)
    assert code == 0, err
    evs = events(out)
    assert any("put back 1 committed record" in str(e.get("note")) for e in evs), evs[:10]
    if last["event"] == "opened":
        restored = [e for e in evs if e["event"] == "restored"]
        assert restored and restored[0]["signal_id"] == last["signal_id"], evs[:10]
    assert not [e for e in evs if e["event"] == "opened" and e.get("signal_id") == last["signal_id"]]
    check_data_dir(data)  # no second open while the first was open, no close journaled twice


# --- random cuts, in process ------------------------------------------------------------------

PAIRS = [("BTCUSDT", "always-long"), ("ETHUSDT", "always-long"), ("BTCUSDT", "scheduler"), ("ETHUSDT", "near-dip")]
ANNOUNCED = ("scheduled", "opened", "closed", "cancelled")


class Life:
    """One run of an engine on the power-loss disk: restore every pair, tick minutes, until the cut."""

    def __init__(self, data_dir, registry):
        self.engine = Engine(Config(), registry, clock=SimClock(0, T0, 1.0), bus=EventBus(), data_dir=data_dir)
        self.announced: list[tuple[str, str, str]] = []  # (journal stem, event, signal id) acknowledged

    def start(self):
        for symbol, strategy in PAIRS:
            self.engine.add_pair(symbol, strategy)
        self.engine.restore_absent_pairs()

    async def tick(self, minute):
        results = await asyncio.gather(*(p.tick(minute) for p in self.engine.pairs), return_exceptions=True)
        for pair, result in zip(self.engine.pairs, results, strict=True):
            if result is None or isinstance(result, BaseException):
                continue
            if result.action in ANNOUNCED:
                self.announced.append((f"{pair.symbol}_{pair.strategy_name}_sim", result.action, result.signal_id))

    def close(self):
        try:
            asyncio.run(self.engine.close())
        except (OSError, LivetraderError):
            pass  # the disk is gone: closing only loses what the cut took anyway


def _announced_are_durable(data_dir, announced):
    """Every acknowledged transition is on disk: in its journal, or in the commit log the next start replays."""
    log = data_dir / "journal" / "commit.log"
    # A last piece without its newline was never acknowledged (a torn write).
    lines = log.read_bytes().split(b"\n")[:-1] if log.exists() else []
    committed = [orjson.loads(line)["record"] for line in lines]
    for stem, event, signal_id in announced:
        records = read_journal(data_dir / "journal" / f"{stem}.jsonl").records + committed
        assert any(r["event"] == event and r["signal_id"] == signal_id for r in records), (
            f"{stem}: {event} {signal_id} was announced, then lost in a power cut")


def test_random_power_cuts_lose_nothing_announced_and_do_nothing_twice(tmp_path):
    seed = int(os.environ.get("LIVETRADER_POWER_SEED", "11"))
    cuts = int(os.environ.get("LIVETRADER_POWER_CUTS", "60"))
    rng = random.Random(seed)
    registry = load_strategies(FIXTURE_STRATEGIES)
    data = tmp_path / "data"
    data.mkdir()
    minute = T0
    announced: list[tuple[str, str, str]] = []
    totals = dict.fromkeys(("cuts in a run", "cuts while restoring", "cuts in recover", "cuts between minutes",
                            "torn", "operations"), 0)
    real = disk.DISK
    try:
        for _ in range(cuts):
            sim = PowerLossDisk(data, cut_at=rng.randint(1, 80), torn=rng.random() < 0.5, seed=rng.random())
            disk.use(sim)
            if rng.random() < 0.2:  # `livetrader recover` first, cut too at times
                try:
                    inspect(data, dry_run=False, now_ms=minute)
                except (OSError, LivetraderError):
                    totals["cuts in recover"] += 1
            life = Life(data, registry)
            try:
                if not sim.dead:
                    life.start()
                    # Some minutes of trading; sometimes after a gap (downtime catch-up).
                    minute += MINUTE_MS * (rng.choice((1, 1, 1, 7, 45)))
                    for _ in range(rng.randint(5, 60)):
                        asyncio.run(life.tick(minute))
                        if sim.dead:
                            break
                        if rng.random() < 0.3:
                            life.engine.flush_snapshots(5)
                        minute += MINUTE_MS
                    if sim.dead:
                        totals["cuts in a run"] += 1
            except (OSError, LivetraderError):
                assert sim.dead, "restoring failed without a power cut"
                totals["cuts while restoring"] += 1
            if not sim.dead:  # the cut comes now, whatever the writer thread is doing
                sim.dead = True
                totals["cuts between minutes"] += 1
            totals["operations"] += sim.ops
            life.close()
            announced.extend(life.announced)
            totals["torn"] += sim.crash()["torn"]
            _announced_are_durable(data, announced)
        # A last life on the real disk restores what the last cut left, runs, and stops cleanly.
        disk.use(real)
        life = Life(data, registry)
        life.start()
        for _ in range(3):
            asyncio.run(life.tick(minute))
            minute += MINUTE_MS
        life.engine.flush_snapshots(10)
        life.close()
    finally:
        disk.use(real)
    _announced_are_durable(data, announced)
    counts = check_data_dir(data)
    assert counts.get("opened", 0) >= 20 and counts.get("closes verified", 0) >= 10, (counts, totals)
    assert totals["cuts in a run"] >= cuts // 4 and totals["torn"] > 0, totals
    assert not (data / "quarantine").exists(), sorted(p.name for p in (data / "quarantine").iterdir())
