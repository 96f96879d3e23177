"""The real ``livetrader backtest`` command: several pairs in one call, and what it says about a file's range."""

import json

import pytest
from daemon import DATA, run, workdir

pytestmark = pytest.mark.e2e  # every test here starts the real command as a process

# One day of the shipped candle file: enough for trades, quick to replay.
DAY = ("--candles", str(DATA), "--from", "2017-11-12", "--to", "2017-11-13")


@pytest.fixture
def cwd(tmp_path):
    return workdir(tmp_path)


def test_every_symbol_and_strategy_is_backtested_one_json_document_lists_them(cwd):
    result = run(cwd, "backtest", "BTCUSDT", "ETHUSDT", "-s", "always-long", "--strategy", "quick-long", *DAY,
                 "--json")
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout)["backtests"]
    pairs = [(r["summary"]["symbol"], r["summary"]["strategy"]) for r in runs]
    assert pairs == [("BTCUSDT", "always-long"), ("BTCUSDT", "quick-long"),
                     ("ETHUSDT", "always-long"), ("ETHUSDT", "quick-long")]
    assert all(r["trades"] and r["stats"] for r in runs)
    # each pair is the backtest it would be alone
    alone = json.loads(run(cwd, "backtest", "ETHUSDT", "-s", "quick-long", *DAY, "--json").stdout)
    assert alone["trades"] == runs[3]["trades"]


def test_several_pairs_print_one_summary_and_write_one_report_each(cwd):
    result = run(cwd, "backtest", "BTCUSDT", "-s", "always-long", "-s", "quick-long", *DAY, "--report", "out/bt.md")
    assert result.returncode == 0, result.stderr
    assert "Backtest always-long on BTCUSDT" in result.stdout and "Backtest quick-long on BTCUSDT" in result.stdout
    assert sorted(p.name for p in (cwd / "out").iterdir()) == ["bt_BTCUSDT_always-long.md", "bt_BTCUSDT_quick-long.md"]


def test_an_unknown_second_strategy_is_refused_before_anything_runs(cwd):
    result = run(cwd, "backtest", "BTCUSDT", "-s", "always-long", "-s", "nope", *DAY)
    assert result.returncode == 2 and "unknown strategy 'nope'" in result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr


def test_a_from_after_the_file_says_the_files_range_not_from_before_to(cwd):
    result = run(cwd, "backtest", "BTCUSDT", "-s", "always-long", "--candles", str(DATA), "--from", "2024-01-01")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--from must be before --to" not in result.stderr
    assert "--from 2024-01-01T00:00Z is past the end of" in result.stderr
    assert "covers 2017-11-04T23:02Z .. 2017-11-14T23:00Z" in result.stderr
    assert "pass a --from before 2017-11-14T23:00Z" in result.stderr


def test_a_to_before_the_file_says_the_files_range(cwd):
    result = run(cwd, "backtest", "BTCUSDT", "-s", "always-long", "--candles", str(DATA), "--to", "2017-01-01")
    assert result.returncode == 2 and "--from must be before --to" not in result.stderr
    assert "covers 2017-11-04T23:02Z .. 2017-11-14T23:00Z" in result.stderr
    assert "pass a --to after 2017-11-04T23:07Z" in result.stderr


@pytest.mark.parametrize(("strategy", "kind", "said"), [("broken", "strategy", "broken on purpose"),
                                                         ("garbage", "signal", "invalid signal")])
def test_strategy_errors_are_counted_like_live_and_strict_stops_at_the_first(tmp_path, strategy, kind, said):
    cwd = workdir(tmp_path)
    args = ("backtest", "BTCUSDT", "--strategy", strategy, "--from", "2024-01-01", "--to", "2024-01-01T06:00")
    counted = run(cwd, *args, "--json")
    assert counted.returncode == 0, counted.stderr
    errors = json.loads(counted.stdout)["summary"]["errors"]
    assert list(errors) == [kind] and errors[kind]["count"] > 10
    first = errors[kind]["first"]
    assert said in first["message"] and first["at"] == json.loads(counted.stdout)["summary"]["from"]
    text = run(cwd, *args)
    assert text.returncode == 0 and f"{kind} errors (ticks left idle)" in text.stdout
    stopped = run(cwd, *args, "--strict")
    assert stopped.returncode == 1 and said in stopped.stderr and "Traceback" not in stopped.stderr


LEAVES_THINGS_OPEN = '''
import threading
import time

from livetrader import Strategy

LOG = open("asked.log", "w")  # never closed: flushed when the process ends, as Python does


def late_write():
    time.sleep(0.5)
    with open("thread.done", "w") as f:
        f.write("done")


class LeavesThingsOpen(Strategy):
    name = "leaves-things-open"
    interval = "1m"

    def __init__(self):
        threading.Thread(target=late_write).start()  # not a daemon: the process waits for it

    async def get_signal(self, ctx):
        LOG.write(f"{ctx.now_ms}\\n")
        return None
'''


def test_the_command_ends_as_python_does_files_flushed_and_threads_joined(cwd):
    """The candles are frozen out of the collector's sight for the replay, and the strategy's module
    with them; at the end all is handed back (``cli.backtest.candles_frozen``), so the exit is
    Python's own: a strategy's unclosed file is flushed, its thread finishes. Frozen to the end,
    the file lost its last buffer."""
    (cwd / "strategies" / "leaves_things_open.py").write_text(LEAVES_THINGS_OPEN)
    result = run(cwd, "backtest", "BTCUSDT", "-s", "leaves-things-open", *DAY, "--json")
    assert result.returncode == 0, result.stderr
    asked = json.loads(result.stdout)["summary"]["strategy_calls"]
    assert asked > 1000 and len((cwd / "asked.log").read_text().splitlines()) == asked
    assert (cwd / "thread.done").read_text() == "done"
