"""Benchmark 5: wall time of ``livetrader --help``, the installed command, in a fresh process each time.

One untimed run first (so the page cache holds the files, as it would for a user running
the command twice), then the median of ``runs``. ``python -c pass`` is measured the same
way: it is the floor no Python command can go under.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import Result, median

TARGET_SECONDS = 0.25


def command() -> list[str]:
    """The ``livetrader`` script installed beside this interpreter, or the module when there is none."""
    script = Path(sys.executable).parent / "livetrader"
    if script.exists():
        return [str(script), "--help"]
    return [sys.executable, "-m", "livetrader.cli.app", "--help"]


def on_path() -> str | None:
    """The ``livetrader`` found on PATH when it is another file (a pyenv shim, say)."""
    found = shutil.which("livetrader")
    if found is None or Path(found).resolve() == Path(command()[0]).resolve():
        return None
    return found


def wall_times(argv: list[str], runs: int) -> list[float]:
    subprocess.run(argv, capture_output=True, check=True)
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        times.append(time.perf_counter() - began)
    return times


def run(runs: int = 10) -> Result:
    out = Result("cli", "CLI start: `livetrader --help`")
    argv = command()
    help_times = wall_times(argv, runs)
    floor = wall_times([sys.executable, "-c", "pass"], runs)
    out.details.update({"command": argv, "runs": runs, "seconds_all": help_times, "python_pass_all": floor})
    out.add("livetrader --help (median)", median(help_times), "s", TARGET_SECONDS)
    out.add("python -c pass (median, the floor)", median(floor), "s")
    shim = on_path()
    if shim is not None:
        via_path = wall_times([shim, "--help"], runs)
        out.details["on_path"] = {"command": [shim, "--help"], "seconds_all": via_path}
        out.add(f"{shim} --help (median)", median(via_path), "s")
    out.notes.append(f"command: {' '.join(argv)}; median of {runs} runs after one warm-up run")
    return out
