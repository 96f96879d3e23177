"""The real daemon with its candles streamed from a local Binance kline stream, through every fault.

The daemon runs on a simulated clock (``--speed 120``: a minute every half second) against the local REST
server and the stream server, both on its clock and both serving the same ``SimSource``
candles. A recording strategy writes every minute it is asked at and the price it was given;
``quick-long`` trades (a two-minute long, again and again). Through duplicates, out-of-order
candles, malformed frames, wild forming candles, candles marked closed too early, skipped
minutes, a disconnect and a silent stall:

- every minute is decided exactly once per symbol, none skipped, on the price the server's
  candles give for it (a forming, early or missing candle would give another price);
- every trade opened and closed at the minute and price the candles say (``check_data_dir``
  replays the core over the known candles: the journal agrees with a backtest of them);
- the stream's status counts each fault, and each outage is one log line.
"""

import json

import pytest
from daemon import events, start, stop, wait_for, wait_running, workdir
from exchange_server import ExchangeServer
from exchange_setup import CutConnections, exchange_config, follow_daemon_clock
from invariants import check_data_dir
from stream_server import StreamServer

from livetrader.core.price import MINUTE_MS, market_of

pytestmark = pytest.mark.e2e

RECORDER = '''
from livetrader import Strategy


class MinuteRecorder(Strategy):
    """Asked every minute; writes the minute and the price it was given, opens nothing."""

    name = "minute-recorder"
    interval = "1m"

    async def get_signal(self, ctx):
        with open("minutes.txt", "a") as out:
            out.write(f"{ctx.symbol} {ctx.now_ms} {ctx.price!r}\\n")
        return None
'''
SYMBOLS = ("BTCUSDT", "ETHUSDT")


def test_every_minute_is_decided_once_from_the_right_candles_through_every_stream_fault(tmp_path):
    cwd = workdir(tmp_path)
    (cwd / "strategies" / "minute_recorder.py").write_text(RECORDER)
    clock = follow_daemon_clock(cwd)
    with ExchangeServer(clock=clock) as rest, StreamServer(clock=clock, sim=rest.sim) as stream:
        cfg = exchange_config(cwd, rest, candles="stream", stream_base=stream.url, stream_stall_seconds=0.3)
        proc = start(cwd, "run", *SYMBOLS, "--strategy", "minute-recorder", "--strategy", "quick-long",
                     "--exchange", "binance", "--config", cfg, "--speed", "120")
        data = cwd / "dump-demo"
        assert wait_running(data, proc)

        def stream_status() -> dict:
            try:
                return json.loads((data / "status.json").read_text())["streams"]["binance"]
            except (OSError, ValueError, KeyError):
                return {}

        def minutes_later(n: int) -> None:
            until = clock() + n * MINUTE_MS
            assert wait_for(lambda: clock() >= until, 30)

        assert wait_for(lambda: stream_status().get("state") == "up", 30)
        minutes_later(1)
        polled = rest.count("/klines")
        minutes_later(2)
        clean = rest.count("/klines") - polled  # candles over REST while the stream is healthy: none
        for fault in ("duplicate", "out_of_order", "malformed", "forming", "early_close", "skip"):
            getattr(stream, fault)(2)
            assert wait_for(lambda f=fault: stream.pending(f) == 0, 30), fault
            minutes_later(1)
        stream.disconnect()
        assert wait_for(lambda: stream_status().get("disconnects", 0) >= 1, 30)
        assert wait_for(lambda: stream_status().get("state") == "up", 30)
        stream.stall(clock() + 3 * MINUTE_MS)
        assert wait_for(lambda: stream_status().get("stalls", 0) >= 1, 30)
        assert wait_for(lambda: stream_status().get("state") == "up" and clock() > stream._stall_until, 30)
        minutes_later(2)
        status = json.loads((data / "status.json").read_text())
        code, out, err = stop(proc)
    assert code == 0, err
    counts = status["streams"]["binance"]
    assert counts["candles"] > 10 and counts["duplicates"] >= 1 and counts["malformed"] >= 4
    assert counts["disconnects"] >= 2 and counts["stalls"] >= 1
    assert clean == 0
    assert rest.count("/klines") > polled  # skipped, held-back and stalled minutes: backfilled over REST
    lags = [p["decision_lag_ms"] for p in status["pairs"]]
    assert all(lag is not None for lag in lags)
    logs = events(out)
    assert len([e for e in logs if e["event"].startswith("candle stream down")]) == 2  # the disconnect, the stall
    # Every minute, per symbol, decided once, none skipped, on the server's candles.
    asked: dict[str, list[tuple[int, float]]] = {}
    for line in (cwd / "minutes.txt").read_text().splitlines():
        symbol, minute, price = line.split()
        asked.setdefault(symbol, []).append((int(minute), float(price)))
    for symbol in ("BTC/USDT", "ETH/USDT"):
        minutes = [m for m, _ in asked[symbol]]
        assert minutes == list(range(minutes[0], minutes[-1] + MINUTE_MS, MINUTE_MS)), symbol
        assert len(minutes) >= 12
        for minute, price in asked[symbol]:
            expected = market_of(rest.sim.fetch_sync(symbol.replace("/", ""), minute - 5 * MINUTE_MS, minute)).price
            assert price == expected, (symbol, minute)
    checked = check_data_dir(data, rest.sim)
    assert checked.get("closes verified", 0) >= 8


def test_a_stream_whose_exchange_was_unreachable_at_start_opens_once_its_markets_load(tmp_path):
    cwd = workdir(tmp_path)
    clock = follow_daemon_clock(cwd)
    data = cwd / "dump-demo"

    def stream_state() -> str | None:
        try:
            return json.loads((data / "status.json").read_text())["streams"]["binance"]["state"]
        except (OSError, ValueError, KeyError):
            return None

    with StreamServer(clock=clock) as stream:
        with ExchangeServer(clock=clock) as rest:  # seed 42: the stream's candles
            port = rest.port
            cfg = exchange_config(cwd, rest, candles="stream", stream_base=stream.url)
        down = CutConnections(port)  # the exchange's REST API unreachable: no markets at start
        try:
            proc = start(cwd, "run", *SYMBOLS, "--strategy", "quick-long",
                         "--exchange", "binance", "--config", cfg, "--speed", "120")
            assert wait_for(lambda: down.attempts >= 2, 30), "the daemon never reached the exchange"
            assert wait_running(data, proc)
            assert stream_state() is None  # polled meanwhile (and failing: the exchange is down)
        finally:
            down.close()
        with ExchangeServer(clock=clock, port=port):
            assert wait_for(lambda: stream_state() == "up", 30), "the stream never opened"
            code, out, err = stop(proc)
    assert code == 0, err
    logs = [e["event"] for e in events(out)]
    assert logs.count("candle stream: markets not loaded; candles are polled over REST until they are") == 1
    assert "candle stream opened: markets loaded" in logs
