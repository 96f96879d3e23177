"""The ccxt candle source against a real Binance-compatible HTTP server on 127.0.0.1 (no mocks)."""

import asyncio
import json
import logging
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
from exchange_server import ExchangeServer

from livetrader.config import parse_config
from livetrader.core.price import MINUTE_MS
from livetrader.errors import CandleSourceError, ConfigError, UnknownSymbolError, UsageError
from livetrader.market.ccxt.settings import Credentials, load_credentials, parse_settings
from livetrader.market.ccxt.source import CcxtSource, guess_symbol
from livetrader.market.sources import open_source

# A fixed instant, 30 s into a minute: server and source agree on it, so no test races a boundary.
NOW = 1_704_110_430_000  # 2024-01-01T12:00:30Z
CURRENT = NOW - NOW % MINUTE_MS
OPTIONS = {
    "defaultType": "spot",
    "fetchMarkets": {"types": ["spot"]},
    "fetchCurrencies": False,
    "fetchMargins": False,
    "adjustForTimeDifference": False,
}
SECRET = "s3cr3t-Do-Not-Print-4242"
API_KEY = "key-Do-Not-Print-7777"


def fixed() -> int:
    return NOW


def table(server: ExchangeServer, **extra) -> dict:
    """The [exchanges.binance] table that points ccxt at ``server``, with fast retries."""
    return {
        "options": OPTIONS,
        "urls": {"api_base": server.url},
        "rate_limit_ms": 1,
        "timeout_ms": 2000,
        "retry_base_seconds": 0.01,
        "retry_max_seconds": 0.05,
        **extra,
    }


def source(server: ExchangeServer, credentials: Credentials | None = None, **extra) -> CcxtSource:
    return CcxtSource("binance", table(server, **extra), credentials, clock=fixed)


def run(coro):
    return asyncio.run(coro)


async def fetch_and_close(src: CcxtSource, symbol: str, start: int, end: int):
    try:
        return await src.fetch(symbol, start, end)
    finally:
        await src.close()


@pytest.fixture
def server():
    with ExchangeServer(clock=fixed) as s:
        yield s


# --- markets and symbols -------------------------------------------------------------------


def test_markets_load_with_one_request_shared_by_concurrent_fetches(server):
    src = source(server)

    async def main():
        try:
            symbols = await src.prepare(["BTCUSDT", "eth/usdt"])
            window = (CURRENT - 5 * MINUTE_MS, CURRENT)
            batches = await asyncio.gather(*(src.fetch(s, *window) for s in ["BTC/USDT", "ETHUSDT", "SOLUSDT"] * 3))
            return symbols, batches
        finally:
            await src.close()

    symbols, batches = run(main())
    assert symbols == ["BTC/USDT", "ETH/USDT"]
    assert all(len(b) == 5 for b in batches)
    assert server.count("exchangeInfo") == 1
    assert server.count("klines") == 9


def test_cold_concurrent_fetches_load_markets_once(server):
    src = source(server)

    async def main():
        try:
            return await asyncio.gather(*(src.fetch(s, CURRENT - 5 * MINUTE_MS, CURRENT)
                                          for s in ["BTCUSDT", "ETHUSDT", "BNBUSDT", "XRPUSDT"]))
        finally:
            await src.close()

    assert [len(b) for b in run(main())] == [5, 5, 5, 5]
    assert server.count("exchangeInfo") == 1


def test_symbols_resolve_in_every_spelling_before_and_after_a_loop(server):
    src = source(server)
    # Synchronous, no loop running: resolve_symbol loads the markets itself (one request) ...
    assert src.resolve_symbol("BTCUSDT") == "BTC/USDT"
    assert src.resolve_symbol("BTC/USDT") == "BTC/USDT"
    assert src.resolve_symbol("btc/usdt") == "BTC/USDT"
    assert src.resolve_symbol(" ethusdt ") == "ETH/USDT"
    # ... and the loop the engine runs later reuses them: no second exchangeInfo.
    candles = run(fetch_and_close(src, "BTC/USDT", CURRENT - 3 * MINUTE_MS, CURRENT))
    assert len(candles) == 3
    assert server.count("exchangeInfo") == 1


