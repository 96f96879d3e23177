"""A strategy cannot take the daemon down, nor stall it unnoticed (issue 15, items 2 and 8)."""

import json
import re

from daemon import DATA, events, run, start, stop, wait_for, workdir

FAST = ("--speed", "3000")


def fixture_line(cwd, file, marker):
    """``path:line`` of the line of a fixture strategy carrying ``# marker``."""
    path = cwd / "strategies" / file
    for number, text in enumerate(path.read_text().splitlines(), 1):
        if text.rstrip().endswith(f"# {marker}"):
            return f"{path}:{number}"
    raise AssertionError(f"no line marked {marker} in {path}")


def journal(cwd, name):
    path = cwd / "dump" / "journal" / name
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_sys_exit_and_keyboard_interrupt_in_a_strategy_are_that_strategys_error(tmp_path):
    cwd = workdir(tmp_path)
    names = ("exits", "exits-after-await", "interrupts", "exits-in-callbacks", "always-long")
    proc = start(cwd, "run", "BTCUSDT", *(x for n in names for x in ("--strategy", n)), *FAST)
    # Long enough for every callback to run: a 30-minute trade closes within 0.6 s at x3000.
    assert wait_for(lambda: sum(r["event"] == "closed"
                                for r in journal(cwd, "BTCUSDT_exits-in-callbacks_sim.jsonl")) >= 2, 20)
    assert proc.poll() is None, "a strategy's sys.exit() ended the daemon"
    code, out, err = stop(proc)
    assert code == 0, err
    logs = events(out)
    failed = [e for e in logs if e["event"] == "tick failed" and e["kind"] == "strategy"]

    def errors(strategy):
        return " | ".join(e["error"] for e in failed if e["strategy"] == strategy)

    assert f"strategy raised SystemExit (at {fixture_line(cwd, 'exiting.py', 'exits-line')})" in errors("exits")
    assert (f"strategy raised SystemExit: 3 (at {fixture_line(cwd, 'exiting.py', 'exits-after-await-line')})"
            in errors("exits-after-await"))
    assert (f"strategy raised KeyboardInterrupt (at {fixture_line(cwd, 'exiting.py', 'interrupts-line')})"
            in errors("interrupts"))
    callbacks = errors("exits-in-callbacks")
    assert (f"callback on_open raised SystemExit: from on_open (at {fixture_line(cwd, 'exiting.py', 'on-open-line')})"
            in callbacks)
    assert (f"callback on_active raised KeyboardInterrupt: from on_active "
            f"(at {fixture_line(cwd, 'exiting.py', 'on-active-line')})" in callbacks)
    assert (f"callback on_close raised SystemExit: from on_close "
            f"(at {fixture_line(cwd, 'exiting.py', 'on-close-line')})" in callbacks)
    # Each pair kept ticking after its strategy's first exit, and the others traded on.
    assert len(re.findall("SystemExit", errors("exits"))) >= 3
    assert len(re.findall("KeyboardInterrupt", errors("interrupts"))) >= 3
    assert any(r["event"] == "closed" for r in journal(cwd, "BTCUSDT_always-long_sim.jsonl"))
    assert any(e["event"] == "stopped" for e in logs)


def test_sys_exit_in_a_backtested_strategy_is_a_clear_error(tmp_path):
    cwd = workdir(tmp_path)
    for name, marker in (("exits", "exits-line"), ("exits-after-await", "exits-after-await-line")):
        done = run(cwd, "backtest", "BTCUSDT", "--strategy", name, "--candles", str(DATA))
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert f"strategy '{name}' raised at" in done.stderr
        assert "SystemExit" in done.stderr and fixture_line(cwd, "exiting.py", marker) in done.stderr
        assert "Traceback" not in done.stderr
    done = run(cwd, "backtest", "BTCUSDT", "--strategy", "exits-in-callbacks", "--candles", str(DATA))
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "callback on_open raised at" in done.stderr and "SystemExit: from on_open" in done.stderr
    assert fixture_line(cwd, "exiting.py", "on-open-line") in done.stderr
