"""``livetrader walk`` across processes: the local pool and a Dask LocalCluster give the rows of one
process, and the command as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from daemon import run
from test_walk import DAY, PARAM_STRATEGY, T0

from livetrader.backtest.walk import WalkPayload, WalkRun, candle_columns, execute
from livetrader.cli.backtest import BacktestRequest, load_range
from livetrader.config import Config

pytestmark = pytest.mark.e2e


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


@pytest.fixture
def walk_setup(tmp_path: Path) -> tuple[list[WalkRun], WalkPayload]:
    folder = tmp_path / "strategies"
    folder.mkdir()
    (folder / "crossing.py").write_text(PARAM_STRATEGY)
    payload_columns, runs = {}, []
    for symbol in ("BTCUSDT", "ETHUSDT"):
        resolved, start, end, candles, _ = load_range(
            BacktestRequest(symbol, "", T0, T0 + 5 * DAY, "sim", None, False, False, None), Config())
        payload_columns[resolved] = candle_columns(candles)
        for fast in (3, 6, 30):  # fast=30 >= slow=20: that run fails in __init__, the others run
            runs.append(WalkRun(len(runs), "crossing", resolved, {"fast": fast}, start, end))
    return runs, WalkPayload(payload_columns, str(folder), None)


def test_the_process_pool_and_a_dask_cluster_give_the_rows_of_one_process(walk_setup, tmp_path):
    runs, payload = walk_setup
    alone = without_timing(execute(runs, payload, workers=1))
    assert sum(1 for r in alone if r["error"]) == 2 and all(r["stats"]["total_closed"] for r in alone if not r["error"])
    assert without_timing(execute(runs, payload, workers=2)) == alone

    from distributed import Client, LocalCluster

    # The cluster gets the strategies' source with the candles: its machines may not have the folder.
    files = {"crossing.py": PARAM_STRATEGY.encode()}
    shipped = WalkPayload(payload.columns, payload.strategies_dir, files)
    elsewhere = WalkPayload(payload.columns, str(tmp_path / "not-on-the-workers"), files)
    with LocalCluster(processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        on_dask = without_timing(execute(runs, shipped, cluster=client))
        (far,) = without_timing(execute(runs[:1], elsewhere, cluster=client))
    assert on_dask == alone  # errors name the user's file, not the worker's copy
    assert far == alone[0]


def test_walk_command_writes_the_report_and_refuses_mistakes_plainly(tmp_path):
    folder = tmp_path / "strategies"
    folder.mkdir()
    (folder / "crossing.py").write_text(PARAM_STRATEGY)
    args = ("walk", "BTCUSDT", "ETHUSDT", "--strategy", "crossing", "--param", "fast=3,6", "--param", "width=1,2",
            "--from", "2024-01-01", "--to", "2024-01-05", "--holdout", "25%", "--top", "2", "--workers", "2",
            "--strategies-dir", str(folder), "--out", "cmp")
    result = run(tmp_path, *args)
    assert result.returncode == 0, result.stderr
    assert "8 runs" in result.stdout and "cmp.md" in result.stdout
    doc = json.loads((tmp_path / "cmp.json").read_text())
    assert len(doc["runs"]) == 8 and len(doc["holdout"]) == 2 and doc["walk"]["workers"] == 2
    assert "## Best runs" in (tmp_path / "cmp.md").read_text()

    bad = run(tmp_path, "walk", "BTCUSDT", "--strategy", "crossing", "--param", "fast=x",
              "--strategies-dir", str(folder))
    assert bad.returncode == 2 and "'x' is not a int" in bad.stderr and "Traceback" not in bad.stderr
    nowhere = run(tmp_path, "walk", "BTCUSDT", "--strategy", "crossing", "--cluster", "tcp://127.0.0.1:9",
                  "--from", "2024-01-01", "--to", "2024-01-02", "--strategies-dir", str(folder))
    assert nowhere.returncode != 0 and "Traceback" not in nowhere.stderr, nowhere.stderr
    assert "cannot reach the Dask scheduler" in nowhere.stderr
