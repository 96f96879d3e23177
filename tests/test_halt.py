"""Stopping trading without a process (docs/behaviour.md §13): the pure halt and daily-loss rules, the
operator journal on real files, the config's limit, and one ``Pair`` obeying a halt, tick by tick.
The daemon, the command and the exchange are in ``test_halt_e2e.py``."""

from __future__ import annotations

import os

import pytest
from test_pair import LONG, T0, M, every_minute, flat_then, make_pair, run_ticks

from livetrader.config import parse_config
from livetrader.core.halt import DAY_MS, Halt, daily_loss, halt_of, halts_in_force, last_resume
from livetrader.core.signal import Signal
from livetrader.errors import ConfigError
from livetrader.events import EventBus
from livetrader.live.halt import DailyLimit, Halts
from livetrader.store.control import append_control, control_path, read_control
from livetrader.strategy.risk import RiskProfile


def halted(at, scope="all", flatten=False, by="operator", reason=""):
    return {"event": "halted", "at": at, "scope": scope, "flatten": flatten, "by": by, "reason": reason}


def resumed(at, scope="all"):
    return {"event": "resumed", "at": at, "scope": scope}


# --- the pure rules ---------------------------------------------------------------------------


def test_a_halt_holds_until_a_resume_and_a_second_halt_only_adds_its_flatten():
    records = [halted(1, reason="first"), halted(2, flatten=True, reason="second")]
    halts = halts_in_force(records)
    assert halts == {"all": Halt("all", 1, "operator", "first", True)}
    assert halts_in_force([*records, resumed(3)]) == {}
    assert halts_in_force([*records, resumed(3), halted(4)])["all"].since == 4


def test_a_resume_of_everything_lifts_profile_halts_and_a_profile_resume_only_its_own():
    records = [halted(1, scope="profile:a"), halted(2, scope="profile:b")]
    assert set(halts_in_force([*records, resumed(3, "profile:a")])) == {"profile:b"}
    assert halts_in_force([*records, resumed(3)]) == {}
    assert last_resume([*records, resumed(3, "profile:a"), resumed(5, "profile:b")], "a") == 3
    assert last_resume([resumed(7)], "a") == 7 and last_resume(records, "a") is None


def test_a_pair_obeys_the_halt_of_every_pair_or_of_its_profile_flattening_when_either_does():
    halts = halts_in_force([halted(1), halted(2, scope="profile:a", flatten=True)])
    assert halt_of(halts, None).scope == "all" and not halt_of(halts, None).flatten
    assert halt_of(halts, "a").flatten and halt_of(halts, "b").flatten is False
    only_profile = halts_in_force([halted(2, scope="profile:a")])
    assert halt_of(only_profile, "b") is None and halt_of(only_profile, None) is None
    assert halt_of(only_profile, "a").scope == "profile:a"


def test_the_daily_loss_counts_todays_closes_and_the_open_positions_against_the_capital():
    now = 10 * DAY_MS + 5 * 3_600_000
    closed = [(10 * DAY_MS - 1, -500.0), (10 * DAY_MS, -30.0), (now - 1000, -10.0)]  # the first was yesterday
    loss = daily_loss(closed, unrealised=-10.0, capital=1000.0, limit_percent=5.0, now=now)
    assert (loss.realised, loss.unrealised) == (-40.0, -10.0)
    assert loss.loss_percent == pytest.approx(5.0) and loss.breached
    assert not daily_loss(closed, unrealised=+1.0, capital=1000.0, limit_percent=5.0, now=now).breached
    # A resume forgives what was lost before it, not what is still open.
    after = daily_loss(closed, unrealised=-10.0, capital=1000.0, limit_percent=5.0, now=now, since=now - 2000)
    assert after.realised == -10.0 and after.loss_percent == pytest.approx(2.0) and not after.breached
    assert daily_loss([], unrealised=60.0, capital=1000.0, limit_percent=5.0, now=now).loss_percent == -6.0


# --- the operator journal ---------------------------------------------------------------------


def test_the_operator_journal_appends_durably_and_reads_from_an_offset(tmp_path):
    first = append_control(tmp_path, halted(1))
    second = append_control(tmp_path, resumed(2))
    assert second == os.path.getsize(control_path(tmp_path)) > first
    assert read_control(tmp_path).records == [halted(1), resumed(2)]
    rest = read_control(tmp_path, first)
    assert rest.records == [resumed(2)] and rest.end == second
    assert read_control(tmp_path / "nowhere").records == []
    with pytest.raises(ValueError, match="scope"):
        append_control(tmp_path, {"event": "halted", "at": 1, "scope": "everything"})


