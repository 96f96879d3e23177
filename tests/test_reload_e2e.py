"""Hot reload on SIGHUP and strategy state that survives a kill -9, with the real daemon."""

from __future__ import annotations

import hashlib
import json
import random
import signal
import time
from pathlib import Path

import pytest
from daemon import events, run, start, stop, wait_for, wait_running

pytestmark = pytest.mark.e2e  # every test here starts the real command as a process

#: A strategy counting its asks in its state, saying each ask and restore in ``$COUNTER_LOG``
#: (one line: what, its version, the count, the wall time); it trades when ``$COUNTER_TRADES`` is set.
COUNTED = '''import os
import time

from livetrader import Signal, Strategy

NOTE = {note!r}


class Counted(Strategy):
    name = "counted"
    interval = "1m"

    def __init__(self):
        self.count = 0

    def get_signal(self, ctx):
        self.count += 1
        self.say("ask")
        if os.environ.get("COUNTER_TRADES"):
            return Signal("long", take_profit=ctx.price * 1.006, stop_loss=ctx.price * 0.994, minutes=2, note=NOTE)
        return None

    def checkpoint(self):
        return {{"count": self.count}}

    def restore(self, state):
        self.count = state["count"]
        self.say("restore")

    def say(self, what):
        with open(os.environ["COUNTER_LOG"], "a") as out:
            out.write(f"{{what}} {{NOTE}} {{self.count}} {{time.time()}}\\n")
'''

RUN = ("run", "BTCUSDT", "--strategy", "counted", "--speed", "3000", "--data-dir", "dump")


def setup(tmp_path: Path, note: str = "v1") -> Path:
    (tmp_path / "strategies").mkdir()
    write(tmp_path, note)
    return tmp_path


def write(cwd: Path, note: str, tail: str = "") -> Path:
    file = cwd / "strategies" / "counted.py"
    file.write_text(COUNTED.format(note=note) + tail)
    return file


def lines(cwd: Path) -> list[tuple[str, str, int, float]]:
    """The counter log: (ask|restore, note, count, wall time)."""
    try:
        text = (cwd / "counter.log").read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4:
            out.append((parts[0], parts[1], int(parts[2]), float(parts[3])))
    return out


def status(cwd: Path) -> dict:
    try:
        return json.loads((cwd / "dump" / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def notes_opened(cwd: Path) -> list[str]:
    out = []
    for journal in (cwd / "dump" / "journal").glob("BTCUSDT*.jsonl"):
        for line in journal.read_text().splitlines():
            record = json.loads(line)
            if record.get("event") == "opened":
                out.append(record.get("note"))
    return out


def short_hash(file: Path) -> str:
    return hashlib.sha256(file.read_bytes()).hexdigest()[:10]


def test_sighup_reloads_an_edited_strategy_and_a_broken_one_keeps_running_its_old_code(tmp_path):
    cwd = setup(tmp_path)
    env = {"COUNTER_LOG": str(cwd / "counter.log"), "COUNTER_TRADES": "1"}
    proc = start(cwd, *RUN, **env)
    assert wait_running(cwd / "dump", proc)
    assert wait_for(lambda: "v1" in notes_opened(cwd), 20), "no v1 signal"
    first = status(cwd)["pairs"][0]["code"]
    assert first.startswith(short_hash(cwd / "strategies" / "counted.py") + "@")

    file = write(cwd, "v2")
    proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "v2" in notes_opened(cwd), 20), "the edited strategy's signals never came"
    assert wait_for(lambda: status(cwd)["pairs"][0]["code"].startswith(short_hash(file) + "@"), 10)
    log = lines(cwd)
    v1 = [count for what, note, count, _ in log if what == "ask" and note == "v1"]
    v2 = [count for what, note, count, _ in log if what == "ask" and note == "v2"]
    assert v2[0] == v1[-1] + 1, "the state did not come across the reload"
    assert ("restore", "v2", v1[-1]) in [entry[:3] for entry in log]

    # Broken: the pair goes on with v2, the error names the file and line, status keeps the version.
    file = write(cwd, "v3", "\n\ndef broken(:\n")
    line = file.read_text().splitlines().index("def broken(:") + 1
    running = status(cwd)["pairs"][0]["code"]
    proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: (status(cwd).get("reload") or {}).get("problems"), 10)
    doc = status(cwd)
    assert doc["reload"]["problems"] == [f"strategies/counted.py:{line}: syntax error: invalid syntax"]
    asks_before = len([e for e in lines(cwd) if e[0] == "ask"])
    assert wait_for(lambda: len([e for e in lines(cwd) if e[0] == "ask"]) > asks_before + 3, 10)
    assert {note for what, note, _, _ in lines(cwd)[asks_before:]} == {"v2"}
    assert status(cwd)["pairs"][0]["code"] == running
    assert f"strategies/counted.py:{line}" in status(cwd)["pairs"][0]["last_error"]
    shown = run(cwd, "status", "--data-dir", "dump")
    assert shown.returncode == 0, shown.stderr
    assert f"reload problem: strategies/counted.py:{line}: syntax error" in shown.stdout
    assert running in shown.stdout  # the code each pair runs

    code, out, err = stop(proc)
    assert code == 0, err
    logged = events(out)
    assert [e["changed"] for e in logged if e["event"] == "strategies reloaded"] == [1, 0]
    failed = [e for e in logged if e["event"] == "strategy reload failed"]
    assert len(failed) == 1 and f"counted.py:{line}: syntax error" in failed[0]["problem"]
    assert "Traceback" not in err


