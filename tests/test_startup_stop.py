"""SIGINT/SIGTERM while the daemon starts are a graceful stop, not an interrupted start."""

from __future__ import annotations

import signal
import textwrap
import time

import pytest
from daemon import events, start, stop, wait_for, workdir

pytestmark = pytest.mark.e2e

SLOW = textwrap.dedent('''
    """A strategy module whose import takes seconds (a heavy library, a slow disk)."""
    import pathlib
    import time

    from livetrader import Signal, Strategy

    pathlib.Path("importing").touch()
    time.sleep(3)


    class SlowImport(Strategy):
        name = "slow-import"
        interval = "1m"

        async def get_signal(self, ctx):
            return Signal(position="long", take_profit=ctx.price * 1.01, stop_loss=ctx.price * 0.99, minutes=30)
''')


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_asked_while_strategies_import_stops_gracefully(tmp_path, sig):
    cwd = workdir(tmp_path)
    (cwd / "strategies" / "slow_import.py").write_text(SLOW)
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "slow-import", "--speed", "600", "--data-dir", "dump")
    assert wait_for(lambda: (cwd / "importing").exists(), 30)
    code, out, err = stop(proc, sig)
    assert code == 0, err
    assert "Traceback" not in err and "interrupted" not in err
    names = [e["event"] for e in events(out)]
    assert "stop requested while starting: the start finishes its current step, then stops" in names
    assert names[-1] == "stopped"
    assert list((cwd / "dump" / "reports" / "live").glob("BTCUSDT_slow-import_sim_*.md"))


def test_a_second_interrupt_while_starting_exits_at_once(tmp_path):
    cwd = workdir(tmp_path)
    (cwd / "strategies" / "slow_import.py").write_text(SLOW)
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "slow-import", "--speed", "600", "--data-dir", "dump")
    assert wait_for(lambda: (cwd / "importing").exists(), 30)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)  # two signals sent together may reach Python's handler as one
    code, _, err = stop(proc, signal.SIGINT)
    assert code == 130, err
    assert "Traceback" not in err
