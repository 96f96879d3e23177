"""One ``Pair`` driven alone: candles from a list, a store in memory; no file, no process, no clock.

What a pair does with a minute (docs/behaviour.md §2, §8) seen from its two interfaces: what
the ``CandleSource`` gave it and what the ``PairStore`` received.
"""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from livetrader.core.price import MINUTE_MS, Candle
from livetrader.core.signal import Signal, TickResult, record_of
from livetrader.errors import StoreWriteError
from livetrader.events import EventBus
from livetrader.live.pair import TRANSITIONS, Pair, PairSettings, PairStore
from livetrader.report.markdown import EventWindow
from livetrader.store.state import FilePairStore
from livetrader.strategy.base import Strategy

T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC, a minute boundary
M = MINUTE_MS
KEY = ("TESTUSDT", "scripted", "memory")


class ListSource:
    """A ``CandleSource`` over candles made up front: one flat candle per minute at ``price(t)``,
    so the price of a minute is the mean of the five before it."""

    name = "memory"

    def __init__(self, price: Callable[[int], float], first: int = T0 - 60 * M, end: int = T0 + 300 * M) -> None:
        self.candles = {t: Candle(t, price(t), price(t), price(t), price(t), 1.0) for t in range(first, end, M)}
        self.fetches = 0

    def resolve_symbol(self, symbol: str) -> str:
        return symbol

    async def fetch(self, symbol: str, start_ms: int, end_ms: int) -> list[Candle]:
        self.fetches += 1
        return [self.candles[t] for t in range(start_ms, end_ms, M)]

    def bounds(self, symbol: str) -> tuple[int, int] | None:
        return None

    async def close(self) -> None:
        pass


class MemoryStore:
    """A ``PairStore`` in memory: the journal a list of records, the snapshots a list of states."""

    def __init__(self) -> None:
        self.journal: list[dict[str, Any]] = []
        self.snapshots: list[dict[str, Any]] = []
        self.checkpoints: list[dict[str, Any]] = []
        self.failing = False
        self.closed = False

    async def write_ahead(self, record: dict[str, Any]) -> None:
        if self.failing:
            raise StoreWriteError(Path("memory"), "the disk is full")
        self.journal.append(record)

    def snapshot(self, state: dict[str, Any]) -> None:
        self.snapshots.append(state)

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        self.checkpoints.append(state)

    def records(self) -> list[dict[str, Any]]:
        return list(self.journal)

    def close(self) -> None:
        self.closed = True


class Scripted(Strategy):
    """Answers each ask with the next item of ``script`` (a Signal, None, or an exception to raise)."""

    name = "scripted"
    interval = "1m"

    def __init__(self) -> None:
        self.script: list[Any] = []
        self.asked: list[int] = []

    async def get_signal(self, ctx):  # type: ignore[no-untyped-def]
        self.asked.append(ctx.now)
        answer = self.script.pop(0) if self.script else None
        if isinstance(answer, BaseException):
            raise answer
        return answer


class Sleepy(Strategy):
    """Never answers in time."""

    name = "scripted"
    interval = "1m"

    async def get_signal(self, ctx):  # type: ignore[no-untyped-def]
        await asyncio.sleep(10)


def flat_then(level: float, since: int, before: float = 100.0) -> Callable[[int], float]:
    """``before`` until the candle opening at ``since``, ``level`` from it on."""
    return lambda t: before if t < since else level


def make_pair(price: Callable[[int], float], *script: Any, strategy: Strategy | None = None,
              settings: PairSettings | None = None, window: EventWindow | None = None) -> tuple[Pair, MemoryStore]:
    settings = settings or PairSettings()
    if strategy is None:
        strategy = Scripted()
        strategy.script = list(script)
    store = MemoryStore()
    typed: PairStore = store  # the in-memory store is a complete PairStore
    pair = Pair(KEY[0], strategy, KEY[2], ListSource(price), settings=settings, bus=EventBus(), store=typed,
                window=window)
    results: list[TickResult] = []
    pair.listeners.append(results.append)
    pair.results = results  # type: ignore[attr-defined]
    return pair, store


