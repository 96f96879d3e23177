"""The real CLI against a local Binance-compatible server through ccxt: trading, outages, secrets."""

import json
import signal
import socket
import subprocess
import sys
import time

import pytest
from daemon import ROOT, events, run, start, stop, wait_for, wait_running, workdir
from exchange_server import ExchangeServer
from exchange_setup import CutConnections, exchange_config, follow_daemon_clock
from invariants import check_data_dir

pytestmark = pytest.mark.e2e  # every test here starts the real command as a process

API_KEY = "lt-test-KEY-5f3c9a71e2"
SECRET = "lt-test-SECRET-8d41b6c0aa"


def config(cwd, server, **extra):
    return exchange_config(cwd, server, **extra)


@pytest.fixture
def server(tmp_path):
    with ExchangeServer(clock=follow_daemon_clock(tmp_path)) as srv:
        yield srv


def test_backtest_against_the_exchange(tmp_path, server):
    cwd = workdir(tmp_path)
    server.clock = lambda: 1_704_326_400_000  # 2024-01-04: the range below has closed
    result = run(cwd, "backtest", "BTCUSDT", "--strategy", "always-long", "--exchange", "binance",
                 "--config", config(cwd, server), "--from", "2024-01-02", "--to", "2024-01-03", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert len(doc["trades"]) > 10 and doc["trades"][0]["symbol"] == "BTC/USDT"
    klines = [r for r in server.requests if r.path.endswith("/klines")]
    assert len(klines) >= 3  # 1 day + history: paginated at 1000 candles a request
    assert "Unclosed" not in result.stderr and "requires to release" not in result.stderr


def test_run_trades_survives_an_outage_of_several_minutes_and_recovers_alone(tmp_path, server):
    cwd = workdir(tmp_path)
    cfg = config(cwd, server)
    proc = start(cwd, "run", "BTCUSDT", "ETHUSDT", "--strategy", "always-long", "--exchange", "binance",
                 "--config", cfg, "--speed", "600", LIVETRADER_BINANCE_API_KEY=API_KEY,
                 LIVETRADER_BINANCE_SECRET=SECRET)
    journal = cwd / "dump-demo" / "journal"
    assert wait_for(lambda: journal.exists() and len(list(journal.glob("*.jsonl"))) == 2, 30)
    assert wait_running(cwd / "dump-demo", proc)
    time.sleep(1)
    down_from = server.clock()
    server.faults.down(until_ms=down_from + 8 * 60_000)  # 8 simulated minutes of 503s
    time.sleep(2.5)
    code, out, err = stop(proc)
    assert code == 0, err
    logs = events(out)
    outage = [e for e in logs if e["event"] == "tick failed" and e.get("kind") == "source"]
    assert len(outage) >= 4 and all("unavailable" in e["error"] for e in outage)
    after = [e for e in logs if e["event"] in ("opened", "closed") and e["at"] > down_from + 8 * 60_000]
    assert after, "trading resumed by itself after the outage"
    counts = check_data_dir(cwd / "dump-demo")  # every close agrees with the exchange's candles
    assert counts.get("closes verified", 0) >= 2
    everything = out + err + "".join(p.read_text() for p in (cwd / "dump-demo").rglob("*") if p.is_file()
                                     and p.suffix in (".md", ".json", ".jsonl"))
    assert API_KEY not in everything and SECRET not in everything


@pytest.mark.parametrize("fault", ["drop", "high_below_low", "zero_price", "spike"])
def test_bad_candles_never_open_or_close_a_position(tmp_path, server, fault):
    cwd = workdir(tmp_path)
    cfg = config(cwd, server)
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", "--exchange", "binance", "--config", cfg,
                 "--speed", "600")
    assert wait_for(lambda: (cwd / "dump-demo" / "journal").exists(), 30)
    if fault == "drop":
        server.faults.drop(times=6)
    else:
        server.faults.bad_candle(fault, times=6)
    assert wait_running(cwd / "dump-demo", proc)
    time.sleep(2)
    code, out, err = stop(proc)
    assert code == 0, err
    bad = [e for e in events(out) if e["event"] == "tick failed" and "bad candles" in e.get("error", "")]
    assert bad
    check_data_dir(cwd / "dump-demo")


def test_rate_limits_and_malformed_answers_are_retried(tmp_path, server):
    cwd = workdir(tmp_path)
    cfg = config(cwd, server, max_retries=4)
    server.faults.status(429, times=2)
    server.faults.status(418, times=1)
    server.faults.malformed(times=1)
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", "--exchange", "binance", "--config", cfg,
                 "--speed", "600")
    assert wait_for(lambda: (cwd / "dump-demo" / "journal").exists(), 30)
    assert wait_running(cwd / "dump-demo", proc)
    time.sleep(1)
    code, out, err = stop(proc)
    assert code == 0, err
    assert any(e["event"] == "opened" for e in events(out))


