"""The daemon's life around its loops (issue 15, items 3 and 10): SIGHUP (a reload), an abnormal end said
at the next start, the data directory locked and systemd told before strategies are imported,
and only the requested strategies' modules imported."""

import json
import signal
import socket
import tempfile
import time
from pathlib import Path

import pytest
from daemon import events, run, start, stop, wait_for, wait_running, workdir
from test_strategy_containment import fixture_line

pytestmark = pytest.mark.e2e  # every test here starts the real command as a process

FAST = ("--speed", "3000", "--data-dir", "dump")  # the files below are read from ./dump


def status(cwd):
    try:
        return json.loads((cwd / "dump" / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def ticks(cwd):
    doc = status(cwd)
    return sum(p["ticks"] for p in doc["pairs"]) if doc else 0


def test_sighup_reloads_the_strategies_folder_and_the_daemon_keeps_ticking(tmp_path):
    cwd = workdir(tmp_path)
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", *FAST)
    assert wait_for(lambda: ticks(cwd) > 0, 20)
    proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert proc.poll() is None, "SIGHUP ended the daemon"
    before = ticks(cwd)
    assert wait_for(lambda: ticks(cwd) > before + 5, 10), "no tick after SIGHUP"
    code, out, err = stop(proc, signal.SIGINT)
    assert code == 0, err
    logs = events(out)
    # Nothing changed in the folder: the reload says so, and every pair keeps its code.
    assert [e["signal"] for e in logs if e["event"] == "reload requested"] == ["SIGHUP"]
    reloaded = [e for e in logs if e["event"] == "strategies reloaded"]
    assert len(reloaded) == 1 and (reloaded[0]["changed"], reloaded[0]["problems"]) == (0, 0)
    assert logs[-1]["event"] == "stopped"
    assert list((cwd / "dump" / "reports" / "live").glob("BTCUSDT_*.md"))
    assert status(cwd)["state"] == "stopped"


def abnormal(logs):
    return [e for e in logs if e["event"] == "the last run ended abnormally"]


def test_the_start_after_an_abnormal_end_says_so_and_a_clean_stop_or_refused_start_does_not(tmp_path):
    cwd = workdir(tmp_path)
    # A clean run, then a start refused with an error message: neither is abnormal.
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", *FAST)
    assert wait_for(lambda: ticks(cwd) > 0, 20)
    code, out, err = stop(proc)
    assert code == 0 and not abnormal(events(out)), err
    refused = run(cwd, "run", "BTCUSDT", "--strategy", "no-such-strategy", *FAST)
    assert refused.returncode == 2 and not abnormal(events(refused.stdout))
    # os._exit() from strategy code: nothing can contain it, the next start says so.
    dead = run(cwd, "run", "BTCUSDT", "--strategy", "hard-exit", *FAST)
    assert dead.returncode == 7
    [last_words] = [e for e in events(dead.stdout) if e["event"].startswith("os._exit called by strategy code")]
    assert (last_words["strategy"], last_words["symbol"], last_words["code"]) == ("hard-exit", "BTCUSDT", 7)
    assert last_words["where"] == fixture_line(cwd, "hard_exit.py", "hard-exit-line")
    shown = run(cwd, "status")
    assert shown.returncode == 3
    assert "no clean stop was recorded (killed, power cut, os._exit or a crash)" in " ".join(shown.stdout.split())
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", *FAST)
    assert wait_for(lambda: (status(cwd) or {}).get("pid") == proc.pid and ticks(cwd) > 0, 20)
    proc.send_signal(signal.SIGKILL)  # and a SIGKILL likewise
    proc.communicate()
    proc2 = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", *FAST)
    # Running before it is stopped (a fixed sleep let a busy machine interrupt its start instead).
    assert wait_for(lambda: (status(cwd) or {}).get("pid") == proc2.pid, 20)
    code, out, err = stop(proc2)
    assert code == 0, err
    [warning] = abnormal(events(out))
    assert warning["pid"] == proc.pid and warning["started_at"].endswith("Z")
    assert "no clean stop was recorded (killed, power cut, os._exit or a crash)" in warning["why"]


SPY = '''
import json
import os
import socket
from pathlib import Path

from livetrader import Strategy
from livetrader.store.lock import is_locked

with open("imports.jsonl", "a") as out:
    out.write(json.dumps({"module": __file__, "locked": is_locked(Path("dump"))}) + "\\n")
if os.environ.get("NOTIFY_SOCKET"):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(f"SPY={Path(__file__).name}".encode(), os.environ["NOTIFY_SOCKET"])


class CLS(Strategy):
    name ANNOTATION= "NAME"
    interval = "1m"

    async def get_signal(self, ctx):
        return None
'''


def spy_module(cls, name, annotation):
    """A strategy module recording its import (and whether the data directory was locked)."""
    return SPY.replace("CLS", cls).replace("NAME", name).replace(" ANNOTATION", annotation or " ")


def imported(cwd):
    path = cwd / "imports.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(x) for x in lines]


def test_strategies_import_after_the_lock_with_systemd_told_and_only_the_requested_ones(tmp_path):
    cwd = workdir(tmp_path)
    (cwd / "strategies" / "spy.py").write_text(spy_module("Spy", "spy", ""))
    (cwd / "strategies" / "bystander.py").write_text(
        spy_module("Bystander", "bystander", ": ClassVar[str] ")
        .replace("from livetrader import", "from typing import ClassVar\n\nfrom livetrader import"))
    folder = Path(tempfile.mkdtemp(prefix="lt-", dir="/tmp"))  # sun_path is short
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(folder / "notify.sock"))
    try:
        proc = start(cwd, "run", "BTCUSDT", "--strategy", "spy", *FAST, NOTIFY_SOCKET=str(folder / "notify.sock"))
        messages = []
        sock.settimeout(20)
        while not any(m.startswith("READY=1") for m in messages):
            messages.append(sock.recv(65536).decode())
        code, out, err = stop(proc)
        assert code == 0, err
    finally:
        sock.close()
    # Only the module declaring `spy` was imported, with the data directory already locked...
    assert [Path(x["module"]).name for x in imported(cwd)] == ["spy.py"]
    assert imported(cwd)[0]["locked"] is True
    # ... and systemd was asked for more start time just before, with what is being imported.
    extend = next(i for i, m in enumerate(messages) if "STATUS=importing strategy module spy.py" in m)
    assert messages[extend].startswith("EXTEND_TIMEOUT_USEC=120000000")
    assert extend < messages.index("SPY=spy.py") < next(i for i, m in enumerate(messages) if "READY=1" in m)
    # A name the static scan cannot find imports every module, so the error lists them all.
    unknown = run(cwd, "run", "BTCUSDT", "--strategy", "bystandr", *FAST)
    assert unknown.returncode == 2 and "did you mean 'bystander'" in unknown.stderr
    assert sorted(Path(x["module"]).name for x in imported(cwd)) == ["bystander.py", "spy.py", "spy.py"]
    # `livetrader strategies` lists everything, importing every module.
    listed = run(cwd, "strategies")
    assert listed.returncode == 0 and "bystander" in listed.stdout and "spy" in listed.stdout
    assert len(imported(cwd)) == 5


KEEPS_A_LOG = '''
import os
from pathlib import Path

from livetrader import Strategy

LOG = open("asked.log", "w")  # never closed: Python flushes it when the process ends


class KeepsALog(Strategy):
    name = "keeps-a-log"
    interval = "1m"

    def __init__(self):
        self.asked = 0

    async def get_signal(self, ctx):
        self.asked += 1
        LOG.write(f"{ctx.now_ms}\\n")
        Path("asked.count.tmp").write_text(str(self.asked))
        os.replace("asked.count.tmp", "asked.count")  # whole at every ask: the test reads it meanwhile
        return None
'''


def test_a_strategys_unclosed_file_is_flushed_when_the_daemon_stops(tmp_path):
    """Start-up's objects, strategies included, are frozen out of the collector's sight
    (live/collector.py); Python never finalizes frozen objects, so the daemon hands them back
    before it exits: a strategy's unclosed log keeps every line (frozen, it lost the last 8 KB)."""
    cwd = workdir(tmp_path)
    (cwd / "strategies" / "keeps_a_log.py").write_text(KEEPS_A_LOG)
    proc = start(cwd, "run", "BTCUSDT", "-s", "keeps-a-log", "--speed", "600")
    assert wait_running(cwd / "dump-demo", proc)
    assert wait_for(lambda: (cwd / "asked.count").exists() and int((cwd / "asked.count").read_text()) >= 20, 30)
    code, _, err = stop(proc)
    assert code == 0, err
    asked = int((cwd / "asked.count").read_text())
    assert len((cwd / "asked.log").read_text().splitlines()) == asked