def run_ticks(pair: Pair, *minutes: int) -> list[TickResult | None]:
    async def go() -> list[TickResult | None]:
        return [await pair.tick(t) for t in minutes]

    return asyncio.run(go())


def every_minute(first: int, last: int) -> list[int]:
    return list(range(first, last + M, M))


LONG = Signal("long", take_profit=101.0, stop_loss=99.0)


@pytest.mark.parametrize("ticking", ["every minute", "one late tick"])
def test_a_market_entry_opens_at_the_price_and_closes_at_take_profit_at_the_minute_it_was_reached(ticking):
    # Candles jump to 106 from T0+10: the price (mean of the 5 before) is 101.2 at T0+11, past 101.
    pair, store = make_pair(flat_then(106.0, T0 + 10 * M), LONG)
    minutes = every_minute(T0, T0 + 30 * M) if ticking == "every minute" else [T0, T0 + 30 * M]
    run_ticks(pair, *minutes)
    opened, closed = store.journal
    assert (opened["event"], opened["at"], opened["price_open"], opened["pending_at"]) == ("opened", T0, 100.0, T0)
    assert (closed["event"], closed["at"], closed["close_reason"], closed["price_close"]) == (
        "closed", T0 + 11 * M, "take_profit", 101.0)
    assert closed["price"] == pytest.approx(101.2)
    assert pair.row is None and pair.state == "idle"
    assert pair.closed_trades == 1 and pair.realised_pnl == closed["pnl_percentage"] > 0
    assert pair.won_trades == 1 and pair.lost_trades == 0
    # The snapshot follows each transition: the last one holds no signal and remembers the one closed.
    assert len(store.snapshots) == 2
    assert store.snapshots[-1]["signal"] is None and store.snapshots[-1]["last_opened_id"] == opened["signal_id"]


def test_a_scheduled_signal_waits_then_opens_at_the_minute_the_price_comes_to_it():
    # Scheduled at 99 while the price is 100; candles fall to 98 from T0+20. A scheduled signal
    # reacts to the closed minute's low (docs/behaviour.md §2): the candle of T0+20, closed at
    # T0+21, reaches 99, though the 5-minute VWAP passes it only at T0+23.
    signal = Signal("long", take_profit=101.0, stop_loss=97.0, price_open=99.0)
    pair, store = make_pair(flat_then(98.0, T0 + 20 * M), signal)
    run_ticks(pair, *every_minute(T0, T0 + 25 * M))
    assert [r["event"] for r in store.journal] == ["scheduled", "opened"]
    scheduled, opened = store.journal
    assert (scheduled["at"], scheduled["price_open"], scheduled["pending_at"]) == (T0, 99.0, None)
    assert (opened["at"], opened["pending_at"], opened["price_open"]) == (T0 + 21 * M, T0 + 21 * M, 99.0)
    assert [r.action for r in pair.results][1:21] == ["waiting"] * 20  # type: ignore[attr-defined]
    assert pair.state == "open" and pair.row is not None and pair.row.pending_at == T0 + 21 * M


def test_a_scheduled_signal_never_reached_is_cancelled_at_its_timeout_minute_even_when_ticked_late():
    signal = Signal("long", take_profit=101.0, stop_loss=97.0, price_open=99.0)
    pair, store = make_pair(lambda t: 100.0, signal)
    timeout = PairSettings().rules.schedule_timeout_minutes
    run_ticks(pair, T0, T0 + (timeout + 30) * M)
    scheduled, cancelled = store.journal
    assert (cancelled["event"], cancelled["at"], cancelled["reason"]) == ("cancelled", T0 + timeout * M, "timeout")
    assert cancelled["signal_id"] == scheduled["signal_id"]
    assert pair.row is None and pair.state == "idle"


def test_a_strategy_that_raises_leaves_the_tick_idle_with_an_error_and_nothing_journaled():
    pair, store = make_pair(lambda t: 100.0, ValueError("no idea"), LONG)
    [first, second] = run_ticks(pair, T0, T0 + M)
    assert first is not None and (first.action, first.reason) == ("idle", "strategy error")
    assert pair.error_count == 1 and pair.last_error is not None
    assert pair.last_error.startswith("strategy raised ValueError: no idea")
    # The next minute asks again and the pair trades: one bad answer does not stop it.
    assert second is not None and second.action == "opened"
    assert [r["event"] for r in store.journal] == ["opened"]


