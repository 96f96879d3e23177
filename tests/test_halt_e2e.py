"""`livetrader halt [--flatten]`, `resume` and a risk profile's `max_daily_loss_percent` on the real daemon
(docs/behaviour.md §13): paper on the sim exchange, sandbox against the local exchange (tests/exchange_server.py)."""

from __future__ import annotations

import json
from decimal import Decimal

import orjson
import pytest
from daemon import run, start, stop, wait_for, wait_running, workdir
from exchange_server import ExchangeServer
from exchange_setup import exchange_config, follow_daemon_clock

pytestmark = pytest.mark.e2e

SPEED = "1200"  # simulated minutes per real one: an hour of trading in 3 s
KEYS = {"LIVETRADER_BINANCE_API_KEY": "lt-halt-KEY-3f1a", "LIVETRADER_BINANCE_SECRET": "lt-halt-SECRET-77c2"}

# A long living an hour with exits far away: open when the halt comes, and closed by its expiry
# (or TP/SL), not by chance before the command lands.
HOUR_LONG = '''
from livetrader import Signal, Strategy


class HourLong(Strategy):
    name = "hour-long"
    interval = "1m"
    risk = RISK

    async def get_signal(self, ctx):
        return Signal("long", take_profit=ctx.price * 1.05, stop_loss=ctx.price * 0.95, minutes=60)
'''
# Loses on average: a stop-loss close below the entry (the fees on top), the take-profit far away, five minutes.
LOSER = '''
from livetrader import Signal, Strategy


class Loser(Strategy):
    name = "loser"
    interval = "1m"
    risk = "small"

    async def get_signal(self, ctx):
        return Signal("long", take_profit=ctx.price * 1.05, stop_loss=ctx.price * 0.995, minutes=5)
'''


def strategy(cwd, text, file, risk=None):
    (cwd / "strategies" / file).write_text(text.replace("RISK", repr(risk)))


def records(cwd, data="dump-demo"):
    """Every pair's journal records, by file. A last line without its newline is still being written."""
    out = {}
    journal = cwd / data / "journal"
    for path in sorted(journal.glob("*.jsonl")) if journal.exists() else []:
        raw = path.read_bytes()
        out[path.name] = [orjson.loads(line) for line in raw[: raw.rfind(b"\n") + 1].splitlines() if line.strip()]
    return out


def every(cwd, data="dump-demo"):
    return [r for recs in records(cwd, data).values() for r in recs]


def status(cwd, data="dump-demo"):
    done = run(cwd, "status", "--data-dir", data, "--json")
    return json.loads(done.stdout)


