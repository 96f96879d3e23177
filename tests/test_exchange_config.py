"""Reaching a testnet, proxy or local exchange (issue 17, item 10): spot by default, every key
documented, and a server lacking an endpoint ccxt asks for stops start-up with a plain error.

Against the local Binance-compatible server (tests/exchange_server.py), through the real CLI.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest
from daemon import ROOT, run, workdir
from exchange_server import ExchangeServer

from livetrader.market.ccxt.settings import SETTING_KEYS
from livetrader.market.ccxt.source import CcxtSource

README = (ROOT / "README.md").read_text()
REAL_EXCHANGES = README[README.index("## Real exchanges"):README.index("## Running as a service")]
NOW = 1_704_326_400_000  # 2024-01-04: the README's backtest range (2024-01-02 .. 03) has closed


@pytest.fixture
def server():
    with ExchangeServer(clock=lambda: NOW) as srv:
        yield srv


def readme_local_table(server: ExchangeServer) -> str:
    """The README's local-exchange table, pointed at ``server``, with fast retries for the test."""
    block = next(b for b in re.findall(r"```toml\n(.*?)```", REAL_EXCHANGES, re.S) if "api_base" in b)
    return re.sub(r'api_base = "[^"]+"', f'api_base = "{server.url}"', block) + (
        "retry_base_seconds = 0.01\nretry_max_seconds = 0.02\n")


def test_every_exchange_key_is_documented_in_the_readme_and_the_sample_config():
    sample = (ROOT / "config" / "livetrader.toml").read_text()
    for key in SETTING_KEYS:
        assert f"`{key}`" in REAL_EXCHANGES, f"README 'Real exchanges' does not document {key}"
        assert re.search(rf"^# {key} = ", sample, re.M), f"config/livetrader.toml does not show {key}"


def test_spot_by_default_unless_the_table_says_otherwise():
    def options(name, table):
        return CcxtSource(name, table)._new_exchange(register=False).options

    binance = options("binance", {})
    assert binance["defaultType"] == "spot" and binance["fetchMarkets"]["types"] == ["spot"]
    bybit = options("bybit", {})  # ccxt's own default there is swap
    assert bybit["defaultType"] == "spot" and bybit["fetchMarkets"]["types"] == ["spot"]
    futures = options("binance", {"options": {"defaultType": "future"}})
    assert futures["defaultType"] == "future" and "linear" in futures["fetchMarkets"]["types"]
    chosen = options("binance", {"options": {"fetchMarkets": {"types": ["spot", "linear"]}}})
    assert chosen["fetchMarkets"]["types"] == ["spot", "linear"]


def test_a_table_with_only_api_base_loads_spot_markets_from_a_spot_only_server(server):
    src = CcxtSource("local", {"ccxt_id": "binance", "urls": {"api_base": server.url}})

    async def main():
        try:
            return await src.prepare(["BTCUSDT"])
        finally:
            await src.close()

    assert asyncio.run(main()) == ["BTC/USDT"]
    assert {r.path for r in server.requests} == {"/api/v3/exchangeInfo"}  # no futures endpoint asked


@pytest.mark.e2e
def test_the_readme_local_exchange_example_backtests_against_the_local_server(tmp_path, server):
    cwd = workdir(tmp_path)
    (cwd / "local.toml").write_text(readme_local_table(server))
    command = next(line for line in REAL_EXCHANGES.splitlines() if line.startswith("livetrader backtest"))
    result = run(cwd, *command.split()[1:], "--config", "local.toml", "--json", timeout=90)
    assert result.returncode == 0, result.stderr
    trades = json.loads(result.stdout)["trades"]
    assert trades and trades[0]["symbol"] == "BTC/USDT"
    assert not [r for r in server.requests if not r.path.startswith("/api/v3/")]


@pytest.mark.e2e
@pytest.mark.parametrize("command", [
    ["run", "BTCUSDT", "--strategy", "my-strategy", "--speed", "600"],
    ["backtest", "BTCUSDT", "--strategy", "my-strategy", "--from", "2024-01-02", "--to", "2024-01-03"],
])
def test_a_server_without_the_futures_endpoints_asked_for_stops_start_up_with_a_plain_error(
        tmp_path, server, command):
    cwd = workdir(tmp_path)
    table = readme_local_table(server) + 'options = { fetchMarkets = { types = ["spot", "linear"] } }\n'
    (cwd / "local.toml").write_text(table)
    began = time.monotonic()
    result = run(cwd, *command, "--exchange", "local", "--config", "local.toml", timeout=60)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr
    assert time.monotonic() - began < 30
    assert f"{server.url}/fapi/v1/exchangeInfo answered HTTP 404" in result.stderr
    assert "options.fetchMarkets" in result.stderr and "[exchanges.local]" in result.stderr
    assert "Traceback" not in result.stderr
    assert server.count("/fapi/v1/exchangeInfo") == 5  # retried (max_retries = 4), then stopped