def test_network_down_at_start_then_up(tmp_path):
    cwd = workdir(tmp_path)
    with ExchangeServer(clock=follow_daemon_clock(tmp_path)) as srv:
        port = srv.port
        cfg = config(cwd, srv)
    down = CutConnections(port)
    try:
        proc = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", "--exchange", "binance", "--config", cfg,
                     "--speed", "600")
        # max_retries = 1: two attempts at the markets, both cut; then the start goes on without them.
        assert wait_for(lambda: down.attempts >= 2, 30), "the daemon never reached the exchange"
        time.sleep(0.5)
        assert proc.poll() is None, "the daemon keeps running while the exchange is unreachable"
    finally:
        down.close()
    with ExchangeServer(clock=follow_daemon_clock(tmp_path), port=port):
        time.sleep(3)
        code, out, err = stop(proc)
    assert code == 0, err
    logs = events(out)
    outage = [e for e in logs if e["event"] in ("tick failed", "markets not loaded; symbols are checked once the "
                                                "exchange answers")]
    assert outage, "the outage was not reported"
    assert any(e["event"] == "opened" for e in logs)


def test_unknown_symbol_and_exchange_are_clear_usage_errors(tmp_path, server):
    cwd = workdir(tmp_path)
    cfg = config(cwd, server)
    result = run(cwd, "run", "NOPEUSDT", "--strategy", "always-long", "--exchange", "binance", "--config", cfg)
    assert result.returncode == 2 and "NOPEUSDT" in result.stderr and "Traceback" not in result.stderr
    result = run(cwd, "run", "BTCUSDT", "--strategy", "always-long", "--exchange", "binanse")
    assert result.returncode == 2 and "did you mean" in result.stderr.lower()
    result = run(cwd, "run", "BTCUSDT", "--strategy", "always-long", "--exchange", "binance", "--speed", "60")
    assert result.returncode == 2 and "--speed only works" in result.stderr


def test_a_watchdog_stops_when_the_exchange_hangs(tmp_path, server):

    cwd = workdir(tmp_path)
    cfg = config(cwd, server, timeout_ms=30000)
    (cwd / "exchange.toml").write_text((cwd / "exchange.toml").read_text()
                                       + "[engine]\nstrategy_timeout_seconds = 0.5\nwatchdog_grace_seconds = 0.5\n")
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.1)
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", "--exchange", "binance", "--config", cfg,
                 "--speed", "600", NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="200000")

    def drain(seconds):
        got, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                got.append(sock.recv(4096).decode())
            except TimeoutError:
                pass
        return got

    assert any(m.startswith("READY=1") for m in drain(15))
    healthy = drain(1.0)
    server.faults.hang(25, times=1000)  # every request now hangs: the loop is stuck in an exchange call
    drain(2.5)  # the deadline: two minutes (0.2 s) + strategy timeout + grace
    stuck = drain(1.5)
    server.faults.clear()
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    sock.close()
    assert healthy.count("WATCHDOG=1") >= 3
    assert "WATCHDOG=1" not in stuck


def test_help_answers_fast_and_does_not_import_ccxt():
    code = ("import sys, time; t = time.perf_counter(); import livetrader.cli.app; "
            "print('ccxt' in sys.modules, time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT).stdout.split()
    assert out[0] == "False"
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "livetrader.cli.app", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "run" in result.stdout
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("skew_minutes", [-3, 3])
def test_exchange_clock_skew(tmp_path, skew_minutes):
    cwd = workdir(tmp_path)
    daemon_now = follow_daemon_clock(tmp_path)
    with ExchangeServer(clock=lambda: daemon_now() + skew_minutes * 60_000) as srv:
        proc = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", "--exchange", "binance",
                     "--config", config(cwd, srv), "--speed", "600")
        assert wait_running(cwd / "dump-demo", proc)
        time.sleep(3)
        code, out, err = stop(proc)
    assert code == 0, err
    logs = events(out)
    if skew_minutes < 0:
        # Behind: the last minutes have not closed there yet; nothing is decided on a partial window.
        failures = [e for e in logs if e["event"] == "tick failed"]
        assert failures and any("clock" in e["error"] for e in failures)
        assert not any(e["event"] in ("opened", "closed") for e in logs)
    else:
        # Ahead: candles our clock has not reached are ignored; trading is normal.
        assert any(e["event"] == "opened" for e in logs)
        check_data_dir(cwd / "dump-demo")


def test_request_timeouts_are_retried_then_reported(tmp_path, server):
    cwd = workdir(tmp_path)
    cfg = config(cwd, server, timeout_ms=300)
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", "--exchange", "binance", "--config", cfg,
                 "--speed", "600")
    assert wait_for(lambda: (cwd / "dump-demo" / "journal").exists(), 30)
    server.faults.hang(1.0, times=4)
    assert wait_running(cwd / "dump-demo", proc)
    time.sleep(3)
    code, out, err = stop(proc)
    assert code == 0, err
    logs = events(out)
    assert any(e["event"] == "tick failed" and "unavailable" in e["error"] for e in logs)
    opened_after = [e for e in logs if e["event"] in ("opened", "closed")]
    assert opened_after
    check_data_dir(cwd / "dump-demo")