def test_halt_stops_entries_keeps_managing_positions_cancels_scheduled_survives_a_restart_until_resume(tmp_path):
    cwd = workdir(tmp_path)
    strategy(cwd, HOUR_LONG, "hour_long.py")
    pairs = ("BTCUSDT", "-s", "hour-long", "-s", "scheduler", "--speed", SPEED)
    proc = start(cwd, "run", *pairs)
    assert wait_running(cwd / "dump-demo", proc)
    assert wait_for(lambda: {"opened", "scheduled"} <= {r["event"] for r in every(cwd)}, 30)
    halted = run(cwd, "halt", "--data-dir", "dump-demo", "--reason", "news at 14:00")
    assert halted.returncode == 0, halted.stderr
    assert "acknowledged" in halted.stdout, halted.stdout
    at_ack = every(cwd)
    open_then = {r["signal_id"] for r in at_ack if r["event"] == "opened"} - {
        r["signal_id"] for r in at_ack if r["event"] == "closed"}
    assert open_then, "the hour-long position was open when the halt came"
    # The open position is managed to its end (expiry or TP/SL), not closed by the halt.
    assert wait_for(lambda: open_then <= {r["signal_id"] for r in every(cwd) if r["event"] == "closed"}, 30)
    wait_for(lambda: False, 1.0)  # another 20 simulated minutes: time for an entry that must not come
    after = every(cwd)[len(at_ack):]
    assert not [r for r in after if r["event"] in ("opened", "scheduled")], after
    assert all(r["close_reason"] in ("take_profit", "stop_loss", "time_expired") for r in after
               if r["event"] == "closed")
    cancelled = [r for r in every(cwd) if r["event"] == "cancelled"]
    assert cancelled and cancelled[-1]["reason"] == "halted" and cancelled[-1]["strategy"] == "scheduler"
    doc = status(cwd)
    assert doc["halts"][0]["reason"] == "news at 14:00" and not doc["halts"][0]["flatten"]
    assert all(p["halted"] is not None for p in doc["pairs"])
    shown = run(cwd, "status", "--data-dir", "dump-demo")
    assert "HALTED (every pair)" in shown.stdout and "news at 14:00" in shown.stdout
    code, out, err = stop(proc)
    assert code == 0, err
    assert all("Halted since" in p.read_text() for p in (cwd / "dump-demo" / "reports" / "live").glob("*.md"))
    built = run(cwd, "report", "--data-dir", "dump-demo")
    assert built.returncode == 0 and "HALTED (every pair)" in built.stdout, built.stderr

    # A restart is still halted, from its first tick.
    before = len(every(cwd))
    proc = start(cwd, "run", *pairs)
    assert wait_running(cwd / "dump-demo", proc)
    wait_for(lambda: False, 1.5)
    assert not [r for r in every(cwd)[before:] if r["event"] in ("opened", "scheduled")]
    resumed = run(cwd, "resume", "--data-dir", "dump-demo")
    assert resumed.returncode == 0 and "acknowledged" in resumed.stdout, resumed.stdout + resumed.stderr
    assert wait_for(lambda: any(r["event"] == "opened" for r in every(cwd)[before:]), 30)
    code, out, err = stop(proc)
    assert code == 0, err
    assert "trading resumed" in out
    assert status(cwd)["halts"] == []


def test_a_halt_with_no_daemon_holds_from_the_first_tick_of_the_next_start(tmp_path):
    cwd = workdir(tmp_path)
    missing = run(cwd, "halt", "--data-dir", "dump-demo")
    assert missing.returncode == 2 and "does not exist" in missing.stderr  # a typo must not look like a halt
    (cwd / "dump-demo").mkdir()
    halted = run(cwd, "halt", "--data-dir", "dump-demo")
    assert halted.returncode == 0 and "takes effect when one starts" in halted.stdout, halted.stdout
    assert "no daemon runs: in force from its next start" in run(cwd, "status", "--data-dir", "dump-demo").stdout
    proc = start(cwd, "run", "BTCUSDT", "-s", "always-long", "--speed", SPEED)
    assert wait_running(cwd / "dump-demo", proc)
    wait_for(lambda: False, 1.0)
    code, out, err = stop(proc)
    assert code == 0, err
    assert every(cwd) == []  # always-long enters whenever it is asked: it never was
    assert "trading halted" in out


@pytest.fixture
def server(tmp_path):
    with ExchangeServer(clock=follow_daemon_clock(tmp_path), balances={"USDT": 10_000}) as srv:
        yield srv


