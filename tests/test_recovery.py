"""Crash recovery (docs/behaviour.md §9): interrupted transitions, damaged files, the lock, risk reconciliation."""

import asyncio
import json
import os
import signal
import time
from dataclasses import replace

import pytest
from daemon import FIXTURE_STRATEGIES, run, start, stop, wait_for, wait_running, workdir

from livetrader.config import Config, RiskProfileConfig
from livetrader.core.price import MINUTE_MS
from livetrader.events import EventBus
from livetrader.live.clock import SimClock
from livetrader.live.engine import Engine
from livetrader.store.journal import read_journal
from livetrader.store.layout import snapshot_path
from livetrader.store.state import StateDamaged, restore_pair
from livetrader.strategy.base import load_strategies

T0 = 1_704_067_200_000  # 2024-01-01T00:00Z


class Crash(Exception):
    """Stands for the process dying between the journal append and the snapshot write."""


def new_engine(data_dir, config=None):
    return Engine(config or Config(), load_strategies(FIXTURE_STRATEGIES), clock=SimClock(0, T0, 1.0),
                  bus=EventBus(), data_dir=data_dir)


def close(engine):
    asyncio.run(engine.close())


def drive(data_dir, strategy, ticks, crash_on):
    """Tick a pair at the given times; the snapshot write of the ``crash_on`` transition 'crashes'."""
    engine = new_engine(data_dir)
    pair = engine.add_pair("BTCUSDT", strategy)
    real_snapshot, real_append = pair.store.snapshot, pair.store.write_ahead
    results, last = [], {}

    async def write_ahead(record):
        await real_append(record)
        last["event"] = record["event"]

    def snapshot(state):
        if last.get("event") == crash_on:
            raise Crash
        real_snapshot(state)

    pair.store.snapshot, pair.store.write_ahead = snapshot, write_ahead

    async def main():
        for t in ticks:
            try:
                results.append(await pair.tick(t))
            except Crash:
                return

    asyncio.run(main())
    close(engine)
    return pair


@pytest.mark.parametrize(
    ("strategy", "ticks", "transition"),
    [
        ("near-dip", [T0], "scheduled"),
        ("always-long", [T0], "opened"),
        ("always-long", [T0, T0 + 40 * MINUTE_MS], "closed"),
        ("scheduler", [T0, T0 + 121 * MINUTE_MS], "cancelled"),
    ],
)
def test_a_crash_between_journal_and_snapshot_is_completed_on_restart(tmp_path, strategy, ticks, transition):
    drive(tmp_path, strategy, ticks, crash_on=transition)
    records = read_journal(tmp_path / "journal" / f"BTCUSDT_{strategy}_sim.jsonl").records
    assert records[-1]["event"] == transition
    stale = json.loads(snapshot_path(tmp_path, ("BTCUSDT", strategy, "sim")).read_text())
    assert stale["journal_records"] == len(records) - 1

    dry = restore_pair(tmp_path, ("BTCUSDT", strategy, "sim"), repair=False)
    assert dry.interrupted and "would complete an interrupted transition" in dry.notes[0]

    engine = new_engine(tmp_path)
    pair = engine.add_pair("BTCUSDT", strategy)
    fresh = json.loads(pair.store.path.read_text())
    assert fresh["journal_records"] == len(records)
    if transition in ("closed", "cancelled"):
        assert pair.row is None and fresh["signal"] is None
    else:
        assert pair.row.id == records[-1]["signal_id"] and fresh["signal"]["id"] == pair.row.id
        assert (pair.row.pending_at is not None) == (transition == "opened")
    if transition == "opened":
        assert pair.last_opened_id == records[-1]["signal_id"]
    close(engine)


def test_a_corrupted_snapshot_is_quarantined_and_rebuilt_from_the_intact_journal(tmp_path):
    drive(tmp_path, "always-long", [T0], crash_on="none")
    path = snapshot_path(tmp_path, ("BTCUSDT", "always-long", "sim"))
    path.write_text('{"symbol": "BTCUSDT", "strat')
    engine = new_engine(tmp_path)
    # The journal (the truth) is intact: the pair starts from it, holding its open position.
    pair = engine.add_pair("BTCUSDT", "always-long")
    assert pair.row is not None and pair.row.pending_at == T0
    moved = list((tmp_path / "quarantine").glob("*_BTCUSDT_always-long_sim.json"))
    assert len(moved) == 1 and moved[0].read_text().startswith('{"symbol"')  # kept, never deleted
    why = moved[0].with_name(moved[0].name + ".why.txt").read_text()
    assert "unreadable snapshot" in why and str(path.name) in why
    rebuilt = json.loads(path.read_text())  # the snapshot written again from the journal
    assert rebuilt["signal"]["id"] == pair.row.id and rebuilt["journal_records"] == 1
    close(engine)