def test_unknown_symbol_has_close_matches_and_costs_no_candle_request(server):
    src = source(server)
    with pytest.raises(UnknownSymbolError) as caught:
        src.resolve_symbol("BTCUSDX")
    assert "BTCUSDX" in str(caught.value) and "did you mean BTC/USDT" in str(caught.value)
    with pytest.raises(UnknownSymbolError):
        run(fetch_and_close(src, "NOPE/USDT", CURRENT - 5 * MINUTE_MS, CURRENT))
    assert server.count("klines") == 0


def test_a_symbol_the_exchange_rejects_is_not_retried(server):
    server.faults.status(400, body='{"code":-1121,"msg":"Invalid symbol."}', path="klines")
    src = source(server)
    with pytest.raises(UnknownSymbolError, match="binance rejects the symbol"):
        run(fetch_and_close(src, "BTCUSDT", CURRENT - 5 * MINUTE_MS, CURRENT))
    assert server.count("klines") == 1


def test_guess_symbol_without_markets():
    assert guess_symbol("btcusdt") == "BTC/USDT"
    assert guess_symbol("ETH/BTC") == "ETH/BTC"
    assert guess_symbol("PEPEFDUSD") == "PEPE/FDUSD"
    assert guess_symbol("XYZ") == "XYZ"


# --- candles ------------------------------------------------------------------------------


def test_fetch_returns_the_servers_closed_candles_exactly(server):
    src = source(server)
    start, end = CURRENT - 30 * MINUTE_MS, CURRENT + 10 * MINUTE_MS  # asks past now
    candles = run(fetch_and_close(src, "BTCUSDT", start, end))
    assert candles == server.candles("BTCUSDT", start, CURRENT)
    assert candles[-1].timestamp == CURRENT - MINUTE_MS  # the forming minute is never returned


def test_the_forming_candle_is_dropped_when_the_exchange_sends_it(server):
    server.include_forming = True  # as the real Binance does
    src = source(server)
    candles = run(fetch_and_close(src, "ETHUSDT", CURRENT - 5 * MINUTE_MS, CURRENT + MINUTE_MS))
    assert [c.timestamp for c in candles] == [CURRENT - i * MINUTE_MS for i in range(5, 0, -1)]


def test_an_unaligned_window_starts_at_the_next_whole_minute(server):
    src = source(server)
    candles = run(fetch_and_close(src, "BTCUSDT", CURRENT - 5 * MINUTE_MS - 1, CURRENT - 1))
    assert [c.timestamp for c in candles] == [CURRENT - i * MINUTE_MS for i in range(5, 0, -1)]


def test_a_long_window_is_fetched_in_pages(server):
    src = source(server)
    start = CURRENT - 3000 * MINUTE_MS
    candles = run(fetch_and_close(src, "BTCUSDT", start, CURRENT))
    assert len(candles) == 3000
    assert candles == server.candles("BTCUSDT", start, CURRENT)
    klines = [r for r in server.requests if "klines" in r.path]
    assert len(klines) == 3
    assert [int(r.query["startTime"]) for r in klines] == [start, start + 1000 * MINUTE_MS, start + 2000 * MINUTE_MS]
    assert all(int(r.query["limit"]) <= 1000 for r in klines)


def test_page_limit_setting(server):
    src = source(server, page_limit=100)
    candles = run(fetch_and_close(src, "BTCUSDT", CURRENT - 250 * MINUTE_MS, CURRENT))
    assert len(candles) == 250
    assert server.count("klines") == 3


def test_an_empty_window_makes_no_request(server):
    src = source(server)
    assert run(fetch_and_close(src, "BTCUSDT", CURRENT, CURRENT + 5 * MINUTE_MS)) == []
    assert server.count("klines") == 0


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda f, m: f.drop(minutes=[m]), "missing"),
        (lambda f, m: f.bad_candle("high_below_low", minutes=[m]), "below low"),
        (lambda f, m: f.bad_candle("zero_price", minutes=[m]), "zero"),
    ],
    ids=["gap", "high-below-low", "zero-price"],
)
def test_bad_candles_are_an_error_naming_exchange_symbol_and_problem(server, damage, problem):
    damage(server.faults, CURRENT - 3 * MINUTE_MS)
    src = source(server)
    with pytest.raises(CandleSourceError) as caught:
        run(fetch_and_close(src, "BTCUSDT", CURRENT - 5 * MINUTE_MS, CURRENT))
    text = str(caught.value)
    assert "binance" in text and "BTC/USDT" in text and problem in text
    assert server.count("klines") == 1  # bad data is not retried: the next tick asks again


