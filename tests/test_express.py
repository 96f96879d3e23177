"""Ticks run in place at a minute boundary (``Pair.tick_in_place``) are the ticks the pair's
task would have run: same journal, same events, same state. And the cyclic GC is paused while
a sweep runs."""

import asyncio
import gc
import json
from dataclasses import replace
from pathlib import Path

import pytest

from livetrader.config import Config
from livetrader.core.price import MINUTE_MS
from livetrader.events import EventBus
from livetrader.live.clock import ManualClock
from livetrader.live.collector import SweepCollector
from livetrader.live.engine import Engine
from livetrader.live.metronome import Metronome
from livetrader.strategy.base import load_strategies
from livetrader.sweep import SweepPauses

T0 = 1_704_067_200_000  # 2024-01-01T00:00Z

#: One strategy per kind of tick: asked every minute, once per 15 minutes, holding long
#: positions, scheduling limit orders that wait and get cancelled, with plain and async callbacks.
STRATEGIES = {
    "every_minute.py": '''
from livetrader import Signal, Strategy

class EveryMinute(Strategy):
    name = "every-minute"
    interval = "1m"
    calls = 0

    async def get_signal(self, ctx):
        self.calls += 1
        if self.calls % 3:
            return None
        side = "long" if self.calls % 2 else "short"
        tp, sl = (1.006, 0.994) if side == "long" else (0.994, 1.006)
        return Signal(side, ctx.price * tp, ctx.price * sl, minutes=7)
''',
    "limits.py": '''
from livetrader import Signal, Strategy

class Limits(Strategy):
    name = "limits"
    interval = "5m"
    active = 0

    async def get_signal(self, ctx):
        return Signal("long", ctx.price * 1.006, ctx.price * 0.993, minutes=20, price_open=ctx.price * 0.9995)

    def on_active(self, result):  # plain: may run in place
        self.active += 1
''',
    "slow_hooks.py": '''
from livetrader import Signal, Strategy

class SlowHooks(Strategy):
    name = "slow-hooks"
    interval = "15m"

    async def get_signal(self, ctx):
        return Signal("short", ctx.price * 0.994, ctx.price * 1.006, minutes=30)

    async def on_active(self, result):  # async: needs the pair's task
        await __import__("asyncio").sleep(0)
''',
}


def _strategies(tmp_path: Path) -> Path:
    folder = tmp_path / "strategies"
    folder.mkdir(exist_ok=True)
    for name, text in STRATEGIES.items():
        (folder / name).write_text(text)
    return folder


def _run(tmp_path: Path, in_place: bool, minutes: int, listener=None) -> dict:
    """Run 4 symbols x 3 strategies through ``Engine.run`` for ``minutes`` fired boundaries
    (``listener``: added to every pair's own listeners)."""
    data_dir = tmp_path / ("in-place" if in_place else "awaited")
    clock = ManualClock(T0)
    engine = Engine(replace(Config(), data_dir=data_dir), load_strategies(_strategies(tmp_path)), clock=clock,
                    bus=EventBus(), data_dir=data_dir)
    engine.ticks_in_place = in_place
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"):
        for strategy in ("every-minute", "limits", "slow-hooks"):
            engine.add_pair(symbol, strategy, "sim")
    if listener is not None:
        for pair in engine.pairs:
            pair.listeners.append(listener)
    events: list[dict] = []
    engine.bus.listen("signal", lambda r: events.append((r.symbol, r.strategy, r.at, r.action, r.price)))
    woken = 0

    async def main() -> None:
        nonlocal woken
        swept: asyncio.Queue = asyncio.Queue()
        engine.metronome.listeners.append(swept.put_nowait)
        running = asyncio.create_task(engine.run())
        now = T0
        for _ in range(minutes):
            now += MINUTE_MS
            while len(engine.metronome.waiting(now)) < len(engine.pairs):
                assert not running.done()
                await asyncio.sleep(0)
            clock.now = now
            before = sum(1 for p in engine.pairs if p.wake is not None)
            engine.metronome.fire(now)
            woken += before - sum(1 for p in engine.pairs if p.wake is not None and not p.wake.done())
            sweep = await swept.get()
            assert sweep.pairs == len(engine.pairs)
        await engine.bus.drain(5)
        engine.stop()
        await running
        await engine.close()

    asyncio.run(main())
    journals = {p.name: p.read_text() for p in sorted((data_dir / "journal").glob("*.jsonl"))}
    snapshots = {p.name: json.loads(p.read_text()) for p in sorted((data_dir / "state" / "pairs").glob("*.json"))}
    return {
        "journals": journals,
        "snapshots": snapshots,
        "windows": {p.key: p.window.events() for p in engine.pairs},
        "states": {p.key: (p.state, p.ticks, p.last_tick_at, p.checked_until, p.price, p.error_count)
                   for p in engine.pairs},
        "errors": {p.key: list(p.recent_errors) for p in engine.pairs},
        "active_callbacks": {p.key: p.strategy.active for p in engine.pairs if p.strategy_name == "limits"},
        "events": events,
        "woken": woken,
    }


