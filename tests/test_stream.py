"""The candle stream (market.ccxt.stream) against a real WebSocket server on 127.0.0.1, in process.

Every fault the stream server injects must end with the feed holding exactly the server's
candles, in order, none forming, and the missing ones fetched over REST: never a gap held.
"""

import asyncio
import time

import pytest
from stream_server import MALFORMED_FRAMES, StreamServer, kline_frame

from livetrader.core.price import MINUTE_MS, Candle
from livetrader.live.metronome import Metronome
from livetrader.market.ccxt.settings import parse_settings
from livetrader.market.ccxt.stream import CandleStream, stream_root
from livetrader.market.feed import CandleFeed
from livetrader.market.sim import SimSource

T0 = 1_704_067_200_000
SPEED = 600  # simulated ms per real ms: a minute every 0.1 s
SYMBOLS = {"BTCUSDT": "BTC/USDT", "ETHUSDT": "ETH/USDT"}


class RestSource:
    """The REST side, as the feed sees it: the same sim candles, only closed ones, each fetch counted."""

    name = "binance"

    def __init__(self, clock) -> None:
        self.sim = SimSource()
        self.clock = clock
        self.fetches: list[tuple[str, int, int]] = []

    def resolve_symbol(self, symbol: str) -> str:
        return symbol

    def bounds(self, symbol: str) -> None:
        return None

    async def fetch(self, symbol: str, start: int, end: int) -> list[Candle]:
        self.fetches.append((symbol, start, end))
        now = self.clock()
        return self.sim.fetch_sync(symbol.replace("/", ""), start, min(end, now - now % MINUTE_MS))

    async def close(self) -> None:
        pass


class FastClock:
    """A clock SPEED times faster than the wall clock, from T0 + 30 s."""

    def __init__(self, speed: float = SPEED) -> None:
        self.origin = time.time()
        self.speed = speed

    def __call__(self) -> int:
        return T0 + 30_000 + int((time.time() - self.origin) * 1000 * self.speed)


def held(feed: CandleFeed, symbol: str) -> list[Candle]:
    return list(feed._held[symbol].candles)


