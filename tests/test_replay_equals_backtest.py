"""A live replay of a candle file and a backtest of the same file and range trade alike
(docs/behaviour.md §2, §11; issue 17 item 5), for every shipped strategy: market entries
(``my-strategy``, ``mean-reversion``, long and short), limit entries (``dip-buyer``), an exit
signal from ``manage`` (``trend-rider``) and a trailing stop (``trailing-long``).

The live side is the real ``livetrader run --candles FILE --speed 20000``; the backtest is the
real ``livetrader backtest --candles FILE --json`` over the minutes the replay covered.

What is compared, and why not everything: a replay at 20,000x gives each simulated minute 3 ms
of wall time, and the live loop, by design (§8), follows a tick that comes late with the next
boundary rather than the missed minutes. So the minute a strategy is *asked* depends on how
busy the machine is: the replay's clock runs while the daemon starts (its first ask comes a few
simulated minutes after the file's first hour), and on a loaded machine a tick can come late
later on too. A held signal, on the other hand, is checked at every minute whatever the timing
(catch-up, §9). So the test pins down everything that does not depend on the machine's speed:

- every trade live closed inside the file (``closed_at`` before its end; positions still open
  when the file runs out are left open by live and closed at ``--to`` by the backtest) is
  compared in full: id, position, entry, open and close minutes, close reason, close price, PnL;
- a live trade whose signal the backtest created at the same minute (same id) must be identical
  to the backtest's; most are;
- a live trade asked at a minute the backtest did not ask at (the replay was late) must be
  identical to the first trade of a backtest starting at that minute, with the same code path
  (``run_backtest``, the function the command runs).
"""

import asyncio
import json
from datetime import UTC, datetime

import pytest
from daemon import DATA, run, workdir

from livetrader.backtest.replay import run_backtest
from livetrader.market.files import FileSource
from livetrader.strategy.base import instantiate, load_strategies

M = 60_000
STRATEGIES = ("dip-buyer", "mean-reversion", "my-strategy", "trend-rider", "trailing-long")
#: Three days of the file: enough trades of each kind, a replay of ~15 s at 20,000x.
ROWS = 3 * 1440


def _iso(ms):
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%MZ")


def _trade(t):
    """The comparable fields of a closed trade (a journal record or a backtest JSON trade)."""
    return (t["signal_id"], t["position"], t["price_open"], t.get("pending_at", t.get("opened_at")),
            t.get("at", t.get("closed_at")), t["close_reason"], t["price_close"], t["pnl_percentage"])


@pytest.mark.e2e
def test_a_live_replay_of_the_candle_file_trades_exactly_as_its_backtest(tmp_path):
    cwd = workdir(tmp_path)
    candles_file = cwd / "candles.json"
    rows = json.loads(DATA.read_text())[:ROWS]
    candles_file.write_text(json.dumps(rows))
    source = FileSource(candles_file)
    first, end = source.bounds("BTCUSDT")
    picks = [a for s in STRATEGIES for a in ("--strategy", s)]
    live = run(cwd, "run", "BTCUSDT", *picks, "--candles", str(candles_file), "--speed", "20000",
               "--data-dir", str(cwd / "data"), timeout=120)
    assert live.returncode == 0, live.stderr
    candles = source.fetch_sync("BTCUSDT", first, end)
    registry = load_strategies(cwd / "strategies")
    start = first + 60 * M  # where the replay's clock starts (an hour of history before it)
    checked = {}
    for name in STRATEGIES:
        journal = (cwd / "data" / "journal" / f"BTCUSDT_{name}_files.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in journal]
        live_trades = [_trade(r) for r in records if r["event"] == "closed" and r["at"] < end]
        done = run(cwd, "backtest", "BTCUSDT", "--strategy", name, "--candles", str(candles_file),
                   "--from", _iso(start), "--to", _iso(end), "--json")
        assert done.returncode == 0, done.stderr
        backtest = {t[0]: t for t in map(_trade, json.loads(done.stdout)["trades"])}
        assert len(live_trades) >= 3, (name, live_trades)
        same_minute = 0
        for trade in live_trades:
            if trade[0] in backtest:
                assert trade == backtest[trade[0]], name
                same_minute += 1
                continue
            # Asked at a minute the backtest did not ask at: a backtest from that minute on.
            asked_at = next(r["scheduled_at"] for r in records if r["signal_id"] == trade[0])
            result = asyncio.run(run_backtest(instantiate(registry.get(name)), candles, "BTCUSDT", asked_at, end,
                                              exchange="files"))
            assert result.trades, (name, trade)
            t = result.trades[0]
            assert trade == (t.signal_id, t.signal.position, t.signal.price_open, t.signal.pending_at, t.at,
                             t.close_reason, t.price_close, t.pnl_percentage), name
        assert same_minute >= 1, name  # the replay and the backtest do meet (most trades do)
        checked[name] = (same_minute, len(live_trades))
        if name == "dip-buyer":  # limit entries: activated after they were scheduled
            assert any(r["event"] == "opened" and r["pending_at"] > r["scheduled_at"] for r in records)
        if name == "trend-rider":  # the strategy's own exit signal closed positions (manage -> Exit)
            assert any(t[5] == "signal" for t in live_trades), live_trades
        if name == "trailing-long":  # the trailing stop moved stops up, journaled, before a stop-loss close
            moved = [r for r in records if r["event"] == "adjusted"]
            assert moved and all(r["stop_loss"] > r["price_open"] * 0.99 for r in moved)
            opened = {r["signal_id"]: r for r in records if r["event"] == "opened"}
            assert any(t[5] == "stop_loss" and t[6] > opened[t[0]]["stop_loss"] for t in live_trades)
    assert set(checked) == set(STRATEGIES), checked
