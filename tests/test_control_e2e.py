"""`livetrader close|cancel|pause|resume` on the real daemon through its control socket
(docs/behaviour.md §14): paper on the sim exchange, sandbox against the local exchange
(tests/exchange_server.py); no daemon; a wrong id; another user."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import orjson
import pytest
from daemon import events, run, start, stop, wait_for, wait_running, workdir
from exchange_server import ExchangeServer
from exchange_setup import exchange_config, follow_daemon_clock

pytestmark = pytest.mark.e2e

SPEED = "1200"  # simulated minutes per real one: an hour of trading in 3 s
KEYS = {"LIVETRADER_BINANCE_API_KEY": "lt-control-KEY-5b2e", "LIVETRADER_BINANCE_SECRET": "lt-control-SECRET-9d41"}

# A long that lives a day (72 s here) with exits far away: open until someone closes it.
DAY_LONG = '''
from livetrader import Signal, Strategy


class DayLong(Strategy):
    name = "day-long"
    interval = "1m"

    async def get_signal(self, ctx):
        return Signal("long", take_profit=ctx.price * 1.15, stop_loss=ctx.price * 0.85, minutes=1440)
'''
# A long of five minutes (a quarter of a second here): a new one opens every few minutes.
FIVE_LONG = DAY_LONG.replace("DayLong", "FiveLong").replace("day-long", "five-long").replace("1440", "5")


def strategy(cwd: Path, text: str, file: str) -> None:
    (cwd / "strategies" / file).write_text(text)


def every(data: Path) -> list[dict]:
    """Every pair's journal records; a last line without its newline is still being written."""
    out = []
    journal = data / "journal"
    for path in sorted(journal.glob("*.jsonl")) if journal.exists() else []:
        raw = path.read_bytes()
        out += [orjson.loads(line) for line in raw[: raw.rfind(b"\n") + 1].splitlines() if line.strip()]
    return out


def held(data: Path, strategy_name: str, event: str) -> str | None:
    """The id of the signal ``strategy_name`` holds as ``event`` (opened, scheduled) by its journal, if any."""
    last = [r for r in every(data) if r["strategy"] == strategy_name and r["event"] in
            ("scheduled", "opened", "closed", "cancelled")]
    return last[-1]["signal_id"] if last and last[-1]["event"] == event else None


def status(cwd: Path, data: str = "dump-demo") -> dict:
    return json.loads(run(cwd, "status", "--data-dir", data, "--json").stdout)


def test_close_and_cancel_by_id_and_by_pair_are_journaled_and_refusals_change_nothing(tmp_path):
    cwd = workdir(tmp_path)
    strategy(cwd, DAY_LONG, "day_long.py")
    data = cwd / "dump-demo"
    proc = start(cwd, "run", "BTCUSDT", "-s", "day-long", "-s", "scheduler", "--speed", SPEED)
    assert wait_running(data, proc)
    sock = data / "control.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert wait_for(lambda: held(data, "day-long", "opened") and held(data, "scheduler", "scheduled"), 30)

    # Refusals first: exit 2, a clear message, nothing journaled.
    before = every(data)
    wrong = run(cwd, "close", "no-such-id", "--data-dir", "dump-demo")
    assert wrong.returncode == 2 and "no open position or scheduled signal with id 'no-such-id'" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    scheduled = held(data, "scheduler", "scheduled")
    assert scheduled is not None
    not_open = run(cwd, "close", scheduled, "--data-dir", "dump-demo")
    assert not_open.returncode == 2 and "is a scheduled signal, not an open position" in not_open.stderr
    opened = held(data, "day-long", "opened")
    assert opened is not None
    not_scheduled = run(cwd, "cancel", opened, "--data-dir", "dump-demo")
    assert not_scheduled.returncode == 2 and "is an open position, not a scheduled signal" in not_scheduled.stderr
    elsewhere = run(cwd, "close", "ETHUSDT", "--strategy", "day-long", "--data-dir", "dump-demo")
    assert elsewhere.returncode == 2 and "this daemon runs no pair ETHUSDT / day-long" in elsewhere.stderr
    since = every(data)[len(before):]
    assert not [r for r in since if r["event"] == "closed" or r.get("reason") == "user"], since

    # Close by id: at the current minute's price, reason closed, said with its PnL.
    closed = run(cwd, "close", opened, "--data-dir", "dump-demo")
    assert closed.returncode == 0, closed.stderr
    assert closed.stdout.startswith(f"closed BTCUSDT/day-long signal {opened} at ") and "(pnl " in closed.stdout
    record = next(r for r in every(data) if r["event"] == "closed" and r["signal_id"] == opened)
    assert record["close_reason"] == "closed" and record["price_close"] == record["price"]

    # Close by pair: the next position day-long opens.
    assert wait_for(lambda: held(data, "day-long", "opened") not in (None, opened), 30)
    second = held(data, "day-long", "opened")
    by_pair = run(cwd, "close", "BTCUSDT", "--strategy", "day-long", "--data-dir", "dump-demo")
    assert by_pair.returncode == 0 and f"signal {second} at" in by_pair.stdout, by_pair.stderr
    assert next(r for r in every(data) if r["event"] == "closed" and r["signal_id"] == second)["close_reason"] \
        == "closed"

    # Cancel by id, then by pair: reason user.
    scheduled = held(data, "scheduler", "scheduled")
    cancelled = run(cwd, "cancel", scheduled, "--data-dir", "dump-demo")
    assert cancelled.returncode == 0 and f"cancelled BTCUSDT/scheduler signal {scheduled}" in cancelled.stdout
    assert next(r for r in every(data) if r["event"] == "cancelled" and r["signal_id"] == scheduled)["reason"] \
        == "user"
    assert wait_for(lambda: held(data, "scheduler", "scheduled") not in (None, scheduled), 30)
    again = held(data, "scheduler", "scheduled")
    by_pair = run(cwd, "cancel", "btc/usdt", "--strategy", "scheduler", "--data-dir", "dump-demo")
    assert by_pair.returncode == 0 and f"signal {again}" in by_pair.stdout, by_pair.stderr
    assert next(r for r in every(data) if r["event"] == "cancelled" and r["signal_id"] == again)["reason"] == "user"

    code, out, err = stop(proc)
    assert code == 0, err
    said = [e for e in events(out) if e["event"] == "closed by the operator"]
    assert [e["signal_id"] for e in said] == [opened, second]
    assert not sock.exists(), "the socket goes with the daemon"
    gone = run(cwd, "close", second, "--data-dir", "dump-demo")
    assert gone.returncode == 3 and "no daemon runs on dump-demo: nothing changed" in gone.stderr


