"""Faults users meet in production (issue 9): the daemon keeps working, says what happened, loses nothing."""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from daemon import events, run, start, stop, wait_for, wait_running, workdir
from invariants import check_data_dir

pytestmark = pytest.mark.e2e  # every test here starts the real command (or mount) as a process

FAST = ("--speed", "3000")


def journal_lines(cwd, name):
    path = cwd / "dump-demo" / "journal" / name
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


# --- strategy -------------------------------------------------------------------------------------

def test_a_strategy_returning_garbage_reports_each_problem_and_trades_nothing(tmp_path):
    cwd = workdir(tmp_path)
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "garbage", "--strategy", "always-long", *FAST)
    assert wait_running(cwd / "dump-demo", proc)  # on a busy machine the start alone can take seconds
    time.sleep(2)
    code, out, err = stop(proc)
    assert code == 0, err
    errors = [e["error"] for e in events(out) if e["event"] == "tick failed" and e["strategy"] == "garbage"]
    text = " | ".join(errors)
    for words in ("expected a Signal or None, got dict", "take_profit must be a finite number",
                  "long needs take_profit > entry", "minutes must be > 0 and <= 1440, got 0",
                  "got 10000", "position must be 'long' or 'short'", "got str"):
        assert words in text, words
    assert journal_lines(cwd, "BTCUSDT_garbage_sim.jsonl") == []
    assert any(r["event"] == "closed" for r in journal_lines(cwd, "BTCUSDT_always-long_sim.jsonl"))


def test_a_strategy_edited_into_a_syntax_error_keeps_its_position_guarded(tmp_path):
    cwd = workdir(tmp_path)
    shutil.copy(cwd / "strategies" / "always_long.py", cwd / "strategies" / "fragile.py")
    fragile = cwd / "strategies" / "fragile.py"
    fragile.write_text(fragile.read_text().replace('"always-long"', '"fragile"').replace("AlwaysLong", "Fragile")
                       .replace("minutes=30", "minutes=60"))
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "fragile", "--strategy", "always-long", "--speed", "60")
    assert wait_for(lambda: any(r["event"] == "opened" for r in journal_lines(cwd, "BTCUSDT_fragile_sim.jsonl")), 30)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    fragile.write_text(fragile.read_text() + "\ndef broken(:\n")
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "fragile", "--strategy", "always-long", *FAST)
    time.sleep(4)
    code, out, err = stop(proc)
    assert code == 0, err
    logs = events(out)
    failed = [e for e in logs if e["event"] == "strategy failed to load"]
    assert failed and "fragile.py:" in failed[0]["error"] and failed[0]["monitoring"] is True
    # The open position was still checked and closed by the rules: at the latest it expires after
    # 60 minutes, and 4 s at x3000 cover 200 (at x60 the first run is killed long before).
    fragile_journal = journal_lines(cwd, "BTCUSDT_fragile_sim.jsonl")
    assert fragile_journal[-1]["event"] == "closed"
    assert sum(r["event"] == "opened" for r in fragile_journal) == 1  # nothing new was opened
    assert any(e["event"] == "opened" and e["strategy"] == "always-long" for e in logs)
    check_data_dir(cwd / "dump-demo")


def test_a_removed_strategy_leaves_its_position_recorded_and_reported(tmp_path):
    cwd = workdir(tmp_path)
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "scheduler", "--strategy", "always-long", *FAST)
    assert wait_for(lambda: journal_lines(cwd, "BTCUSDT_scheduler_sim.jsonl"), 20)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", *FAST)
    assert wait_for(lambda: (cwd / "dump-demo" / "status.json").exists() and
                    json.loads((cwd / "dump-demo" / "status.json").read_text()).get("pid") == proc.pid, 20)
    status = run(cwd, "status", "--data-dir", "dump-demo", "--json")
    code, out, _ = stop(proc)
    assert code == 0
    warned = [e for e in events(out) if e["event"].startswith("a pair not run by this process")]
    assert warned and warned[0]["strategy"] == "scheduler" and warned[0]["state"] == "scheduled"
    assert json.loads(status.stdout)["not_running"][0]["strategy"] == "scheduler"
    snapshot = json.loads((cwd / "dump-demo" / "state" / "pairs" / "BTCUSDT_scheduler_sim.json").read_text())
    assert snapshot["signal"] is not None  # recorded, not dropped


# --- disk -----------------------------------------------------------------------------------------

