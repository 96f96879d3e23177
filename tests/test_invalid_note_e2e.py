"""A note that cannot be journaled is an invalid signal, said as such (not a failed price fetch)."""

import time

import pytest
from daemon import events, run, start, stop, wait_running, workdir

pytestmark = pytest.mark.e2e  # every test here starts the real command as a process


def test_a_note_with_a_lone_surrogate_is_an_invalid_signal_and_the_daemon_carries_on(tmp_path):
    cwd = workdir(tmp_path)
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "bad-note", "--strategy", "always-long", "--speed", "3000")
    assert wait_running(cwd / "dump-demo", proc)
    time.sleep(3)
    code, out, err = stop(proc)
    assert code == 0, err
    evs = events(out)
    failed = [e for e in evs if e["event"] == "tick failed" and e["strategy"] == "bad-note"]
    assert failed, out[-2000:]
    assert all(e["kind"] == "signal" for e in failed), failed[0]
    assert "invalid signal: note must be valid Unicode text" in failed[0]["error"]
    assert "'\\ud800' at position 12" in failed[0]["error"]
    assert not [e for e in evs if "no price" in str(e.get("error", ""))]
    assert not [e for e in evs if e["event"] in ("opened", "closed") and e["strategy"] == "bad-note"]
    assert [e for e in evs if e["event"] == "closed" and e["strategy"] == "always-long"]


def test_backtest_of_a_bad_note_is_an_invalid_signal(tmp_path):
    cwd = workdir(tmp_path)
    result = run(cwd, "backtest", "BTCUSDT", "--strategy", "bad-note", "--from", "2024-01-02", "--to",
                 "2024-01-02T03:00", "--strict")
    assert result.returncode != 0
    assert "returned an invalid signal" in result.stderr and "note must be valid Unicode text" in result.stderr
    assert "Traceback" not in result.stderr
