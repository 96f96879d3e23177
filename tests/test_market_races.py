"""The market-data path under races and unusual input, found by a review: a shared feed's window
while askers and the stream append, derivatives and the spot stream, the stream's reconnects and
errors, and candle files in microseconds. Each test failed before its fix."""

import asyncio

from test_feed import T0, Counting

from livetrader.core.price import MINUTE_MS, VWAP_CANDLES
from livetrader.market.feed import CandleFeed

M = MINUTE_MS


def test_a_catching_up_asker_sharing_a_new_minute_with_a_pricing_asker_gets_its_full_range():
    """Two pairs on one symbol at boundary T+1: one prices (5 candles), one catches up a missed
    minute (6 candles, starting exactly at what the feed holds first). Both extend the held
    candles by the same new minute (one shared fetch); the pricing one appends first and trims
    the oldest candle, and the catching-up one slices from before ``held.first``."""
    source = Counting(delay=0.01)
    feed = CandleFeed(source)
    t = T0 + 10 * M

    async def main():
        await feed.fetch("BTCUSDT", t - VWAP_CANDLES * M, t)  # held: [t-5, t), keep 5
        pricing, catching_up = await asyncio.gather(
            feed.fetch("BTCUSDT", t + M - VWAP_CANDLES * M, t + M),
            feed.fetch("BTCUSDT", t - VWAP_CANDLES * M, t + M),
        )
        return pricing, catching_up

    pricing, catching_up = asyncio.run(main())
    assert pricing == source.sim.fetch_sync("BTCUSDT", t - 4 * M, t + M)
    assert catching_up == source.sim.fetch_sync("BTCUSDT", t - 5 * M, t + M)


def test_a_streamed_candle_arriving_during_a_catch_up_backfill_does_not_shorten_the_answer():
    """The same with the stream: a pair catching up one missed minute backfills the new minute over
    REST (the stream's candle was late, past the grace); the stream's candle for that minute
    arrives while the request is out and is held (trimming the oldest); the answer is sliced
    from before ``held.first``."""
    source = Counting(delay=0.05)
    feed = CandleFeed(source)
    t = T0 + 10 * M
    closed = source.sim.fetch_sync("BTCUSDT", t, t + M)[0]

    async def main():
        await feed.fetch("BTCUSDT", t - VWAP_CANDLES * M, t)  # held: [t-5, t), keep 5
        asking = asyncio.create_task(feed.fetch("BTCUSDT", t - VWAP_CANDLES * M, t + M))
        await asyncio.sleep(0.01)
        assert feed.push("BTCUSDT", closed) == "held"  # the stream's late candle
        return await asking

    got = asyncio.run(main())
    want = source.sim.fetch_sync("BTCUSDT", t - 5 * M, t + M)
    # What Pair._check_minutes would price the catch-up minute t at: the VWAP of candles[0:5].
    assert got == want


def test_a_derivatives_exchange_does_not_stream_spot_candles_into_its_pairs(monkeypatch):
    """``options = { defaultType = "swap" }`` is the documented way to trade derivatives (README).
    On binance a linear perpetual's market id is the spot one's (``BTCUSDT``); ``stream_root``
    looks only at the ccxt id, so the perpetual pairs are subscribed to the *spot* kline stream
    and every spot candle is pushed into the feed as the perpetual's."""
    from types import SimpleNamespace

    from livetrader.market.ccxt import stream as stream_module
    from livetrader.market.ccxt.source import CcxtSource

    monkeypatch.setattr(stream_module.CandleStream, "start", lambda self: None)  # no network
    source = CcxtSource("binance", {"options": {"defaultType": "swap"}})
    source._markets_holder = SimpleNamespace(markets={
        "BTC/USDT:USDT": {"id": "BTCUSDT", "symbol": "BTC/USDT:USDT", "spot": False, "swap": True},
    })
    feed = CandleFeed(source)
    stream = stream_module.open_stream("binance", feed, ["BTC/USDT:USDT"], lambda s, b: None, lambda: T0, quiet=True)
    assert stream is None or stream.root != "wss://stream.binance.com:9443", (stream.root, stream.ids)


def test_a_spot_and_a_perpetual_pair_sharing_a_market_id_each_get_their_own_candles(monkeypatch):
    """Both kinds loaded (``fetchMarkets`` with spot and linear): BTC/USDT and BTC/USDT:USDT share
    the id BTCUSDT; ``open_stream``'s ``ids[market_id] = symbol`` keeps one, so the spot stream's
    candles go to the perpetual's feed entry and the spot pairs never get theirs."""
    from types import SimpleNamespace

    from livetrader.market.ccxt import stream as stream_module
    from livetrader.market.ccxt.source import CcxtSource

    monkeypatch.setattr(stream_module.CandleStream, "start", lambda self: None)
    source = CcxtSource("binance", {"options": {"fetchMarkets": {"types": ["spot", "linear"]}}})
    source._markets_holder = SimpleNamespace(markets={
        "BTC/USDT": {"id": "BTCUSDT", "symbol": "BTC/USDT", "spot": True},
        "BTC/USDT:USDT": {"id": "BTCUSDT", "symbol": "BTC/USDT:USDT", "spot": False, "swap": True},
    })
    feed = CandleFeed(source)
    stream = stream_module.open_stream("binance", feed, ["BTC/USDT", "BTC/USDT:USDT"], lambda s, b: None,
                                       lambda: T0, quiet=True)
    assert stream is not None
    assert stream.ids.get("BTCUSDT") == "BTC/USDT", stream.ids


