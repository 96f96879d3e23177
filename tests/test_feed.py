"""The shared candle feed: the same candles as the source, each fetched once, validated as before."""

import asyncio
import random

import pytest

from livetrader.core.price import MINUTE_MS, Candle, CandleError
from livetrader.market.feed import MAX_HELD_MINUTES, CandleFeed
from livetrader.market.sim import SimSource

T0 = 1_704_067_200_000


class Counting:
    """A real sim source that counts the candles it is asked for and can corrupt one minute."""

    name = "sim"

    def __init__(self, delay: float = 0.0) -> None:
        self.sim = SimSource()
        self.requests: list[tuple[str, int, int]] = []
        self.bad: dict[int, str] = {}
        self.delay = delay

    def resolve_symbol(self, symbol: str) -> str:
        return self.sim.resolve_symbol(symbol)

    def bounds(self, symbol: str) -> None:
        return None

    async def fetch(self, symbol: str, start: int, end: int) -> list[Candle]:
        self.requests.append((symbol, start, end))
        if self.delay:
            await asyncio.sleep(self.delay)
        candles = self.sim.fetch_sync(symbol, start, end)
        out = []
        for c in candles:
            if self.bad.get(c.timestamp) == "spike":
                c = c._replace(high=c.high * 1000, close=c.close * 1000, open=c.open * 1000)
            if self.bad.get(c.timestamp) != "missing":
                out.append(c)
        return out

    async def close(self) -> None:
        pass

    @property
    def candles_fetched(self) -> int:
        return sum((end - start) // MINUTE_MS for _, start, end in self.requests)


def test_the_feed_answers_exactly_what_the_source_holds_for_any_sequence_of_requests():
    source = Counting()
    feed = CandleFeed(source)
    rng = random.Random(7)

    async def main():
        now = T0
        for _ in range(400):
            now += MINUTE_MS * rng.choice((0, 1, 1, 1, 2, 17))
            lookback = rng.choice((1, 5, 5, 35, 60, 300))
            start = now - lookback * MINUTE_MS
            symbol = rng.choice(("BTCUSDT", "ETHUSDT"))
            got = await feed.fetch(symbol, start, now)
            assert got == source.sim.fetch_sync(symbol, start, now)

    asyncio.run(main())


def test_pairs_on_one_symbol_share_the_fetch_of_each_new_minute():
    source = Counting()
    feed = CandleFeed(source)

    async def main():
        now = T0
        for _ in range(120):
            now += MINUTE_MS
            for lookback in (5, 5, 35, 60):  # three pairs pricing, one strategy looking back an hour
                await feed.fetch("BTCUSDT", now - lookback * MINUTE_MS, now)

    asyncio.run(main())
    # The first minute grows what it holds (5, then 35, then 60 minutes); after that each new
    # minute is fetched once, not once per pair.
    assert source.candles_fetched == 5 + 35 + 60 + 119
    assert feed.served >= 3 * 120 - 3


def test_a_spike_arriving_in_a_new_minute_is_refused_and_never_held():
    source = Counting()
    feed = CandleFeed(source)
    spike = T0 + 10 * MINUTE_MS
    source.bad[spike] = "spike"

    async def main():
        await feed.fetch("BTCUSDT", T0, T0 + 10 * MINUTE_MS)  # held: the ten minutes before the spike
        with pytest.raises(CandleError, match="spike"):
            await feed.fetch("BTCUSDT", spike - 4 * MINUTE_MS, spike + MINUTE_MS)
        with pytest.raises(CandleError, match="spike"):  # asked again: fetched again, refused again
            await feed.fetch("BTCUSDT", spike - 3 * MINUTE_MS, spike + 2 * MINUTE_MS)
        # Once the spike is out of the window, prices come back.
        after = spike + MINUTE_MS
        return await feed.fetch("BTCUSDT", after, after + 5 * MINUTE_MS)

    got = asyncio.run(main())
    assert got == source.sim.fetch_sync("BTCUSDT", spike + MINUTE_MS, spike + 6 * MINUTE_MS)


def test_a_missing_minute_is_an_error_naming_the_range_not_a_shorter_answer():
    source = Counting()
    feed = CandleFeed(source)
    source.bad[T0 + 7 * MINUTE_MS] = "missing"

    async def main():
        await feed.fetch("BTCUSDT", T0, T0 + 5 * MINUTE_MS)
        with pytest.raises(CandleError, match="missing|expected"):
            await feed.fetch("BTCUSDT", T0 + 3 * MINUTE_MS, T0 + 8 * MINUTE_MS)

    asyncio.run(main())


def test_concurrent_askers_of_one_range_share_one_request():
    source = Counting(delay=0.05)
    feed = CandleFeed(source)

    async def main():
        return await asyncio.gather(*(feed.fetch("BTCUSDT", T0, T0 + 5 * MINUTE_MS) for _ in range(20)))

    results = asyncio.run(main())
    assert len(source.requests) == 1
    assert all(r == results[0] for r in results) and len(results[0]) == 5


def test_a_failed_shared_fetch_fails_every_asker_and_the_next_ask_retries():
    class Flaky(Counting):
        fail = True

        async def fetch(self, symbol, start, end):
            self.requests.append((symbol, start, end))
            await asyncio.sleep(0.02)
            if self.fail:
                raise ConnectionError("exchange down")
            return self.sim.fetch_sync(symbol, start, end)

    source = Flaky()
    feed = CandleFeed(source)

    async def main():
        outcomes = await asyncio.gather(*(feed.fetch("BTCUSDT", T0, T0 + 5 * MINUTE_MS) for _ in range(3)),
                                        return_exceptions=True)
        source.fail = False
        return outcomes, await feed.fetch("BTCUSDT", T0, T0 + 5 * MINUTE_MS)

    outcomes, later = asyncio.run(main())
    assert all(isinstance(o, ConnectionError) for o in outcomes)
    assert len(later) == 5 and len(source.requests) == 2


def test_what_the_feed_holds_per_symbol_is_bounded():
    source = Counting()
    feed = CandleFeed(source)

    async def main():
        now = T0
        await feed.fetch("BTCUSDT", now - 1000 * MINUTE_MS, now)  # a long look back once
        for _ in range(2000):
            now += MINUTE_MS
            await feed.fetch("BTCUSDT", now - 5 * MINUTE_MS, now)

    asyncio.run(main())
    assert len(feed._held["BTCUSDT"].candles) <= MAX_HELD_MINUTES


def test_what_the_feed_holds_grows_to_the_longest_range_asked_and_no_further():
    source = Counting()
    feed = CandleFeed(source)

    async def main():
        now = T0
        for minute in range(600):
            now += MINUTE_MS
            await feed.fetch("BTCUSDT", now - 5 * MINUTE_MS, now)
            if minute % 15 == 0:
                await feed.fetch("BTCUSDT", now - 60 * MINUTE_MS, now)  # an hourly look back now and then
        return now

    now = asyncio.run(main())
    held = feed._held["BTCUSDT"].candles
    assert len(held) == 60 and held[-1].timestamp == now - MINUTE_MS