async def wait_until(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def streamed(clock: FastClock, server: StreamServer, scenario, stall_seconds: float = 5.0):
    """Run a stream over a feed primed with five minutes per symbol; ``scenario(stream)`` drives the faults."""
    source = RestSource(clock)
    feed = CandleFeed(source)
    closed: list[tuple[str, int]] = []
    stream = CandleStream("binance", server.url, dict(SYMBOLS), feed.push, lambda s, b: closed.append((s, b)), clock,
                          stall_seconds=stall_seconds, backoff_first=0.01, backoff_max=0.05)
    stream.start()
    try:
        await wait_until(lambda: stream.up)
        now = clock()  # the pairs' first ticks, once the stream is up (candles before are not streamed)
        for symbol in SYMBOLS.values():
            await feed.fetch(symbol, now - now % MINUTE_MS - 5 * MINUTE_MS, now - now % MINUTE_MS)
        await scenario(stream, feed, closed)
    finally:
        await stream.close()
    # However it went, a fetch of everything held answers the server's candles, validated.
    for symbol in SYMBOLS.values():
        end = feed.held_end(symbol)
        start = end - 20 * MINUTE_MS
        assert await feed.fetch(symbol, start, end) == server.sim.fetch_sync(symbol.replace("/", ""), start, end)
    return stream, feed, source, closed


def test_closed_candles_are_held_in_order_and_their_pairs_woken():
    # Slower than the fault tests: a boundary passing while the feed is primed would make a gap.
    clock = FastClock(speed=100)  # a minute is 0.6 s: room for priming on a loaded machine

    async def scenario(stream, feed, closed):
        first = feed.held_end("BTC/USDT")
        await wait_until(lambda: feed.held_end("BTC/USDT") >= first + 5 * MINUTE_MS)

    with StreamServer(clock=clock) as server:
        stream, feed, source, closed = asyncio.run(streamed(clock, server, scenario))
    assert len(source.fetches) == 2 + 2  # the priming fetches, and the final check's (its start is older)
    assert stream.counts["candles"] >= 10 and stream.counts["forming"] > 0
    assert stream.counts["out_of_sequence"] == stream.counts["malformed"] == stream.counts["disconnects"] == 0
    btc = [b for s, b in closed if s == "BTC/USDT"]
    assert btc == sorted(btc) and len(set(btc)) == len(btc)  # each boundary once, in order
    assert all(b % MINUTE_MS == 0 for b in btc)


@pytest.mark.parametrize("fault", ["duplicate", "out_of_order", "skip", "forming", "early_close", "malformed"])
def test_every_fault_ends_with_the_right_candles_held(fault):
    clock = FastClock()

    async def scenario(stream, feed, closed):
        getattr(server, fault)(4)
        await wait_until(lambda: server.pending(fault) == 0)
        target = clock() - clock() % MINUTE_MS + 3 * MINUTE_MS
        await wait_until(lambda: all((feed.held_end(s) or 0) >= target for s in SYMBOLS.values())
                         or stream.counts["out_of_sequence"] > 0)
        if fault in ("skip", "out_of_order"):
            # The pairs' ticks: each fetches the minutes it lacks over REST, then the stream goes on.
            for symbol in SYMBOLS.values():
                now = clock()
                await feed.fetch(symbol, now - now % MINUTE_MS - 5 * MINUTE_MS, now - now % MINUTE_MS)
            mark = clock() - clock() % MINUTE_MS + 3 * MINUTE_MS
            await wait_until(lambda: all((feed.held_end(s) or 0) >= mark for s in SYMBOLS.values()))

    with StreamServer(clock=clock) as server:
        stream, feed, source, closed = asyncio.run(streamed(clock, server, scenario))
    counts = stream.counts
    if fault == "duplicate":
        assert counts["duplicates"] >= 4
    elif fault == "skip":
        assert counts["out_of_sequence"] >= 2 and len(source.fetches) > 4  # backfilled over REST
    elif fault == "out_of_order":
        assert counts["out_of_sequence"] >= 2
    elif fault == "forming":
        assert counts["forming"] >= 4 and counts["rejected"] == 0  # the wild forming candles were never held
    elif fault == "early_close":
        assert counts["malformed"] >= 4  # a "closed" candle of a minute not over is refused
    elif fault == "malformed":
        assert counts["malformed"] >= 4
    assert counts["disconnects"] == 0


def test_a_disconnect_and_a_stall_reconnect_and_the_gap_is_backfilled():
    clock = FastClock()

    async def scenario(stream, feed, closed):
        server.disconnect()
        await wait_until(lambda: stream.counts["disconnects"] == 1)
        await wait_until(lambda: stream.up)
        server.stall(clock() + 4 * MINUTE_MS)  # 0.4 s of silence on an open connection
        await wait_until(lambda: stream.counts["stalls"] >= 1)
        await wait_until(lambda: stream.up and stream.counts["out_of_sequence"] > 0, 5)
        for symbol in SYMBOLS.values():  # the ticks after the gap: REST backfills it
            now = clock()
            await feed.fetch(symbol, now - now % MINUTE_MS - 5 * MINUTE_MS, now - now % MINUTE_MS)
        mark = clock() - clock() % MINUTE_MS + 2 * MINUTE_MS
        await wait_until(lambda: all((feed.held_end(s) or 0) >= mark for s in SYMBOLS.values()))

    with StreamServer(clock=clock) as server:
        stream, feed, source, closed = asyncio.run(streamed(clock, server, scenario, stall_seconds=0.2))
    assert stream.counts["disconnects"] >= 2 and stream.counts["stalls"] >= 1
    assert server.connections >= 3


def test_a_stream_that_cannot_connect_says_so_once_and_counts_the_retries(logs):
    async def scenario() -> CandleStream:
        stream = CandleStream("binance", "ws://127.0.0.1:9", dict(SYMBOLS), lambda s, c: "held", lambda s, b: None,
                              lambda: T0, backoff_first=0.01, backoff_max=0.02)
        stream.start()
        await wait_until(lambda: stream.counts["connect_failures"] >= 3)
        await stream.close()
        return stream

    stream = asyncio.run(scenario())
    assert stream.state == "closed" and not stream.up
    down = [e for e in logs if "candle stream down" in e.get("event", "")]
    assert len(down) == 1


def test_frames_are_judged_without_a_connection():
    now = T0 + 10 * MINUTE_MS + 500
    sim = SimSource()
    feed = CandleFeed(RestSource(lambda: now))
    asyncio.run(feed.fetch("BTC/USDT", T0, T0 + 9 * MINUTE_MS))
    woken: list[tuple[str, int]] = []
    stream = CandleStream("binance", "ws://unused", {"BTCUSDT": "BTC/USDT"}, feed.push,
                          lambda s, b: woken.append((s, b)), lambda: now)

    def frame(minute: int, closed: bool = True, candle: Candle | None = None) -> bytes:
        at = T0 + minute * MINUTE_MS
        return kline_frame("BTCUSDT", candle or sim.fetch_sync("BTCUSDT", at, at + MINUTE_MS)[0], closed, now)

    assert stream.receive(frame(9, closed=False)) == "forming"
    assert stream.receive(frame(10)) == "malformed"  # minute 10 has not ended at ``now``
    assert stream.receive(frame(8)) == "duplicate"
    spike = sim.fetch_sync("BTCUSDT", T0 + 9 * MINUTE_MS, T0 + 10 * MINUTE_MS)[0]
    spike = spike._replace(open=spike.open * 1000, high=spike.high * 1000, low=spike.low * 1000,
                           close=spike.close * 1000)
    assert stream.receive(frame(9, candle=spike)) == "rejected"  # validated as a fetched candle is
    assert feed.held_end("BTC/USDT") == T0 + 9 * MINUTE_MS
    assert stream.receive(frame(9)) == "held"
    assert woken == [("BTC/USDT", T0 + 10 * MINUTE_MS)]
    for bad in MALFORMED_FRAMES:
        assert stream.receive(bad) == "malformed"
    assert stream.receive(kline_frame("DOGEUSDT", spike, True, now)) == "malformed"  # not subscribed


def test_ahead_candles_wait_for_the_missing_one():
    now = T0 + 20 * MINUTE_MS
    sim = SimSource()
    feed = CandleFeed(RestSource(lambda: now))
    asyncio.run(feed.fetch("BTC/USDT", T0, T0 + 10 * MINUTE_MS))
    woken: list[int] = []
    stream = CandleStream("binance", "ws://unused", {"BTCUSDT": "BTC/USDT"}, feed.push,
                          lambda s, b: woken.append(b), lambda: now)

    def frame(minute: int) -> bytes:
        at = T0 + minute * MINUTE_MS
        return kline_frame("BTCUSDT", sim.fetch_sync("BTCUSDT", at, at + MINUTE_MS)[0], True, now)

    assert stream.receive(frame(12)) == "ahead"
    assert stream.receive(frame(11)) == "ahead"
    assert stream.receive(frame(10)) == "held"  # and 11, 12 after it
    assert feed.held_end("BTC/USDT") == T0 + 13 * MINUTE_MS
    assert woken[-1] == T0 + 13 * MINUTE_MS
    assert held(feed, "BTC/USDT")[-3:] == sim.fetch_sync("BTCUSDT", T0 + 10 * MINUTE_MS, T0 + 13 * MINUTE_MS)


def test_which_exchanges_stream():
    local = {"urls": {"api_base": "http://127.0.0.1:1"}}
    assert stream_root(parse_settings("binance", {})) == "wss://stream.binance.com:9443"
    assert stream_root(parse_settings("binance", {"sandbox": True})) == "wss://stream.testnet.binance.vision"
    assert stream_root(parse_settings("binance", {"candles": "poll"})) is None
    assert stream_root(parse_settings("kraken", {})) is None
    assert stream_root(parse_settings("binance", local)) is None  # a moved REST server and no stream named
    assert stream_root(parse_settings("binance", {"urls": {**local["urls"], "stream_base": "ws://127.0.0.1:2/"}})) \
        == "ws://127.0.0.1:2"


def test_keyed_loops_wake_on_their_candle_not_before_the_boundary():
    async def scenario() -> list[str]:
        metronome = Metronome()
        metronome.grace = 0.2
        order: list[str] = []
        a = metronome.wait(MINUTE_MS, 0.05, key="A")
        b = metronome.wait(MINUTE_MS, 0.05, key="B")
        plain = metronome.wait(MINUTE_MS, 0.05)
        for name, future in (("A", a), ("B", b), ("plain", plain)):
            future.add_done_callback(lambda f, n=name: order.append(n))
        metronome.fire_key(MINUTE_MS, "B")  # before the boundary: held until it
        await asyncio.sleep(0.01)
        assert order == []
        await asyncio.sleep(0.06)
        assert sorted(order) == ["B", "plain"]
        assert metronome.sweeping  # A is still to come
        await asyncio.sleep(0.25)  # A's candle never came: woken at the boundary plus the grace
        for _ in range(3):
            metronome.ticked(MINUTE_MS)
        assert not metronome.sweeping and metronome.last.pairs == 3
        return order

    order = asyncio.run(scenario())
    assert sorted(order[:2]) == ["B", "plain"] and order[2] == "A"


def test_status_shows_each_streams_state_and_counters():
    from livetrader.cli.status import stream_lines

    stream = CandleStream("binance", "ws://unused", dict(SYMBOLS), lambda s, c: "held", lambda s, b: None, lambda: T0)
    stream.counts["disconnects"] = 2
    (line,) = stream_lines({"binance": stream.status()})
    assert line.startswith("binance candle stream: connecting (0/1 connections, 2 symbols;") and "2 disconnects" in line