def test_halt_flatten_sells_every_open_position_on_the_exchange(tmp_path, server):
    cwd = workdir(tmp_path)
    # A day-long position (72 s at this speed): still open when the halt lands on a loaded machine.
    strategy(cwd, HOUR_LONG.replace("minutes=60", "minutes=1440"), "hour_long.py")
    cfg = exchange_config(cwd, server, mode="sandbox")
    proc = start(cwd, "run", "BTCUSDT", "-s", "hour-long", "-s", "scheduler", "--exchange", "binance",
                 "--config", cfg, "--speed", SPEED, **KEYS)
    assert wait_for(lambda: any(r["event"] == "opened" for r in every(cwd)), 60)
    assert server.account.total("BTC") > 0
    halted = run(cwd, "halt", "--flatten", "--data-dir", "dump-demo", "--config", cfg, timeout=60)
    assert halted.returncode == 0 and "acknowledged" in halted.stdout, halted.stdout + halted.stderr

    def flat() -> bool:
        recs = every(cwd)
        opened = {r["signal_id"] for r in recs if r["event"] == "opened"}
        return opened == {r["signal_id"] for r in recs if r["event"] == "closed"}

    assert wait_for(flat, 30)
    code, out, err = stop(proc)
    assert code == 0, err
    recs = every(cwd)
    closes = [r for r in recs if r["event"] == "closed"]
    assert any(r["close_reason"] == "closed" and r["mode"] == "sandbox" and r["amount_sold"] > 0 for r in closes)
    dust = sum(Decimal(str(r.get("dust", 0))) for r in closes)
    assert abs(server.account.total("BTC") - dust) < Decimal("1e-8"), "the account still holds what was bought"
    sells = [o for o in server.account.orders if o.side == "SELL" and o.executed > 0]
    assert sells, "the flatten sold on the exchange"
    cancelled = [r for r in recs if r["event"] == "cancelled"]
    assert cancelled and cancelled[-1]["reason"] == "halted"


def test_a_daily_loss_limit_halts_its_profile_alone_and_across_a_restart(tmp_path):
    cwd = workdir(tmp_path)
    strategy(cwd, LOSER, "loser.py")
    strategy(cwd, HOUR_LONG.replace("hour-long", "roomy-long").replace("minutes=60", "minutes=3"), "roomy.py",
             risk="roomy")
    (cwd / "risk.toml").write_text("[risk.small]\nmax_daily_loss_percent = 1\ncapital = 100\n\n"
                                   "[risk.roomy]\nmax_positions = 5\n")
    pairs = ("BTCUSDT", "-s", "loser", "-s", "roomy-long", "--config", "risk.toml", "--speed", SPEED)
    proc = start(cwd, "run", *pairs)

    def control():
        path = cwd / "dump-demo" / "control.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    assert wait_for(lambda: any(r["scope"] == "profile:small" for r in control()), 60)
    halt = control()[0]
    assert halt["by"] == "max_daily_loss_percent" and halt["figures"]["loss_percent"] >= 1
    assert halt["figures"]["capital"] == 100
    losers_at_halt = len([r for r in every(cwd) if r["strategy"] == "loser" and r["event"] == "opened"])
    roomy_at_halt = len([r for r in every(cwd) if r["strategy"] == "roomy-long" and r["event"] == "opened"])
    assert wait_for(lambda: len([r for r in every(cwd) if r["strategy"] == "roomy-long"
                                 and r["event"] == "opened"]) > roomy_at_halt + 1, 30)  # the other profile trades on
    code, out, err = stop(proc)
    assert code == 0, err
    assert "risk profile halted: daily loss limit reached" in out
    assert len([r for r in every(cwd) if r["strategy"] == "loser" and r["event"] == "opened"]) == losers_at_halt

    proc = start(cwd, "run", *pairs)
    assert wait_running(cwd / "dump-demo", proc)
    doc = status(cwd)
    wait_for(lambda: False, 1.0)
    code, out, err = stop(proc)
    assert code == 0, err
    assert [h["scope"] for h in doc["halts"]] == ["profile:small"]
    loser_pair = next(p for p in doc["pairs"] if p["strategy"] == "loser")
    assert loser_pair["halted"]["by"] == "max_daily_loss_percent"
    assert next(p for p in doc["pairs"] if p["strategy"] == "roomy-long")["halted"] is None
    assert len([r for r in every(cwd) if r["strategy"] == "loser" and r["event"] == "opened"]) == losers_at_halt
    assert len(control()) == 1  # halted once, not again at the restart
