"""SIGKILL the real daemon at random moments, many times; nothing is lost, nothing happens twice."""

import os
import random
import signal
import time

import orjson
import pytest
from daemon import start, stop, wait_for, wait_running, workdir
from invariants import check_data_dir

pytestmark = pytest.mark.e2e  # every test here starts the real command as a process

KILLS = int(os.environ.get("LIVETRADER_TORTURE_KILLS", "30"))
ARGS = ("run", "BTCUSDT", "ETHUSDT", "--strategy", "always-long", "--strategy", "scheduler", "--strategy", "near-dip",
        "--speed", "3000")


def test_random_sigkills_lose_nothing_and_open_nothing_twice(tmp_path):
    cwd = workdir(tmp_path)
    rng = random.Random(os.environ.get("LIVETRADER_TORTURE_SEED", "7"))
    journal = cwd / "dump-demo" / "journal"
    kills_while_trading = 0
    for _ in range(KILLS):
        before = journal_size(journal)
        proc = start(cwd, *ARGS)
        time.sleep(rng.uniform(0.05, 1.2))  # from the first imports to well into trading (start ~0.8 s)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        kills_while_trading += journal_size(journal) > before
    # Kills before the first tick test the start; enough of them must land while pairs trade.
    assert kills_while_trading >= KILLS // 4, f"only {kills_while_trading} of {KILLS} kills came while trading"
    # A last, graceful run restores whatever the last kill left, trades on until the data directory holds
    # enough to check (a loaded machine trades less per run), and stops cleanly.
    proc = start(cwd, *ARGS)
    assert wait_for(lambda: journal.exists(), 20) and wait_running(cwd / "dump-demo", proc)

    def enough() -> bool:
        counts = events(journal)
        return counts.get("opened", 0) >= 20 and counts.get("closed", 0) >= 10 and counts.get("activations", 0) >= 5

    assert wait_for(enough, 30), events(journal)
    code, out, err = stop(proc)
    assert code == 0, err
    assert "Traceback" not in err
    counts = check_data_dir(cwd / "dump-demo")
    assert counts.get("opened", 0) >= 20 and counts.get("closes verified", 0) >= 10, counts
    assert counts.get("activations verified", 0) >= 5, counts
    assert not list((cwd / "dump-demo").rglob("*.tmp"))
    assert not (cwd / "dump-demo" / "quarantine").exists()


def journal_size(journal) -> int:
    """Bytes in every pair's journal: grows only when a pair journals a transition."""
    return sum(p.stat().st_size for p in journal.glob("*.jsonl")) if journal.exists() else 0


def events(journal) -> dict[str, int]:
    """How many records of each event the journals hold (complete lines only), and how many openings
    were a scheduled signal's activation."""
    counts: dict[str, int] = {}
    for path in journal.glob("*.jsonl") if journal.exists() else []:
        raw = path.read_bytes()
        for line in raw[: raw.rfind(b"\n") + 1].splitlines():
            if line.strip():
                record = orjson.loads(line)
                counts[record["event"]] = counts.get(record["event"], 0) + 1
                if record["event"] == "opened" and record["scheduled_at"] != record["pending_at"]:
                    counts["activations"] = counts.get("activations", 0) + 1
    return counts
