"""The real ``livetrader run`` as a subprocess: trading, signals, reports, isolation, bad input."""

import json
import signal
import time

import pytest
from daemon import DATA, events, run, start, stop, wait_for, wait_running, workdir

pytestmark = pytest.mark.e2e  # every test here starts the real command as a process


def trading(events_list, strategy):
    return [e for e in events_list if e.get("strategy") == strategy and e["event"] in ("opened", "closed")]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sim_run_trades_and_stops_gracefully_with_reports(tmp_path, sig):
    cwd = workdir(tmp_path)
    proc = start(cwd, "run", "BTCUSDT", "ETHUSDT", "--strategy", "always-long", "--speed", "6000")
    assert wait_running(cwd / "dump-demo", proc)
    time.sleep(4)
    code, out, err = stop(proc, sig)
    assert code == 0, err
    evs = events(out)
    names = [e["event"] for e in evs]
    assert "started" in names and names[-1] == "stopped"
    for symbol in ("BTCUSDT", "ETHUSDT"):
        mine = [e for e in evs if e.get("symbol") == symbol]
        assert any(e["event"] == "opened" for e in mine)
        assert any(e["event"] == "closed" for e in mine)
    reports = sorted((cwd / "dump-demo" / "reports" / "live").glob("*.md"))
    assert [r.name.split("_")[0] for r in reports] == ["BTCUSDT", "ETHUSDT"]
    text = reports[0].read_text()
    assert "| closed |" in text and "Win rate" in text
    assert "Traceback" not in err


def test_one_broken_strategy_does_not_stop_the_other_pairs(tmp_path):
    cwd = workdir(tmp_path)
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "broken", "--strategy", "always-long", "--speed", "6000")
    assert wait_running(cwd / "dump-demo", proc)
    time.sleep(4)
    code, out, err = stop(proc)
    assert code == 0, err
    evs = events(out)
    failures = [e for e in evs if e.get("strategy") == "broken" and e["event"] == "tick failed"]
    assert len(failures) >= 10
    assert "broken on purpose" in failures[0]["error"] and "broken.py:" in failures[0]["error"]
    closed = [e for e in trading(evs, "always-long") if e["event"] == "closed"]
    assert len(closed) >= 3


def test_stop_cancels_a_waiting_scheduled_signal(tmp_path):
    cwd = workdir(tmp_path)
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "scheduler", "--speed", "600")
    assert wait_for(lambda: (cwd / "dump-demo").exists(), 10)
    assert wait_running(cwd / "dump-demo", proc)
    time.sleep(1.5)
    code, out, _ = stop(proc)
    assert code == 0
    evs = events(out)
    cancelled = [e for e in evs if e["event"] == "cancelled"]
    assert cancelled and cancelled[-1]["reason"] == "user"


def test_files_replay_runs_to_the_end_of_the_file_and_exits(tmp_path):
    cwd = workdir(tmp_path)
    rows = json.loads(DATA.read_text())[:400]
    candles = cwd / "candles.json"
    candles.write_text(json.dumps(rows))
    result = run(cwd, "run", "BTCUSDT", "--strategy", "always-long", "--candles", str(candles), "--speed", "20000",
                 timeout=60)
    assert result.returncode == 0, result.stderr
    evs = events(result.stdout)
    assert any(e["event"] == "closed" for e in evs)
    assert (cwd / "dump-demo" / "reports" / "live").glob("BTCUSDT_always-long_files_*.md")
    # replayed candle times, not wall-clock times
    opened = [e for e in evs if e["event"] == "opened"]
    assert opened[0]["at"] < rows[-1][0] + 60_000


def test_second_sigint_during_shutdown_exits_at_once(tmp_path):
    cwd = workdir(tmp_path)
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "hanging", "--speed", "600")
    assert wait_running(cwd / "dump-demo", proc)
    time.sleep(2)
    proc.send_signal(signal.SIGINT)  # waits for the hanging tick (up to the 180 s strategy timeout)
    time.sleep(0.5)
    assert proc.poll() is None
    code, _, err = stop(proc, signal.SIGINT, timeout=5)
    assert code == 130 and "exiting at once" in err


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["run", "NOPEUSDT", "--strategy", "always-long"], 2, "has no symbol 'NOPEUSDT'"),
        (["run", "BTCUSDT", "--strategy", "always-lng"], 2, "did you mean 'always-long'"),
        (["run", "BTCUSDT", "--strategy", "always-long", "--exchange", "nowhere"], 2, "unknown exchange"),
        (["run", "BTCUSDT", "--strategy", "always-long", "--config", "missing.toml"], 2, "missing.toml"),
        (["run", "BTCUSDT", "--strategy", "always-long", "--data-dir", "afile/sub"], 1, "not writable"),
        (["run", "BTCUSDT", "--strategy", "always-long", "--speed", "-3"], 2, "--speed"),
        (["run", "BTCUSDT", "--strategy", "always-long", "--config", "bad.toml"], 2, "bad.toml"),
    ],
)
def test_bad_input_is_one_clear_message_before_any_loop_starts(tmp_path, args, code, words):
    cwd = workdir(tmp_path)
    (cwd / "afile").write_text("not a directory")
    (cwd / "bad.toml").write_text("[engine]\nfee_percent = 'lots'\n")
    result = run(cwd, *args, timeout=30)
    assert result.returncode == code, (result.stdout, result.stderr)
    assert words in result.stderr
    assert "Traceback" not in result.stderr
    assert '"started"' not in result.stdout


def test_a_candle_file_replay_logs_once_that_the_file_ended(tmp_path):
    cwd = workdir(tmp_path)
    rows = json.loads(DATA.read_text())[:300]
    candles = cwd / "candles.json"
    candles.write_text(json.dumps(rows))
    result = run(cwd, "run", "BTCUSDT", "ETHUSDT", "--strategy", "always-long", "--candles", str(candles),
                 "--speed", "20000", timeout=60)
    assert result.returncode == 0, result.stderr
    evs = events(result.stdout)
    [ended] = [e for e in evs if e["event"] == "candle file ended"]  # one line for the file, not one per pair
    assert ended["file"] == str(candles)
    assert ended["last_minute"] == "2017-11-05T07:18Z"  # the opening of the file's last candle
    assert rows[-1][0] == 1509866280000
    names = [e["event"] for e in evs]
    assert names.index("candle file ended") < names.index("stopped")