def test_a_1000x_spike_is_bad_data_not_a_price(server):
    server.faults.bad_candle("spike", minutes=[CURRENT - 2 * MINUTE_MS])
    src = source(server)
    with pytest.raises(CandleSourceError, match="binance BTC/USDT: bad candles: .*spike"):
        run(fetch_and_close(src, "BTCUSDT", CURRENT - 5 * MINUTE_MS, CURRENT))
    assert server.count("klines") == 1


# --- retries --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 418, 503, 502])
def test_retries_rate_limits_and_unavailable_then_succeeds(server, status):
    server.faults.status(status, times=2, path="klines")
    src = source(server)
    candles = run(fetch_and_close(src, "BTCUSDT", CURRENT - 5 * MINUTE_MS, CURRENT))
    assert len(candles) == 5
    assert server.count("klines") == 3


def test_retries_a_timeout_then_succeeds(server):
    server.faults.hang(2.0, path="klines")
    src = source(server, timeout_ms=200)
    started = time.monotonic()
    candles = run(fetch_and_close(src, "BTCUSDT", CURRENT - 5 * MINUTE_MS, CURRENT))
    assert candles == server.candles("BTCUSDT", CURRENT - 5 * MINUTE_MS, CURRENT)
    assert server.count("klines") >= 2  # the first answer lacked the candle still forming there
    assert time.monotonic() - started < 1.5


def test_malformed_json_then_recovery(server):
    server.faults.malformed(times=1, path="exchangeInfo")
    server.faults.malformed(times=2, path="klines")
    src = source(server)
    candles = run(fetch_and_close(src, "BTCUSDT", CURRENT - 5 * MINUTE_MS, CURRENT))
    assert candles == server.candles("BTCUSDT", CURRENT - 5 * MINUTE_MS, CURRENT)
    assert server.count("exchangeInfo") == 2
    assert server.count("klines") == 3


def test_gives_up_after_max_retries_saying_the_exchange_is_unavailable(server):
    server.faults.status(503, times=None, until_ms=NOW + 1, path="klines")
    src = source(server, max_retries=2)
    with pytest.raises(CandleSourceError) as caught:
        run(fetch_and_close(src, "BTCUSDT", CURRENT - 5 * MINUTE_MS, CURRENT))
    assert str(caught.value).startswith("binance unavailable:")
    assert "ExchangeNotAvailable" in str(caught.value)
    assert server.count("klines") == 3


def test_exchange_down_at_start_then_back():
    with ExchangeServer(clock=fixed) as first:
        port = first.port
        config = table(first, max_retries=1)
    # Nothing listens on the port now: the exchange is down when the daemon starts.
    src = CcxtSource("binance", config, clock=fixed)
    assert src.resolve_symbol("BTCUSDT") == "BTC/USDT"  # a guess: the start is not refused
    with pytest.raises(CandleSourceError, match="binance unavailable"):
        run(fetch_and_close(src, "BTC/USDT", CURRENT - 5 * MINUTE_MS, CURRENT))
    with ExchangeServer(clock=fixed, port=port) as back:  # the exchange comes back on the same address
        candles = run(fetch_and_close(src, "BTC/USDT", CURRENT - 5 * MINUTE_MS, CURRENT))
        assert len(candles) == 5
        assert back.count("exchangeInfo") == 1


def test_a_clock_far_behind_at_the_exchange_is_reported(server):
    server.clock = lambda: NOW - 3 * MINUTE_MS
    src = source(server)
    with pytest.raises(CandleSourceError, match="clock .* behind this machine"):
        run(fetch_and_close(src, "BTCUSDT", CURRENT - 5 * MINUTE_MS, CURRENT))


