"""``livetrader recover``: what it reports, what it repairs, and its exit codes."""

import json
import signal
import time

import pytest
from daemon import run, start, wait_for, workdir
from test_recovery import T0, drive

from livetrader.core.price import MINUTE_MS

pytestmark = pytest.mark.e2e  # every test here starts the real command as a process


def recover(cwd, *args):
    return run(cwd, "recover", "--data-dir", "data", *args)


def test_a_clean_directory_has_nothing_to_do(tmp_path):
    drive(tmp_path / "data", "always-long", [T0, T0 + 40 * MINUTE_MS], crash_on="none")
    result = recover(tmp_path, "--dry-run")
    assert result.returncode == 0, result.stdout
    assert "BTCUSDT / always-long / sim: no signal (2 journal records)" in result.stdout
    assert "Nothing to do." in result.stdout


def test_dry_run_reports_repairs_and_the_real_run_makes_them(tmp_path):
    data = tmp_path / "data"
    drive(data, "always-long", [T0], crash_on="opened")  # journaled, snapshot not written
    journal = data / "journal" / "BTCUSDT_always-long_sim.jsonl"
    journal.write_bytes(journal.read_bytes() + b'{"event":"clos')
    (data / "state" / "pairs" / "leftover.json.tmp").write_text("{")
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}

    result = recover(tmp_path, "--dry-run")
    assert result.returncode == 10, result.stdout
    assert "would cut a partial last journal line" in result.stdout
    assert "would complete an interrupted transition: opened" in result.stdout
    assert "would remove a temp file" in result.stdout
    assert "open BTCUSDT-always-long-20240101T0000Z since 2024-01-01T00:00Z" in result.stdout
    assert {p: p.read_bytes() for p in data.rglob("*") if p.is_file()} == before  # nothing changed

    result = recover(tmp_path)
    assert result.returncode == 10 and "Repairs made." in result.stdout
    assert not (data / "state" / "pairs" / "leftover.json.tmp").exists()
    snapshot = json.loads((data / "state" / "pairs" / "BTCUSDT_always-long_sim.json").read_text())
    assert snapshot["journal_records"] == 1 and snapshot["signal"]["pending_at"] == T0
    assert recover(tmp_path).returncode == 0


def test_a_journal_shortened_by_a_power_loss_is_completed_from_the_commit_log(tmp_path):
    """The commit log (fdatasync'ed) holds a line the journal (flushed later) lost: recover puts it back."""
    data = tmp_path / "data"
    drive(data, "always-long", [T0], crash_on="none")
    snapshot = data / "state" / "pairs" / "BTCUSDT_always-long_sim.json"
    opened_snapshot = snapshot.read_bytes()
    drive(data, "always-long", [T0 + 40 * MINUTE_MS], crash_on="none")
    journal = data / "journal" / "BTCUSDT_always-long_sim.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    closed = json.loads(lines[1])
    assert len(lines) == 2 and closed["event"] == "closed"
    # The power loss came after the close was committed, before the journal and snapshot were flushed.
    (data / "journal" / "commit.log").write_bytes(json.dumps({"n": 2, "record": closed}).encode() + b"\n")
    journal.write_bytes(lines[0])
    snapshot.write_bytes(opened_snapshot)
    result = recover(tmp_path, "--dry-run")
    assert result.returncode == 10, result.stdout
    assert "commit log: BTCUSDT_always-long_sim.jsonl: would put back 1 committed record(s)" in result.stdout
    assert journal.read_bytes() == lines[0]

    result = recover(tmp_path)
    assert result.returncode == 10 and "put back 1 committed record(s)" in result.stdout, result.stdout
    assert journal.read_bytes() == b"".join(lines)
    assert (data / "journal" / "commit.log").read_bytes() == b""
    assert json.loads(snapshot.read_text())["journal_records"] == 2
    assert recover(tmp_path).returncode == 0


def test_a_damaged_snapshot_is_rebuilt_from_the_journal_and_a_damaged_journal_needs_a_person(tmp_path):
    data = tmp_path / "data"
    drive(data, "always-long", [T0], crash_on="none")
    snapshot = data / "state" / "pairs" / "BTCUSDT_always-long_sim.json"
    snapshot.write_text("{not json")
    looked = json.loads(recover(tmp_path, "--dry-run", "--json").stdout)
    (pair,) = looked["pairs"]
    # The dry run reads the pair from its journal (the truth): open, not "no signal".
    assert looked["exit_code"] == 10 and pair["state"] == "open" and pair["journal_records"] == 1
    assert any("would be quarantined and rebuilt" in r for r in pair["repairs"])
    result = recover(tmp_path, "--json")
    doc = json.loads(result.stdout)
    assert result.returncode == 10 and doc["exit_code"] == 10 and "unreadable snapshot" in json.dumps(doc)
    assert list((data / "quarantine").glob("*BTCUSDT_always-long_sim.json"))
    assert json.loads(snapshot.read_text())["journal_records"] == 1
    journal = data / "journal" / "BTCUSDT_always-long_sim.jsonl"
    journal.write_bytes(journal.read_bytes() + b"garbage\n")
    result = recover(tmp_path, "--json")
    assert result.returncode == 20 and "invalid journal line" in result.stdout


def test_it_refuses_to_act_while_a_daemon_holds_the_lock(tmp_path):
    cwd = workdir(tmp_path)
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", "--speed", "600", "--data-dir", "data")
    assert wait_for(lambda: (cwd / "data" / "journal").exists(), 20)
    time.sleep(0.3)
    try:
        result = recover(cwd)
        assert result.returncode == 1 and f"pid {proc.pid}" in result.stdout and "refusing" in result.stdout
        looked = recover(cwd, "--dry-run")
        assert looked.returncode in (0, 10) and "always-long" in looked.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)


def test_a_missing_data_directory_is_a_usage_error(tmp_path):
    result = recover(tmp_path)
    assert result.returncode == 2 and "does not exist" in result.stderr


