"""One registry of secrets, scrubbed from every output: logs, errors, status, reports, the CLI.

A strategy that raises an exception quoting a credential (``tests/fixtures/strategies/leaky.py``)
must not put it into any output: not the log, not an error event, not ``last_error`` in the
status file or ``livetrader status``, not a report, not the backtest's error message.
"""

import asyncio
import json
import time
from dataclasses import replace

import pytest
from daemon import FIXTURE_STRATEGIES, events, run, start, stop, wait_for, workdir
from exchange_server import ExchangeServer

from livetrader import redaction
from livetrader.config import Config, EngineConfig
from livetrader.core.price import MINUTE_MS
from livetrader.events import BUS, listen_error, listen_signal
from livetrader.live.clock import SimClock, saved_clock
from livetrader.live.engine import Engine
from livetrader.market.ccxt.settings import Credentials
from livetrader.market.ccxt.source import CcxtSource
from livetrader.service.console import add_redaction, redact
from livetrader.service.status import status_document
from livetrader.strategy.base import load_strategies

API_KEY = "lt-redact-KEY-0b5e7d1c93"
# A backslash: the strategy quotes it with repr (doubled) and as is; both forms must go.
SECRET = "lt-redact-SECRET-\\7f20c4e9ab"


@pytest.fixture(autouse=True)
def _fresh_registry():
    redaction.clear()
    yield
    redaction.clear()


# --- the registry -----------------------------------------------------------------------------


def test_registry_replaces_every_form_of_a_secret_and_is_the_one_the_log_uses():
    add_redaction([SECRET, "abc"])  # the console's old name registers in the same registry
    escaped = SECRET.replace("\\", "%5C")
    text = f"raw {SECRET} repr {SECRET!r} json {json.dumps(SECRET)} url {escaped} short abc"
    cleaned = redaction.redact(text)
    assert SECRET not in cleaned and repr(SECRET)[1:-1] not in cleaned and escaped not in cleaned
    assert cleaned.count("***") == 4 and "short abc" in cleaned
    assert redact(text) == cleaned
    assert redaction.redact_value({"a": [SECRET, 1, None], "b": (RuntimeError(SECRET),)}) == \
        {"a": ["***", 1, None], "b": ("RuntimeError('***')",)}


def test_ccxt_source_cleans_with_the_registry():
    source = CcxtSource("binance", {}, Credentials(API_KEY, SECRET))
    assert API_KEY in redaction.secrets()  # building the source registered its credentials
    assert source._clean(f"GET /api?apiKey={API_KEY}") == "GET /api?apiKey=***"
    redaction.register(["another-secret-1234"])  # one registry: what anyone registers, the source hides
    assert source._clean("x another-secret-1234") == "x ***"


# --- in process: the error events a listen_error listener gets --------------------------------


def test_listen_error_gets_redacted_messages(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVETRADER_SIM_SECRET", SECRET)  # the sim takes no credentials: the variable is enough
    monkeypatch.setenv("LEAKY_VARIABLE", "LIVETRADER_SIM_SECRET")
    wall = int(time.time() * 1000)
    config = replace(Config(), engine=EngineConfig(strategy_timeout_seconds=5))
    engine = Engine(config, load_strategies(FIXTURE_STRATEGIES), clock=SimClock(wall, wall - wall % MINUTE_MS, 6000),
                    data_dir=tmp_path)
    pair = engine.add_pair("BTCUSDT", "leaky")
    engine.add_pair("ETHUSDT", "always-long")
    errors = []
    stop_errors = listen_error(errors.append)

    def careless_listener(result):
        raise ValueError(f"cannot post with token {SECRET}")

    stop_signals = listen_signal(careless_listener)

    async def main():
        task = asyncio.create_task(engine.run())
        await asyncio.sleep(0.5)
        engine.stop()
        await task
        await BUS.drain(2)

    try:
        asyncio.run(main())
    finally:
        stop_errors()
        stop_signals()
        asyncio.run(engine.close())
    strategy_errors = [e for e in errors if e.kind == "strategy"]
    listener_errors = [e for e in errors if e.kind == "listener"]
    assert strategy_errors and listener_errors
    assert "login refused for key '***' (raw: ***)" in strategy_errors[0].message
    assert "cannot post with token ***" in listener_errors[0].message
    assert all(SECRET not in e.message and repr(SECRET)[1:-1] not in e.message for e in errors)
    assert "***" in pair.last_error and SECRET not in json.dumps(status_document(engine))
    assert SECRET not in engine.write_report(pair).read_text()


# --- end to end: the daemon and the CLI against a ccxt exchange with credentials ----------------


def exchange_config(cwd, server):
    lines = ["[exchanges.binance]", 'ccxt_id = "binance"', f'urls = {{ api_base = "{server.url}" }}',
             'options = { defaultType = "spot", fetchMarkets = { types = ["spot"] }, fetchCurrencies = false, '
             'fetchMargins = false, adjustForTimeDifference = false }',
             "retry_base_seconds = 0.01", "retry_max_seconds = 0.05", "timeout_ms = 2000", "max_retries = 1"]
    (cwd / "exchange.toml").write_text("\n".join(lines) + "\n")
    return "exchange.toml"


@pytest.fixture
def server(tmp_path):
    def now():
        clock = saved_clock(tmp_path / "dump")
        return clock.now_ms() if clock else int(time.time() * 1000)

    with ExchangeServer(clock=now) as srv:
        yield srv


def assert_clean(text, where):
    assert SECRET not in text, where
    assert repr(SECRET)[1:-1] not in text, where
    assert json.dumps(SECRET)[1:-1] not in text, where
    assert API_KEY not in text, where


@pytest.mark.e2e
def test_a_secret_in_a_strategy_exception_reaches_no_output(tmp_path, server):
    cwd = workdir(tmp_path)
    cfg = exchange_config(cwd, server)
    credentials = {"LIVETRADER_BINANCE_API_KEY": API_KEY, "LIVETRADER_BINANCE_SECRET": SECRET}
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "leaky", "--strategy", "always-long", "--exchange", "binance",
                 "--config", cfg, "--speed", "600", "--data-dir", "dump", **credentials)
    status_file = cwd / "dump" / "status.json"

    def errors_in_status():
        try:
            doc = json.loads(status_file.read_text())
        except (OSError, ValueError):
            return False
        return any(p["errors_last_hour"] for p in doc["pairs"])

    assert wait_for(errors_in_status, 30)
    # While it runs: the file, and `livetrader status` run by someone without the credentials.
    running = run(cwd, "status", "--json")
    running_text = run(cwd, "status")
    during = status_file.read_text()
    code, out, err = stop(proc)
    assert code == 0, err
    stopped = run(cwd, "status", "--json", **credentials)
    assert running.returncode == 0 and stopped.returncode == 3
    reports = list((cwd / "dump" / "reports").rglob("*.md"))
    assert len(reports) == 2
    leaky = [p for p in json.loads(running.stdout)["pairs"] if p["strategy"] == "leaky"][0]
    assert "login refused for key '***' (raw: ***)" in leaky["last_error"]
    failures = [e for e in events(out) if e["event"] == "tick failed" and e["strategy"] == "leaky"]
    assert failures and "(raw: ***)" in failures[0]["error"]
    outputs = {"stdout": out, "stderr": err, "status.json while running": during,
               "status --json while running": running.stdout + running.stderr,
               "status while running": running_text.stdout + running_text.stderr,
               "status --json after": stopped.stdout + stopped.stderr}
    outputs.update({str(p): p.read_text(errors="replace") for p in (cwd / "dump").rglob("*") if p.is_file()})
    for where, text in outputs.items():
        assert_clean(text, where)


