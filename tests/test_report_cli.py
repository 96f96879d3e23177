"""Reports where users see them: `livetrader report`, the SIGINT reports, backtest --report, memory."""

import asyncio
import json
import re
import time
import tracemalloc

import pytest
from daemon import FIXTURE_STRATEGIES, run, start, stop, wait_running, workdir
from test_recovery import T0, drive, new_engine

from livetrader.core.price import MINUTE_MS


def stats_section(markdown: str) -> str:
    return markdown[markdown.index("## Statistics"):]


@pytest.mark.e2e
def test_the_sigint_report_matches_the_report_built_from_the_journal(tmp_path):
    cwd = workdir(tmp_path)
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", "--speed", "6000")
    assert wait_running(cwd / "dump-demo", proc)
    time.sleep(3)
    code, _, err = stop(proc)
    assert code == 0, err
    (live,) = (cwd / "dump-demo" / "reports" / "live").glob("BTCUSDT_always-long_sim_*.md")
    result = run(cwd, "report", "--data-dir", "dump-demo", "BTCUSDT", "--strategy", "always-long")
    assert result.returncode == 0, result.stderr
    from_journal = result.stdout
    assert "| closed |" in from_journal
    assert stats_section(live.read_text()) == stats_section(from_journal)
    closed = int(re.search(r"all (\d+) closed trades", from_journal).group(1))
    assert closed >= 3 and f"| Closed trades | {closed} |" in from_journal
    out = run(cwd, "report", "--data-dir", "dump-demo", "--out", "reports", "--json")
    doc = json.loads(out.stdout)
    assert doc["pairs"][0]["stats"]["total_closed"] == closed and len(doc["pairs"][0]["trades"]) == closed


@pytest.mark.e2e
def test_report_writes_files_atomically_with_out(tmp_path):
    drive(tmp_path / "dump", "always-long", [T0, T0 + 40 * MINUTE_MS], crash_on="none")
    result = run(tmp_path, "report", "--out", "out")
    assert result.returncode == 0
    (path,) = (tmp_path / "out").glob("*.md")
    assert result.stdout.strip() == str(tmp_path / "out" / path.name) or path.name in result.stdout
    assert path.read_text().startswith("# Report: always-long on BTCUSDT (sim)")
    assert not list((tmp_path / "out").glob("*.tmp"))


@pytest.mark.e2e
def test_no_journal_and_only_scheduled_events_are_said_plainly(tmp_path):
    (tmp_path / "dump").mkdir()
    result = run(tmp_path, "report")
    assert result.returncode == 0 and "No journal yet" in result.stdout
    drive(tmp_path / "dump", "scheduler", [T0], crash_on="none")
    result = run(tmp_path, "report")
    assert result.returncode == 0 and "No closed trades yet." in result.stdout
    assert "nan" not in result.stdout.lower() and "inf" not in result.stdout.replace("Info", "")


@pytest.mark.e2e
def test_a_journal_with_an_unreadable_line_still_reports(tmp_path):
    drive(tmp_path / "dump", "always-long", [T0, T0 + 40 * MINUTE_MS], crash_on="none")
    journal = tmp_path / "dump" / "journal" / "BTCUSDT_always-long_sim.jsonl"
    journal.write_bytes(journal.read_bytes() + b"garbage\n")
    result = run(tmp_path, "report")
    assert result.returncode == 0 and "1 unreadable line(s) were skipped" in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.e2e
def test_backtest_report_option_writes_the_markdown_report(tmp_path):
    result = run(tmp_path, "backtest", "BTCUSDT", "--strategy", "always-long", "--from", "2024-01-01",
                 "--to", "2024-01-02", "--strategies-dir", str(FIXTURE_STRATEGIES), "--report", "bt.md", "--json")
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "bt.md").read_text()
    doc = json.loads(result.stdout)
    assert text.startswith("# Backtest report: always-long on BTCUSDT (sim)")
    assert f"| Closed trades | {len(doc['trades'])} |" in text


def test_memory_per_pair_stays_flat_over_a_long_run_of_idle_ticks(tmp_path):
    engine = new_engine(tmp_path)
    from livetrader import Strategy

    class Idle(Strategy):
        name = "idle"
        interval = "1m"

        async def get_signal(self, ctx):
            return None

    engine.registry.strategies["idle"] = type(engine.registry.strategies["always-long"])(Idle, FIXTURE_STRATEGIES, 1)
    pair = engine.add_pair("BTCUSDT", "idle")

    async def ticks(first, count):
        for i in range(count):
            await pair.tick(first + i * MINUTE_MS)

    asyncio.run(ticks(T0, 3000))
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    asyncio.run(ticks(T0 + 3000 * MINUTE_MS, 12000))
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    # The sim source keeps a bounded LRU cache of generated candles: not the pair's memory.
    diffs = [d for d in after.compare_to(before, "filename") if "market/sim.py" not in str(d.traceback)]
    grown = sum(d.size_diff for d in diffs)
    assert pair.ticks == 15000 and len(pair.window.events()) == 1
    assert grown < 200_000, f"grew by {grown} bytes over 12,000 idle ticks"
    asyncio.run(engine.close())
