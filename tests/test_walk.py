"""``livetrader walk`` in this process: parameters, grids, hold-out, rows equal to `backtest`, failing runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from livetrader.backtest.walk import (
    RANKS,
    WalkPayload,
    WalkRun,
    candle_columns,
    candles_of,
    execute,
    expand_values,
    holdout_split,
    ranked,
)
from livetrader.cli.backtest import BacktestRequest, run_all
from livetrader.cli.walk import WalkRequest
from livetrader.cli.walk import run as run_walk
from livetrader.config import Config
from livetrader.core.price import MINUTE_MS, Candle
from livetrader.errors import StrategyLoadError, UsageError
from livetrader.strategy.base import Strategy, instantiate_with, load_strategies, params_of

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_704_067_200_000  # 2024-01-01T00:00Z
DAY = 1440 * MINUTE_MS

#: A strategy with parameters, written into a test's own strategies folder: it goes long on a
#: fast/slow crossover, refuses fast >= slow in __init__, and raises in get_signal when asked to.
PARAM_STRATEGY = '''
from livetrader import Signal, Strategy


class Crossing(Strategy):
    name = "crossing"
    interval = "5m"
    cost = 250.0
    fast: int = 5
    slow: int = 20
    width: float = 1.5
    explode: bool = False

    def __init__(self):
        if self.fast >= self.slow:
            raise ValueError(f"fast {self.fast} must be below slow {self.slow}")

    async def get_signal(self, ctx):
        if self.explode:
            raise RuntimeError("boom")
        closes = [c.close for c in await ctx.candles("1m", limit=self.slow + 5)]
        if len(closes) < self.slow + 5:
            return None
        fast, slow = sum(closes[-self.fast:]) / self.fast, sum(closes[-self.slow:]) / self.slow
        if fast > slow * 1.0005:
            return Signal(position="long", take_profit=ctx.price * (1 + self.width / 100),
                          stop_loss=ctx.price * (1 - self.width / 100), minutes=180)
        return None
'''


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    directory = tmp_path / "strategies"
    directory.mkdir()
    (directory / "crossing.py").write_text(PARAM_STRATEGY)
    return directory


def crossing(folder: Path) -> type[Strategy]:
    return load_strategies(folder).get("crossing")


# -- parameters ------------------------------------------------------------------------------------


def test_parameters_are_the_annotated_class_attributes_with_a_default(folder):
    declared = params_of(crossing(folder))
    assert {name: (p.type, p.default) for name, p in declared.items()} == {
        "fast": (int, 5), "slow": (int, 20), "width": (float, 1.5), "explode": (bool, False)}


def test_settings_classvars_and_private_names_are_not_parameters():
    from typing import ClassVar

    class Plain(Strategy):
        name = "plain"
        interval: str = "5m"
        risk = None
        shared: ClassVar[int] = 3
        _hidden: int = 1
        no_default: int
        threshold: float = 0.5

    class Child(Plain):
        name = "child"
        depth: int = 2

    assert list(params_of(Plain)) == ["threshold"]
    assert list(params_of(Child)) == ["threshold", "depth"]


def test_a_run_overrides_parameters_before_init_and_the_class_keeps_its_defaults(folder):
    cls = crossing(folder)
    strategy = instantiate_with(cls, {"fast": 3, "width": 2})
    assert (strategy.fast, strategy.slow, strategy.width) == (3, 20, 2.0)
    assert isinstance(strategy.width, float)
    assert (cls.fast, cls.width) == (5, 1.5)
    with pytest.raises(StrategyLoadError, match=r"crossing.py:\d+: strategy 'crossing' could not be created"):
        instantiate_with(cls, {"fast": 30})  # __init__ refuses fast >= slow
    with pytest.raises(StrategyLoadError, match="has no parameter 'fats'.*fast, slow, width, explode"):
        instantiate_with(cls, {"fats": 3})
    with pytest.raises(StrategyLoadError, match="parameter 'fast' is int"):
        instantiate_with(cls, {"fast": True})


def test_grids_expand_ranges_lists_and_single_values():
    assert expand_values("fast", "5:30:5", int) == [5, 10, 15, 20, 25, 30]
    assert expand_values("fast", "5:29:5", int) == [5, 10, 15, 20, 25]
    assert expand_values("width", "0.1:0.3:0.1", float) == [0.1, 0.2, 0.3]
    assert expand_values("slow", "20,50,100,50", int) == [20, 50, 100]
    assert expand_values("explode", "true,no", bool) == [True, False]
    assert expand_values("mode", "a,b", str) == ["a", "b"]
    for spec, message in [("x", "'x' is not a int"), ("5:1:1", "STOP at least START"), ("1:5:0", "step must"),
                          ("1:5", "START:STOP:STEP"), (",", "no value")]:
        with pytest.raises(UsageError, match=message):
            expand_values("fast", spec, int)


def test_the_holdout_is_the_last_share_of_the_range_in_whole_minutes():
    assert holdout_split(T0, T0 + 4 * DAY, "25%") == T0 + 3 * DAY
    assert holdout_split(T0, T0 + 4 * DAY, "0.5") == T0 + 2 * DAY
    assert holdout_split(T0, T0 + DAY, None) is None
    for bad in ("0%", "100%", "abc", "-5%"):
        with pytest.raises(UsageError, match="--holdout"):
            holdout_split(T0, T0 + DAY, bad)


def test_candles_travel_as_columns_and_come_back_equal():
    candles = [Candle(T0 + i * MINUTE_MS, 1.0 + i, 2.0 + i, 0.5 + i, 1.5 + i, 10.0 * i) for i in range(50)]
    assert candles_of(candle_columns(candles)) == candles


def test_ranking_puts_the_best_first_and_failures_and_na_last():
    rows = [{"run": 0, "error": None, "stats": {"sharpe": 0.1, "max_drawdown": 5.0}},
            {"run": 1, "error": "boom"},
            {"run": 2, "error": None, "stats": {"sharpe": None, "max_drawdown": 1.0}},
            {"run": 3, "error": None, "stats": {"sharpe": 0.4, "max_drawdown": 9.0}}]
    assert [r["run"] for r in ranked(rows, "sharpe")] == [3, 0, 2, 1]
    assert [r["run"] for r in ranked(rows, "max_drawdown")] == [2, 0, 3, 1]
    assert "pnl" in RANKS and "sharpe" in RANKS


# -- the walk, in this process ---------------------------------------------------------------------


def walk_request(tmp_path: Path, **changes) -> WalkRequest:
    fields = dict(symbols=("BTCUSDT",), strategies=("crossing",), params=("fast=3:9:3", "slow=8,20"),
                  start=T0, end=T0 + 10 * DAY, exchange="sim", candles=None, holdout=None, rank="pnl", top=3,
                  workers=1, cluster=None, out=tmp_path / "walk", as_json=True, strict=False)
    fields.update(changes)
    return WalkRequest(**fields)


def backtest_document(folder: Path, capsys, params: dict, start: int, end: int) -> dict:
    request = BacktestRequest(symbol="BTCUSDT", strategy="crossing", start=start, end=end, exchange="sim",
                              candles=None, strict=False, as_json=True, report=None,
                              params=tuple(f"{k}={v}" for k, v in params.items()))
    capsys.readouterr()
    run_all([request], Config(), folder)
    return json.loads(capsys.readouterr().out)


def test_every_run_equals_a_backtest_with_the_same_parameters_and_a_failing_run_stays_in_its_row(
        tmp_path, folder, capsys):
    document = run_walk(walk_request(tmp_path), Config(), folder)
    rows = document["runs"]
    assert [(r["params"]["fast"], r["params"]["slow"]) for r in rows] == [
        (3, 8), (3, 20), (6, 8), (6, 20), (9, 8), (9, 20)]
    failed = [r for r in rows if r["error"]]
    assert [r["params"] for r in failed] == [{"fast": 9, "slow": 8}]  # __init__ refused it; the others ran
    assert "fast 9 must be below slow 8" in failed[0]["error"]
    assert document["walk"]["failed"] == 1
    for row in rows:
        if row["error"]:
            continue
        assert row["stats"]["total_closed"] > 0
        single = backtest_document(folder, capsys, row["params"], T0, T0 + 10 * DAY)
        assert row["stats"] == single["stats"]
        assert row["summary"] == single["trade_summary"]
        # The strategy's position cost of 250 quote units gives the PnL in quote currency.
        assert row["pnl_cost"] == pytest.approx(row["stats"]["total_pnl"] * 2.5)
    # The report files: markdown and the same JSON document.
    assert json.loads((tmp_path / "walk.json").read_text()) == document
    text = (tmp_path / "walk.md").read_text()
    assert "## Best runs" in text and "| fast=9 slow=8 | failed: StrategyLoadError" in text
    best = [r["run"] for r in sorted((r for r in rows if not r["error"]),
                                     key=lambda r: (-r["stats"]["total_pnl"], r["run"]))][:3]
    assert document["best"] == best


def test_the_holdout_reruns_the_best_on_the_last_part_side_by_side(tmp_path, folder, capsys):
    document = run_walk(walk_request(tmp_path, holdout="30%", params=("fast=3,6",)), Config(), folder)
    split = T0 + 7 * DAY
    assert document["walk"]["holdout_from"] == split
    assert all(r["to"] == split for r in document["runs"])
    held = document["holdout"]
    assert [r["main_run"] for r in held] == document["best"]
    for row in held:
        assert (row["phase"], row["from"], row["to"]) == ("holdout", split, T0 + 10 * DAY)
        single = backtest_document(folder, capsys, row["params"], split, T0 + 10 * DAY)
        assert row["stats"] == single["stats"]
    assert "(hold-out)" in (tmp_path / "walk.md").read_text()


def test_with_strict_a_strategy_error_fails_its_run_only(folder):
    from livetrader.cli.backtest import load_range

    symbol, start, end, candles, _ = load_range(
        BacktestRequest("BTCUSDT", "", T0, T0 + DAY, "sim", None, False, False, None), Config())
    payload = WalkPayload({symbol: candle_columns(candles)}, str(folder), None, strict=True)
    runs = [WalkRun(0, "crossing", symbol, {"explode": True}, start, end),
            WalkRun(1, "crossing", symbol, {}, start, end)]
    first, second = execute(runs, payload, workers=1)
    assert "StrategyFailure" in first["error"] and "boom" in first["error"]
    assert second["error"] is None and second["stats"]["total_closed"] > 0
    lenient = execute(runs, WalkPayload(payload.columns, str(folder), None, strict=False), workers=1)
    assert lenient[0]["error"] is None and lenient[0]["strategy_errors"]["strategy"] > 0


def test_a_parameter_no_strategy_declares_is_refused_with_what_they_declare(tmp_path, folder):
    with pytest.raises(UsageError, match="--param fats: no chosen strategy declares it.*crossing: fast, slow"):
        run_walk(walk_request(tmp_path, params=("fats=1,2",)), Config(), folder)
    with pytest.raises(UsageError, match="--rank"):
        run_walk(walk_request(tmp_path, rank="luck"), Config(), folder)
    with pytest.raises(UsageError, match="--workers must be at least 1"):
        run_walk(walk_request(tmp_path, workers=0), Config(), folder)


def test_backtest_takes_one_value_per_parameter(folder, capsys):
    with pytest.raises(UsageError, match="one value per parameter"):
        backtest_document(folder, capsys, {"fast": "3:9:3"}, T0, T0 + DAY)
    with pytest.raises(UsageError, match="no such parameter"):
        backtest_document(folder, capsys, {"fats": "3"}, T0, T0 + DAY)
    doc = backtest_document(folder, capsys, {"fast": "4"}, T0, T0 + DAY)
    assert doc["summary"]["params"] == {"fast": 4}


@pytest.mark.parametrize("columns", [80, 200])
def test_the_terminal_table_fits_its_width_and_shows_the_holdout_beside_the_rank(tmp_path, folder, capsys,
                                                                                   monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", str(columns))
    run_walk(walk_request(tmp_path, holdout="30%", params=("fast=3,6", "slow=8,20"), as_json=False), Config(), folder)
    lines = capsys.readouterr().out.splitlines()
    table = [line for line in lines if line[:1] in "┏┃┡│└"]
    assert table and all(len(line) <= columns and "…" not in line for line in table), "\n".join(lines)  # none cut
    header = next(line for line in table if "Parameters" in line)
    assert "pnl (hold-out)" in header and "PnL %" in header
    # Wide: every column; narrow: the least needed left out, and said so.
    assert ("Buy & hold" in header) == (columns == 200)
    assert ("Every column, and every run: the report." in lines) == (columns == 80)
