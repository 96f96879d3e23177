"""The embedded simulated market: deterministic, continuous, sane and lively enough to trade."""

from __future__ import annotations

import asyncio
import random
import statistics
import time

import pytest

from livetrader.core.price import MINUTE_MS, Candle, validate_candles
from livetrader.errors import UnknownSymbolError, UsageError
from livetrader.market.sim import DEFAULT_SYMBOLS, SimSource

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
DAY = 1440 * MINUTE_MS


def _returns(candles: list[Candle]) -> list[float]:
    return [abs(c.close / c.open - 1.0) for c in candles]


def _first_exit(candles: list[Candle], i: int, side: int, tp: float, sl: float, lifetime: int) -> str | None:
    """Which of take-profit/stop-loss a market entry at candle ``i``'s close meets first, if any."""
    entry = candles[i].close
    for c in candles[i + 1 : i + 1 + lifetime]:
        if side > 0:
            if c.low <= entry * (1 - sl):  # stop-loss first when both fall in one candle: pessimistic
                return "sl"
            if c.high >= entry * (1 + tp):
                return "tp"
        else:
            if c.high >= entry * (1 + sl):
                return "sl"
            if c.low <= entry * (1 - tp):
                return "tp"
    return None


# -- determinism ------------------------------------------------------------------------------


def test_same_range_twice_is_identical_and_a_new_source_agrees() -> None:
    a = SimSource().fetch_sync("BTCUSDT", T0, T0 + DAY)
    assert a == SimSource().fetch_sync("BTCUSDT", T0, T0 + DAY)
    assert a == SimSource(seed=42).fetch_sync("BTCUSDT", T0, T0 + DAY)
    assert len(a) == 1440


def test_subranges_in_any_order_match_the_bulk_range() -> None:
    sim = SimSource()
    bulk = sim.fetch_sync("ETHUSDT", T0, T0 + 3 * DAY)
    # Cut points that cross the internal block boundaries (days, knots) at odd offsets.
    cuts = sorted({0, len(bulk), *random.Random(1).sample(range(1, len(bulk)), 25)})
    pieces = list(zip(cuts, cuts[1:], strict=False))
    random.Random(2).shuffle(pieces)
    for lo, hi in pieces:
        assert sim.fetch_sync("ETHUSDT", T0 + lo * MINUTE_MS, T0 + hi * MINUTE_MS) == bulk[lo:hi]
    for i in random.Random(3).sample(range(len(bulk)), 40):
        assert sim.fetch_sync("ETHUSDT", T0 + i * MINUTE_MS, T0 + (i + 1) * MINUTE_MS) == [bulk[i]]


def test_far_apart_ranges_do_not_depend_on_what_was_generated_before() -> None:
    far = T0 + 400 * DAY
    first = SimSource().fetch_sync("SOLUSDT", far, far + 90 * MINUTE_MS)
    other = SimSource()
    other.fetch_sync("SOLUSDT", T0, T0 + 2 * DAY)  # warm caches with unrelated minutes
    assert other.fetch_sync("SOLUSDT", far, far + 90 * MINUTE_MS) == first


def test_seed_and_symbol_change_the_market() -> None:
    base = SimSource(seed=1).fetch_sync("BTCUSDT", T0, T0 + 60 * MINUTE_MS)
    assert SimSource(seed=2).fetch_sync("BTCUSDT", T0, T0 + 60 * MINUTE_MS) != base
    same_base = SimSource(seed=1, symbols={"AAAUSDT": 50_000.0, "BTCUSDT": 50_000.0})
    a = [c.close for c in same_base.fetch_sync("AAAUSDT", T0, T0 + 60 * MINUTE_MS)]
    assert a != [c.close for c in base]


def test_async_fetch_equals_fetch_sync_and_close_is_harmless() -> None:
    sim = SimSource()

    async def run() -> list[Candle]:
        candles = await sim.fetch("BTC/USDT", T0, T0 + 10 * MINUTE_MS)
        await sim.close()
        return candles

    assert asyncio.run(run()) == sim.fetch_sync("BTCUSDT", T0, T0 + 10 * MINUTE_MS)


# -- shape of the candles ---------------------------------------------------------------------


def test_open_equals_previous_close_across_a_long_range() -> None:
    candles = SimSource().fetch_sync("DOGEUSDT", T0 - 3 * DAY, T0 + 4 * DAY)
    assert all(b.open == a.close for a, b in zip(candles, candles[1:], strict=False))
    # Also across separately generated ranges.
    left = SimSource().fetch_sync("DOGEUSDT", T0 - 7 * MINUTE_MS, T0)
    right = SimSource().fetch_sync("DOGEUSDT", T0, T0 + 7 * MINUTE_MS)
    assert right[0].open == left[-1].close


@pytest.mark.parametrize("symbol", sorted(DEFAULT_SYMBOLS))
def test_ohlc_sane_over_sixty_days(symbol: str) -> None:
    start, end = T0, T0 + 60 * DAY
    candles = SimSource().fetch_sync(symbol, start, end)
    validate_candles(candles, start, end)  # finite, positive, ordered, aligned, no gaps
    for c in candles:
        assert c.high >= max(c.open, c.close)
        assert c.low <= min(c.open, c.close)
        assert c.low > 0 and c.volume > 0
    assert len({round(c.volume, 6) for c in candles}) > len(candles) * 0.99  # volume varies
    assert sum(c.high > max(c.open, c.close) for c in candles) > len(candles) * 0.9  # real wicks
    base = DEFAULT_SYMBOLS[symbol]
    assert all(base / 4 < c.close < base * 4 for c in candles)