def test_ticks_in_place_are_the_ticks_the_task_would_have_run(tmp_path):
    minutes = 150
    awaited = _run(tmp_path, in_place=False, minutes=minutes)
    in_place = _run(tmp_path, in_place=True, minutes=minutes)
    ticks = 12 * minutes
    assert awaited["woken"] == ticks  # every tick woke its task
    assert in_place["woken"] < ticks * 0.6  # most ran in place (asks, transitions, async hooks did not)
    # The strategies did trade: both runs journaled the same transitions, byte for byte.
    assert sum(text.count("\n") for text in awaited["journals"].values()) > 100
    for key in ("journals", "snapshots", "windows", "states", "active_callbacks"):
        assert in_place[key] == awaited[key], key
    assert sum(awaited["active_callbacks"].values()) > 0
    assert sorted(in_place["events"]) == sorted(awaited["events"])
    assert len(awaited["events"]) >= ticks + 12  # plus the first ticks and the cancels at stop


def test_the_collector_is_paused_for_a_sweep_and_resumed_after_it():
    assert gc.isenabled()

    async def main():
        metronome = Metronome([SweepCollector()])
        a, b = metronome.wait(MINUTE_MS, float("inf")), metronome.wait(MINUTE_MS, float("inf"))
        metronome.fire(MINUTE_MS)
        assert await a == MINUTE_MS and await b == MINUTE_MS
        assert not gc.isenabled()  # the sweep runs
        metronome.ticked(MINUTE_MS)
        assert not gc.isenabled()  # one tick is still running
        metronome.ticked(MINUTE_MS)
        assert gc.isenabled()

    asyncio.run(main())
    assert gc.isenabled()


def test_a_sweep_that_hangs_resumes_the_collector_after_the_limit():
    async def main():
        metronome = Metronome(SweepPauses([SweepCollector()], limit=0.05))
        stuck = metronome.wait(MINUTE_MS, float("inf"))
        metronome.fire(MINUTE_MS)
        await stuck
        assert not gc.isenabled()
        await asyncio.sleep(0.1)
        assert gc.isenabled() and metronome.sweeping  # still sweeping, collector back

    asyncio.run(main())


def test_a_collector_the_user_switched_off_stays_off():
    gc.disable()
    try:
        async def main():
            collector = SweepCollector()
            collector.pause()
            assert not collector.paused
            collector.resume()
            assert not gc.isenabled()

        asyncio.run(main())
    finally:
        gc.enable()


@pytest.mark.parametrize("in_place", [True, False])
def test_a_stop_ends_a_loop_left_asleep_by_ticks_in_place(tmp_path, in_place):
    result = _run(tmp_path, in_place=in_place, minutes=3)
    assert all(state[1] == 4 for state in result["states"].values())  # the first tick + 3 minutes


@pytest.mark.parametrize("in_place", [True, False])
def test_a_pair_listener_that_raises_is_reported_and_the_tick_counts(tmp_path, in_place):
    def fussy(result):
        if result.action == "active":
            raise RuntimeError("listener bug")

    minutes = 40
    result = _run(tmp_path, in_place=in_place, minutes=minutes, listener=fussy)
    reported = [message for errors in result["errors"].values() for _, message in errors]
    assert any("tick listener raised RuntimeError: listener bug" in m for m in reported)
    assert not any("no price" in m for m in reported)  # not taken for a failed tick
    # Every pair ticked every minute once (the first tick + one per boundary), none twice.
    assert all(state[1] == minutes + 1 for state in result["states"].values())
