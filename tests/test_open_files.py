"""Every pair keeps its journal open for its life: the daemon raises its soft limit of open files to
the hard one (systemd starts a service at 1,024), and refuses, saying how to fix it, a start that
even the hard limit cannot fit."""

from __future__ import annotations

import json
import resource
import signal
import subprocess

import pytest
from daemon import command, environment, wait_for, workdir

pytestmark = pytest.mark.e2e


def _limited(soft: int, hard: int):  # type: ignore[no-untyped-def]
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return apply


def test_a_soft_limit_too_low_for_the_pairs_is_raised_to_the_hard_one(tmp_path):
    cwd = workdir(tmp_path)
    proc = subprocess.Popen(command("run", "BTCUSDT", "ETHUSDT", "--strategy", "my-strategy", "--speed", "60"),
                            cwd=cwd, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_limited(257, 4096))
    try:
        assert wait_for(lambda: (cwd / "dump-demo" / "status.json").exists(), 30)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    raised = [json.loads(line) for line in out.splitlines() if "open files limit raised" in line]
    assert raised and raised[0]["soft"] == 4096 and raised[0]["was"] == 257 and raised[0]["pairs"] == 2


def test_a_hard_limit_too_low_for_the_pairs_refuses_the_start_saying_how_to_raise_it(tmp_path):
    cwd = workdir(tmp_path)
    done = subprocess.run(command("run", "BTCUSDT", "ETHUSDT", "--strategy", "my-strategy", "--speed", "60"),
                          cwd=cwd, env=environment(), capture_output=True, text=True, timeout=60,
                          preexec_fn=_limited(200, 200))
    assert done.returncode == 2, done.stderr
    assert "2 pairs need about 258 open files" in done.stderr and "LimitNOFILE=258" in done.stderr
    assert "Traceback" not in done.stderr
    journals = cwd / "dump-demo" / "journal"
    assert not journals.exists() or not list(journals.glob("*.jsonl"))  # no pair was started
