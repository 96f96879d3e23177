"""A data directory keeps one clock: a --speed demo's simulated timeline and a real run's never mix.

A demo at --speed 3000 runs days ahead of the wall clock; a real-time run on its directory closed
its positions at times before they opened and took its signal ids again. Such a start is refused
(exit 2, nothing changed) unless ``--switch-clock``; and without --data-dir a demo keeps its data
in ./dump-demo, apart from a real run's ./dump.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from daemon import events, run, start, stop, wait_for, workdir
from test_clock_step import assert_time_and_ids_hold

pytestmark = pytest.mark.e2e  # every test here starts the real command as a process

DEMO = ("run", "BTCUSDT", "--strategy", "quick-long", "--speed", "3000")
REAL = ("run", "BTCUSDT", "--strategy", "quick-long")


def files(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` and its bytes."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def journaled(data: Path) -> bool:
    journal = data / "journal" / "BTCUSDT_quick-long_sim.jsonl"
    return journal.exists() and journal.stat().st_size > 0


def ahead_of_the_wall_clock(data: Path, minutes: int) -> bool:
    """The journal holds a record stamped at least ``minutes`` after the wall clock's now."""
    if not journaled(data):
        return False
    lines = (data / "journal" / "BTCUSDT_quick-long_sim.jsonl").read_text().splitlines()
    stamps = [json.loads(line)["at"] for line in lines if line.strip().endswith("}")]
    return bool(stamps) and max(stamps) > time.time() * 1000 + minutes * 60_000


def run_until_journaled(cwd: Path, *args: str, data: Path, ahead_minutes: int | None = None) -> str:
    """Start the daemon, wait for its first journaled transition (or, with ``ahead_minutes``, for one
    stamped that far ahead of the wall clock), stop it gracefully; its stdout."""
    proc = start(cwd, *args)
    if ahead_minutes is None:
        assert wait_for(lambda: journaled(data), 30), "nothing journaled"
    else:
        assert wait_for(lambda: ahead_of_the_wall_clock(data, ahead_minutes), 30), "no record ahead of now"
    code, out, err = stop(proc)
    assert code == 0, err
    return out


def test_a_real_run_on_a_demo_directory_is_refused_and_changes_nothing(tmp_path):
    cwd = workdir(tmp_path)
    both = cwd / "one-directory"  # both runs on it
    run_until_journaled(cwd, *DEMO, "--data-dir", str(both), data=both)
    before = files(both)
    result = run(cwd, *REAL, "--data-dir", str(both))
    assert result.returncode == 2, result.stderr
    message = result.stderr.strip()
    assert message.startswith("error: data directory") and "holds a simulated run" in message
    assert "--switch-clock" in message and "another --data-dir" in message and "Traceback" not in message
    assert files(both) == before


def test_a_demo_on_a_real_run_directory_is_refused_and_changes_nothing(tmp_path):
    cwd = workdir(tmp_path)
    both = cwd / "one-directory"  # both runs on it
    run_until_journaled(cwd, *REAL, "--data-dir", str(both), data=both)
    before = files(both)
    result = run(cwd, *DEMO, "--data-dir", str(both))
    assert result.returncode == 2, result.stderr
    message = result.stderr.strip()
    assert "holds a real-time run" in message and "--switch-clock" in message and "./dump-demo" in message
    assert files(both) == before


def test_a_demo_without_data_dir_uses_its_own_directory_and_a_real_run_then_starts(tmp_path):
    cwd = workdir(tmp_path)
    run_until_journaled(cwd, *DEMO, data=cwd / "dump-demo")
    assert (cwd / "dump-demo" / "state" / "clock.json").exists()
    assert not (cwd / "dump").exists()
    run_until_journaled(cwd, *REAL, data=cwd / "dump")
    assert not (cwd / "dump" / "state" / "clock.json").exists()
    # status / report / recover keep ./dump; a missing one points at the demo's directory.
    (cwd / "dump").rename(cwd / "elsewhere")
    result = run(cwd, "report")
    assert result.returncode == 2 and "--data-dir dump-demo" in result.stderr


def test_switch_clock_lets_a_real_run_continue_a_demo_directory_without_stamping_back(tmp_path):
    cwd = workdir(tmp_path)
    both = cwd / "one-directory"  # both runs on it
    # A demo's first transition may be stamped at its very first tick (the wall clock's minute):
    # wait for one its simulated clock wrote well ahead of now, or a real run is not behind it.
    run_until_journaled(cwd, *DEMO, "--data-dir", str(both), data=both, ahead_minutes=10)
    records = (both / "journal" / "BTCUSDT_quick-long_sim.jsonl").read_bytes()
    proc = start(cwd, *REAL, "--data-dir", str(both), "--switch-clock")
    assert wait_for(lambda: (both / "status.json").exists()
                    and json.loads((both / "status.json").read_text()).get("pid") == proc.pid, 30)
    code, out, err = stop(proc)
    assert code == 0, err
    lines = [e["event"] for e in events(out)]
    assert "this data directory now follows the real clock; its simulated timeline was dropped" in lines
    assert "clock went back" in lines  # the demo's journal is ahead of now: the pair waits
    assert not (both / "state" / "clock.json").exists()
    assert (both / "journal" / "BTCUSDT_quick-long_sim.jsonl").read_bytes().startswith(records)
    assert_time_and_ids_hold(both)
