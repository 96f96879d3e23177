"""The metronome: one timer per minute boundary, early wake-ups for stops, and sweep times."""

import asyncio
import gc

from livetrader.live.collector import collector_paused
from livetrader.live.metronome import Metronome

MINUTE = 60_000


def test_one_timer_wakes_every_loop_waiting_for_a_boundary_and_the_sweep_is_timed():
    metronome = Metronome()
    sweeps = []
    metronome.listeners.append(sweeps.append)
    woke = []

    async def loop(i):
        assert await metronome.wait(MINUTE, 0.05) == MINUTE
        woke.append(i)
        await asyncio.sleep(0.01 * (i % 3))  # ticks of different lengths
        metronome.ticked(MINUTE)

    async def main():
        tasks = [asyncio.create_task(loop(i)) for i in range(50)]
        await asyncio.sleep(0)
        assert len(metronome._timers) == 1 and len(metronome.waiting(MINUTE)) == 50
        await asyncio.gather(*tasks)

    asyncio.run(main())
    assert sorted(woke) == list(range(50))
    assert len(sweeps) == 1 and sweeps[0].minute == MINUTE and sweeps[0].pairs == 50
    assert sweeps[0].seconds >= 0.02  # until the slowest tick was done
    assert metronome.last is sweeps[0]


def test_a_stop_wakes_its_loop_at_once_and_leaves_the_sweep_to_the_others():
    metronome = Metronome()

    async def main():
        stopped = metronome.wait(MINUTE, 60)
        other = metronome.wait(MINUTE, 60)
        stopped.set_result(False)  # what Pair.request_stop does
        assert await stopped is False
        assert metronome.waiting(MINUTE) == [other]
        assert metronome.fire(MINUTE) == 1
        assert await other == MINUTE
        metronome.ticked(MINUTE)

    asyncio.run(main())
    assert metronome.last is not None and metronome.last.pairs == 1


def test_the_engine_loop_records_each_sweep(tmp_path):
    """Through the real engine: every pair's tick at a boundary belongs to that boundary's sweep."""
    import time
    from dataclasses import replace

    from daemon import FIXTURE_STRATEGIES

    from livetrader.config import Config
    from livetrader.events import EventBus
    from livetrader.live.clock import SimClock
    from livetrader.live.engine import Engine
    from livetrader.strategy.base import load_strategies

    wall = int(time.time() * 1000)
    engine = Engine(replace(Config(), data_dir=tmp_path), load_strategies(FIXTURE_STRATEGIES),
                    clock=SimClock(wall, wall - wall % MINUTE, 1000), bus=EventBus(), data_dir=tmp_path)
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        engine.add_pair(symbol, "always-long")
    sweeps = []
    engine.metronome.listeners.append(sweeps.append)

    async def main():
        task = asyncio.create_task(engine.run())
        await asyncio.sleep(1.0)  # 16 simulated minutes of 60 ms: room for a slow tick on a busy machine
        engine.stop()
        await task

    asyncio.run(main())
    assert len(sweeps) >= 10
    assert all(s.pairs == 3 and s.seconds is not None and s.seconds < 1 for s in sweeps)
    assert [s.minute for s in sweeps] == sorted({s.minute for s in sweeps})
    assert all(s.minute % MINUTE == 0 for s in sweeps)


def test_restoring_pairs_runs_with_the_collector_paused_then_freezes_what_it_built():
    assert gc.isenabled()
    kept = []
    with collector_paused():
        assert not gc.isenabled()
        kept.extend([i] for i in range(1000))
    assert gc.isenabled()
    assert gc.get_freeze_count() >= 1000
    gc.unfreeze()


def test_between_sweeps_waits_for_the_last_tick_or_the_limit():
    """The status writer waits for a running sweep to end, but never longer than its limit."""

    async def main():
        metronome = Metronome()
        first, second = metronome.wait(60_000, float("inf")), metronome.wait(60_000, float("inf"))
        assert not metronome.sweeping
        metronome.fire(60_000)
        assert metronome.sweeping and first.done() and second.done()
        waiter = asyncio.create_task(metronome.between_sweeps(5.0))
        metronome.ticked(60_000)
        await asyncio.sleep(0.05)
        assert not waiter.done()  # one loop is still ticking
        metronome.ticked(60_000)
        await asyncio.wait_for(waiter, 1.0)
        assert not metronome.sweeping
        # A sweep that never ends (a hung tick) holds the caller only up to the limit.
        metronome.wait(120_000, float("inf"))
        metronome.fire(120_000)
        loop = asyncio.get_running_loop()
        began = loop.time()
        await metronome.between_sweeps(0.2)
        assert metronome.sweeping and 0.15 <= loop.time() - began < 2.0

    asyncio.run(main())
