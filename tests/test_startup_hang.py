"""A strategy that hangs on its first call holds neither the other pairs nor READY=1 nor a stop."""

from __future__ import annotations

import json
import signal
import time

import pytest
from daemon import events, start, stop, wait_for, workdir

pytestmark = pytest.mark.e2e


def test_a_strategy_hanging_on_its_first_ask_holds_no_other_pair_and_no_stop(tmp_path):
    cwd = workdir(tmp_path)
    (cwd / "slow.toml").write_text("[engine]\nstrategy_timeout_seconds = 8\n")
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "hanging", "--strategy", "always-long", "--speed", "600",
                 "--data-dir", "dump", "--config", "slow.toml")
    status = cwd / "dump" / "status.json"

    def ticks_of(strategy: str) -> int:
        try:
            doc = json.loads(status.read_text())
        except (OSError, ValueError):
            return 0
        return sum(p["ticks"] for p in doc["pairs"] if p["strategy"] == strategy)

    started = time.monotonic()
    # The healthy pair trades while the other's first ask waits for its 8 s timeout.
    assert wait_for(lambda: ticks_of("always-long") >= 5, 6), "the healthy pair waited for the hanging one"
    assert time.monotonic() - started < 6
    code, out, err = stop(proc, signal.SIGINT, timeout=30)
    stopped_after = time.monotonic() - started
    assert code == 0, err
    names = [e["event"] for e in events(out)]
    assert "ready" in names and names.index("ready") < names.index("stopping")
    assert stopped_after < 20, f"the stop took {stopped_after:.1f} s"  # the hanging ask's 8 s timeout, at most