def test_an_exchange_a_moment_behind_is_waited_for(server):
    # The machine is 0.2 s past a boundary; the exchange 0.5 s behind it for the first candle request
    # (whatever the time a loaded machine takes to send it), caught up by the next.
    local_now = CURRENT + 200
    server.clock = lambda: local_now - 500 if server.count("klines") == 0 else local_now + 100
    src = CcxtSource("binance", table(server), clock=lambda: local_now)
    candles = run(fetch_and_close(src, "BTCUSDT", CURRENT - 5 * MINUTE_MS, CURRENT))
    assert candles == server.candles("BTCUSDT", CURRENT - 5 * MINUTE_MS, CURRENT)
    assert server.count("klines") >= 2  # the first answer lacked the candle still forming there


# --- secrets ----------------------------------------------------------------------------------


def test_secrets_never_appear_in_errors_logs_or_reprs(server, monkeypatch, caplog, capsys):
    monkeypatch.setenv("LIVETRADER_BINANCE_API_KEY", API_KEY)
    monkeypatch.setenv("LIVETRADER_BINANCE_SECRET", SECRET)
    settings = parse_settings("binance", table(server))
    credentials = load_credentials("binance", settings)
    assert credentials is not None and credentials.secret == SECRET
    src = source(server, credentials)
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    # An exchange that echoes the credentials in its error answers: auth refused, then down.
    echo = json.dumps({"code": -2015, "msg": f"Invalid API-key {API_KEY} for secret {SECRET}"})
    server.faults.status(401, body=echo, path="klines")
    server.faults.status(503, times=None, until_ms=NOW + 1, body=f"<html>down {SECRET} {API_KEY}</html>",
                         path="klines")
    for expected in (UsageError, CandleSourceError):
        with pytest.raises(expected) as caught:
            run(fetch_and_close(src, "BTCUSDT", CURRENT - 5 * MINUTE_MS, CURRENT))
        errors.append(caught.value)
    assert "refused the credentials" in str(errors[0]) and "LIVETRADER_BINANCE_API_KEY" in str(errors[0])
    assert "***" in str(errors[0]) and "***" in str(errors[1])
    out, err = capsys.readouterr()
    texts = [out, err, caplog.text, repr(src), repr(credentials), str(credentials)]
    for exc in errors:
        assert exc.__context__ is None and exc.__cause__ is None
        texts += [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    for text in texts:
        assert SECRET not in text and API_KEY not in text


def test_credentials_from_environment_need_both_parts(monkeypatch):
    settings = parse_settings("my-binance", {})
    assert load_credentials("my-binance", settings, environ={}) is None
    env = {"LIVETRADER_MY_BINANCE_API_KEY": API_KEY, "LIVETRADER_MY_BINANCE_SECRET": SECRET}
    assert load_credentials("my-binance", settings, environ=env) == Credentials(API_KEY, SECRET)
    with pytest.raises(ConfigError, match="only one of API key and secret"):
        load_credentials("my-binance", settings, environ={"LIVETRADER_MY_BINANCE_API_KEY": API_KEY})


@pytest.mark.parametrize("suffix", [".toml", ".json", ".env"])
def test_credentials_file_must_be_private(tmp_path, suffix):
    path = tmp_path / f"binance{suffix}"
    path.write_text({
        ".toml": f'apiKey = "{API_KEY}"\nsecret = "{SECRET}"\n',
        ".json": json.dumps({"apiKey": API_KEY, "secret": SECRET}),
        ".env": f"export LIVETRADER_BINANCE_API_KEY={API_KEY}\nLIVETRADER_BINANCE_SECRET='{SECRET}'\n",
    }[suffix])
    settings = parse_settings("binance", {"credentials_file": str(path)})
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600") as caught:
        load_credentials("binance", settings, environ={})
    assert SECRET not in str(caught.value)
    path.chmod(0o600)
    assert load_credentials("binance", settings, environ={}) == Credentials(API_KEY, SECRET)


def test_missing_credentials_file_is_a_config_error(tmp_path):
    settings = parse_settings("binance", {"credentials_file": str(tmp_path / "nope.toml")})
    with pytest.raises(ConfigError, match="does not exist"):
        load_credentials("binance", settings, environ={})


@pytest.mark.parametrize("key", ["apiKey", "secret", "api_key", "password"])
def test_credentials_in_the_config_table_are_refused(key):
    with pytest.raises(ConfigError, match="LIVETRADER_BINANCE_API_KEY") as caught:
        parse_settings("binance", {key: SECRET})
    assert SECRET not in str(caught.value)
    with pytest.raises(ConfigError, match="never go in the config file"):
        parse_settings("binance", {"options": {key: SECRET}})


def test_unknown_and_mistyped_settings_are_config_errors():
    with pytest.raises(ConfigError, match="did you mean max_retries"):
        parse_settings("binance", {"max_retry": 3})
    with pytest.raises(ConfigError, match="timeout_ms must be an integer"):
        parse_settings("binance", {"timeout_ms": "fast"})
    with pytest.raises(ConfigError, match="api_base"):
        parse_settings("binance", {"urls": {"api_base": "127.0.0.1:80"}})


# --- wiring -----------------------------------------------------------------------------------


def test_open_source_makes_ccxt_sources_by_id_or_by_table(server):
    config = parse_config({"exchanges": {"binance": table(server), "mine": {**table(server), "ccxt_id": "binance"}}})
    for name in ("binance", "mine"):
        src = open_source(name, config)
        assert isinstance(src, CcxtSource) and src.name == name and src.bounds("BTCUSDT") is None
    with pytest.raises(UsageError, match="unknown exchange 'binanse'.*Did you mean binance"):
        open_source("binanse", config)
    bad = parse_config({"exchanges": {"mine": {"ccxt_id": "nosuchexchange"}}})
    with pytest.raises(UsageError, match="not an exchange ccxt knows"):
        open_source("mine", bad)


def test_format_price_uses_the_exchange_precision(server):
    src = source(server)
    assert src.format_price("BTCUSDT", 50123.456789) == "50123.456789"  # markets not loaded: plain
    src.resolve_symbol("BTCUSDT")
    assert src.format_price("BTCUSDT", 50123.456789) == "50123.46"
    assert src.format_amount("BTC/USDT", 0.123456789) == "0.12345"  # amounts are truncated


@pytest.mark.e2e
def test_importing_the_cli_does_not_import_ccxt():
    code = "import sys, livetrader.cli.app; print('ccxt' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "False"


def test_pairs_waiting_on_a_failed_markets_load_share_its_error(server):
    server.faults.status(503, times=None, until_ms=NOW + 1, path="exchangeInfo")
    src = source(server, max_retries=2)

    async def main():
        try:
            return await asyncio.gather(*(src.fetch(s, CURRENT - 5 * MINUTE_MS, CURRENT)
                                          for s in ["BTCUSDT", "ETHUSDT", "BNBUSDT"]), return_exceptions=True)
        finally:
            await src.close()

    results = run(main())
    assert all(isinstance(r, CandleSourceError) and "binance unavailable" in str(r) for r in results)
    assert server.count("exchangeInfo") == 3  # one load with its 2 retries, not one per pair


def test_a_burst_of_pairs_is_spaced_by_the_shared_rate_limiter(server):
    # A klines request costs 0.4 of the limit on binance: 60 ms apart, wide enough that a busy
    # machine delaying the first requests cannot squeeze the burst below the bound asserted.
    src = source(server, rate_limit_ms=150)
    src.resolve_symbol("BTCUSDT")
    symbols = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT"]

    async def burst():
        try:
            return await asyncio.gather(*(src.fetch(s, CURRENT - 5 * MINUTE_MS, CURRENT) for s in symbols))
        finally:
            await src.close()

    assert all(len(b) == 5 for b in run(burst()))
    arrivals = [r.received for r in server.requests if "klines" in r.path]
    assert len(arrivals) == len(symbols)
    # One ccxt instance: its limiter queues every pair's request. Its bucket lets the first
    # two or three through at once; the rest follow 60 ms apart (unlimited, all six arrive at once).
    assert arrivals[-1] - arrivals[0] >= 0.12