def test_a_paused_pair_opens_nothing_while_its_position_is_managed_until_resumed(tmp_path):
    cwd = workdir(tmp_path)
    strategy(cwd, FIVE_LONG, "five_long.py")
    data = cwd / "dump-demo"
    proc = start(cwd, "run", "BTCUSDT", "-s", "five-long", "--speed", SPEED)
    assert wait_running(data, proc)
    assert wait_for(lambda: held(data, "five-long", "opened") is not None, 30)
    paused = run(cwd, "pause", "BTCUSDT", "--strategy", "five-long", "--data-dir", "dump-demo")
    assert paused.returncode == 0 and paused.stdout.startswith("paused BTCUSDT/five-long"), paused.stderr
    at_pause = every(data)
    open_then = held(data, "five-long", "opened")
    wait_for(lambda: False, 1.5)  # 30 simulated minutes: six positions' time, had it not been paused
    after = every(data)[len(at_pause):]
    assert not [r for r in after if r["event"] in ("opened", "scheduled")], after
    if open_then is not None:  # the position open at the pause is still managed: closed at its expiry
        assert any(r["event"] == "closed" and r["signal_id"] == open_then and r["close_reason"] == "time_expired"
                   for r in after), after
    assert wait_for(lambda: (status(cwd)["pairs"][0].get("paused") or 0) > 0, 5)
    shown = run(cwd, "status", "--data-dir", "dump-demo")
    assert "paused since" in shown.stdout, shown.stdout

    twice = run(cwd, "pause", "BTCUSDT", "--strategy", "five-long", "--data-dir", "dump-demo")
    assert twice.returncode == 0 and "paused already" in twice.stdout
    resumed = run(cwd, "resume", "BTCUSDT", "--strategy", "five-long", "--data-dir", "dump-demo")
    assert resumed.returncode == 0 and resumed.stdout.startswith("resumed BTCUSDT/five-long"), resumed.stderr
    mark = len(every(data))
    assert wait_for(lambda: any(r["event"] == "opened" for r in every(data)[mark:]), 30)
    assert wait_for(lambda: status(cwd)["pairs"][0].get("paused") is None, 5)
    half = run(cwd, "resume", "BTCUSDT", "--data-dir", "dump-demo")
    assert half.returncode == 2 and "livetrader resume SYMBOL --strategy NAME" in half.stderr
    code, out, err = stop(proc)
    assert code == 0, err
    assert [e["event"] for e in events(out) if e["event"] in ("pair paused", "pair resumed")] == \
        ["pair paused", "pair resumed"]


