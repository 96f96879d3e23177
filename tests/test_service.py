"""Running as a service: sd_notify readiness and watchdog against a real socket, `livetrader status`."""

import json
import signal
import socket
import time

import pytest
from daemon import run, start, stop, wait_for, wait_running, workdir

pytestmark = pytest.mark.e2e  # every test here starts the real command as a process


@pytest.fixture
def notify_socket(tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    yield path, sock
    sock.close()


def receive(sock, seconds, until=None):
    """Datagrams received within ``seconds`` (or until one equals ``until``)."""
    messages, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            data = sock.recv(4096).decode()
        except TimeoutError:
            continue
        messages.append(data)
        if until is not None and data.startswith(until):
            break
    return messages


def test_readiness_status_watchdog_and_stopping_in_order(tmp_path, notify_socket):
    path, sock = notify_socket
    cwd = workdir(tmp_path)
    proc = start(cwd, "run", "BTCUSDT", "ETHUSDT", "--strategy", "always-long", "--speed", "600",
                 NOTIFY_SOCKET=str(path), WATCHDOG_USEC="200000")
    first = receive(sock, 20, until="READY=1")
    more = receive(sock, 1.5)
    code, _, err = stop(proc, signal.SIGTERM)
    last = receive(sock, 2)
    assert code == 0, err
    assert first[0].startswith("EXTEND_TIMEOUT_USEC=")
    ready = first[-1]
    assert ready.startswith("READY=1") and "STATUS=2 pairs" in ready
    assert sum(m == "WATCHDOG=1" for m in more) >= 5
    assert any(m.startswith("STATUS=2 pairs") and "last tick" in m for m in more)
    assert "WATCHDOG=1" not in first  # no watchdog before readiness
    assert last and last[0].startswith("STOPPING=1") and not any(m == "WATCHDOG=1" for m in last[1:])


def test_ready_comes_only_after_downtime_catch_up(tmp_path, notify_socket):
    path, sock = notify_socket
    cwd = workdir(tmp_path)
    journal = cwd / "dump-demo" / "journal" / "BTCUSDT_always-long_sim.jsonl"
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", "--speed", "600")
    assert wait_for(lambda: journal.exists() and journal.read_text().count("\n") >= 1, 20)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    lines = journal.read_text().splitlines()
    held = json.loads(lines[-1])
    assert held["event"] == "opened"
    time.sleep(3.5)  # 35 simulated minutes: the 30-minute position has ended while the daemon was down
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", "--speed", "600",
                 NOTIFY_SOCKET=str(path))
    got = receive(sock, 20, until="READY=1")
    at_ready = [json.loads(x) for x in journal.read_text().splitlines()]
    code, _, err = stop(proc)
    assert code == 0, err
    assert got[-1].startswith("READY=1")
    closes = [r for r in at_ready if r["event"] == "closed" and r["signal_id"] == held["signal_id"]]
    assert len(closes) == 1, "the catch-up close was journaled before READY=1"


def test_without_notify_socket_nothing_is_sent_and_it_runs(tmp_path):
    cwd = workdir(tmp_path)
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", "--speed", "600")
    assert wait_running(cwd / "dump-demo", proc)
    time.sleep(0.5)
    code, out, err = stop(proc)
    assert code == 0 and '"ready"' in out and "Traceback" not in err


def test_status_of_a_running_a_stopped_and_a_killed_daemon(tmp_path):
    cwd = workdir(tmp_path)
    assert run(cwd, "status", "--data-dir", "dump-demo").returncode == 3
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", "--strategy", "broken", "--speed", "600")
    assert wait_for(lambda: (cwd / "dump-demo" / "status.json").exists(), 20)
    assert wait_running(cwd / "dump-demo", proc)
    time.sleep(1.5)
    running = run(cwd, "status", "--data-dir", "dump-demo", "--json")
    assert running.returncode == 0
    doc = json.loads(running.stdout)
    assert doc["verdict"] == "running" and doc["pid"] == proc.pid and len(doc["pairs"]) == 2
    broken = next(p for p in doc["pairs"] if p["strategy"] == "broken")
    assert broken["errors_last_hour"] >= 1 and "broken on purpose" in broken["last_error"]
    assert all(p["last_tick_at"] and p["lag_ms"] is not None for p in doc["pairs"])
    # 1.5 s at x600 is 15 minutes: both loops were woken at a boundary and their sweep timed.
    assert doc["last_sweep"]["pairs"] == 2 and 0 <= doc["last_sweep"]["seconds"] < 5
    readable = run(cwd, "status", "--data-dir", "dump-demo")
    assert "running (pid" in readable.stdout and "always-long" in readable.stdout
    assert "last minute's sweep: 2 pairs ticked in" in readable.stdout

    code, _, _ = stop(proc)
    assert code == 0
    stopped = run(cwd, "status", "--data-dir", "dump-demo")
    assert stopped.returncode == 3 and "stopped cleanly" in stopped.stdout

    proc = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", "--speed", "600")
    assert wait_for(lambda: json.loads((cwd / "dump-demo" / "status.json").read_text())["pid"] == proc.pid, 20)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    killed = run(cwd, "status", "--data-dir", "dump-demo", "--json")
    assert killed.returncode == 3
    doc = json.loads(killed.stdout)
    assert doc["verdict"] == "dead" and doc["alive"] is False and doc["pid"] == proc.pid
