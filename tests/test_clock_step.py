"""The wall clock stepping back (an NTP step, a VM restored from a snapshot) under a running daemon.

A pair never ticks a minute at or before the last one it ticked: it logs "clock went back" and
waits for the clock to pass that minute. So no transition is stamped before the pair's last
journaled one, and no generated signal id (``<symbol>-<strategy>-<minute>``) comes twice.

The end-to-end test steps the clock of the real daemon with Debian's libfaketime
(``faketime`` package, installed in CI by ``.ci/install-system-deps``).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import pytest
from daemon import events, start, stop, wait_for, workdir

from livetrader.store.journal import read_journal

LIBFAKETIME_DIRS = ("/usr/lib/x86_64-linux-gnu/faketime", "/usr/lib/aarch64-linux-gnu/faketime",
                    "/usr/lib/faketime", "/usr/local/lib/faketime", "/usr/lib64/faketime")


def libfaketime() -> str:
    """The path of libfaketimeMT; skips locally and fails in CI when it is missing."""
    for directory in LIBFAKETIME_DIRS:
        path = Path(directory) / "libfaketimeMT.so.1"
        if path.is_file():
            return str(path)
    message = "libfaketime is missing: run .ci/install-system-deps (installs the 'faketime' package)"
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(message)  # in CI a skip would hide that clock steps were never tried
    pytest.skip(message)


def journals(data_dir: Path) -> dict[str, list[dict]]:
    """Every pair journal's records, by file name."""
    return {p.name: read_journal(p).records for p in sorted((data_dir / "journal").glob("*.jsonl"))}


def assert_time_and_ids_hold(data_dir: Path) -> int:
    """Per pair: journal times never decrease, and no signal id is scheduled or opened twice.
    Returns how many records were checked."""
    checked = 0
    for name, records in journals(data_dir).items():
        times = [r["at"] for r in records]
        back = [(a, b) for a, b in zip(times, times[1:], strict=False) if b < a]
        assert not back, f"{name}: {len(back)} record(s) stamped before the previous one: {back[:3]}"
        for event in ("scheduled", "opened"):
            twice = [i for i, n in Counter(r["signal_id"] for r in records if r["event"] == event).items() if n > 1]
            assert not twice, f"{name}: signal id(s) {event} twice: {twice}"
        # An id begins once: a scheduled one may open, but no id comes back after it ended.
        ended: set[str] = set()
        for r in records:
            if r["event"] in ("scheduled", "opened"):
                assert r["signal_id"] not in ended, f"{name}: {r['signal_id']} reused after it ended"
            else:
                ended.add(r["signal_id"])
        checked += len(records)
    return checked


def test_a_wall_clock_step_back_under_the_daemon_stamps_nothing_back_in_time(tmp_path):
    """--speed 600 (a simulated minute is 0.1 s): a 3 s step back is 30 simulated minutes."""
    lib = libfaketime()
    cwd = workdir(tmp_path)
    rc = tmp_path / "faketime.rc"
    rc.write_text("+0\n")
    data = cwd / "data"
    proc = start(cwd, "run", "BTCUSDT", "ETHUSDT", "--strategy", "quick-long", "--speed", "600",
                 "--data-dir", str(data), LD_PRELOAD=lib, FAKETIME_TIMESTAMP_FILE=str(rc), FAKETIME_NO_CACHE="1",
                 FAKETIME_DONT_FAKE_MONOTONIC="1")  # an NTP step: the wall clock moves, the monotonic one does not

    def closed() -> bool:
        return any(r["event"] == "closed" for records in journals(data).values() for r in records)

    assert wait_for(closed, timeout=30), "no trade closed before the clock step"
    before = {name: len(records) for name, records in journals(data).items()}
    rc.write_text("-3\n")  # the wall clock steps back 3 s, right after a close
    stepped = time.monotonic()
    # The pairs wait the 3 s out, then trade on: wait until each journaled something new.
    assert wait_for(lambda: all(len(r) > before.get(n, 0) for n, r in journals(data).items()), timeout=30)
    waited = time.monotonic() - stepped
    code, out, err = stop(proc)
    assert code == 0, err
    assert assert_time_and_ids_hold(data) > 4
    assert waited > 2.0, "the pairs went on trading before the clock came back"
    lines = [e for e in events(out) if e.get("event") == "clock went back"]
    assert lines, "no 'clock went back' line"
    assert all(line["behind_seconds"] > 0 for line in lines)
    assert len(lines) <= 2, "logged more than once per pair and step"
