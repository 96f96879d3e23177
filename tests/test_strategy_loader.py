"""The strategy base class, the strategies-folder loader, and the shipped example strategies."""

from __future__ import annotations

import asyncio
import math
import random
import textwrap
from pathlib import Path

import pytest

from livetrader import Context, Signal, Strategy
from livetrader.core.interval import SIGNAL_INTERVALS
from livetrader.core.price import MINUTE_MS, Candle, vwap
from livetrader.core.validate import signal_problems
from livetrader.errors import StrategyLoadError, UnknownStrategyError
from livetrader.strategy.base import (
    StrategyRegistry,
    ask_signal,
    instantiate,
    load_strategies,
    run_callback,
)

SHIPPED = Path(__file__).resolve().parent.parent / "strategies"


def write(folder: Path, filename: str, source: str) -> Path:
    """Write a dedented module into ``folder`` and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    path.write_text(textwrap.dedent(source).lstrip("\n"))
    return path


def strategy_source(name: str, interval: str = "1m", extra: str = "") -> str:
    return f'''
        from livetrader import Signal, Strategy


        class S(Strategy):
            name = "{name}"
            interval = "{interval}"

            async def get_signal(self, ctx):
                return None
        {extra}
        '''


# --- the folder loads ---------------------------------------------------------------------------


def test_good_folder_loads_every_strategy_with_its_location(tmp_path: Path) -> None:
    write(tmp_path, "alpha.py", strategy_source("alpha", "5m"))
    write(
        tmp_path,
        "beta.py",
        """
        from livetrader import Strategy


        class One(Strategy):
            name = "beta-one"

            async def get_signal(self, ctx):
                return None


        class Two(Strategy):
            name = "beta-two"
            interval = "1h"
            risk = "conservative"

            async def get_signal(self, ctx):
                return None
        """,
    )
    write(tmp_path, "_private.py", "raise RuntimeError('never imported as a strategy')\n")
    write(tmp_path, "notes.txt", "not python")

    registry = load_strategies(tmp_path)

    assert registry.ok and registry.problems == []
    assert registry.names() == ["alpha", "beta-one", "beta-two"]
    alpha = registry.strategies["alpha"]
    assert alpha.file == tmp_path / "alpha.py" and alpha.line == 4
    assert registry.strategies["beta-two"].line == 11
    assert registry.get("beta-two").interval == "1h"
    assert registry.get("beta-two").risk == "conservative"
    registry.raise_problems()  # nothing to raise


def test_strategies_imported_from_a_sibling_are_not_collected_twice(tmp_path: Path) -> None:
    write(tmp_path, "base.py", strategy_source("base"))
    write(
        tmp_path,
        "variant.py",
        """
        from base import S  # imported, not defined here: must not count as a duplicate


        class Variant(S):
            name = "variant"
        """,
    )
    registry = load_strategies(tmp_path)
    assert registry.ok, registry.problems
    assert registry.names() == ["base", "variant"]


def test_missing_folder_says_how_to_point_at_one(tmp_path: Path) -> None:
    with pytest.raises(StrategyLoadError) as caught:
        load_strategies(tmp_path / "nowhere")
    message = str(caught.value)
    assert "nowhere" in message and "--strategies-dir" in message


# --- import failures name file and line -------------------------------------------------------


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, "good.py", strategy_source("good"))
    write(tmp_path, "broken.py", "x = 1\ndef oops(:\n    pass\n")

    registry = load_strategies(tmp_path)

    assert registry.names() == ["good"]  # one broken file does not hide the others
    [problem] = registry.problems
    assert problem.file == tmp_path / "broken.py" and problem.line == 2
    assert "syntax" in problem.message
    with pytest.raises(StrategyLoadError) as caught:
        registry.raise_problems()
    assert f"{tmp_path / 'broken.py'}:2:" in str(caught.value)


def test_exception_at_import_names_file_and_line(tmp_path: Path) -> None:
    write(
        tmp_path,
        "explodes.py",
        """
        import math

        LIMIT = math.sqrt(4)
        RATIO = LIMIT / 0
        """,
    )
    registry = load_strategies(tmp_path)
    [problem] = registry.problems
    assert (problem.file.name, problem.line) == ("explodes.py", 4)
    assert "ZeroDivisionError" in problem.message


def test_exception_inside_a_function_called_at_import_points_at_the_innermost_line(tmp_path: Path) -> None:
    write(
        tmp_path,
        "deep.py",
        """
        def setup():
            raise ValueError("bad setting")


        setup()
        """,
    )
    [problem] = load_strategies(tmp_path).problems
    assert problem.line == 2 and "bad setting" in problem.message


def test_sys_exit_at_import_is_a_problem_not_an_exit(tmp_path: Path) -> None:
    write(tmp_path, "quits.py", "import sys\nsys.exit(3)\n")
    [problem] = load_strategies(tmp_path).problems
    assert problem.line == 2 and "SystemExit" in problem.message


def test_requesting_a_strategy_whose_file_failed_to_import_shows_the_failure(tmp_path: Path) -> None:
    write(tmp_path, "ok.py", strategy_source("ok"))
    write(tmp_path, "broken.py", strategy_source("broken", extra="undefined_name + 1\n"))
    registry = load_strategies(tmp_path)
    with pytest.raises(StrategyLoadError) as caught:
        registry.get("broken")
    assert "broken.py:10" in str(caught.value) and "NameError" in str(caught.value)


# --- invalid declarations -----------------------------------------------------------------------


def test_duplicate_names_name_both_files(tmp_path: Path) -> None:
    write(tmp_path, "a.py", strategy_source("twin"))
    write(tmp_path, "b.py", strategy_source("twin"))

    registry = load_strategies(tmp_path)

    [problem] = registry.problems
    assert problem.file == tmp_path / "b.py" and problem.line == 4
    assert "a.py:4" in problem.message and "twin" in problem.message
    assert "twin" not in registry.strategies  # ambiguous: neither is listed as usable
    with pytest.raises(StrategyLoadError) as caught:
        registry.get("twin")
    assert "a.py" in str(caught.value) and "b.py" in str(caught.value)


def test_missing_name_is_reported_at_the_class(tmp_path: Path) -> None:
    write(
        tmp_path,
        "anonymous.py",
        """
        from livetrader import Strategy


        class Nameless(Strategy):
            async def get_signal(self, ctx):
                return None
        """,
    )
    [problem] = load_strategies(tmp_path).problems
    assert (problem.file.name, problem.line) == ("anonymous.py", 4)
    assert "Nameless has no name" in problem.message


def test_inherited_name_does_not_count(tmp_path: Path) -> None:
    write(
        tmp_path,
        "family.py",
        """
        from livetrader import Strategy


        class Parent(Strategy):
            name = "parent"

            async def get_signal(self, ctx):
                return None


        class Child(Parent):
            interval = "5m"
        """,
    )
    registry = load_strategies(tmp_path)
    [problem] = registry.problems
    assert problem.line == 11 and "Child has no name" in problem.message


def test_missing_get_signal_is_reported_at_the_class(tmp_path: Path) -> None:
    write(
        tmp_path,
        "lazy.py",
        """
        from livetrader import Strategy


        class Lazy(Strategy):
            name = "lazy"
        """,
    )
    registry = load_strategies(tmp_path)
    [problem] = registry.problems
    assert (problem.line, problem.name) == (4, "lazy")
    assert "get_signal" in problem.message
    with pytest.raises(StrategyLoadError, match=r"lazy\.py:4"):
        registry.get("lazy")


def test_invalid_interval_is_reported_at_its_line(tmp_path: Path) -> None:
    write(tmp_path, "odd.py", strategy_source("odd", "7m"))
    registry = load_strategies(tmp_path)
    [problem] = registry.problems
    assert (problem.file.name, problem.line) == ("odd.py", 6)
    assert "'7m'" in problem.message and all(i in problem.message for i in SIGNAL_INTERVALS)
    assert "odd" not in registry.strategies


def test_invalid_name_and_risk_are_reported(tmp_path: Path) -> None:
    write(
        tmp_path,
        "weird.py",
        """
        from livetrader import Strategy


        class Weird(Strategy):
            name = "has spaces"
            risk = 3

            async def get_signal(self, ctx):
                return None
        """,
    )
    problems = load_strategies(tmp_path).problems
    assert [p.line for p in problems] == [5, 6]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    write(tmp_path, "one.py", "def broken(:\n")
    write(tmp_path, "two.py", strategy_source("two", "2m"))
    write(tmp_path, "three.py", "raise ImportError('no such thing')\n")
    registry = load_strategies(tmp_path)
    with pytest.raises(StrategyLoadError) as caught:
        registry.raise_problems()
    message = str(caught.value)
    assert "3 problems" in message
    for fragment in ("one.py:1:", "two.py:6:", "three.py:1:"):
        assert fragment in message


# --- selecting a strategy -----------------------------------------------------------------------


def test_unknown_name_suggests_close_ones(tmp_path: Path) -> None:
    write(tmp_path, "a.py", strategy_source("my-strategy"))
    write(tmp_path, "b.py", strategy_source("dip-buyer"))
    registry = load_strategies(tmp_path)

    with pytest.raises(UnknownStrategyError) as caught:
        registry.get("my-strategie")
    message = str(caught.value)
    assert "did you mean 'my-strategy'?" in message
    assert "Loaded: dip-buyer, my-strategy" in message and "livetrader strategies" in message

    with pytest.raises(UnknownStrategyError) as caught:
        registry.get("zzz")
    assert "did you mean" not in str(caught.value)


def test_suggestions_include_strategies_that_failed_their_checks(tmp_path: Path) -> None:
    write(tmp_path, "a.py", strategy_source("momentum", "2m"))
    with pytest.raises(UnknownStrategyError, match="did you mean 'momentum'"):
        load_strategies(tmp_path).get("momentun")


def test_unknown_name_in_an_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(UnknownStrategyError, match="Loaded: none from"):
        load_strategies(tmp_path).get("anything")


# --- the Strategy class -------------------------------------------------------------------------


def test_sync_get_signal_is_allowed_and_recorded_once(tmp_path: Path) -> None:
    write(
        tmp_path,
        "plain.py",
        """
        from livetrader import Signal, Strategy


        class Plain(Strategy):
            name = "plain"

            def get_signal(self, ctx):
                return Signal(position="long", take_profit=102.0, stop_loss=99.0)
        """,
    )
    registry = load_strategies(tmp_path)
    assert registry.ok
    cls = registry.get("plain")
    assert cls.signal_is_async is False
    signal = asyncio.run(ask_signal(instantiate(cls), None))  # type: ignore[arg-type]
    assert signal == Signal(position="long", take_profit=102.0, stop_loss=99.0)


def test_async_flag_and_callbacks_are_computed_per_class() -> None:
    class Async(Strategy):
        name = "async"

        async def get_signal(self, ctx):
            return None

        def on_open(self, result):
            self.opened = result

        async def on_close(self, result):
            self.closed = result

    assert Async.signal_is_async is True
    assert Async.callbacks == {"on_open": False, "on_close": True}
    strategy = Async()

    async def scenario() -> None:
        await run_callback(strategy, "on_open", "r1")  # type: ignore[arg-type]
        await run_callback(strategy, "on_close", "r2")  # type: ignore[arg-type]
        await run_callback(strategy, "on_idle", "r3")  # type: ignore[arg-type]

    asyncio.run(scenario())
    assert (strategy.opened, strategy.closed) == ("r1", "r2")


def test_constructor_error_names_file_and_line(tmp_path: Path) -> None:
    write(
        tmp_path,
        "fragile.py",
        """
        from livetrader import Strategy


        class Fragile(Strategy):
            name = "fragile"

            def __init__(self):
                self.table = {}["missing"]

            async def get_signal(self, ctx):
                return None
        """,
    )
    cls = load_strategies(tmp_path).get("fragile")
    with pytest.raises(StrategyLoadError) as caught:
        instantiate(cls)
    assert "fragile.py:8" in str(caught.value) and "KeyError" in str(caught.value)


def test_a_constructor_calling_sys_exit_is_a_load_error_not_an_exit(tmp_path: Path) -> None:
    write(
        tmp_path,
        "quitter.py",
        """
        import sys

        from livetrader import Strategy


        class Quitter(Strategy):
            name = "quitter"

            def __init__(self):
                sys.exit(0)

            async def get_signal(self, ctx):
                return None
        """,
    )
    with pytest.raises(StrategyLoadError) as caught:
        instantiate(load_strategies(tmp_path).get("quitter"))
    assert "quitter.py:10" in str(caught.value) and "SystemExit" in str(caught.value)


# --- helper modules -----------------------------------------------------------------------------


def test_strategy_may_import_a_helper_from_its_folder(tmp_path: Path) -> None:
    for folder, threshold in (("first", 1), ("second", 2)):
        write(tmp_path / folder, "_helpers.py", f"THRESHOLD = {threshold}\n")
        write(
            tmp_path / folder,
            "uses_helper.py",
            f"""
            from _helpers import THRESHOLD
            from livetrader import Strategy


            class UsesHelper(Strategy):
                name = "uses-helper-{folder}"
                limit = THRESHOLD

                async def get_signal(self, ctx):
                    return None
            """,
        )
    first = load_strategies(tmp_path / "first")
    second = load_strategies(tmp_path / "second")
    assert first.ok and second.ok
    # Each folder gets its own helper, not a stale one cached from the previous load.
    assert first.get("uses-helper-first").limit == 1
    assert second.get("uses-helper-second").limit == 2


def test_syntax_error_in_a_helper_is_reported_at_the_import(tmp_path: Path) -> None:
    write(tmp_path, "_shared.py", "x = (\n")
    write(tmp_path, "user.py", "import math\nimport _shared\n")
    [problem] = load_strategies(tmp_path).problems
    assert (problem.file.name, problem.line) == ("user.py", 2)
    assert "_shared.py" in problem.message


# --- the shipped examples -----------------------------------------------------------------------

START_MS = 1_700_000_000_000 // (60 * MINUTE_MS) * (60 * MINUTE_MS)  # on an hour boundary


def random_walk(minutes: int, seed: int) -> list[Candle]:
    """A seeded random-walk market: 1-minute moves of ~0.07 %, with calm and busy spells."""
    rng = random.Random(seed)
    candles: list[Candle] = []
    close, volatility = 30_000.0, 0.0007
    for i in range(minutes):
        # Volatility drifts between regimes so the examples see both quiet and stretched markets.
        volatility = min(0.0015, max(0.0004, volatility * math.exp(rng.gauss(0, 0.05))))
        open_ = close
        close = open_ * math.exp(rng.gauss(0, volatility))
        high = max(open_, close) * (1 + abs(rng.gauss(0, volatility / 3)))
        low = min(open_, close) * (1 - abs(rng.gauss(0, volatility / 3)))
        candles.append(Candle(START_MS + i * MINUTE_MS, open_, high, low, close, rng.uniform(1, 10)))
    return candles


def spec5_problems(signal: Signal, price: float) -> list[str]:
    """docs/behaviour.md §5, restated independently so the examples are checked against the contract."""
    if signal.position not in ("long", "short"):
        return ["position"]
    entry = signal.price_open if signal.price_open is not None else price
    levels = (entry, signal.take_profit, signal.stop_loss)
    if not all(math.isfinite(v) and v > 0 for v in levels):
        return ["prices"]
    sign = 1 if signal.position == "long" else -1
    problems = []
    if not sign * (signal.take_profit - entry) > 0 or not sign * (entry - signal.stop_loss) > 0:
        problems.append("order of TP / entry / SL")
    tp_distance = abs(signal.take_profit - entry) / entry * 100
    sl_distance = abs(signal.stop_loss - entry) / entry * 100
    if tp_distance < 0.5 - 1e-9:
        problems.append("TP closer than 0.5 %")
    if not 0.5 - 1e-9 <= sl_distance <= 20 + 1e-9:
        problems.append("SL not within 0.5..20 %")
    if not isinstance(signal.minutes, int) or not 0 < signal.minutes <= 1440:
        problems.append("minutes")
    opens_now = signal.price_open is None or sign * (price - signal.price_open) <= 0
    if opens_now and not sign * (signal.stop_loss - price) < 0 < sign * (signal.take_profit - price):
        problems.append("current price already at or beyond SL/TP")
    return problems


def run_example(cls: type[Strategy], candles: list[Candle]) -> list[tuple[float, Signal]]:
    """Ask ``cls`` once per interval over ``candles``, as the throttle would; (price, signal) pairs."""
    strategy = instantiate(cls)
    step = SIGNAL_INTERVALS[cls.interval]

    async def load(start_ms: int, end_ms: int) -> list[Candle]:
        first = max(0, (start_ms - START_MS) // MINUTE_MS)
        return candles[first : max(0, (end_ms - START_MS) // MINUTE_MS)]

    async def scenario() -> list[tuple[float, Signal]]:
        found = []
        for now_ms in range(START_MS + 60 * MINUTE_MS, START_MS + len(candles) * MINUTE_MS, step):
            index = (now_ms - START_MS) // MINUTE_MS
            price = vwap(candles[index - 5 : index])
            ctx = Context("BTC/USDT", cls.name, "test", now_ms, price, load)
            signal = await ask_signal(strategy, ctx)
            if signal is not None:
                found.append((price, signal))
        return found

    return asyncio.run(scenario())


@pytest.fixture(scope="module")
def shipped() -> StrategyRegistry:
    return load_strategies(SHIPPED)


@pytest.fixture(scope="module")
def shipped_signals(shipped: StrategyRegistry) -> dict[str, list[tuple[float, Signal]]]:
    candles = random_walk(2000, seed=11)
    return {info.name: run_example(info.cls, candles) for info in shipped}


def test_shipped_strategies_load_without_problems(shipped: StrategyRegistry) -> None:
    assert shipped.ok, shipped.problems
    assert len(shipped) >= 3 and "my-strategy" in shipped
    assert shipped.get("my-strategy").interval == "5m"


def test_shipped_signals_pass_spec_validation(shipped_signals: dict[str, list[tuple[float, Signal]]]) -> None:
    for name, found in shipped_signals.items():
        for price, signal in found:
            assert spec5_problems(signal, price) == [], (name, price, signal)
            assert signal_problems(signal, price) == [], (name, price, signal)  # the engine's own check


def test_my_strategy_trades_on_a_random_walk(shipped_signals: dict[str, list[tuple[float, Signal]]]) -> None:
    assert len(shipped_signals["my-strategy"]) >= 1
    assert all(signal.price_open is None for _, signal in shipped_signals["my-strategy"])


def test_an_example_schedules_entries_with_price_open(
    shipped_signals: dict[str, list[tuple[float, Signal]]],
) -> None:
    scheduled = [
        (price, signal)
        for found in shipped_signals.values()
        for price, signal in found
        if signal.price_open is not None
    ]
    assert scheduled
    # Not yet reached: a long waits below the price, a short above it.
    assert all(
        (signal.price_open < price) if signal.position == "long" else (signal.price_open > price)
        for price, signal in scheduled
    )


def test_an_example_goes_short(shipped_signals: dict[str, list[tuple[float, Signal]]]) -> None:
    positions = {signal.position for found in shipped_signals.values() for _, signal in found}
    assert positions == {"long", "short"}


def test_shipped_risk_profiles_exist_in_the_shipped_config(shipped: StrategyRegistry) -> None:
    from livetrader.config import load_config

    config = load_config(SHIPPED.parent / "config" / "livetrader.toml")
    for info in shipped:
        if info.cls.risk is not None:
            config.risk_profile(info.cls.risk)  # raises if missing


class _Waits(Strategy):
    """Answers after ``pause`` seconds of awaiting (never, with None); records what it saw."""

    name = "waits"
    interval = "1m"

    def __init__(self, pause: float | None, fail: bool = False) -> None:
        self.pause, self.fail, self.cancelled, self.steps = pause, fail, False, 0

    async def get_signal(self, ctx):  # type: ignore[no-untyped-def]
        try:
            for _ in range(3):  # several suspensions, each resumed with the future's result
                self.steps += 1
                await asyncio.sleep(0 if self.pause is None else self.pause / 3)
            if self.pause is None:
                await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.fail:
            raise ValueError("broken after waiting")
        return Signal("long", 110.0, 90.0)


class _Immediate(Strategy):
    name = "immediate"
    interval = "1m"

    async def get_signal(self, ctx):  # type: ignore[no-untyped-def]
        return Signal("short", 90.0, 110.0)


def test_an_ask_within_a_timeout_answers_waits_fails_or_times_out_as_awaited():
    """``ask_signal`` runs the first step itself and times only an ask that suspends."""

    async def main() -> None:
        assert (await ask_signal(_Immediate(), None, 0.0)).position == "short"  # no wait, no timer
        slow = _Waits(0.03)
        assert (await ask_signal(slow, None, 5.0)).position == "long" and slow.steps == 3
        broken = _Waits(0.03, fail=True)
        with pytest.raises(ValueError, match="broken after waiting"):
            await ask_signal(broken, None, 5.0)
        hung = _Waits(None)
        with pytest.raises(TimeoutError):
            await ask_signal(hung, None, 0.1)
        assert hung.cancelled and hung.steps == 3  # cancelled at its await, not abandoned
        # The task that asked is cancelled from outside: the strategy is cancelled with it.
        outer = _Waits(None)
        task = asyncio.create_task(ask_signal(outer, None, 60.0))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert outer.cancelled

    asyncio.run(main())


SIX_CLASSES = '''
from livetrader import Signal, Strategy


class One(Strategy):
    name = "six-one"

    async def get_signal(self, ctx):
        return Signal("long", take_profit=ctx.price * 1.006, stop_loss=ctx.price * 0.994, minutes=2)


class Two(Strategy):
    name = "six-two"

    async def get_signal(self, ctx):
        return None


class FourHours(Strategy):
    name = "six-4h"
    interval = "4h"

    async def get_signal(self, ctx):
        return None


class Three(Strategy):
    name = "six-three"
    interval = "5m"

    async def get_signal(self, ctx):
        return None


class Four(Strategy):
    name = "six-four"

    async def get_signal(self, ctx):
        return None


class Five(Strategy):
    name = "six-five"
    interval = "1h"

    async def get_signal(self, ctx):
        return None
'''


def test_one_broken_class_disables_only_itself(tmp_path: Path) -> None:
    write(tmp_path, "six.py", SIX_CLASSES)
    registry = load_strategies(tmp_path)
    [problem] = registry.problems
    assert (problem.file.name, problem.line, problem.name) == ("six.py", 20, "six-4h")
    assert registry.names() == ["six-five", "six-four", "six-one", "six-three", "six-two"]
    for name in registry.names():
        assert registry.get(name).name == name  # usable, not "cannot be used" because of a neighbour
    with pytest.raises(StrategyLoadError, match=r"strategy 'six-4h' cannot be used:\n  .*six\.py:20: .*'4h'"):
        registry.get("six-4h")
