"""Supervision, cadence, timeouts and catch-up of the live engine, in process, on a fast clock."""

import asyncio
import time
from dataclasses import replace

from daemon import FIXTURE_STRATEGIES

from livetrader import Signal, Strategy
from livetrader.config import Config, EngineConfig
from livetrader.core.price import MINUTE_MS
from livetrader.events import EventBus
from livetrader.live.clock import SimClock
from livetrader.live.engine import Engine, Supervision
from livetrader.market.sim import SimSource
from livetrader.strategy.base import load_strategies

FAST_RESTARTS = Supervision(first_backoff=0.01, max_crashes=3)


def engine(data_dir, speed=6000, timeout=180.0, supervision=FAST_RESTARTS):
    wall = int(time.time() * 1000)
    config = replace(Config(), engine=EngineConfig(strategy_timeout_seconds=timeout))
    return Engine(config, load_strategies(FIXTURE_STRATEGIES), clock=SimClock(wall, wall - wall % MINUTE_MS, speed),
                  bus=EventBus(), supervision=supervision, data_dir=data_dir)


def test_a_loop_that_keeps_crashing_is_parked_and_the_others_carry_on(tmp_path):
    e = engine(tmp_path)
    bad = e.add_pair("BTCUSDT", "always-long")
    good = e.add_pair("ETHUSDT", "always-long")
    errors = []
    e.bus.listen("error", errors.append)

    async def crash(now):
        raise RuntimeError("bug in the engine")

    bad.tick = crash

    async def main():
        task = asyncio.create_task(e.run())
        await asyncio.sleep(0.6)
        e.stop()
        await task
        await e.bus.drain(1)

    asyncio.run(main())
    assert bad.state == "parked"
    kinds = [x.kind for x in errors if x.symbol == "BTCUSDT"]
    assert kinds == ["crash", "crash", "crash", "parked"]
    assert good.ticks > 10 and good.closed_trades >= 1


def test_a_hanging_strategy_times_out_into_an_error_and_the_loop_continues(tmp_path):
    e = engine(tmp_path, speed=600, timeout=0.2)
    pair = e.add_pair("BTCUSDT", "hanging")
    errors = []
    e.bus.listen("error", errors.append)

    async def main():
        task = asyncio.create_task(e.run())
        await asyncio.sleep(1.0)
        e.stop()
        await task
        await e.bus.drain(1)

    asyncio.run(main())
    assert pair.ticks >= 2
    assert errors and all("timed out after 0.2 s" in x.message for x in errors)


def test_slow_ticks_do_not_pile_up_and_report_their_lag(tmp_path):
    class Slow(Strategy):
        name = "slow"
        interval = "1m"

        async def get_signal(self, ctx):
            time.sleep(0.05)  # noqa: ASYNC251 - 5 simulated minutes at speed 6000, blocking on purpose

    e = engine(tmp_path, speed=6000)
    e.registry.strategies["slow"] = type(e.registry.strategies["always-long"])(Slow, FIXTURE_STRATEGIES, 1)
    pair = e.add_pair("BTCUSDT", "slow")

    async def main():
        task = asyncio.create_task(e.run())
        await asyncio.sleep(1.0)
        e.stop()
        await task

    asyncio.run(main())
    # 1 s = 100 simulated minutes; each tick takes 5 of them: about 20 ticks, never 100.
    assert 5 <= pair.ticks <= 30
    assert pair.lag_ms is not None


