"""Every Python block of the README is a runnable example, and runs (README item 9 of issue 17).

The Python API blocks are the files in ``examples/``, word for word; each runs here as a user
would run it (``python examples/X.py`` from a folder holding ``./strategies``), quickly on the
simulated clock it configures, and must print results without touching ``./dump``. The
strategy block, saved where the README says beside the shipped strategies, must load and
backtest.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from daemon import ROOT, environment, run, workdir

README = ROOT / "README.md"
EXAMPLES = ROOT / "examples"


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), re.S | re.M)


def strategy_block() -> str:
    blocks = [b for b in python_blocks() if "(Strategy):" in b]
    assert len(blocks) == 1, "the README has one strategy example"
    return blocks[0]


EXCERPT = re.compile(r"# (strategies/[\w.]+\.py) \(excerpt\)\n")


def test_every_excerpt_of_a_shipped_strategy_is_in_it_word_for_word():
    """A block headed ``# strategies/X.py (excerpt)`` shows parts of that shipped file (the tests
    run it: the replay test, the live tests), each part between ``...`` lines verbatim."""
    excerpts = [b for b in python_blocks() if EXCERPT.match(b)]
    assert len(excerpts) >= 2  # manage and the trailing stop
    for block in excerpts:
        path = EXCERPT.match(block).group(1)
        source = (ROOT / path).read_text()
        parts = re.split(r"^\.\.\.\n", block[EXCERPT.match(block).end():], flags=re.M)
        for part in parts:
            assert part in source, f"README excerpt of {path} is not in it word for word:\n{part}"


def test_every_python_block_of_the_readme_is_an_example_file_or_the_strategy():
    examples = {path.read_text(): path.name for path in EXAMPLES.glob("*.py")}
    api_blocks = [b for b in python_blocks() if "(Strategy):" not in b and not EXCERPT.match(b)]
    assert api_blocks, "the README shows the Python API"
    missing = [b.splitlines()[0] for b in api_blocks if b not in examples]
    assert not missing, f"README python blocks that are not an examples/*.py file word for word: {missing}"
    # ... and every example file is shown, so the two never drift apart.
    assert set(examples.values()) == {examples[b] for b in api_blocks}


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["live_run.py", "live_background.py"])
def test_each_api_example_runs_quickly_and_prints_results(tmp_path, name):
    cwd = workdir(tmp_path)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.run([sys.executable, str(EXAMPLES / name)], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env=environment(TMPDIR=str(scratch)))
    assert proc.returncode == 0, proc.stderr
    assert not (cwd / "dump").exists()  # a fresh data directory, not ./dump
    assert len(list(scratch.iterdir())) == 1  # ... the temporary one the example made
    lines = proc.stdout.splitlines()
    # log_level="WARNING" silences the library: only what the example prints is on stdout.
    if name == "live_run.py":
        assert [line.split()[0] for line in lines] == ["opened", "closed"], proc.stdout
        assert lines[1].split()[1] == lines[0].split()[1]  # the same signal id
    else:
        assert lines[0].startswith("closed trades: ") and int(lines[0].split()[2]) >= 2, proc.stdout
        assert lines[1].startswith("# Live report: my-strategy on BTCUSDT")
        report = lines[2].removeprefix("report written to ")
        assert report.startswith(str(scratch)) and "closed" in open(report).read()
        assert len(lines) == 3, proc.stdout


@pytest.mark.e2e
def test_the_readme_strategy_saved_beside_the_shipped_ones_loads_and_backtests(tmp_path):
    cwd = workdir(tmp_path)
    text = README.read_text()
    path = re.search(r"Saved as\s+`(strategies/[\w.]+\.py)`", text).group(1)
    assert not (cwd / path).exists(), f"{path} would overwrite a shipped strategy"
    (cwd / path).write_text(strategy_block())
    name = re.search(r'name = "([\w-]+)"', strategy_block()).group(1)

    check = run(cwd, "strategies", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert name in check.stdout and "collide" not in check.stdout + check.stderr

    # The README's own commands after the block, as written.
    commands = re.search(r"```bash\n(livetrader strategies check\n.*?)```", text, re.S).group(1).splitlines()
    backtest = commands[1].split()
    assert backtest[:2] == ["livetrader", "backtest"] and name in backtest
    result = run(cwd, *backtest[1:], "--json")
    assert result.returncode == 0, result.stderr
    trades = json.loads(result.stdout)["trades"]
    assert trades and {t["strategy"] for t in trades} == {name}