def test_an_invalid_snapshot_is_quarantined_and_rebuilt_too(tmp_path):
    drive(tmp_path, "always-long", [T0], crash_on="none")
    path = snapshot_path(tmp_path, ("BTCUSDT", "always-long", "sim"))
    data = json.loads(path.read_text())
    data["signal"]["take_profit"] = "lots"
    path.write_text(json.dumps(data))
    restored = restore_pair(tmp_path, ("BTCUSDT", "always-long", "sim"), repair=False)
    assert any("invalid snapshot" in n and "would be quarantined and rebuilt" in n for n in restored.notes)
    assert restored.row is not None and path.exists()  # a dry run moves nothing
    engine = new_engine(tmp_path)
    pair = engine.add_pair("BTCUSDT", "always-long")
    assert pair.row is not None and isinstance(pair.row.take_profit, float)
    close(engine)


def test_a_damaged_snapshot_beside_a_damaged_journal_still_stops_the_pair(tmp_path):
    drive(tmp_path, "always-long", [T0], crash_on="none")
    snapshot_path(tmp_path, ("BTCUSDT", "always-long", "sim")).write_text("{not json")
    journal = tmp_path / "journal" / "BTCUSDT_always-long_sim.jsonl"
    journal.write_bytes(journal.read_bytes() + b"garbage\n")
    with pytest.raises(StateDamaged, match="invalid journal line"):
        new_engine(tmp_path).add_pair("BTCUSDT", "always-long")


def test_a_truncated_last_journal_line_is_cut_and_reported(tmp_path, capsys):
    drive(tmp_path, "always-long", [T0], crash_on="none")
    journal = tmp_path / "journal" / "BTCUSDT_always-long_sim.jsonl"
    good = journal.read_bytes()
    journal.write_bytes(good + b'{"event":"closed","signal_id":"BTC')
    engine = new_engine(tmp_path)
    pair = engine.add_pair("BTCUSDT", "always-long")
    assert journal.read_bytes() == good
    assert pair.row is not None
    assert "cut a partial last journal line" in capsys.readouterr().out
    close(engine)


def test_garbage_inside_the_journal_quarantines_it(tmp_path):
    drive(tmp_path, "always-long", [T0, T0 + 40 * MINUTE_MS], crash_on="none")
    journal = tmp_path / "journal" / "BTCUSDT_always-long_sim.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(lines[0] + b"\x00\x01garbage\n" + b"".join(lines[1:]))
    with pytest.raises(StateDamaged, match="invalid journal line.*line 2"):
        new_engine(tmp_path).add_pair("BTCUSDT", "always-long")
    assert not journal.exists() and list((tmp_path / "quarantine").glob("*.jsonl"))


def test_a_journal_that_lost_records_needs_a_person(tmp_path):
    drive(tmp_path, "always-long", [T0, T0 + 40 * MINUTE_MS], crash_on="none")
    journal = tmp_path / "journal" / "BTCUSDT_always-long_sim.jsonl"
    journal.write_bytes(journal.read_bytes().splitlines(keepends=True)[0])
    with pytest.raises(StateDamaged, match="the journal lost records"):
        new_engine(tmp_path).add_pair("BTCUSDT", "always-long")
    assert journal.exists()  # nothing moved: which file is right is for a person to decide


def _risky_engines(tmp_path):
    """A maker of engines on one data directory whose strategy ``risky`` opens a long every
    minute under the risk profile ``tight`` (one position at most); and that directory."""
    config = replace(Config(), risk={"tight": RiskProfileConfig("tight", max_positions=1)})
    strategies = tmp_path / "strategies"
    strategies.mkdir()
    (strategies / "risky.py").write_text(
        "from livetrader import Signal, Strategy\n"
        "class Risky(Strategy):\n"
        "    name = 'risky'\n    interval = '1m'\n    risk = 'tight'\n"
        "    async def get_signal(self, ctx):\n"
        "        return Signal('long', ctx.price * 1.05, ctx.price * 0.95, minutes=600)\n")
    data = tmp_path / "data"

    def engine():
        return Engine(config, load_strategies(strategies), clock=SimClock(0, T0, 1.0), bus=EventBus(), data_dir=data)

    return engine, data