def test_a_torn_last_line_is_not_read_and_the_next_append_is_not_glued_to_it(tmp_path):
    append_control(tmp_path, halted(1))
    path = control_path(tmp_path)
    with open(path, "ab") as handle:
        handle.write(b'{"event": "resumed", "at": 2, "sco')  # a writer killed mid-line
    read = read_control(tmp_path)
    assert read.records == [halted(1)] and read.end < os.path.getsize(path) and not read.problems
    append_control(tmp_path, halted(3, flatten=True))
    again = read_control(tmp_path)
    assert again.records == [halted(1), halted(3, flatten=True)]
    assert len(again.problems) == 1 and "invalid JSON" in again.problems[0]
    assert halts_in_force(again.records)["all"].flatten


def test_the_daemon_side_notices_a_new_record_by_a_stat_and_halts_its_pairs(tmp_path):
    pair, _ = make_pair(flat_then(100.0, T0))
    halts = Halts(tmp_path, lambda: T0, EventBus())
    halts.start([pair])
    assert pair.halted is None and not halts.poll()  # nothing new: no read
    end = append_control(tmp_path, halted(T0, flatten=True, reason="why"))
    assert halts.poll() and halts.read_to == end
    assert pair.halted is not None and pair.halted.flatten and pair.halted.reason == "why"
    assert halts.status()["halts"][0]["scope"] == "all"
    append_control(tmp_path, resumed(T0 + 1))
    assert halts.poll() and pair.halted is None


# --- the config -------------------------------------------------------------------------------


def test_max_daily_loss_percent_needs_the_capital_it_is_a_percent_of():
    config = parse_config({"risk": {"small": {"max_daily_loss_percent": 2, "capital": 1000}}})
    assert (config.risk["small"].max_daily_loss_percent, config.risk["small"].capital) == (2.0, 1000.0)
    with pytest.raises(ConfigError, match=r"risk\.small\.capital is required with max_daily_loss_percent"):
        parse_config({"risk": {"small": {"max_daily_loss_percent": 2}}})
    with pytest.raises(ConfigError, match=r"max_daily_loss_percent must be a number > 0"):
        parse_config({"risk": {"small": {"max_daily_loss_percent": 0, "capital": 1000}}})


# --- one pair obeying a halt ------------------------------------------------------------------


def obey(pair, halt):
    pair.halted = halt


HALT = Halt("all", T0, "operator", "", False)
FLATTEN = Halt("all", T0, "operator", "", True)


def test_a_halted_pair_asks_no_strategy_and_takes_new_entries_again_once_resumed():
    pair, store = make_pair(flat_then(100.0, T0), LONG)
    obey(pair, HALT)
    run_ticks(pair, *every_minute(T0, T0 + 3 * M))
    assert pair.strategy.asked == [] and store.journal == []
    obey(pair, None)
    run_ticks(pair, T0 + 5 * M)
    assert len(pair.strategy.asked) == 1 and store.journal[-1]["event"] == "opened"


def test_a_halt_cancels_a_scheduled_signal_with_reason_halted_and_keeps_managing_an_open_position():
    # A dip entry far below: it waits. Then a market long opened before the halt closes at its take-profit.
    scheduled = Signal("long", take_profit=95.0, stop_loss=85.0, price_open=90.0)
    pair, store = make_pair(flat_then(100.0, T0), scheduled)
    run_ticks(pair, T0, T0 + M)
    assert pair.state == "scheduled"
    obey(pair, HALT)
    run_ticks(pair, T0 + 2 * M)
    assert store.journal[-1]["event"] == "cancelled" and store.journal[-1]["reason"] == "halted"
    assert pair.row is None

    pair, store = make_pair(flat_then(106.0, T0 + 10 * M), LONG)
    run_ticks(pair, T0)
    obey(pair, HALT)
    run_ticks(pair, *every_minute(T0 + M, T0 + 30 * M))
    events = [(r["event"], r.get("close_reason")) for r in store.journal]
    assert events == [("opened", None), ("closed", "take_profit")]
    assert len(pair.strategy.asked) == 1