def test_tiny_prices_keep_their_precision() -> None:
    candles = SimSource().fetch_sync("PEPEUSDT", T0, T0 + DAY)
    assert 0.000003 < min(c.low for c in candles) < max(c.high for c in candles) < 0.00005
    assert len({c.close for c in candles}) == len(candles)


def test_range_is_aligned_and_end_exclusive() -> None:
    sim = SimSource()
    candles = sim.fetch_sync("BTCUSDT", T0 + 1, T0 + 3 * MINUTE_MS + 1)
    assert [c.timestamp for c in candles] == [T0 + MINUTE_MS, T0 + 2 * MINUTE_MS, T0 + 3 * MINUTE_MS]
    assert sim.fetch_sync("BTCUSDT", T0, T0 + 3 * MINUTE_MS)[-1].timestamp == T0 + 2 * MINUTE_MS
    assert sim.fetch_sync("BTCUSDT", T0, T0) == []
    assert sim.fetch_sync("BTCUSDT", T0 + MINUTE_MS, T0) == []


def test_prices_stay_near_the_base_for_years_and_before_1970() -> None:
    sim = SimSource()
    samples = [sim.fetch_sync("BTCUSDT", t, t + MINUTE_MS)[0] for t in range(-DAY * 30, T0 + 3650 * DAY, 20 * DAY)]
    assert all(12_500 < c.close < 200_000 for c in samples)
    assert max(c.close for c in samples) / min(c.close for c in samples) > 1.3  # it does trend


# -- realism ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("symbol", "seed"), [("BTCUSDT", 42), ("ETHUSDT", 7), ("PEPEUSDT", 1)])
def test_moves_are_realistic_and_trades_close_within_a_day(symbol: str, seed: int) -> None:
    candles = SimSource(seed=seed).fetch_sync(symbol, T0, T0 + 31 * DAY)
    one_minute = statistics.median(_returns(candles))
    assert 0.0003 < one_minute < 0.0012  # a typical 1-minute move is a few hundredths of a percent
    days = [candles[i : i + 1440] for i in range(0, 30 * 1440, 1440)]
    ranges = [max(c.high for c in d) / min(c.low for c in d) - 1 for d in days]
    assert 0.015 < statistics.median(ranges) < 0.08  # daily ranges of a few percent
    changes = [d[-1].close / d[0].open - 1 for d in days]
    assert sum(x > 0 for x in changes) >= 5 and sum(x < 0 for x in changes) >= 5  # both ways
    # A 2 % take-profit / 1 % stop-loss market entry every hour, long and short, 1440-minute life.
    exits = [_first_exit(candles, i, side, 0.02, 0.01, 1440) for side in (1, -1) for i in range(0, 30 * 1440, 60)]
    assert sum(e is not None for e in exits) / len(exits) > 0.7
    assert exits.count("tp") > len(exits) * 0.1 and exits.count("sl") > len(exits) * 0.3


def test_volatility_clusters() -> None:
    candles = SimSource().fetch_sync("BTCUSDT", T0, T0 + 60 * DAY)
    hourly = [statistics.mean(_returns(candles[i : i + 60])) for i in range(0, len(candles), 60)]
    hourly.sort()
    # Calm and agitated hours differ by far more than sampling noise of i.i.d. moves would give.
    assert hourly[int(len(hourly) * 0.9)] / hourly[int(len(hourly) * 0.1)] > 2.0


def test_generation_is_fast() -> None:
    sim = SimSource(seed=99)  # a seed no other test uses, so nothing is cached
    started = time.perf_counter()
    candles = sim.fetch_sync("BTCUSDT", T0, T0 + 200_000 * MINUTE_MS)
    elapsed = time.perf_counter() - started
    assert len(candles) == 200_000
    assert elapsed < 3.0, f"{elapsed:.2f} s for 200k candles"  # ~0.3 s here; generous for slow CI


# -- symbols ----------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["BTCUSDT", "BTC/USDT", "btcusdt", " btc/usdt "])
def test_resolve_symbol_accepts_common_spellings(spelling: str) -> None:
    assert SimSource().resolve_symbol(spelling) == "BTCUSDT"


def test_unknown_symbol_names_it_suggests_close_matches_and_lists_known() -> None:
    with pytest.raises(UnknownSymbolError) as info:
        SimSource().resolve_symbol("BTCUSD")
    message = str(info.value)
    assert "'BTCUSD'" in message and "did you mean BTCUSDT" in message
    for known in DEFAULT_SYMBOLS:
        assert known in message
    assert isinstance(info.value, UsageError)
    with pytest.raises(UnknownSymbolError, match="known symbols"):
        SimSource().fetch_sync("NOPE", T0, T0 + MINUTE_MS)
    with pytest.raises(UnknownSymbolError):
        asyncio.run(SimSource().fetch("NOPE", T0, T0 + MINUTE_MS))


def test_custom_symbols_and_bounds() -> None:
    sim = SimSource(seed=5, symbols={"abc/usdt": 2.0})
    assert sim.resolve_symbol("ABCUSDT") == "ABCUSDT"
    assert sim.bounds("ABCUSDT") is None
    closes = [c.close for c in sim.fetch_sync("abcusdt", T0, T0 + DAY)]
    assert 1.0 < min(closes) <= max(closes) < 4.0
    with pytest.raises(UnknownSymbolError):
        sim.resolve_symbol("BTCUSDT")  # only the given symbols exist
    with pytest.raises(UsageError, match="base price"):
        SimSource(symbols={"BADUSDT": 0.0})


def test_default_symbols_include_a_tiny_price() -> None:
    sim = SimSource()
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT", "PEPEUSDT"):
        assert sim.resolve_symbol(symbol) == symbol
    assert min(DEFAULT_SYMBOLS.values()) < 0.0001
