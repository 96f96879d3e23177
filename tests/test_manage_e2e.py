"""Steering open positions on the real daemon (docs/behaviour.md §2): the shipped ``trend-rider``
(an exit signal from ``manage``) and ``trailing-long`` (a trailing stop) live on the simulated
market, their journals, reports and a restart in the middle."""

from __future__ import annotations

import json

import pytest
from daemon import events, run, start, stop, wait_for, workdir

pytestmark = pytest.mark.e2e


def journal(cwd, strategy):
    path = cwd / "dump-demo" / "journal" / f"BTCUSDT_{strategy}_sim.jsonl"
    if not path.exists():
        return []
    data = path.read_bytes()
    return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines() if line.strip()]


def test_an_exit_signal_and_a_trailing_stop_live_on_the_simulated_market(tmp_path):
    cwd = workdir(tmp_path)
    args = ("run", "BTCUSDT", "--strategy", "trend-rider", "--strategy", "trailing-long", "--speed", "3000")

    def seen():
        rider, trailing = journal(cwd, "trend-rider"), journal(cwd, "trailing-long")
        return (any(r["event"] == "closed" and r["close_reason"] == "signal" for r in rider)
                and any(r["event"] == "adjusted" for r in trailing))

    proc = start(cwd, *args)
    reached = wait_for(seen, 60)
    code, out, err = stop(proc)
    assert code == 0 and reached, err[-2000:]
    closed = next(r for r in journal(cwd, "trend-rider") if r["event"] == "closed" and r["close_reason"] == "signal")
    assert closed["reason"].startswith("trend turned") and closed["price_close"] == closed["price"]
    trailing = journal(cwd, "trailing-long")
    moves = [r for r in trailing if r["event"] == "adjusted"]
    by_signal: dict[str, list[float]] = {}
    for r in moves:
        by_signal.setdefault(r["signal_id"], []).append(r["stop_loss"])
    assert all(levels == sorted(levels) for levels in by_signal.values())  # a trailing stop only rises
    assert any(e["event"] == "adjusted" for e in events(out))  # logged like every transition
    # The journal restores the moved levels: a restart carries on from the last adjusted stop-loss.
    before = [r for r in journal(cwd, "trailing-long") if r["event"] in ("opened", "adjusted", "closed")]
    proc = start(cwd, *args)
    assert wait_for(lambda: (cwd / "dump-demo" / "status.json").exists()
                    and json.loads((cwd / "dump-demo" / "status.json").read_text()).get("pid") == proc.pid, 30)
    status = json.loads(run(cwd, "status", "--data-dir", "dump-demo", "--json").stdout)
    code, out, err = stop(proc)
    assert code == 0, err
    held = {p["strategy"]: p for p in status["pairs"]}["trailing-long"]
    if held["signal_id"] and before and before[-1]["signal_id"] == held["signal_id"]:
        assert held["stop_loss"] >= before[-1]["stop_loss"]  # restored, and only ever raised since
    report = run(cwd, "report", "--data-dir", "dump-demo", "--out", "out")
    assert report.returncode == 0, report.stderr
    text = "".join(p.read_text() for p in (cwd / "out").glob("*.md"))
    assert "signal" in text