def test_flatten_closes_an_open_position_at_market_with_close_reason_closed_at_the_next_tick():
    pair, store = make_pair(flat_then(100.0, T0), LONG)
    run_ticks(pair, T0, T0 + M)
    obey(pair, FLATTEN)
    assert not pair.tick_in_place(T0 + 2 * M, T0 + 2 * M)  # a transition to journal: the awaited tick
    run_ticks(pair, T0 + 2 * M)
    closed = store.journal[-1]
    assert (closed["event"], closed["close_reason"], closed["at"], closed["price_close"]) == (
        "closed", "closed", T0 + 2 * M, 100.0)
    run_ticks(pair, T0 + 3 * M)
    assert pair.row is None and len(pair.strategy.asked) == 1


def test_a_flatten_after_downtime_first_checks_the_missed_minutes_then_closes():
    # The take-profit was reached during the downtime: it is applied at its minute, not a flatten close.
    pair, store = make_pair(flat_then(106.0, T0 + 10 * M), LONG)
    run_ticks(pair, T0)
    obey(pair, FLATTEN)
    run_ticks(pair, T0 + 30 * M)
    assert store.journal[-1]["close_reason"] == "take_profit"


def test_a_loss_limit_halts_only_its_profile_journaled_with_the_figures(tmp_path):
    losing = RiskProfile("small")
    # The price falls through the stop-loss at once: every trade loses.
    pair, store = make_pair(flat_then(90.0, T0 + 2 * M), LONG, LONG)
    pair.risk = losing
    other, _ = make_pair(flat_then(100.0, T0))
    halts = Halts(tmp_path, lambda: T0 + 30 * M, EventBus(), {"small": DailyLimit(limit_percent=0.5, capital=200.0)})
    halts.start([pair, other])
    run_ticks(pair, *every_minute(T0, T0 + 10 * M))
    closed = [r for r in store.journal if r["event"] == "closed"]
    assert len(closed) == 1 and closed[0]["pnl_cost"] < -1  # more than 0.5 % of 200 in one trade
    assert len(pair.strategy.asked) == 1  # halted at the close: not asked again
    assert pair.halted is not None and pair.halted.scope == "profile:small"
    assert other.halted is None
    record = read_control(tmp_path).records[-1]
    assert record["by"] == "max_daily_loss_percent" and record["scope"] == "profile:small"
    assert record["figures"]["loss_percent"] >= 0.5 and record["figures"]["capital"] == 200.0
    # A restart reads the journal back: halted before any tick.
    again, _ = make_pair(flat_then(100.0, T0), LONG)
    again.risk = RiskProfile("small")
    Halts(tmp_path, lambda: T0 + 40 * M, EventBus(), {"small": DailyLimit(0.5, 200.0)}).start([again])
    assert again.halted is not None and again.halted.by == "max_daily_loss_percent"


# --- what the operator sees -------------------------------------------------------------------


def test_the_live_view_shows_a_halt_under_its_header_and_status_says_who_and_why():
    import io

    from rich.console import Console

    from livetrader.service.console import ClockView, LiveView, PairView
    from livetrader.service.status import halt_lines

    halt = Halt("profile:small", T0, "max_daily_loss_percent", "lost 1.2 %", False).as_dict()
    lines = halt_lines([halt], [halt])
    assert lines == ["HALTED (risk profile small) since 2026-01-01T00:00:00Z by max_daily_loss_percent: lost 1.2 %; "
                     "no new entries, open positions still managed. `livetrader resume` lifts it."]
    assert halt_lines([halt], [])[0].endswith("; not yet taken by the running daemon. `livetrader resume` lifts it.")
    assert "no daemon runs" in halt_lines([halt], None)[0]
    console = Console(file=io.StringIO(), width=220)
    pair = PairView("BTCUSDT", "loser", "sim", "idle·halted")
    view = LiveView(lambda: [pair], clock_provider=lambda: ClockView(T0), notices_provider=lambda: lines)
    console.print(view.render())
    text = console.file.getvalue()
    assert text.index("real clock") < text.index("HALTED (risk profile small)") < text.index("idle·halted")


def test_recover_dry_run_lists_the_halts_in_force_and_the_skipped_lines_without_calling_them_damage(tmp_path):
    from livetrader.service.recover import inspect

    append_control(tmp_path, halted(T0, reason="fomc"))
    with open(control_path(tmp_path), "ab") as handle:
        handle.write(b'{"event": "res')
    append_control(tmp_path, halted(T0 + 1, scope="profile:small", flatten=True))
    findings = inspect(tmp_path, dry_run=True)
    assert [h["scope"] for h in findings.halts] == ["all", "profile:small"]
    assert findings.halts[0]["reason"] == "fomc" and findings.halts[1]["flatten"]
    assert len(findings.control_problems) == 1 and findings.exit_code == 0
    assert findings.to_dict()["halts"] == findings.halts