def test_a_server_that_accepts_and_closes_at_once_is_retried_with_backoff():
    """A connection the exchange closes cleanly right after the handshake (an exchange refusing
    more streams, a proxy) resets the backoff to its first step every time: the stream
    reconnects at ``backoff_first`` forever instead of backing off (Binance bans an IP above 300
    connection attempts per 5 minutes)."""
    from aiohttp import web

    from livetrader.market.ccxt.stream import CandleStream

    connections = 0

    async def handler(request):
        nonlocal connections
        connections += 1
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str('{"stream":"btcusdt@kline_1m","data":{"e":"kline"}}')  # one frame, then goodbye
        await ws.close()
        return ws

    async def main():
        app = web.Application()
        app.router.add_get("/stream", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        stream = CandleStream("binance", f"ws://127.0.0.1:{port}", {"BTCUSDT": "BTC/USDT"}, lambda s, c: "held",
                              lambda s, b: None, lambda: T0, backoff_first=0.05, backoff_max=5.0)
        stream.start()
        await asyncio.sleep(1.6)
        await stream.close()
        await runner.cleanup()
        return stream

    stream = asyncio.run(main())
    # With backoff (0.05, 0.1, 0.2, 0.4, 0.8 s): about 5-6 connections in 1.6 s. Fails: ~20-30.
    assert connections <= 8, (connections, stream.counts)


def test_an_exception_in_the_stream_task_is_not_the_silent_end_of_the_stream():
    """``CandleStream._run`` catches only _Stalled, aiohttp.ClientError, OSError and TimeoutError.
    Anything else raised while a frame is handled (``on_closed`` runs the metronome's express
    ticks, strategy callbacks included, in this task) ends the task: no reconnect, nothing
    logged (the task is only awaited by ``close``, which suppresses it), and ``state`` stays
    ``up``, so every pair keeps waiting for a stream that is gone (grace, then REST, forever)."""
    from stream_server import StreamServer
    from test_stream import SYMBOLS, FastClock, RestSource

    from livetrader.market.ccxt.stream import CandleStream

    clock = FastClock()
    calls = 0

    def on_closed(symbol, boundary):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug downstream, once")

    async def main(server):
        feed = CandleFeed(RestSource(clock))
        stream = CandleStream("binance", server.url, dict(SYMBOLS), feed.push, on_closed, clock,
                              stall_seconds=5.0, backoff_first=0.01, backoff_max=0.05)
        stream.start()
        deadline = time.monotonic() + 5
        while not stream.up and time.monotonic() < deadline:  # noqa: ASYNC110 - a property, polled
            await asyncio.sleep(0.005)
        now = clock()
        for symbol in SYMBOLS.values():
            await feed.fetch(symbol, now - now % M - 5 * M, now - now % M)
        await asyncio.sleep(1.5)  # 15 minutes of this clock
        state, alive, candles, held_end = (stream.state, not stream._tasks[0].done(), stream.counts["candles"],
                                           feed.held_end("BTC/USDT"))
        await stream.close()
        return state, alive, candles, held_end, clock()

    import time

    with StreamServer(clock=clock) as server:
        state, alive, candles, held_end, now = asyncio.run(main(server))
    assert alive and state == "up" and candles > 5  # said, reconnected, and the candles came on


def test_a_candle_file_in_microseconds_is_refused_not_read_as_milliseconds(tmp_path):
    """Binance's public spot kline files (data.binance.vision) are stamped in microseconds since
    2025. A microsecond stamp of a whole minute is a multiple of 60,000, so ``_timestamp``'s
    minute check (the one with the "looks like seconds" hint) passes it as milliseconds: the
    minutes become 1,000 minutes apart (year 56,971), and each gap is filled with 999 flat
    zero-volume candles. Three rows load as 2,001 candles, without a word."""
    import pytest

    from livetrader.errors import CandleSourceError
    from livetrader.market.files import FileSource

    path = tmp_path / "BTCUSDT-1m-2025-01.csv"
    path.write_text("timestamp,open,high,low,close,volume\n"
                    "1735689600000000,100,101,99,100.5,10\n"
                    "1735689660000000,100.5,101,100,100.8,12\n"
                    "1735689720000000,100.8,102,100.5,101,9\n")
    with pytest.raises(CandleSourceError, match="looks like microseconds"):
        FileSource(path)
    json_path = tmp_path / "BTCUSDT-1m-2025-01.json"
    json_path.write_text("[[1735689600000000,100,101,99,100.5,10],[1735689660000000,100.5,101,100,100.8,12]]")
    with pytest.raises(CandleSourceError, match="looks like microseconds"):
        FileSource(json_path)  # 2001 candles, 1998 filled