def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "2m"):
        pytest.fail("these tests need to mount a small tmpfs (run as root, as CI does)")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_stops_new_signals_keeps_state_intact_and_recovers(tmp_path, small_disk):
    cwd = workdir(tmp_path)
    data = small_disk / "data"
    proc = start(cwd, "run", "BTCUSDT", "ETHUSDT", "--strategy", "always-long", *FAST, "--data-dir", str(data))
    assert wait_for(lambda: (data / "journal").exists() and any((data / "journal").glob("*.jsonl")), 20)
    assert wait_running(data, proc)
    time.sleep(1)
    filler = small_disk / "filler"
    with open(filler, "wb") as f:  # fill the disk to the last block
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    time.sleep(1.5)
    filler.unlink()  # space again: the daemon stays stopped for new signals, but is alive
    time.sleep(0.5)
    code, out, err = stop(proc)
    logs = events(out)
    failures = [e for e in logs if e["event"] == "tick failed" and e.get("kind") == "storage"]
    assert failures and "No space left on device" in failures[0]["error"]
    assert "Traceback" not in err
    assert not list(data.rglob("*.tmp"))
    # Whatever was durable is restored, consistent, nothing half-written.
    proc = start(cwd, "run", "BTCUSDT", "ETHUSDT", "--strategy", "always-long", *FAST, "--data-dir", str(data))
    time.sleep(1.5)
    code, out, err = stop(proc)
    assert code == 0, err
    check_data_dir(data)


def test_a_read_only_filesystem_is_reported_and_nothing_is_damaged(tmp_path, small_disk):
    cwd = workdir(tmp_path)
    data = small_disk / "data"
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", *FAST, "--data-dir", str(data))
    assert wait_for(lambda: (data / "journal").exists() and any((data / "journal").glob("*.jsonl")), 20)
    time.sleep(0.5)
    # A read-only bind mount over the data directory: every new file (temp file, snapshot,
    # status) fails with EROFS, as on a filesystem the kernel turned read-only.
    subprocess.run(["mount", "--bind", str(data), str(data)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(data)], check=True)
    time.sleep(1.5)
    subprocess.run(["umount", str(data)], check=True)
    assert wait_running(data, proc)
    code, out, err = stop(proc)
    failures = [e for e in events(out) if e["event"] == "tick failed" and e.get("kind") == "storage"]
    assert failures and "Read-only file system" in failures[0]["error"]
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", *FAST, "--data-dir", str(data))
    assert wait_running(data, proc)
    code, _, err = stop(proc)
    assert code == 0, err
    check_data_dir(data)


def test_a_snapshot_truncated_to_zero_bytes_is_quarantined_and_rebuilt_from_the_journal(tmp_path):
    cwd = workdir(tmp_path)
    proc = start(cwd, "run", "BTCUSDT", "ETHUSDT", "--strategy", "always-long", *FAST)
    assert wait_running(cwd / "dump-demo", proc)
    time.sleep(1.0)
    stop(proc)
    snapshot = cwd / "dump-demo" / "state" / "pairs" / "BTCUSDT_always-long_sim.json"
    snapshot.write_bytes(b"")
    proc = start(cwd, "run", "BTCUSDT", "ETHUSDT", "--strategy", "always-long", *FAST)
    assert wait_running(cwd / "dump-demo", proc)
    time.sleep(1.0)
    code, out, err = stop(proc)
    assert code == 0, err
    evs = events(out)
    assert not [e for e in evs if e["event"] == "pair not started: damaged state"]
    rebuilt = [e for e in evs if e["event"] == "recovery" and "rebuilt from the journal" in str(e.get("note"))]
    assert rebuilt and rebuilt[0]["symbol"] == "BTCUSDT" and "quarantine" in rebuilt[0]["note"]
    for symbol in ("BTCUSDT", "ETHUSDT"):  # both pairs trade on
        assert any(e["event"] in ("opened", "closed") and e.get("symbol") == symbol for e in evs)
    assert list((cwd / "dump-demo" / "quarantine").glob("*BTCUSDT_always-long_sim.json.why.txt"))
    check_data_dir(cwd / "dump-demo")


def test_garbage_appended_to_a_journal_is_quarantined_not_trusted(tmp_path):
    cwd = workdir(tmp_path)
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", *FAST)
    assert wait_running(cwd / "dump-demo", proc)
    time.sleep(1.0)
    stop(proc)
    journal = cwd / "dump-demo" / "journal" / "BTCUSDT_always-long_sim.jsonl"
    journal.write_bytes(journal.read_bytes() + b"\xff\xfe not json at all\n")
    result = run(cwd, "run", "BTCUSDT", "--strategy", "always-long", *FAST)
    assert result.returncode == 1 and "invalid journal line" in result.stderr and "Traceback" not in result.stderr
    assert list((cwd / "dump-demo" / "quarantine").glob("*.jsonl"))