def test_risk_positions_are_restored_and_reconciled_with_the_signals(tmp_path):
    engine, data = _risky_engines(tmp_path)

    e = engine()
    a = e.add_pair("BTCUSDT", "risky")
    b = e.add_pair("ETHUSDT", "risky")

    async def main():
        return (await a.tick(T0)).action, (await b.tick(T0)).action

    assert asyncio.run(main()) == ("opened", "idle")  # max_positions 1: ETH is rejected
    risk_file = data / "state" / "risk" / "tight.json"
    assert [p["symbol"] for p in json.loads(risk_file.read_text())["positions"]] == ["BTCUSDT"]
    close(e)
    # A stale extra position in the file loses against the restored signals.
    stale = json.loads(risk_file.read_text())
    stale["positions"].append({**stale["positions"][0], "signal_id": "ghost", "symbol": "XRPUSDT"})
    risk_file.write_text(json.dumps(stale))
    e = engine()
    b = e.add_pair("ETHUSDT", "risky")  # BTC's pair is not started this time: its position still counts
    e.restore_absent_pairs()
    assert set(b.risk.positions) == {a.row.id}
    assert asyncio.run(b.tick(T0 + MINUTE_MS)).reason.startswith("risk: max_positions")
    close(e)


def test_a_pair_not_run_is_read_from_its_journal_when_a_crash_left_its_snapshot_behind(tmp_path):
    """Snapshots are written behind the loop: a kill can leave a journaled open out of the snapshot
    of a pair the next process does not run. It is still found, counted in its risk profile,
    reported, and its snapshot completed."""
    engine, data = _risky_engines(tmp_path)

    e = engine()
    a = e.add_pair("BTCUSDT", "risky")
    assert asyncio.run(a.tick(T0)).action == "opened"
    close(e)
    path = snapshot_path(data, a.key)
    behind = {**json.loads(path.read_text()), "signal": None, "journal_records": 0}
    path.write_text(json.dumps(behind))  # as if the kill came before the background writer's pass

    e = engine()
    b = e.add_pair("ETHUSDT", "risky")
    assert b.risk.positions == {}  # not yet: the pairs not run are read once every pair is added
    e.restore_absent_pairs()
    assert set(b.risk.positions) == {a.row.id}
    assert e.not_running == [{"symbol": "BTCUSDT", "strategy": "risky", "exchange": "sim",
                              "signal_id": a.row.id, "state": "open"}]
    completed = json.loads(path.read_text())
    assert completed["signal"]["id"] == a.row.id and completed["journal_records"] == 1
    assert completed["risk"] == "tight"
    assert asyncio.run(b.tick(T0 + MINUTE_MS)).reason.startswith("risk: max_positions")
    close(e)


@pytest.mark.e2e
def test_a_second_daemon_on_the_same_data_directory_refuses_to_start(tmp_path):
    cwd = workdir(tmp_path)
    first = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", "--speed", "600")
    assert wait_for(lambda: (cwd / "dump-demo" / "livetrader.lock").exists(), 20)
    assert wait_running(cwd / "dump-demo", first)
    time.sleep(0.5)
    second = run(cwd, "run", "ETHUSDT", "--strategy", "always-long", "--speed", "600")
    assert second.returncode == 1
    assert f"in use by livetrader pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
    first.send_signal(signal.SIGKILL)
    first.communicate()
    third = start(cwd, "run", "ETHUSDT", "--strategy", "always-long", "--speed", "600")
    assert wait_running(cwd / "dump-demo", third)
    time.sleep(0.5)
    code, _, err = stop(third)
    assert code == 0, err


@pytest.mark.e2e
def test_restart_announces_a_restored_position_as_active_never_opened(tmp_path):
    cwd = workdir(tmp_path)
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", "--speed", "60")
    journal = cwd / "dump-demo" / "journal" / "BTCUSDT_always-long_sim.jsonl"
    assert wait_for(lambda: journal.exists() and b'"opened"' in journal.read_bytes(), 40)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    opened_id = [json.loads(x) for x in journal.read_text().splitlines() if '"opened"' in x][-1]["signal_id"]
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", "--speed", "60")
    assert wait_running(cwd / "dump-demo", proc)
    time.sleep(2)
    code, out, err = stop(proc)
    assert code == 0, err
    logs = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    restored = [x for x in logs if x["event"] == "restored"]
    assert restored and restored[0]["signal_id"] == opened_id
    reopened = [x for x in logs if x["event"] == "opened" and x.get("signal_id") == opened_id]
    assert reopened == []