def test_the_strategy_state_survives_kill_9_at_random_instants_and_a_reload(tmp_path):
    cwd = setup(tmp_path)
    env = {"COUNTER_LOG": str(cwd / "counter.log")}
    rng = random.Random()
    kills = 3
    floor = last = None
    for attempt in range(kills + 1):
        seen = len(lines(cwd))
        proc = start(cwd, *RUN, **env)
        assert wait_for(lambda seen=seen: sum(1 for e in lines(cwd)[seen:] if e[0] == "ask") >= 3, 20), "no asks"
        if attempt > 0:  # killed before: the state came back, neither a minute behind nor ahead
            after = lines(cwd)[seen:]
            restored = [count for what, _, count, _ in after if what == "restore"]
            assert len(restored) == 1, after[:3]
            assert floor <= restored[0] <= last, (floor, restored[0], last)
            assert next(count for what, _, count, _ in after if what == "ask") == restored[0] + 1
        if attempt == kills:
            code, _, err = stop(proc)
            assert code == 0, err
            break
        if attempt == 1:  # a reload before this kill: the state goes across it, then survives the kill
            write(cwd, "v2")
            proc.send_signal(signal.SIGHUP)
            assert wait_for(lambda: any(e[1] == "v2" and e[0] == "ask" for e in lines(cwd)), 10)
        time.sleep(rng.uniform(0.8, 1.5))
        killed_at = time.time()
        proc.kill()
        proc.communicate(timeout=10)
        asked = [e for e in lines(cwd) if e[0] == "ask"]
        last = asked[-1][2]
        # What the state held 0.75 s before the kill (many minutes at --speed 3000, but under a second of the
        # writer's time) must be there after it: at real speed that is less than the last minute's change.
        floor = max((count for _, _, count, at in asked if at <= killed_at - 0.75), default=0)
        assert floor > 0
    log = lines(cwd)
    v1 = [count for what, note, count, _ in log if what == "ask" and note == "v1"]
    v2 = [count for what, note, count, _ in log if what == "ask" and note == "v2"]
    assert v2[0] == v1[-1] + 1  # across the reload too


def test_a_damaged_state_file_is_quarantined_and_the_strategy_starts_without_restore(tmp_path):
    cwd = setup(tmp_path)
    env = {"COUNTER_LOG": str(cwd / "counter.log")}
    proc = start(cwd, *RUN, **env)
    assert wait_for(lambda: sum(1 for e in lines(cwd) if e[0] == "ask") >= 3, 20)
    code, _, err = stop(proc)
    assert code == 0, err
    [state_file] = (cwd / "dump" / "state" / "strategies").glob("*.json")
    assert json.loads(state_file.read_text())["state"]["count"] >= 3
    state_file.write_bytes(b'{"symbol": "BTCUSDT", "state": {"count": 4')  # cut short

    seen = len(lines(cwd))
    proc = start(cwd, *RUN, **env)
    assert wait_for(lambda: sum(1 for e in lines(cwd)[seen:] if e[0] == "ask") >= 2, 20)
    code, out, err = stop(proc)
    assert code == 0, err
    after = lines(cwd)[seen:]
    assert [e for e in after if e[0] == "restore"] == []  # restore is not called
    assert after[0][:3] == ("ask", "v1", 1)  # a fresh instance
    moved = [p for p in (cwd / "dump" / "quarantine").iterdir() if p.name.endswith(state_file.name)]
    assert len(moved) == 1 and moved[0].read_bytes() == b'{"symbol": "BTCUSDT", "state": {"count": 4'
    assert "unreadable strategy state" in moved[0].with_name(moved[0].name + ".why.txt").read_text()
    notes = [e for e in events(out) if e["event"] == "recovery" and "strategy state" in e.get("note", "")]
    assert len(notes) == 1 and "without restore being called" in notes[0]["note"]
    assert json.loads(state_file.read_text())["state"]["count"] >= 2  # saved afresh