def test_no_daemon_a_stale_socket_and_a_restart(tmp_path):
    cwd = workdir(tmp_path)
    strategy(cwd, DAY_LONG, "day_long.py")
    data = cwd / "dump-demo"
    data.mkdir()
    nothing = run(cwd, "pause", "BTCUSDT", "--strategy", "day-long", "--data-dir", "dump-demo")
    assert nothing.returncode == 3 and nothing.stderr == "error: no daemon runs on dump-demo: nothing changed\n"
    proc = start(cwd, "run", "BTCUSDT", "-s", "day-long", "--speed", SPEED)
    assert wait_running(data, proc)
    assert wait_for(lambda: held(data, "day-long", "opened") is not None, 30)
    proc.kill()  # a killed daemon leaves its socket behind
    proc.communicate()
    assert (data / "control.sock").exists()
    before = every(data)
    stale = run(cwd, "close", "BTCUSDT", "--strategy", "day-long", "--data-dir", "dump-demo")
    assert stale.returncode == 3 and "no daemon runs on dump-demo: nothing changed" in stale.stderr
    assert every(data) == before
    proc = start(cwd, "run", "BTCUSDT", "-s", "day-long", "--speed", SPEED)  # replaces the stale socket
    assert wait_running(data, proc)
    closed = run(cwd, "close", "BTCUSDT", "--strategy", "day-long", "--data-dir", "dump-demo")
    assert closed.returncode == 0 and closed.stdout.startswith("closed BTCUSDT/day-long"), closed.stderr
    code, out, err = stop(proc)
    assert code == 0, err


@pytest.mark.skipif(os.geteuid() != 0, reason="changing to another user needs root")
def test_another_user_is_refused_by_the_socket_mode(tmp_path):
    from livetrader.service import control_socket
    from livetrader.store import lock  # noqa: F401 - imported before the child drops root (it may read no stdlib)

    cwd = workdir(tmp_path)
    strategy(cwd, DAY_LONG, "day_long.py")
    # A directory everyone may enter: only the socket's own mode stands in the other user's way.
    shared = Path(tempfile.mkdtemp(prefix="lt-control-"))
    shared.chmod(0o755)
    data = shared / "data"
    try:
        proc = start(cwd, "run", "BTCUSDT", "-s", "day-long", "--speed", SPEED, "--data-dir", str(data))
        assert wait_running(data, proc)
        assert wait_for(lambda: held(data, "day-long", "opened") is not None, 30)
        data.chmod(0o755)
        before = every(data)
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # the other user: nobody
            try:
                os.close(read)
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                os.stat(data / "control.sock")  # it can see the socket...
                try:
                    control_socket.ask(data, {"command": "close", "symbol": "BTCUSDT", "strategy": "day-long"})
                    said = "answered"
                except control_socket.NotAllowed as exc:  # ...but not connect to it
                    said = f"{exc.exit_code} {exc}"
                os.write(write, said.encode())
            finally:
                os._exit(0)
        os.close(write)
        _, code = os.waitpid(child, 0)
        said = os.read(read, 4096).decode()
        os.close(read)
        assert code == 0 and said.startswith("4 permission denied on "), said
        assert "only the daemon's user may control it" in said
        assert every(data) == before or all(r["event"] != "closed" for r in every(data)[len(before):])
        code, out, err = stop(proc)
        assert code == 0, err
    finally:
        shutil.rmtree(shared, ignore_errors=True)


@pytest.fixture
def server(tmp_path):
    with ExchangeServer(clock=follow_daemon_clock(tmp_path), balances={"USDT": 10_000}) as srv:
        yield srv


def test_close_in_sandbox_cancels_the_protective_stop_then_sells(tmp_path, server):
    cwd = workdir(tmp_path)
    strategy(cwd, DAY_LONG, "day_long.py")
    cfg = exchange_config(cwd, server, mode="sandbox", unknown_order_minutes=3)
    data = cwd / "dump-demo"
    proc = start(cwd, "run", "BTCUSDT", "-s", "day-long", "--exchange", "binance", "--config", cfg,
                 "--speed", SPEED, **KEYS)

    def resting_stop():
        return next((o for o in server.account.orders if o.is_open and o.client_id.startswith("lts")), None)

    assert wait_for(lambda: held(data, "day-long", "opened") is not None and resting_stop() is not None, 60)
    opened = held(data, "day-long", "opened")
    stop_order = resting_stop()
    closed = run(cwd, "close", opened, "--data-dir", "dump-demo", timeout=60)
    assert closed.returncode == 0, closed.stderr
    assert closed.stdout.startswith(f"closed BTC/USDT / day-long signal {opened} at ") and "(sandbox: sell order " \
        in closed.stdout and " filled)" in closed.stdout, closed.stdout
    story = [r for r in every(data) if r.get("signal_id") == opened]
    kinds = [(r["event"], r.get("leg")) for r in story]
    assert kinds.index(("order_cancel", "stop")) < kinds.index(("order_intent", "exit")), kinds
    record = next(r for r in story if r["event"] == "closed")
    assert record["close_reason"] == "closed" and record["mode"] == "sandbox" and record["amount_sold"] > 0
    assert stop_order.status == "CANCELED"
    sells = [o for o in server.account.orders if o.side == "SELL" and o.executed > 0]
    assert sells and stop_order not in sells
    code, out, err = stop(proc)
    assert code == 0, err
