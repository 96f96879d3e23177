"""Helpers to run the real ``livetrader`` command as a subprocess in end-to-end tests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_STRATEGIES = Path(__file__).resolve().parent / "fixtures" / "strategies"
DATA = ROOT / "tests" / "data" / "UNITTEST_BTC-1m.json"


def workdir(tmp_path: Path) -> Path:
    """A working directory with the shipped strategies plus the test strategies."""
    strategies = tmp_path / "strategies"
    shutil.copytree(ROOT / "strategies", strategies, ignore=shutil.ignore_patterns("__pycache__"))
    for file in FIXTURE_STRATEGIES.glob("*.py"):
        shutil.copy(file, strategies / file.name)
    return tmp_path


def command(*args: str) -> list[str]:
    """``livetrader ARGS`` run with this interpreter (no reliance on PATH)."""
    return [sys.executable, "-m", "livetrader.cli.app", *args]


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVETRADER_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    env.update(extra)
    return env


#: Every daemon a test started, so a failing test never leaves one running (see conftest.py).
STARTED: list[subprocess.Popen[str]] = []


class Drained(subprocess.Popen):  # type: ignore[type-arg]
    """A daemon whose stdout and stderr are read as they come, by two threads.

    A daemon writes log lines all the time; a pipe nobody reads fills (64 KB) and the next
    write blocks the daemon's event loop, which then looks hung. ``communicate`` waits for the
    exit and returns everything it wrote, as ``subprocess.Popen.communicate`` would.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-overload]
        self._chunks: dict[str, list[str]] = {"out": [], "err": []}
        self._readers = [threading.Thread(target=self._drain, args=(stream, self._chunks[name]), daemon=True)
                         for name, stream in (("out", self.stdout), ("err", self.stderr))]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _drain(stream, chunks: list[str]) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            chunks.append(line)

    def communicate(self, input=None, timeout=None):  # type: ignore[no-untyped-def]
        self.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return "".join(self._chunks["out"]), "".join(self._chunks["err"])


def start(cwd: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    """Start the daemon; stdout (JSON log lines) and stderr are read as they come (``Drained``)."""
    proc = Drained(command(*args), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                   env=environment(**env))
    STARTED.append(proc)
    return proc


def kill_leftovers() -> None:
    """SIGKILL every started daemon still running."""
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def run(cwd: Path, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a command to completion."""
    return subprocess.run(command(*args), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=environment(**env))


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGINT, timeout: float = 30) -> tuple[int, str, str]:
    """Send ``sig`` and wait; returns (exit code, stdout, stderr)."""
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def events(stdout: str) -> list[dict]:
    """The JSON log lines of a run."""
    out = []
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def wait_for(predicate, timeout: float = 30, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def wait_running(data_dir: Path, proc: subprocess.Popen[str], timeout: float = 30) -> bool:
    """Wait until ``proc`` runs its loops (its signal handlers are in place): its status file is there.

    A test that stops the daemon at a fixed delay after starting it may otherwise, on a busy
    machine, signal it while it still starts (an interrupted start exits 130).
    """

    def running() -> bool:
        try:
            doc = json.loads((Path(data_dir) / "status.json").read_text())
        except (OSError, ValueError):
            return False
        return doc.get("pid") == proc.pid and doc.get("state") == "running"

    return wait_for(running, timeout)
