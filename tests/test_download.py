"""``livetrader download`` against a real Binance-compatible server on 127.0.0.1 (``exchange_server``),
and ``backtest`` reading the store: incremental, gaps recorded, trade-for-trade equal to the exchange."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from daemon import ROOT, run, wait_for, workdir
from daemon import start as start_process
from exchange_server import ExchangeServer
from exchange_setup import exchange_config

from livetrader.cli.backtest import BacktestRequest, run_all
from livetrader.cli.download import DownloadRequest, run_download
from livetrader.config import parse_config
from livetrader.core.price import MINUTE_MS
from livetrader.errors import CandleSourceError
from livetrader.market.store import CandleStore

M = MINUTE_MS
D1 = 1_704_067_200_000  # 2024-01-01T00:00Z
DAY = 1440 * M
NOW = D1 + 9 * DAY + 30_000  # the server's clock: 2024-01-10, every minute below has closed


@pytest.fixture
def server():
    with ExchangeServer(clock=lambda: NOW) as srv:
        yield srv


def config(server: ExchangeServer, data_dir: Path):
    table = {"ccxt_id": "binance", "urls": {"api_base": server.url}, "timeout_ms": 2000, "max_retries": 1,
             "rate_limit_ms": 1, "retry_base_seconds": 0.01, "retry_max_seconds": 0.05,
             "options": {"defaultType": "spot", "fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False,
                         "fetchMargins": False, "adjustForTimeDifference": False}}
    return parse_config({"livetrader": {"data_dir": str(data_dir)}, "exchanges": {"binance": table}})


def klines(server: ExchangeServer) -> list[int]:
    """The startTime of every candle request so far."""
    return [int(r.params["startTime"]) for r in server.requests if r.path.endswith("/klines")]


def stored(store: Path, start: int, end: int):
    return CandleStore(store).load("binance", "BTC/USDT", start, end)


def test_download_is_incremental(tmp_path: Path, server: ExchangeServer, capsys) -> None:
    cfg = config(server, tmp_path)
    store = tmp_path / "store"
    start, end = D1 + DAY, D1 + 2 * DAY
    (report,) = run_download(DownloadRequest(["btc/usdt"], "binance", start, end, store), cfg)
    assert (report.symbol, report.fetched, report.requests, report.gaps) == ("BTC/USDT", 1440, 2, [])
    assert klines(server) == [start, start + 1000 * M]
    assert stored(store, start, end).candles == server.candles("BTCUSDT", start, end)
    out = capsys.readouterr()
    assert "BTC/USDT on binance, 2024-01-02T00:00Z .. 2024-01-03T00:00Z: 1,440 minutes; fetched 1,440" in out.out
    assert "no gaps" in out.out and "100.0%" in out.err

    server.clear_log()
    (again,) = run_download(DownloadRequest(["BTCUSDT"], "binance", start, end, store), cfg)
    assert klines(server) == [] and (again.fetched, again.already) == (0, 1440)

    # A wider range: only the two new stretches are asked for, from their first minute.
    (wider,) = run_download(DownloadRequest(["BTC/USDT"], "binance", start - 120 * M, end + 180 * M, store), cfg)
    assert klines(server) == [start - 120 * M, end]
    assert (wider.fetched, wider.already) == (300, 1440)
    assert stored(store, start - 120 * M, end + 180 * M).candles == server.candles(
        "BTCUSDT", start - 120 * M, end + 180 * M)


def test_symbols_download_side_by_side_and_one_failing_stops_no_other(tmp_path: Path, server: ExchangeServer,
                                                                       capsys) -> None:
    """Several symbols are fetched at once (``CONCURRENT_SYMBOLS``): their requests interleave. A symbol
    whose candles are unusable fails alone: the others are fetched whole, then its error is raised."""
    cfg = config(server, tmp_path)
    store = tmp_path / "store"
    start, end = D1, D1 + 3 * DAY  # five pages each
    names = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
    reports = run_download(DownloadRequest(names, "binance", start, end, store), cfg)
    assert [r.symbol for r in reports] == names and all(r.fetched == 3 * 1440 for r in reports)
    asked = [r.query["symbol"] for r in server.requests if r.path.endswith("/klines")]
    assert len(asked) == 15
    # Side by side: every symbol's first request comes before any symbol's last one.
    assert max(asked.index(s) for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")) < min(
        len(asked) - 1 - asked[::-1].index(s) for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT"))
    for name in names:
        assert CandleStore(store).load("binance", name, start, end).candles == server.candles(
            name.replace("/", ""), start, end)
    assert len(capsys.readouterr().out.splitlines()) == 3  # one summary per symbol

    later = tmp_path / "later"
    bad_minute = D1 + DAY + 100 * M
    server.faults.bad_candle("high_below_low", minutes=[bad_minute], times=None, until_ms=NOW + DAY,
                             symbol="ETHUSDT")
    with pytest.raises(CandleSourceError, match=r"binance ETH/USDT: the candle at 2024-01-02T01:40"):
        run_download(DownloadRequest(names, "binance", start, end, later), cfg)
    for name in ("BTC/USDT", "SOL/USDT"):
        assert CandleStore(later).missing("binance", name, start, end) == []
    kept = CandleStore(later).missing("binance", "ETH/USDT", start, end)
    assert kept and kept[0][0] >= D1 + DAY  # what came before the bad candle is kept
    out = capsys.readouterr().out
    assert "BTC/USDT on binance" in out and "SOL/USDT on binance" in out and "ETH/USDT on binance" not in out

    # --json: one document, every symbol in the order asked, the failed one with its error.
    with pytest.raises(CandleSourceError):
        run_download(DownloadRequest(names, "binance", start, end, tmp_path / "third", as_json=True), cfg)
    doc = json.loads(capsys.readouterr().out)["downloads"]
    assert [d["symbol"] for d in doc] == names
    assert [d["fetched"] for d in doc if d["error"] is None] == [3 * 1440, 3 * 1440]
    assert doc[1]["error"].startswith("binance ETH/USDT: the candle at 2024-01-02T01:40") and "fetched" not in doc[1]


def test_gaps_are_recorded_reported_and_not_fetched_again(tmp_path: Path, server: ExchangeServer, capsys) -> None:
    cfg = config(server, tmp_path)
    store = tmp_path / "store"
    start, end = D1, D1 + 1500 * M
    holes = [D1 + 700 * M, D1 + 701 * M, D1 + 702 * M, D1 + 1200 * M]
    server.faults.drop(minutes=holes, times=None, until_ms=NOW + DAY)  # the exchange never has these
    (report,) = run_download(DownloadRequest(["BTC/USDT"], "binance", start, end, store), cfg)
    assert report.gaps == [(holes[0], holes[2] + M), (holes[3], holes[3] + M)]
    assert report.fetched == 1500 - 4 and report.new_gap_minutes == 4
    out = capsys.readouterr().out
    assert "2 gap(s), 4 minute(s) the exchange has no candle for (first 2024-01-01T11:40Z .. 2024-01-01T11:43Z" in out
    server.clear_log()
    (again,) = run_download(DownloadRequest(["BTC/USDT"], "binance", start, end, store), cfg)
    assert klines(server) == [] and again.gaps == report.gaps
    loaded = stored(store, start, end)
    assert loaded is not None and loaded.filled_minutes == 4 and len(loaded.candles) == 1500


def test_backtest_from_the_store_equals_the_backtest_against_the_exchange(tmp_path: Path, server: ExchangeServer,
                                                                          capsys) -> None:
    cfg = config(server, tmp_path)  # the store: the data directory's candles/
    start, end = D1 + 2 * DAY, D1 + 4 * DAY
    run_download(DownloadRequest(["BTC/USDT"], "binance", start - DAY, end, None), cfg)  # a day of history too
    capsys.readouterr()

    def backtest(store: Path | None):
        request = BacktestRequest(symbol="BTCUSDT", strategy="my-strategy", start=start, end=end,
                                  exchange="binance", candles=None, strict=True, as_json=True, report=None,
                                  store=store)
        return run_all([request], cfg, ROOT / "strategies")[0]

    server.clear_log()
    from_store = backtest(None)
    err = capsys.readouterr().err
    assert server.requests == []  # not one request, not even the market list: the store held the range
    assert f"candles: from the store {tmp_path / 'candles' / 'binance' / 'BTCUSDT'} (4,320 minutes)" in err
    from_exchange = backtest(tmp_path / "no-store-here")
    assert "candles: from the store" not in capsys.readouterr().err
    assert len(klines(server)) >= 5
    assert len(from_store.trades) > 5
    assert from_store.trades == from_exchange.trades and from_store.cancelled == from_exchange.cancelled
    assert (from_store.symbol, from_store.frames) == (from_exchange.symbol, from_exchange.frames) == ("BTC/USDT", 2880)

    # Part of the range not in the store: read from the exchange, as before, and said so.
    server.clear_log()
    request = BacktestRequest(symbol="BTCUSDT", strategy="my-strategy", start=start, end=end + 60 * M,
                              exchange="binance", candles=None, strict=True, as_json=True, report=None)
    run_all([request], cfg, ROOT / "strategies")
    err = capsys.readouterr().err
    assert "candles: from binance: the store" in err and "lacks 60 minute(s) of 2024-01-03T00:00Z" in err
    assert klines(server)

    # A store holding the range but only part of the day of history before it: used, and said so.
    partial = tmp_path / "partial"
    run_download(DownloadRequest(["BTC/USDT"], "binance", start - 100 * M, end, partial), cfg)
    capsys.readouterr()
    server.clear_log()
    short = backtest(partial)
    assert klines(server) == []
    assert "(2,980 minutes, 100 of them before --from, not 1,440: download from earlier" in capsys.readouterr().err
    assert short.frames == 2880 and len(short.trades) > 5


def test_files_is_not_an_exchange_to_download_from(tmp_path: Path, server: ExchangeServer) -> None:
    from livetrader.errors import UsageError

    with pytest.raises(UsageError, match="download fetches from an exchange"):
        run_download(DownloadRequest(["X"], "files", D1, D1 + DAY, tmp_path), config(server, tmp_path))
    with pytest.raises(UsageError, match="--from 2024-01-02T00:00Z must be before --to"):
        run_download(DownloadRequest(["BTC/USDT"], "binance", D1 + DAY, D1, tmp_path), config(server, tmp_path))


@pytest.mark.e2e
def test_a_download_killed_mid_way_resumes_where_it_stopped(tmp_path: Path, server: ExchangeServer) -> None:
    cwd = workdir(tmp_path)
    # ccxt's rate limiter spaces the requests, so the kill lands mid-download.
    name = exchange_config(cwd, server, rate_limit_ms=120)
    start, end = D1, D1 + 8 * DAY
    args = ("download", "BTC/USDT", "--exchange", "binance", "--from", "2024-01-01", "--to", "2024-01-09",
            "--store", "store", "--config", name)
    proc = start_process(cwd, *args)
    folder = cwd / "store" / "binance" / "BTCUSDT"
    assert wait_for(lambda: len(list(folder.glob("*.day"))) >= 2, timeout=60), proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    store = CandleStore(cwd / "store")
    missing = store.missing("binance", "BTC/USDT", start, end)
    assert missing and missing[-1][1] == end and sum(b - a for a, b in missing) < end - start  # part done
    for day in sorted(folder.glob("*.day")):  # every file whole (atomic writes), none damaged
        assert store.read_day("binance", "BTC/USDT", D1 + DAY * (int(day.stem[-2:]) - 1)) is not None
    server.clear_log()

    result = run(cwd, *args, "--json")
    assert result.returncode == 0, result.stderr
    (done,) = json.loads(result.stdout)["downloads"]
    assert (done["symbol"], done["from"], done["to"], done["gaps"], done["error"]) == ("BTC/USDT", start, end, [], None)
    assert done["fetched"] + done["already"] == done["minutes"] == (end - start) // M and done["fetched"] > 0
    asked = klines(server)
    first_missing = missing[0][0]
    assert asked and min(asked) == first_missing  # nothing stored before the kill is fetched again
    assert len(asked) <= -(-(sum(b - a for a, b in missing) // M) // 1000) + len(missing)
    assert store.missing("binance", "BTC/USDT", start, end) == []
    assert stored(cwd / "store", start, end).candles == server.candles("BTCUSDT", start, end)
