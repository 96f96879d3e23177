"""A strategy cannot take the daemon down, nor stall it unnoticed (issue 15, items 2 and 8)."""

import json
import re
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest
from daemon import events, run, start, stop, wait_for, workdir

pytestmark = pytest.mark.e2e  # every test here starts the real command as a process

FAST = ("--speed", "3000", "--data-dir", "dump")  # the files below are read from ./dump


def fixture_line(cwd, file, marker):
    """``path:line`` of the line of a fixture strategy carrying ``# marker``."""
    path = cwd / "strategies" / file
    for number, text in enumerate(path.read_text().splitlines(), 1):
        if text.rstrip().endswith(f"# {marker}"):
            return f"{path}:{number}"
    raise AssertionError(f"no line marked {marker} in {path}")


def journal(cwd, name):
    path = cwd / "dump" / "journal" / name
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_sys_exit_and_keyboard_interrupt_in_a_strategy_are_that_strategys_error(tmp_path):
    cwd = workdir(tmp_path)
    names = ("exits", "exits-after-await", "interrupts", "exits-in-callbacks", "always-long")
    proc = start(cwd, "run", "BTCUSDT", *(x for n in names for x in ("--strategy", n)), *FAST)
    # Long enough for every callback to run: a 30-minute trade closes within 0.6 s at x3000.
    assert wait_for(lambda: sum(r["event"] == "closed"
                                for r in journal(cwd, "BTCUSDT_exits-in-callbacks_sim.jsonl")) >= 2, 20)
    assert proc.poll() is None, "a strategy's sys.exit() ended the daemon"
    code, out, err = stop(proc)
    assert code == 0, err
    logs = events(out)
    failed = [e for e in logs if e["event"] == "tick failed" and e["kind"] == "strategy"]

    def errors(strategy):
        return " | ".join(e["error"] for e in failed if e["strategy"] == strategy)

    assert f"strategy raised SystemExit (at {fixture_line(cwd, 'exiting.py', 'exits-line')})" in errors("exits")
    assert (f"strategy raised SystemExit: 3 (at {fixture_line(cwd, 'exiting.py', 'exits-after-await-line')})"
            in errors("exits-after-await"))
    assert (f"strategy raised KeyboardInterrupt (at {fixture_line(cwd, 'exiting.py', 'interrupts-line')})"
            in errors("interrupts"))
    callbacks = errors("exits-in-callbacks")
    assert (f"callback on_open raised SystemExit: from on_open (at {fixture_line(cwd, 'exiting.py', 'on-open-line')})"
            in callbacks)
    assert (f"callback on_active raised KeyboardInterrupt: from on_active "
            f"(at {fixture_line(cwd, 'exiting.py', 'on-active-line')})" in callbacks)
    assert (f"callback on_close raised SystemExit: from on_close "
            f"(at {fixture_line(cwd, 'exiting.py', 'on-close-line')})" in callbacks)
    # Each pair kept ticking after its strategy's first exit, and the others traded on.
    assert len(re.findall("SystemExit", errors("exits"))) >= 3
    assert len(re.findall("KeyboardInterrupt", errors("interrupts"))) >= 3
    assert any(r["event"] == "closed" for r in journal(cwd, "BTCUSDT_always-long_sim.jsonl"))
    assert any(e["event"] == "stopped" for e in logs)


def test_sys_exit_in_a_backtested_strategy_is_a_clear_error(tmp_path):
    cwd = workdir(tmp_path)
    for name, marker in (("exits", "exits-line"), ("exits-after-await", "exits-after-await-line")):
        # --strict: stop at the first error (the sim: a candle file with gaps would be refused first).
        done = run(cwd, "backtest", "BTCUSDT", "--strategy", name, "--from", "2024-01-01", "--to", "2024-01-02",
                   "--strict")
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert f"strategy '{name}' raised at" in done.stderr
        assert "SystemExit" in done.stderr and fixture_line(cwd, "exiting.py", marker) in done.stderr
        assert "Traceback" not in done.stderr
    done = run(cwd, "backtest", "BTCUSDT", "--strategy", "exits-in-callbacks", "--from", "2024-01-01", "--to",
               "2024-01-02", "--strict")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "callback on_open raised at" in done.stderr and "SystemExit: from on_open" in done.stderr
    assert fixture_line(cwd, "exiting.py", "on-open-line") in done.stderr


def test_a_strategy_blocking_the_event_loop_is_named_with_its_stack_and_status_says_stalled(tmp_path):
    cwd = workdir(tmp_path)
    (cwd / "stall.toml").write_text("[engine]\nstall_seconds = 1\n")
    folder = Path(tempfile.mkdtemp(prefix="lt-", dir="/tmp"))  # sun_path is short
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(folder / "notify.sock"))
    pings: list[float] = []

    def receive():
        while True:
            try:
                message = sock.recv(65536).decode()
            except OSError:
                return
            if "WATCHDOG=1" in message:
                pings.append(time.monotonic())

    threading.Thread(target=receive, daemon=True).start()
    try:
        proc = start(cwd, "run", "BTCUSDT", "--strategy", "blocks-loop", "--strategy", "always-long",
                     "--config", "stall.toml", "--speed", "600", "--data-dir", "dump", BLOCK_SECONDS="5",
                     NOTIFY_SOCKET=str(folder / "notify.sock"), WATCHDOG_USEC="1000000")
        status_file = cwd / "dump" / "status.json"

        def stalled():
            try:
                return json.loads(status_file.read_text()).get("stalled")
            except (FileNotFoundError, json.JSONDecodeError):
                return None

        assert wait_for(stalled, 20), "no stall recorded in the status file"
        blocked_at = time.monotonic()
        shown = run(cwd, "status")
        text = " ".join(shown.stdout.split())
        assert shown.returncode == 0 and "stalled (pid" in text, shown.stdout
        where = fixture_line(cwd, "blocking.py", "blocking-line")
        assert "strategy blocks-loop on BTCUSDT (get_signal) is blocking it at" in text
        assert where.replace(" ", "") in text.replace(" ", "")
        # It runs again by itself once the strategy returns; the loop rewrites the status.
        assert wait_for(lambda: not stalled(), 15)
        assert wait_for(lambda: pings and pings[-1] > blocked_at + 4, 5), "WATCHDOG=1 did not resume"
        code, out, err = stop(proc)
        assert code == 0, err
    finally:
        sock.close()
    logs = events(out)
    [stall] = [e for e in logs if e["event"] == "event loop stalled"]
    assert (stall["strategy"], stall["symbol"], stall["call"]) == ("blocks-loop", "BTCUSDT", "get_signal")
    assert stall["where"] == where and stall["level"] == "error"
    assert any(f'File "{where.rsplit(":", 1)[0]}", line {where.rsplit(":", 1)[1]}, in get_signal' in line
               for line in stall["stack"])
    [again] = [e for e in logs if e["event"] == "event loop running again"]
    assert 4 <= again["stalled_seconds"] <= 7
    # WATCHDOG=1 comes from the loop: none was sent while it was held.
    assert max(b - a for a, b in zip(pings, pings[1:], strict=False)) >= 4
