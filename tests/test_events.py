"""docs/behaviour.md §8: the event bus never blocks the emitter, isolates listeners, bounds memory."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from livetrader import events
from livetrader.events import BUS, TOPICS, DoneEvent, ErrorEvent, EventBus, PerformanceEvent, RiskEvent
from livetrader.sweep import SweepPauses


def test_each_listener_gets_every_event_in_order() -> None:
    async def scenario() -> None:
        bus = EventBus()
        sync_seen: list[int] = []
        async_seen: list[int] = []

        async def slow_async(n: int) -> None:
            await asyncio.sleep(0.001 if n % 7 == 0 else 0)  # yields mid-stream: order must still hold
            async_seen.append(n)

        bus.listen("signal", sync_seen.append)
        bus.listen("signal", slow_async)
        for n in range(200):
            bus.emit("signal", n)
        assert await bus.drain(timeout=5)
        assert sync_seen == list(range(200))
        assert async_seen == list(range(200))
        assert bus.pending() == 0

    asyncio.run(scenario())


def test_slow_listener_delays_neither_emitter_nor_fast_listener() -> None:
    async def scenario() -> None:
        bus = EventBus()
        fast: list[tuple[int, float]] = []
        slow: list[tuple[int, float]] = []

        async def slow_listener(n: int) -> None:
            await asyncio.sleep(0.2)
            slow.append((n, time.perf_counter()))

        bus.listen("signal_live", slow_listener)
        bus.listen("signal_live", lambda n: fast.append((n, time.perf_counter())))
        await asyncio.sleep(0)

        durations = []
        for n in range(5):
            t0 = time.perf_counter()
            bus.emit("signal_live", n)
            durations.append(time.perf_counter() - t0)
        # Emitting only appends to queues: microseconds, nowhere near the listener's 200 ms.
        assert max(durations) < 0.005, durations
        assert sorted(durations)[2] < 0.0005, durations

        await asyncio.sleep(0.05)
        assert [n for n, _ in fast] == [0, 1, 2, 3, 4]
        assert slow == []  # still sleeping on the first event

        assert await bus.drain(timeout=5)
        assert [n for n, _ in slow] == [0, 1, 2, 3, 4]
        # The fast listener was done before the slow one finished even its first event.
        assert fast[-1][1] < slow[0][1]

    asyncio.run(scenario())


def test_failing_listener_is_reported_and_keeps_receiving() -> None:
    async def scenario() -> None:
        bus = EventBus()
        seen: list[int] = []
        errors: list[ErrorEvent] = []
        other: list[int] = []

        async def flaky(payload: DoneEvent) -> None:
            if payload.at == 2:
                raise RuntimeError("boom")
            seen.append(payload.at)

        bus.listen("done", flaky)
        bus.listen("done", lambda p: other.append(p.at))
        bus.listen("error", errors.append)
        for at in range(1, 5):
            bus.emit("done", DoneEvent("BTCUSDT", "s1", "sim", at, "stopped"))
        assert await bus.drain(timeout=5)
        assert await bus.drain(timeout=5)  # the error event is emitted during the first drain

        assert seen == [1, 3, 4]
        assert other == [1, 2, 3, 4]
        assert len(errors) == 1
        err = errors[0]
        assert err.kind == "listener"
        assert (err.symbol, err.strategy, err.exchange) == ("BTCUSDT", "s1", "sim")
        assert "boom" in err.message and "flaky" in err.message

    asyncio.run(scenario())


def test_failing_error_listener_does_not_loop(logs: list[dict]) -> None:
    async def scenario() -> list[ErrorEvent]:
        bus = EventBus()
        calls: list[ErrorEvent] = []

        def broken(event: ErrorEvent) -> None:
            calls.append(event)
            raise ValueError("error handler is broken")

        bus.listen("error", broken)
        bus.listen("performance", lambda _: 1 / 0)
        bus.emit("performance", PerformanceEvent("ETHUSDT", "s", "x", 1, 3.5, None))
        assert await bus.drain(timeout=5)
        await asyncio.sleep(0.01)
        assert await bus.drain(timeout=5)
        return calls

    calls = asyncio.run(scenario())
    assert len(calls) == 1  # the performance listener's failure, and nothing about the broken handler
    assert "ZeroDivisionError" in calls[0].message
    assert "error handler is broken" in str(logs)


def test_listener_cancelled_from_inside_does_not_kill_delivery() -> None:
    async def scenario() -> None:
        bus = EventBus()
        seen: list[int] = []
        errors: list[ErrorEvent] = []

        async def listener(n: int) -> None:
            if n == 0:
                fut = asyncio.get_running_loop().create_future()
                fut.cancel()
                await fut
            seen.append(n)

        bus.listen("risk", listener)
        bus.listen("error", errors.append)
        bus.emit("risk", 0)
        bus.emit("risk", 1)
        assert await bus.drain(timeout=5)
        assert await bus.drain(timeout=5)
        assert seen == [1]
        assert [e.kind for e in errors] == ["listener"]

    asyncio.run(scenario())


def test_full_queue_drops_oldest_and_counts(logs: list[dict]) -> None:
    async def scenario() -> tuple[list[int], int]:
        bus = EventBus(max_queue=3)
        gate = asyncio.Event()
        seen: list[int] = []

        async def stalled(n: int) -> None:
            await gate.wait()
            seen.append(n)

        bus.listen("signal", stalled)
        for n in range(10):  # no await in between: the delivery task has not taken anything yet
            bus.emit("signal", n)
        assert bus.pending("signal") == 3
        assert bus.dropped("signal") == 7
        gate.set()
        assert await bus.drain(timeout=5)
        return seen, bus.dropped()

    seen, dropped = asyncio.run(scenario())
    assert seen == [7, 8, 9]
    assert dropped == 7
    assert "queue is full" in str(logs)
    # Rate-limited: warned at the 1st drop only (the 10th was never reached).
    assert str(logs).count("queue is full") == 1


def test_stalled_listener_memory_is_bounded() -> None:
    async def scenario() -> None:
        bus = EventBus(max_queue=100)
        gate = asyncio.Event()

        async def stalled(_: int) -> None:
            await gate.wait()

        bus.listen("signal", stalled)
        for n in range(100_000):
            bus.emit("signal", n)
            if n % 10_000 == 0:
                await asyncio.sleep(0)
        assert bus.pending() <= 100
        assert bus.dropped() >= 100_000 - 101
        await bus.close(timeout=0)
        assert bus.pending() == 0

    asyncio.run(scenario())


def test_unsubscribe_stops_delivery_and_is_idempotent() -> None:
    async def scenario() -> None:
        bus = EventBus()
        seen: list[int] = []
        unsubscribe = bus.listen("signal_backtest", seen.append)
        bus.emit("signal_backtest", 1)
        assert await bus.drain(timeout=5)
        unsubscribe()
        unsubscribe()
        bus.emit("signal_backtest", 2)
        assert await bus.drain(timeout=5)
        assert seen == [1]
        assert bus.listener_count("signal_backtest") == 0

    asyncio.run(scenario())


def test_drain_waits_for_slow_listener_and_times_out() -> None:
    async def scenario() -> None:
        bus = EventBus()
        seen: list[int] = []

        async def slow(n: int) -> None:
            await asyncio.sleep(0.05)
            seen.append(n)

        bus.listen("signal", slow)
        for n in range(3):
            bus.emit("signal", n)
        assert await bus.drain(timeout=0.01) is False
        assert await bus.drain(timeout=5) is True
        assert seen == [0, 1, 2]
        assert await bus.drain(timeout=0) is True  # nothing pending: immediate

    asyncio.run(scenario())


def test_close_stops_tasks_and_bus_stays_usable() -> None:
    async def scenario() -> None:
        bus = EventBus()
        seen: list[int] = []

        async def stuck(n: int) -> None:
            if n == 0:
                await asyncio.sleep(3600)
            seen.append(n)

        bus.listen("signal", stuck)
        bus.emit("signal", 0)
        bus.emit("signal", 1)
        t0 = time.perf_counter()
        await bus.close(timeout=0.05)
        assert time.perf_counter() - t0 < 1
        assert bus.dropped() == 1  # event 1 was never delivered
        bus.emit("signal", 2)
        assert await bus.drain(timeout=5)
        assert seen == [2]

    asyncio.run(scenario())


def test_without_event_loop_sync_listeners_run_now_async_ones_are_dropped(logs: list[dict]) -> None:
    bus = EventBus()
    seen: list[str] = []
    errors: list[ErrorEvent] = []

    async def needs_loop(_: str) -> None:  # pragma: no cover - never run
        seen.append("async")

    bus.listen("signal", seen.append)
    bus.listen("signal", needs_loop)
    bus.listen("signal", lambda _: [][0])
    bus.listen("error", errors.append)
    bus.emit("signal", "tick")
    assert seen == ["tick"]
    assert bus.dropped("signal") == 1
    assert "no running event loop" in str(logs)
    assert [e.kind for e in errors] == ["listener"]


def test_bus_survives_successive_event_loops() -> None:
    bus = EventBus()
    seen: list[int] = []

    async def listener(n: int) -> None:
        seen.append(n)

    bus.listen("signal", listener)

    async def emit_and_drain(n: int) -> None:
        bus.emit("signal", n)
        assert await bus.drain(timeout=5)

    asyncio.run(emit_and_drain(1))
    asyncio.run(emit_and_drain(2))
    assert seen == [1, 2]


def test_emit_from_another_thread_is_handed_to_the_loop() -> None:
    async def scenario() -> None:
        bus = EventBus()
        seen: list[tuple[int, bool]] = []
        loop_thread = threading.get_ident()
        bus.listen("signal", lambda n: seen.append((n, threading.get_ident() == loop_thread)))
        bus.emit("signal", 0)  # binds the listener to this loop
        assert await bus.drain(timeout=5)
        await asyncio.to_thread(lambda: [bus.emit("signal", n) for n in range(1, 50)])
        await asyncio.sleep(0.01)
        assert await bus.drain(timeout=5)
        assert [n for n, _ in seen] == list(range(50))
        assert all(on_loop for _, on_loop in seen)

    asyncio.run(scenario())


def test_emit_never_raises_and_listen_checks_topics(logs: list[dict]) -> None:
    bus = EventBus()
    bus.emit("no-such-topic", 1)
    assert "unknown topic" in str(logs)
    with pytest.raises(ValueError):
        bus.listen("signals", print)
    with pytest.raises(ValueError):
        EventBus(max_queue=0)


def test_module_bus_helpers_bind_topics() -> None:
    helpers = {
        "signal": events.listen_signal,
        "signal_live": events.listen_signal_live,
        "signal_backtest": events.listen_signal_backtest,
        "error": events.listen_error,
        "performance": events.listen_performance,
        "done": events.listen_done,
        "risk": events.listen_risk,
    }
    assert set(helpers) == set(TOPICS)
    seen: list[tuple[str, object]] = []
    before = BUS.listener_count()
    unsubscribes = [helper(lambda p, t=topic: seen.append((t, p))) for topic, helper in helpers.items()]
    try:
        risk = RiskEvent("BTCUSDT", "s", "x", 1, "default", "max positions", "id-1")
        for topic in TOPICS:
            BUS.emit(topic, risk)  # no loop running: delivered synchronously
        assert seen == [(topic, risk) for topic in TOPICS]
    finally:
        for unsubscribe in unsubscribes:
            unsubscribe()
    assert BUS.listener_count() == before


def test_event_payloads_are_frozen() -> None:
    event = ErrorEvent("BTCUSDT", "s", "x", 1, "failed", "strategy")
    with pytest.raises(AttributeError):
        event.message = "other"  # type: ignore[misc]
    assert not hasattr(event, "__dict__")


def test_a_paused_bus_holds_events_until_resumed_then_delivers_them_in_order() -> None:
    async def scenario() -> None:
        bus = EventBus(max_queue=5)
        seen: list[int] = []
        bus.listen("signal", seen.append)
        bus.pause()
        for n in range(8):
            bus.emit("signal", n)
        await asyncio.sleep(0.01)
        assert seen == []  # held: no delivery while a sweep runs
        assert bus.pending() == 0
        bus.resume()
        assert await bus.drain(timeout=5)
        # The queue bound still holds for a whole sweep's events: the oldest are dropped, counted.
        assert seen == [3, 4, 5, 6, 7]
        assert bus.dropped("signal") == 3
        bus.emit("signal", 8)  # resumed: events flow as before
        assert await bus.drain(timeout=5)
        assert seen[-1] == 8

    asyncio.run(scenario())


def test_a_listener_added_during_a_hold_gets_only_later_events_and_drain_releases() -> None:
    async def scenario() -> None:
        bus = EventBus()
        early: list[int] = []
        late: list[int] = []
        bus.listen("signal", early.append)
        bus.pause()
        bus.emit("signal", 1)
        bus.listen("signal", late.append)
        bus.emit("signal", 2)
        assert await bus.drain(timeout=5)  # drain delivers what is held
        assert early == [1, 2]
        assert late == [2]
        bus.resume()

    asyncio.run(scenario())


def test_a_hold_ends_by_itself_after_its_limit_and_other_threads_are_not_held() -> None:
    async def scenario() -> None:
        bus = EventBus()
        seen: list[str] = []
        bus.listen("signal", seen.append)
        SweepPauses([bus], limit=0.05).pause()  # the registry the metronome uses keeps the limit
        bus.emit("signal", "loop")
        thread = threading.Thread(target=bus.emit, args=("signal", "thread"))
        thread.start()
        thread.join()
        await asyncio.sleep(0.02)
        assert seen == ["thread"]  # another thread's event is handed over at once
        await asyncio.sleep(0.1)  # past the limit: released without resume()
        assert seen == ["thread", "loop"]
        bus.emit("signal", "after")
        await asyncio.sleep(0.01)
        assert seen[-1] == "after"

    asyncio.run(scenario())