def _without_root_powers(*args: str) -> list[str]:
    """Run as root but without the capabilities that let root ignore file permissions."""
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", *args]


def test_files_owned_by_someone_else_are_a_clear_error(tmp_path):
    from daemon import command, environment

    cwd = workdir(tmp_path)
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", *FAST)
    assert wait_running(cwd / "dump-demo", proc)
    time.sleep(0.5)
    stop(proc)
    journal = cwd / "dump-demo" / "journal" / "BTCUSDT_always-long_sim.jsonl"
    before = journal.read_bytes()
    os.chown(journal, 65534, 65534)
    os.chmod(journal, 0o600)
    result = subprocess.run(_without_root_powers(*command("run", "BTCUSDT", "--strategy", "always-long", *FAST)),
                            cwd=cwd, capture_output=True, text=True, timeout=30, env=environment())
    assert result.returncode == 1, result.stderr
    assert "Permission denied" in result.stderr and "journal" in result.stderr
    assert "Traceback" not in result.stderr
    assert journal.read_bytes() == before

    os.chown(cwd / "dump-demo", 65534, 65534)
    os.chmod(cwd / "dump-demo", 0o700)
    result = subprocess.run(_without_root_powers(*command("run", "BTCUSDT", "--strategy", "always-long", *FAST)),
                            cwd=cwd, capture_output=True, text=True, timeout=30, env=environment())
    assert result.returncode == 1 and "is not writable" in result.stderr and "Traceback" not in result.stderr


# --- process --------------------------------------------------------------------------------------

def test_sigkill_during_shutdown_loses_nothing(tmp_path):
    cwd = workdir(tmp_path)
    for delay in (0.0, 0.02, 0.05, 0.1):
        proc = start(cwd, "run", "BTCUSDT", "ETHUSDT", "--strategy", "always-long", "--strategy", "near-dip", *FAST)
        time.sleep(1.2)
        proc.send_signal(signal.SIGINT)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    proc = start(cwd, "run", "BTCUSDT", "ETHUSDT", "--strategy", "always-long", "--strategy", "near-dip", *FAST)
    assert wait_running(cwd / "dump-demo", proc)
    time.sleep(0.5)
    assert stop(proc)[0] == 0
    check_data_dir(cwd / "dump-demo")


def test_sigterm_during_downtime_catch_up_stops_cleanly(tmp_path):
    cwd = workdir(tmp_path)
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", *FAST)
    time.sleep(1)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    time.sleep(1)  # downtime: 50 simulated minutes to catch up
    for delay in (0.15, 0.3, 0.5):
        proc = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", *FAST)
        time.sleep(delay)
        code, _, err = stop(proc, signal.SIGTERM)
        assert code in (0, -signal.SIGTERM), err  # before the handlers exist the default action applies
        assert "Traceback" not in err
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", *FAST)
    assert wait_running(cwd / "dump-demo", proc)
    time.sleep(0.5)
    assert stop(proc)[0] == 0
    check_data_dir(cwd / "dump-demo")


def test_two_daemons_started_at_the_same_moment_one_wins(tmp_path):
    cwd = workdir(tmp_path)
    a = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", *FAST)
    b = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", *FAST)
    # The loser exits once it finds the lock held; on a busy machine that takes a while.
    assert wait_for(lambda: a.poll() is not None or b.poll() is not None, 30)
    time.sleep(0.5)
    alive = [p for p in (a, b) if p.poll() is None]
    dead = [p for p in (a, b) if p.poll() is not None]
    assert len(alive) == 1 and len(dead) == 1
    _, err = dead[0].communicate()
    assert dead[0].returncode == 1 and f"in use by livetrader pid {alive[0].pid}" in err
    assert stop(alive[0])[0] == 0
    check_data_dir(cwd / "dump-demo")


def test_a_restart_with_a_changed_config_restores_and_runs(tmp_path):
    cwd = workdir(tmp_path)
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", *FAST)
    time.sleep(1.2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    (cwd / "changed.toml").write_text("[engine]\nfee_percent = 0.2\nmax_events = 50\n")
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", *FAST, "--config", "changed.toml")
    assert wait_running(cwd / "dump-demo", proc)
    time.sleep(0.5)
    code, out, err = stop(proc)
    assert code == 0, err
    check_data_dir(cwd / "dump-demo")