@pytest.mark.e2e
def test_the_backtest_error_message_is_redacted(tmp_path, server):
    cwd = workdir(tmp_path)
    server.clock = lambda: 1_704_326_400_000  # 2024-01-04: the range below has closed
    result = run(cwd, "backtest", "BTCUSDT", "--strategy", "leaky", "--exchange", "binance",
                 "--config", exchange_config(cwd, server), "--from", "2024-01-02", "--to", "2024-01-02T03:00",
                 "--strict",
                 LIVETRADER_BINANCE_API_KEY=API_KEY, LIVETRADER_BINANCE_SECRET=SECRET)
    assert result.returncode != 0
    assert "error: strategy 'leaky' raised" in result.stderr and "(raw: ***)" in result.stderr
    assert "Traceback" not in result.stderr
    assert_clean(result.stdout + result.stderr, "backtest")


@pytest.mark.e2e
def test_a_credential_variable_is_a_secret_even_for_an_exchange_without_credentials(tmp_path):
    cwd = workdir(tmp_path)
    result = run(cwd, "backtest", "BTCUSDT", "--strategy", "leaky", "--from", "2024-01-02", "--to",
                 "2024-01-02T03:00", "--strict", LIVETRADER_SIM_SECRET=SECRET, LEAKY_VARIABLE="LIVETRADER_SIM_SECRET")
    assert result.returncode != 0 and "(raw: ***)" in result.stderr
    assert_clean(result.stdout + result.stderr, "backtest on sim")


def test_an_uncaught_traceback_is_redacted(capsys):
    from livetrader.cli.app import redacted_excepthook

    redaction.register([SECRET])
    try:
        raise KeyError(f"no account for {SECRET}")
    except KeyError as exc:
        redacted_excepthook(type(exc), exc, exc.__traceback__)
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "KeyError" in err and "no account for ***" in err
    assert_clean(err, "traceback")


@pytest.mark.e2e
def test_a_secret_in_a_signal_note_reaches_no_json_output(tmp_path):
    cwd = workdir(tmp_path)
    result = run(cwd, "backtest", "BTCUSDT", "--strategy", "leaky-note", "--from", "2024-01-02", "--to",
                 "2024-01-02T03:00", "--json", LIVETRADER_SIM_SECRET=SECRET)
    assert result.returncode == 0, result.stderr
    trades = json.loads(result.stdout)["trades"]
    assert trades and all(t["note"] == "traded with ***" for t in trades)
    assert_clean(result.stdout + result.stderr, "backtest --json")


@pytest.mark.e2e
def test_a_secret_in_a_journal_reaches_neither_report_nor_recover_output(tmp_path):
    cwd = workdir(tmp_path)
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "leaky-note", "--speed", "3000", "--data-dir", "dump",
                 LIVETRADER_SIM_SECRET=SECRET)
    journals = cwd / "dump" / "journal"
    assert wait_for(lambda: any('"closed"' in p.read_text() for p in journals.rglob("*") if p.is_file()), 30)
    code, out, err = stop(proc)
    assert code == 0, err
    # The journal keeps what the strategy wrote; whatever prints it redacts (the credential is known again).
    outputs = {name: run(cwd, *args, LIVETRADER_SIM_SECRET=SECRET)
               for name, args in {"report --json": ("report", "--json"), "report": ("report",),
                                  "recover --json": ("recover", "--dry-run", "--json"),
                                  "recover": ("recover", "--dry-run")}.items()}
    assert "traded with ***" in outputs["report --json"].stdout
    for where, result in outputs.items():
        assert_clean(result.stdout + result.stderr, where)
