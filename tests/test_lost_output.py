"""A daemon whose stdout goes away (``livetrader run ... | head``) keeps trading and stops cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
from daemon import STARTED, command, environment, wait_for, wait_running, workdir

pytestmark = pytest.mark.e2e


def test_a_closed_stdout_pipe_never_stops_the_daemon(tmp_path):
    cwd = workdir(tmp_path)
    data = cwd / "dump"
    proc = subprocess.Popen(command("run", "BTCUSDT", "ETHUSDT", "--strategy", "always-long", "--speed", "3000",
                                    "--data-dir", "dump"),
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment())
    STARTED.append(proc)
    assert proc.stdout is not None
    for _ in range(3):  # what `| head -n 3` reads before it exits
        assert proc.stdout.readline()
    proc.stdout.close()
    assert wait_running(data, proc)
    time.sleep(2)  # enough simulated minutes for log lines to meet the closed pipe
    assert proc.poll() is None, "the daemon died when its stdout closed"
    ticks = json.loads((data / "status.json").read_text())["pairs"][0]["ticks"]
    assert wait_for(lambda: json.loads((data / "status.json").read_text())["pairs"][0]["ticks"] > ticks + 5, 10)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert err.count("stdout closed") == 1 and "Traceback" not in err
    assert '"event": "stopped"' in err or '"event":"stopped"' in err  # the rest of the log went to stderr
    assert json.loads((data / "status.json").read_text())["state"] == "stopped"
    assert sorted(p.name.split("_")[0] for p in (data / "reports" / "live").glob("*.md")) == ["BTCUSDT", "ETHUSDT"]