def test_a_late_tick_checks_every_missed_minute_in_order(tmp_path):
    """Downtime catch-up: the position closes at the minute and price it would have had."""
    e = engine(tmp_path)
    pair = e.add_pair("BTCUSDT", "always-long")
    source = SimSource()
    start = 1_704_067_200_000

    async def main():
        result = await pair.tick(start)
        assert result.action == "opened"
        row = pair.row
        # Jump 45 minutes ahead at once, as if the process had been down.
        return row, await pair.tick(start + 45 * MINUTE_MS)

    row, result = asyncio.run(main())
    # The reference: check every minute with the same core until it closes.
    from livetrader.core.machine import check_open
    from livetrader.core.price import vwap

    expected = None
    for t in range(start + MINUTE_MS, start + 46 * MINUTE_MS, MINUTE_MS):
        candles = source.fetch_sync("BTCUSDT", t - 5 * MINUTE_MS, t)
        tick = check_open(row, t, vwap(candles))
        if tick.action == "closed":
            expected = tick
            break
    assert expected is not None
    assert (result.action, result.at, result.close_reason, result.price_close) == (
        "closed", expected.at, expected.close_reason, expected.price_close)
    assert expected.at < start + 45 * MINUTE_MS or expected.close_reason == "time_expired"


def test_signal_ids_and_whipsaw_guard_in_live(tmp_path):
    class Repeat(Strategy):
        name = "repeat"
        interval = "1m"

        async def get_signal(self, ctx):
            return Signal("long", ctx.price * 1.006, ctx.price * 0.994, minutes=1, id="same-idea")

    e = engine(tmp_path)
    e.registry.strategies["repeat"] = type(e.registry.strategies["always-long"])(Repeat, FIXTURE_STRATEGIES, 1)
    pair = e.add_pair("BTCUSDT", "repeat")
    start = 1_704_067_200_000

    async def main():
        actions = []
        for i in range(6):
            result = await pair.tick(start + i * MINUTE_MS)
            actions.append((result.action, result.reason))
        return actions

    actions = asyncio.run(main())
    assert actions[0][0] == "opened" and actions[1][0] == "closed"
    assert all(a == "idle" and "same id" in r for a, r in actions[2:])


def test_live_throttle_asks_once_per_bucket_and_a_risk_rejection_hands_it_back(tmp_path):
    asked = []

    class Every5(Strategy):
        name = "every5"
        interval = "5m"

        async def get_signal(self, ctx):
            asked.append(ctx.now_ms)
            return Signal("long", ctx.price * 1.05, ctx.price * 0.95, minutes=600)

    e = engine(tmp_path)
    e.registry.strategies["every5"] = type(e.registry.strategies["always-long"])(Every5, FIXTURE_STRATEGIES, 1)
    pair = e.add_pair("BTCUSDT", "every5")
    from livetrader.strategy.risk import RiskProfile, max_positions

    pair.risk = RiskProfile("full", [max_positions(0)])  # rejects everything
    start = 1_704_067_200_000 + 2 * MINUTE_MS  # 00:02, inside the 00:00 bucket

    async def main():
        for i in range(4):
            await pair.tick(start + i * MINUTE_MS)
        pair.risk = None
        for i in range(4, 12):
            await pair.tick(start + i * MINUTE_MS)

    asyncio.run(main())
    # Rejected at 00:02..00:05 (each rejection hands the bucket back), accepted at 00:06.
    assert asked[:5] == [start + i * MINUTE_MS for i in range(5)]
    assert len(asked) == 5 and pair.row is not None and pair.row.scheduled_at == start + 4 * MINUTE_MS


def test_live_strategies_see_only_closed_candles(tmp_path):
    seen = []

    class Peek(Strategy):
        name = "peek"
        interval = "1m"

        async def get_signal(self, ctx):
            seen.append((ctx.now_ms, (await ctx.candles("1m", limit=3))[-1].timestamp,
                         (await ctx.candles("5m", limit=1))[-1].timestamp))

    e = engine(tmp_path)
    e.registry.strategies["peek"] = type(e.registry.strategies["always-long"])(Peek, FIXTURE_STRATEGIES, 1)
    pair = e.add_pair("BTCUSDT", "peek")
    start = 1_704_067_200_000 + 7 * MINUTE_MS + 30_000  # 00:07:30, the 00:07 candle is still forming
    asyncio.run(pair.tick(start))
    assert seen == [(start - 30_000, start - 30_000 - MINUTE_MS, start - 30_000 - 7 * MINUTE_MS)]
