"""Every command with bad input: one clear message, the right exit code, never a traceback."""

import json

import pytest
from daemon import DATA, events, run, workdir

pytestmark = pytest.mark.e2e  # every test here starts the real command as a process


@pytest.fixture
def cwd(tmp_path):
    cwd = workdir(tmp_path)
    (cwd / "bad.csv").write_text("timestamp,open,high,low,close\n1704067200000,1,2,0.5,1.5\n")
    (cwd / "nan.csv").write_text("timestamp,open,high,low,close,volume\n1704067200000,1,2,0.5,abc,3\n")
    (cwd / "unknown_key.toml").write_text("[engine]\nfee_percentage = 0.1\n")
    (cwd / "wrong_type.toml").write_text("[engine]\nmax_events = \"many\"\n")
    (cwd / "unknown_section.toml").write_text("[engines]\nfee_percent = 0.1\n")
    (cwd / "missing_sections.toml").write_text("# nothing at all: every default applies\n")
    (cwd / "broken_toml.toml").write_text("[engine\nfee_percent = 0.1\n")
    return cwd


CASES = [
    (["backtest", "BTCUSDT", "--strategy", "always-long", "--from", "yesterday"], 2, "--from 'yesterday' is not"),
    (["backtest", "BTCUSDT", "--strategy", "nope"], 2, "unknown strategy 'nope'"),
    (["backtest", "BTCUSDT", "--strategy", "always-long", "--from", "2024-02-01", "--to", "2024-01-01"], 2,
     "--from must be before --to"),
    (["backtest", "BTCUSDT", "--strategy", "always-long", "--candles", "missing.json"], 1, "missing.json"),
    (["backtest", "BTCUSDT", "--strategy", "always-long", "--candles", "bad.csv"], 1, "volume"),
    (["backtest", "BTCUSDT", "--strategy", "always-long", "--candles", "nan.csv"], 1, "line 2"),
    (["backtest", "BTCUSDT", "--strategy", "always-long", "--candles", str(DATA), "--from", "2020-01-01",
      "--to", "2020-02-01"], 2, "no candles"),
    (["backtest", "BTCUSDT", "--strategy", "always-long", "--candles", str(DATA), "--strict"], 1, "--strict"),
    (["backtest", "NOPE", "--strategy", "always-long"], 2, "has no symbol 'NOPE'"),
    (["backtest", "BTCUSDT", "--strategy", "always-long", "--exchange", "nowhere"], 2, "unknown exchange"),
    (["backtest", "BTCUSDT", "--strategy", "broken", "--from", "2024-01-01", "--to", "2024-01-02", "--strict"], 1,
     "broken on purpose"),
    (["backtest", "BTCUSDT", "--strategy", "garbage", "--from", "2024-01-01", "--to", "2024-01-02", "--strict"], 1,
     "invalid signal"),
    (["backtest", "BTCUSDT", "--strategy", "always-long", "--from", "2024-01-01", "--to", "2024-01-02",
      "--config", "unknown_key.toml"], 2, "fee_percentage"),
    (["run", "BTCUSDT", "--strategy", "always-long", "--config", "wrong_type.toml"], 2, "engine.max_events"),
    (["run", "BTCUSDT", "--strategy", "always-long", "--config", "unknown_section.toml"], 2, "engines"),
    (["run", "BTCUSDT", "--strategy", "always-long", "--config", "broken_toml.toml"], 2, "broken_toml.toml"),
    (["run", "BTCUSDT", "--strategy", "always-long", "--speed", "fast"], 2, "Invalid value for '--speed'"),
    (["run", "BTCUSDT"], 2, "--strategy"),
    (["run", "--strategy", "always-long"], 2, "Missing argument 'SYMBOL...'"),
    (["report", "--data-dir", "nowhere"], 2, "does not exist"),
    (["recover", "--data-dir", "nowhere"], 2, "does not exist"),
    (["status", "--data-dir", "nowhere"], 3, "No daemon has run"),
    (["strategies", "--strategies-dir", "nowhere"], 2, "does not exist"),
    (["frobnicate"], 2, "No such command"),
]


@pytest.mark.parametrize(("args", "code", "words"), CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_bad_input(cwd, args, code, words):
    if args[0] in ("backtest", "strategies") and "--strategies-dir" not in args:
        args = [*args, "--strategies-dir", "strategies"]
    result = run(cwd, *args, timeout=60)
    assert result.returncode == code, (result.stdout, result.stderr)
    assert words in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_missing_sections_take_the_defaults(cwd):
    result = run(cwd, "backtest", "BTCUSDT", "--strategy", "always-long", "--from", "2024-01-01",
                 "--to", "2024-01-01T06:00", "--config", "missing_sections.toml", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["trades"]


def test_strategies_check_names_the_broken_file_and_line(cwd):
    (cwd / "strategies" / "typo.py").write_text("from livetrader import Strategy\n\nclass T(Strategy)\n    pass\n")
    listed = run(cwd, "strategies")
    assert listed.returncode == 0 and "always-long" in listed.stdout and "typo.py:3" in listed.stdout
    checked = run(cwd, "strategies", "check")
    assert checked.returncode == 2 and "typo.py:3" in checked.stderr and "Traceback" not in checked.stderr
    (cwd / "strategies" / "typo.py").unlink()
    assert run(cwd, "strategies", "check").returncode == 0


def test_one_broken_class_disables_only_itself_in_every_command(cwd):
    from test_strategy_loader import SIX_CLASSES

    (cwd / "strategies" / "six.py").write_text(SIX_CLASSES.lstrip("\n"))
    listed = run(cwd, "strategies")
    assert listed.returncode == 0, listed.stderr
    assert all(f"six-{n}" in listed.stdout for n in ("one", "two", "three", "four", "five"))
    assert "six.py:20" in listed.stdout and "'4h'" in listed.stdout
    checked = run(cwd, "strategies", "check")
    assert checked.returncode == 2 and "six.py:20" in checked.stderr and "'4h'" in checked.stderr
    # a good class of that file backtests and runs; the broken one says why it cannot
    tested = run(cwd, "backtest", "BTCUSDT", "--strategy", "six-one", "--candles", str(DATA), "--json",
                 "--strategies-dir", "strategies")
    assert tested.returncode == 0, tested.stderr
    assert json.loads(tested.stdout)["trades"]
    refused = run(cwd, "backtest", "BTCUSDT", "--strategy", "six-4h", "--candles", str(DATA),
                  "--strategies-dir", "strategies")
    assert refused.returncode == 2 and "six.py:20" in refused.stderr and "Traceback" not in refused.stderr
    replay = cwd / "candles.json"
    replay.write_text(json.dumps(json.loads(DATA.read_text())[:300]))
    ran = run(cwd, "run", "BTCUSDT", "--strategy", "six-one", "--candles", str(replay), "--speed", "20000")
    assert ran.returncode == 0, ran.stderr
    assert any(e["event"] == "opened" and e["strategy"] == "six-one" for e in events(ran.stdout))
