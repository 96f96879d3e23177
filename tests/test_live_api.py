"""The Python API: Live.run, Live.background and stop, events, get_data/get_report/dump."""

import asyncio
import contextlib
import time

import pytest
from daemon import FIXTURE_STRATEGIES

from livetrader import Live
from livetrader.events import BUS
from livetrader.live.clock import SimClock


@pytest.fixture(autouse=True)
def fresh_live(tmp_path):
    Live.use_engine(None)
    wall = int(time.time() * 1000)
    Live.configure(strategies_dir=FIXTURE_STRATEGIES, clock=SimClock(wall, wall - wall % 60_000, 6000),
                   data_dir=tmp_path)
    yield
    Live.use_engine(None)
    Live._options = {}
    BUS.clear()


def test_run_yields_only_opened_closed_cancelled_and_break_stops_the_loop():
    async def main():
        seen = []
        async with contextlib.aclosing(Live.run("BTCUSDT", strategy="always-long", exchange="sim")) as results:
            async for result in results:
                seen.append(result)
                if result.action == "closed":
                    break
        pair = Live.engine().pairs[0]
        ticks = pair.ticks
        await asyncio.sleep(0.3)
        return seen, pair, ticks

    seen, pair, ticks = asyncio.run(main())
    assert [r.action for r in seen][:2] == ["opened", "closed"]
    assert {r.action for r in seen} <= {"opened", "closed", "cancelled"}
    assert pair.stopping.is_set() and pair.ticks == ticks  # no tick after the break


def test_background_in_a_loop_returns_stop_with_the_seed_semantics():
    async def main():
        received = []
        BUS.listen("signal_live", lambda r: received.append(r.action))
        stop = Live.background("BTCUSDT", strategy="scheduler")
        await asyncio.sleep(0.5)
        stop()
        await asyncio.sleep(0.3)
        await BUS.drain(2)
        return received

    received = asyncio.run(main())
    assert "scheduled" in received
    assert received[-1] == "cancelled"  # the waiting scheduled signal is cancelled by stop
    pair = Live.engine().pairs[0]
    assert pair.row is None and pair.window.events()[0]["reason"] == "user"


def test_background_without_a_loop_runs_in_a_thread_and_keeps_an_open_position():
    stop = Live.background("BTCUSDT", strategy="always-long")
    time.sleep(0.3)
    pair = Live.engine().pairs[0]
    assert pair.ticks > 0
    stop()
    assert pair.stopping.is_set()
    ticks = pair.ticks
    time.sleep(0.2)
    assert pair.ticks == ticks
    if pair.row is not None:
        assert pair.row.pending_at is not None  # an open position stays (a scheduled one would be cancelled)


def test_get_data_get_report_and_dump(tmp_path):
    async def main():
        stop = Live.background("BTCUSDT", strategy="always-long")
        await asyncio.sleep(1.0)
        stop()
        await asyncio.sleep(0.2)

    asyncio.run(main())
    stats = Live.get_data("BTCUSDT", "always-long")
    assert stats.total_closed >= 1
    report = Live.get_report("BTCUSDT", "always-long")
    assert report.startswith("# Live report: always-long on BTCUSDT (sim)")
    path = Live.dump("BTCUSDT", "always-long")
    assert path.parent == tmp_path / "reports" / "live" and path.read_text().startswith("# Live report")
    with pytest.raises(KeyError, match="no live pair"):
        Live.get_data("ETHUSDT", "always-long")


def test_events_performance_and_errors_reach_listeners():
    async def main():
        perf, errors, done = [], [], []
        BUS.listen("performance", perf.append)
        BUS.listen("error", errors.append)
        BUS.listen("done", done.append)
        stop_a = Live.background("BTCUSDT", strategy="broken")
        stop_b = Live.background("ETHUSDT", strategy="always-long")
        await asyncio.sleep(0.6)
        stop_a()
        stop_b()
        await asyncio.sleep(0.2)
        await BUS.drain(2)
        return perf, errors, done

    perf, errors, done = asyncio.run(main())
    assert {p.symbol for p in perf} == {"BTCUSDT", "ETHUSDT"}
    assert all(p.duration_ms >= 0 for p in perf) and any(p.previous_at for p in perf)
    assert errors and all(e.strategy == "broken" and e.kind == "strategy" for e in errors)
    assert sorted(d.symbol for d in done) == ["BTCUSDT", "ETHUSDT"]


def test_pairs_on_disk_not_started_through_the_api_are_read_once(tmp_path):
    """A position left by a daemon (or an earlier script) counts and is reported as not running."""
    from livetrader.config import Config
    from livetrader.events import EventBus
    from livetrader.live.engine import Engine
    from livetrader.strategy.base import load_strategies

    wall = int(time.time() * 1000)
    earlier = Engine(Config(), load_strategies(FIXTURE_STRATEGIES),
                     clock=SimClock(wall, wall - wall % 60_000, 1.0), bus=EventBus(), data_dir=tmp_path)
    held = earlier.add_pair("ETHUSDT", "always-long", "sim")
    assert asyncio.run(held.tick(wall)).action == "opened"
    asyncio.run(earlier.close())

    async def main():
        stop = Live.background("BTCUSDT", strategy="scheduler")
        engine = Live.engine()
        found = list(engine.not_running)
        stop()
        await asyncio.sleep(0.2)
        return found

    found = asyncio.run(main())
    assert [(p["symbol"], p["strategy"], p["state"]) for p in found] == [("ETHUSDT", "always-long", "open")]


def test_configure_speed_builds_a_simulated_clock_and_refuses_bad_values(tmp_path):
    Live.use_engine(None)
    Live.configure(speed=3000, data_dir=str(tmp_path), strategies_dir=FIXTURE_STRATEGIES)
    engine = Live.engine()
    assert engine.clock.speed == 3000 and engine.data_dir == tmp_path
    Live.use_engine(None)
    with pytest.raises(ValueError, match="positive"):
        Live.configure(speed=0)
    with pytest.raises(ValueError, match="not both"):
        Live.configure(speed=10, clock=SimClock(0, 0, 10))


def test_configure_log_level_filters_the_librarys_lines_and_refuses_unknown_levels():
    import structlog

    saved = structlog.get_config()
    try:
        Live.use_engine(None)
        Live.configure(log_level="error")
        assert structlog.get_config()["wrapper_class"] is structlog.make_filtering_bound_logger(40)
        with pytest.raises(ValueError, match="unknown log level"):
            Live.configure(log_level="LOUD")
    finally:
        structlog.configure(**saved)