def test_a_strategy_that_does_not_answer_in_time_leaves_the_tick_idle_with_an_error():
    pair, store = make_pair(lambda t: 100.0, strategy=Sleepy(), settings=PairSettings(strategy_timeout_seconds=0.01))
    [result] = run_ticks(pair, T0)
    assert result is not None and (result.action, result.reason) == ("idle", "strategy timed out after 0.01 s")
    assert pair.error_count == 1 and store.journal == []


def test_the_store_receives_exactly_the_transitions_in_order_each_before_its_snapshot():
    # Open at 100, take-profit at T0+11 (candles at 106), then a second signal: a short closed at its stop-loss.
    short = Signal("short", take_profit=100.0, stop_loss=107.0)
    pair, store = make_pair(flat_then(106.0, T0 + 10 * M), LONG, None, None, short)
    seen_journal_lengths = []
    snapshot = store.snapshot
    store.snapshot = lambda state: (seen_journal_lengths.append(len(store.journal)), snapshot(state))  # type: ignore[method-assign]
    run_ticks(pair, *every_minute(T0, T0 + 40 * M))
    transitions = [r for r in pair.results if r.action in TRANSITIONS]  # type: ignore[attr-defined]
    assert [r.action for r in transitions] == ["opened", "closed", "opened"]
    assert store.journal == [record_of(r) for r in transitions]
    assert seen_journal_lengths == [1, 2, 3]  # one snapshot per transition, after its journal line
    assert store.snapshots[-1] == pair.snapshot()
    assert len(pair.results) == 41  # type: ignore[attr-defined]  # every minute ticked, transitions or not


def test_a_store_that_fails_leaves_the_state_as_it_was_and_stops_new_signals():
    pair, store = make_pair(lambda t: 100.0, LONG, LONG)
    store.failing = True
    [result] = run_ticks(pair, T0)
    assert result is None and pair.row is None and store.journal == []
    assert pair.accepting is False and pair.last_error is not None and "storage failed" in pair.last_error
    store.failing = False
    [later] = run_ticks(pair, T0 + 5 * M)
    assert later is not None and later.action == "idle" and store.journal == []  # no new signal until restart


def test_the_pair_puts_every_result_into_the_window_it_was_given():
    window = EventWindow(50)
    pair, _ = make_pair(flat_then(106.0, T0 + 10 * M), LONG, window=window)
    run_ticks(pair, *every_minute(T0, T0 + 15 * M))
    assert [e["event"] for e in window.events()] == ["idle", "closed", "active", "opened"]
    alone, _ = make_pair(lambda t: 100.0, LONG)
    run_ticks(alone, T0)
    assert alone.window.events() == []  # given none, it keeps none


def _protocol_methods(cls: type) -> set[str]:
    return {name for name, value in vars(cls).items() if callable(value) and not name.startswith("_")}


def test_the_file_store_and_the_memory_store_implement_the_whole_pair_store():
    wanted = _protocol_methods(PairStore)
    assert wanted >= {"write_ahead", "snapshot", "records", "close"}
    for cls in (FilePairStore, MemoryStore):
        assert wanted <= set(dir(cls)), f"{cls.__name__} lacks {wanted - set(dir(cls))}"


def test_nothing_outside_the_store_reaches_past_the_pair_store():
    # ``<anything>.store.<name>`` outside store/ may only name what PairStore declares.
    package = Path(__file__).resolve().parent.parent / "livetrader"
    allowed = _protocol_methods(PairStore)
    wrong = []
    for path in sorted(package.rglob("*.py")):
        if path.parent.name == "store":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) \
                    and node.value.attr == "store" and node.attr not in allowed:
                wrong.append(f"{path.relative_to(package.parent)}:{node.lineno} uses .store.{node.attr}")
    assert not wrong, "\n".join(wrong)
