"""Files planted in the data directory: a symlink or a FIFO is never written through, and is quarantined."""

from __future__ import annotations

import os
import time

import pytest
from daemon import events, run, start, stop, wait_running, workdir

from livetrader.errors import StoreWriteError
from livetrader.store.atomic import read_json, write_atomic
from livetrader.store.journal import Journal, read_journal
from livetrader.store.state import StateDamaged, restore_pair

KEY = ("BTCUSDT", "always-long", "sim")
VICTIM = b"root:x:0:0:root:/root:/bin/bash\n"


def _plant(link, victim):
    link.parent.mkdir(parents=True, exist_ok=True)
    victim.write_bytes(VICTIM)
    link.symlink_to(victim)


def test_a_journal_that_is_a_symlink_is_never_appended_through(tmp_path):
    link, victim = tmp_path / "journal" / "x.jsonl", tmp_path / "victim"
    _plant(link, victim)
    with pytest.raises(StoreWriteError, match="symbolic link"):
        Journal(link)
    (problem,) = read_journal(link).problems
    assert "symbolic link" in problem.reason
    assert victim.read_bytes() == VICTIM


def test_an_atomic_write_never_truncates_through_a_planted_temp_symlink(tmp_path):
    target, victim = tmp_path / "state.json", tmp_path / "victim"
    _plant(tmp_path / "state.json.tmp", victim)
    with pytest.raises(StoreWriteError, match="symbolic link"):
        write_atomic(target, b"{}")
    assert victim.read_bytes() == VICTIM


def test_state_files_that_are_symlinks_or_fifos_are_damage_and_quarantined(tmp_path):
    data = tmp_path / "data"
    _plant(data / "state" / "pairs" / "BTCUSDT_always-long_sim.json", tmp_path / "victim")
    # A snapshot is a copy of the journal: the link is set aside and the pair read from the journal.
    restored = restore_pair(data, KEY)
    assert any("symbolic link" in note and "rebuilt from the journal" in note for note in restored.notes)
    assert (tmp_path / "victim").read_bytes() == VICTIM
    assert not (data / "state" / "pairs" / "BTCUSDT_always-long_sim.json").exists()
    assert [p.name for p in (data / "quarantine").iterdir() if p.is_symlink()]

    fifo = data / "journal" / "BTCUSDT_always-long_sim.jsonl"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    with pytest.raises(StateDamaged, match="FIFO"):  # and the read does not block on it
        restore_pair(data, KEY)
    with pytest.raises(Exception, match="not a regular file"):
        read_json(data / "quarantine")


@pytest.mark.e2e
def test_the_daemon_never_writes_through_a_planted_journal_symlink(tmp_path):
    cwd = workdir(tmp_path)
    data = cwd / "lt-data"
    victim = tmp_path / "victim"
    _plant(data / "journal" / "BTCUSDT_always-long_sim.jsonl", victim)
    # --switch-clock: the planted journal would otherwise make the directory look like a real run's.
    proc = start(cwd, "run", "BTCUSDT", "ETHUSDT", "--strategy", "always-long", "--speed", "3000",
                 "--data-dir", str(data), "--switch-clock")
    assert wait_running(data, proc)
    time.sleep(3)
    code, out, err = stop(proc)
    assert code == 0, err
    assert victim.read_bytes() == VICTIM  # not one journal line appended to the file it points at
    evs = events(out)
    damaged = [e for e in evs if e["event"] == "pair not started: damaged state"]
    assert damaged and damaged[0]["symbol"] == "BTCUSDT" and "symbolic link" in damaged[0]["error"]
    assert any(e["event"] == "opened" and e.get("symbol") == "ETHUSDT" for e in evs)  # the other pair trades
    quarantined = [p for p in (data / "quarantine").iterdir() if p.is_symlink()]
    assert quarantined and os.readlink(quarantined[0]) == str(victim)
    assert "Traceback" not in err

    # `recover` finds nothing left to do with it: it was moved aside, and the victim is untouched.
    checked = run(cwd, "recover", "--dry-run", "--data-dir", str(data))
    assert checked.returncode in (0, 10), checked.stdout + checked.stderr
    assert victim.read_bytes() == VICTIM


def test_a_lock_file_that_is_a_symlink_is_refused_not_truncated(tmp_path):
    from livetrader.store.lock import DataDirLock

    _plant(tmp_path / "data" / "livetrader.lock", tmp_path / "victim")
    with pytest.raises(StoreWriteError, match="symbolic link"):
        DataDirLock(tmp_path / "data").acquire()
    assert (tmp_path / "victim").read_bytes() == VICTIM


@pytest.mark.e2e
def test_a_journal_folder_that_is_a_symlink_stops_the_start_with_a_clear_error(tmp_path):
    cwd = workdir(tmp_path)
    data = cwd / "lt-data"
    data.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (data / "journal").symlink_to(elsewhere)
    result = run(cwd, "run", "BTCUSDT", "--strategy", "always-long", "--speed", "3000", "--data-dir", str(data),
                 timeout=30)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "symbolic link" in result.stderr and "Traceback" not in result.stderr
    assert list(elsewhere.iterdir()) == []
