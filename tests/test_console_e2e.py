"""The real ``livetrader run`` on a terminal (a pseudo-terminal of 80 columns): its console log
lines read as times and rounded numbers, its table says the clock is simulated, and the reports
it writes at the end are named on the clock of their contents."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time

import pytest
from daemon import DATA, command, environment, run, workdir

pytestmark = pytest.mark.e2e

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


def run_on_a_terminal(cwd, *args: str, columns: int = 80, timeout: float = 60) -> tuple[int, str]:
    """Run ``livetrader ARGS`` with stdout and stderr on a pseudo-terminal; its exit code and output."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = environment(TERM="xterm", COLUMNS=str(columns), LINES="40")
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(command(*args), cwd=cwd, stdin=subprocess.DEVNULL, stdout=child, stderr=child, env=env)
    os.close(child)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.2)
            if ready:
                try:
                    data = os.read(main, 65536)
                except OSError:  # EIO: the child side closed, the process ended
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)
    return code, ANSI.sub("", b"".join(chunks).decode(errors="replace"))


def test_a_simulated_run_on_a_terminal_reads_as_times_and_rounded_numbers(tmp_path) -> None:
    cwd = workdir(tmp_path)
    rows = json.loads(DATA.read_text())[:300]
    candles = cwd / "candles.json"
    candles.write_text(json.dumps(rows))
    code, out = run_on_a_terminal(cwd, "run", "BTCUSDT", "--strategy", "always-long", "--candles", str(candles),
                                  "--speed", "3000")
    assert code == 0, out
    # Each log line, whole again: rich wraps what scrolls above its table at the terminal's width.
    entries = [" ".join(part.split()) for part in re.split(r"(?=20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ \[)", out)]
    # What follows a log line on the screen is the table redrawn: keep the line alone.
    entries = [entry.split(" simulated clock ")[0] for entry in entries]
    trade_lines = [entry for entry in entries if re.search(r"\] (opened|closed) ", entry) and "at=" in entry]
    assert trade_lines, out[-2000:]
    for line in trade_lines:
        assert not re.search(r"\b\d{13}\b", line), f"a raw epoch in ms: {line}"
        assert not re.search(r"\d\.\d{9}", line), f"an unrounded float: {line}"
        assert re.search(r"\bat=2017-\d\d-\d\dT\d\d:\d\d:\d\dZ", line), line
        prices = re.findall(r"\b(?:price\w*|take_profit|stop_loss)=([\d,.]+)", line)
        assert prices, line
        for price in prices:  # format.py's rule: six significant digits (seven for a price with cents)
            assert len(price.replace(",", "").replace(".", "").lstrip("0")) <= 7, line
    closed = [line for line in trade_lines if re.search(r"\] closed ", line)]
    assert closed and all(re.search(r"pnl_percentage=[+-]?\d+\.\d\d%", line) for line in closed), closed
    # The table says its times are simulated, with the date (the log lines' stamps are 2026's wall clock).
    assert "simulated clock 3000x · simulated now 2017-" in out
    assert "Last tick (sim)" in out
    # The reports are named on the clock of the events inside, and say so.
    (report,) = (cwd / "dump-demo" / "reports" / "live").glob("BTCUSDT_always-long_files_*.md")
    assert re.search(r"_2017\d{4}T\d{6}Z\.md$", report.name), report.name
    text = report.read_text()
    assert "Clock: simulated (3000x)" in text and re.search(r"Generated 2017-", text)
    # `livetrader report`, built at any later time, is named on the wall clock and says which is which.
    built = run(cwd, "report", "--data-dir", "dump-demo", "--out", "built")
    assert built.returncode == 0, built.stderr
    (rebuilt,) = (cwd / "built").glob("*.md")
    assert not re.search(r"_2017\d{4}T", rebuilt.name)
    assert "simulated clock (3000x); this report's file name and \"Generated\" are on the wall clock" in \
        rebuilt.read_text()
