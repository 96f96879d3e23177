"""SIGKILL the real daemon at random moments, many times; nothing is lost, nothing happens twice."""

import os
import random
import signal
import time

import pytest
from daemon import start, stop, wait_for, wait_running, workdir
from invariants import check_data_dir

pytestmark = pytest.mark.e2e  # every test here starts the real command as a process

KILLS = int(os.environ.get("LIVETRADER_TORTURE_KILLS", "40"))
ARGS = ("run", "BTCUSDT", "ETHUSDT", "--strategy", "always-long", "--strategy", "scheduler", "--strategy", "near-dip",
        "--speed", "3000")


def test_random_sigkills_lose_nothing_and_open_nothing_twice(tmp_path):
    cwd = workdir(tmp_path)
    rng = random.Random(os.environ.get("LIVETRADER_TORTURE_SEED", "7"))
    journal = cwd / "dump-demo" / "journal"
    for _ in range(KILLS):
        proc = start(cwd, *ARGS)
        time.sleep(rng.uniform(0.05, 1.2))  # from the first imports to well into trading (start ~0.8 s)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    # A last, graceful run restores whatever the last kill left and stops cleanly.
    proc = start(cwd, *ARGS)
    assert wait_for(lambda: journal.exists(), 20) and wait_running(cwd / "dump-demo", proc)
    time.sleep(1.0)
    code, out, err = stop(proc)
    assert code == 0, err
    assert "Traceback" not in err
    counts = check_data_dir(cwd / "dump-demo")
    assert counts.get("opened", 0) >= 20 and counts.get("closes verified", 0) >= 10, counts
    assert counts.get("activations verified", 0) >= 5, counts
    assert not list((cwd / "dump-demo").rglob("*.tmp"))
    assert not (cwd / "dump-demo" / "quarantine").exists()
