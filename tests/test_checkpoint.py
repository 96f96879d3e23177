"""Strategy state that survives (``checkpoint``/``restore``) and hot reload (``Engine.reload``),
in process: real files in a temporary data directory, the sim exchange, a manual clock."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from test_pair import KEY, T0, ListSource, M, every_minute

from livetrader.config import Config
from livetrader.events import EventBus
from livetrader.live.clock import ManualClock
from livetrader.live.engine import Engine
from livetrader.live.pair import Pair
from livetrader.store.checkpoint import checkpoint_document, checkpoint_path, read_checkpoint
from livetrader.store.state import FilePairStore
from livetrader.strategy.base import Strategy, load_strategies


class Counting(Strategy):
    """Counts its asks; ``checkpoint`` returns whatever ``shape`` makes of the count."""

    name = "scripted"
    interval = "1m"

    def __init__(self) -> None:
        self.count = 0
        self.shape: Any = lambda n: {"count": n}
        self.restored: list[dict[str, Any]] = []

    def get_signal(self, ctx: Any) -> None:
        self.count += 1

    def checkpoint(self) -> Any:
        return self.shape(self.count)

    def restore(self, state: dict[str, Any]) -> None:
        self.restored.append(state)
        self.count = state["count"]


def file_pair(tmp_path: Path, strategy: Strategy) -> Pair:
    store = FilePairStore(tmp_path, KEY, 0)  # no writer: each save is written before it returns
    return Pair(KEY[0], strategy, KEY[2], ListSource(lambda t: 100.0), bus=EventBus(), store=store)


def saved(tmp_path: Path) -> dict[str, Any]:
    return json.loads(checkpoint_path(tmp_path, KEY).read_text())


def ticks(pair: Pair, minutes: list[int]) -> None:
    async def go() -> None:
        for minute in minutes:
            await pair.tick(minute)

    asyncio.run(go())


def test_the_state_is_saved_after_each_tick_that_changed_it_and_only_then(tmp_path):
    strategy = Counting()
    pair = file_pair(tmp_path, strategy)
    ticks(pair, every_minute(T0, T0 + 2 * M))
    assert saved(tmp_path) == {"symbol": KEY[0], "strategy": KEY[1], "exchange": KEY[2], "state": {"count": 3}}
    inode = checkpoint_path(tmp_path, KEY).stat().st_ino
    strategy.shape = lambda n: {"count": 3}  # the state stops changing: nothing is rewritten
    ticks(pair, every_minute(T0 + 3 * M, T0 + 5 * M))
    assert checkpoint_path(tmp_path, KEY).stat().st_ino == inode
    assert pair.error_count == 0


@pytest.mark.parametrize(("shape", "said"), [
    (lambda n: 1 / 0, "checkpoint raised ZeroDivisionError"),
    (lambda n: [n], "checkpoint returned list, not a dict"),
    (lambda n: {"count": {n}}, "checkpoint returned a value JSON cannot hold"),
    (lambda n: {"count": math.nan}, "checkpoint returned a value JSON cannot hold"),
    (lambda n: {"count": (n,)}, "JSON does not give back unchanged"),
    (lambda n: {n: "count"}, "JSON does not give back unchanged"),
])
def test_a_checkpoint_that_raises_or_is_no_json_is_the_strategys_error_and_the_last_good_state_stays(
        tmp_path, shape, said):
    strategy = Counting()
    pair = file_pair(tmp_path, strategy)
    ticks(pair, [T0, T0 + M])
    strategy.shape = shape
    ticks(pair, [T0 + 2 * M, T0 + 3 * M])
    assert saved(tmp_path)["state"] == {"count": 2}  # the last good one
    assert pair.error_count == 2 and said in (pair.last_error or ""), pair.last_error
    assert "the last good state is kept" in (pair.last_error or "")
    assert strategy.count == 4  # the pair carried on asking


def test_a_damaged_or_foreign_checkpoint_file_is_quarantined_and_not_restored(tmp_path):
    path = checkpoint_path(tmp_path, KEY)
    path.parent.mkdir(parents=True)
    for content, reason in [(b'{"symbol": "TESTU', "unreadable strategy state"),
                            (json.dumps(checkpoint_document(("OTHER", "x", "y"), {})).encode(), "another pair"),
                            (json.dumps({**checkpoint_document(KEY, {}), "state": [1]}).encode(), "not a JSON object")]:
        path.write_bytes(content)
        state, note = read_checkpoint(tmp_path, KEY, repair=False)
        assert state is None and "would be quarantined" in (note or "") and path.exists()
        state, note = read_checkpoint(tmp_path, KEY)
        assert state is None and reason in (note or "") and "restore being called" in (note or "")
        assert not path.exists()
        kept = [p for p in (tmp_path / "quarantine").iterdir() if p.read_bytes() == content]
        assert len(kept) == 1 and reason in kept[0].with_name(kept[0].name + ".why.txt").read_text()
    assert read_checkpoint(tmp_path, KEY) == (None, None)  # none: nothing to say


# --- through the engine: restored at start, saved by in-place ticks, reloaded -----------------

T1 = 1_704_067_200_000  # 2024-01-01T00:00Z, within the sim exchange's candles

COUNTER = '''
from livetrader import Signal, Strategy

VERSION = {version!r}

class Counter(Strategy):
    name = "counter"
    interval = "5m"  # asked once in 5 minutes: the other minutes' ticks may run in place

    def __init__(self):
        self.idle = 0
        self.restored = None

    async def get_signal(self, ctx):
        return None

    def on_idle(self, result):  # plain: runs in place too
        self.idle += 1

    def checkpoint(self):
        return {{"idle": self.idle, "version": VERSION}}

    def restore(self, state):
        self.restored = state
        self.idle = state["idle"]
'''


def engine_for(tmp_path: Path, data_dir: Path, start: int) -> tuple[Engine, ManualClock]:
    clock = ManualClock(start)
    engine = Engine(replace(Config(), data_dir=data_dir), load_strategies(tmp_path / "strategies"), clock=clock,
                    bus=EventBus(), data_dir=data_dir)
    return engine, clock


def run_minutes(engine: Engine, clock: ManualClock, minutes: int, between: Any = None) -> None:
    """Run the engine for ``minutes`` fired boundaries (``between(i)`` after each)."""

    async def main() -> None:
        swept: asyncio.Queue = asyncio.Queue()
        engine.metronome.listeners.append(swept.put_nowait)
        running = asyncio.create_task(engine.run())
        for i in range(minutes):
            now = clock.now - clock.now % M + M
            while len(engine.metronome.waiting(now)) < len(engine.pairs):
                assert not running.done()
                await asyncio.sleep(0)
            clock.now = now
            engine.metronome.fire(now)
            await swept.get()
            if between is not None:
                between(i)
        engine.stop()
        await running
        await engine.close()

    asyncio.run(main())


@pytest.mark.parametrize("in_place", [True, False])
def test_the_state_saved_by_in_place_ticks_is_restored_at_the_next_start(tmp_path, in_place):
    (tmp_path / "strategies").mkdir()
    (tmp_path / "strategies" / "counter.py").write_text(COUNTER.format(version="v1"))
    data_dir = tmp_path / "data"
    engine, clock = engine_for(tmp_path, data_dir, T1)
    engine.ticks_in_place = in_place
    pair = engine.add_pair("BTCUSDT", "counter", "sim")
    run_minutes(engine, clock, 12)
    assert pair.strategy.idle == 13  # the first tick, then 12 minutes: all idle
    stored = read_checkpoint(data_dir, pair.key)[0]
    assert stored == {"idle": 13, "version": "v1"}

    again, clock = engine_for(tmp_path, data_dir, clock.now)
    restored = again.add_pair("BTCUSDT", "counter", "sim")
    assert restored.strategy.restored == {"idle": 13, "version": "v1"} and restored.strategy.idle == 13
    assert restored.error_count == 0


def test_a_reload_gives_the_new_class_the_saved_state_at_the_next_ask_and_a_broken_file_keeps_the_old(tmp_path):
    folder = tmp_path / "strategies"
    folder.mkdir()
    file = folder / "counter.py"
    file.write_text(COUNTER.format(version="v1"))
    engine, clock = engine_for(tmp_path, tmp_path / "data", T1)
    pair = engine.add_pair("BTCUSDT", "counter", "sim")
    first = pair.code_version
    assert first is not None and first.split("@")[0] == hashlib.sha256(file.read_bytes()).hexdigest()[:10]
    seen: dict[int, Any] = {}

    def between(i: int) -> None:
        if i == 2:
            file.write_text(COUNTER.format(version="v2"))
            outcome = engine.reload()
            assert (outcome.changed, outcome.kept, outcome.problems) == (1, 0, [])
            assert pair.reload_to is not None and pair.reload_to[1] != first
        if i == 8:
            text = COUNTER.format(version="v3") + "\ndef broken(:\n"
            file.write_text(text)
            outcome = engine.reload()
            assert outcome.changed == 0 and outcome.kept == 1
            line = text.splitlines().index("def broken(:") + 1
            assert len(outcome.problems) == 1 and outcome.problems[0].startswith(f"{file}:{line}: syntax error")
            assert f"{file}:{line}" in (pair.last_error or "") and "keeps running" in (pair.last_error or "")
        seen[i] = (type(pair.strategy).__module__, pair.code_version, pair.reload_to is not None)

    run_minutes(engine, clock, 14, between)
    # Taken at the next ask (a 5-minute bucket), not at the reload; the state came along.
    assert seen[2][2] and not seen[5][2]
    assert seen[5][1] != first and seen[5][0] != seen[2][0]
    assert pair.checkpoint_state is not None and pair.checkpoint_state["version"] == "v2"
    assert pair.strategy.restored is not None and pair.strategy.restored["version"] == "v1"
    assert pair.strategy.idle == 15  # every tick was idle, before and after the reload: none lost
    assert pair.code_version == seen[5][1]  # the broken file changed nothing


def test_the_readme_strategy_keeps_its_daily_count_across_a_restart(tmp_path):
    from test_readme_examples import strategy_block

    (tmp_path / "strategies").mkdir()
    (tmp_path / "strategies" / "my_first_strategy.py").write_text(strategy_block())
    data_dir = tmp_path / "data"
    engine, clock = engine_for(tmp_path, data_dir, T1 + 7 * 60 * M)
    pair = engine.add_pair("BTCUSDT", "my-first-strategy", "sim")
    run_minutes(engine, clock, 60)
    state = pair.strategy.checkpoint()
    assert state["day"] == "2024-01-01" and state["signals_today"] >= 1, state
    assert read_checkpoint(data_dir, pair.key)[0] == state

    again, _ = engine_for(tmp_path, data_dir, clock.now)
    restored = again.add_pair("BTCUSDT", "my-first-strategy", "sim")
    assert (restored.strategy.day, restored.strategy.signals_today) == (state["day"], state["signals_today"])
    assert restored.error_count == 0
