"""core/orders.py: client ids, sizing, and what a journal's order records add up to (docs/behaviour.md §12)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from livetrader.core.orders import (
    Answer,
    MarketRules,
    Order,
    Position,
    SizingRefused,
    attempts_of,
    client_order_id,
    entry_amount,
    exit_amount,
    exit_decided,
    orders_of,
    pending_order,
    protective_stop,
    realised,
    stop_limit_price,
    truncate,
    uncovered,
)

KEY = ("BTC/USDT", "my-strategy", "binance")
RULES = MarketRules("BTC", "USDT", amount_step=0.00001, min_amount=0.00001, min_cost=5.0)


@given(st.text(min_size=1, max_size=60), st.text(min_size=1, max_size=80), st.sampled_from(["entry", "exit", "stop"]),
       st.integers(1, 9999))
def test_client_ids_fit_every_exchange_and_never_change(strategy, signal_id, leg, attempt):
    key = ("BTC/USDT", strategy, "binance")
    cid = client_order_id(key, signal_id, leg, attempt)
    assert re.fullmatch(r"lt[A-Za-z0-9_-]{1,30}", cid) and len(cid) <= 32
    assert cid == client_order_id(key, signal_id, leg, attempt)  # derived, the same after any restart


def test_client_ids_differ_by_pair_signal_leg_and_attempt():
    ids = {client_order_id(k, s, leg, a)
           for k in (KEY, ("ETH/USDT", "my-strategy", "binance"), ("BTC/USDT", "other", "binance"))
           for s in ("sig-1", "sig-2") for leg in ("entry", "exit", "stop") for a in (1, 2)}
    assert len(ids) == 3 * 2 * 3 * 2


def test_amounts_are_truncated_to_the_step_without_float_drift():
    assert truncate(0.0023999999, 0.00001) == 0.00239
    assert truncate(0.3, 0.1) == 0.3  # 0.3 / 0.1 is 2.9999999999999996 in floats
    assert entry_amount(100.0, 43_000.0, RULES, free_quote=1_000.0) == 0.00232


def test_sizing_refuses_before_any_order_naming_the_limit():
    with pytest.raises(SizingRefused, match="free balance"):
        entry_amount(100.0, 43_000.0, RULES, free_quote=50.0)
    with pytest.raises(SizingRefused, match="minimum notional|below the market minimum 5"):
        entry_amount(4.0, 43_000.0, RULES, free_quote=None)
    with pytest.raises(SizingRefused, match="buys nothing"):
        entry_amount(0.1, 43_000.0, RULES, free_quote=None)


def test_a_remainder_below_the_minimum_is_dust():
    assert exit_amount(0.0023976, RULES) == (0.00239, pytest.approx(0.0000076))
    rules = MarketRules("BTC", "USDT", amount_step=0.001, min_amount=0.01)
    assert exit_amount(0.005, rules) == (0.0, 0.005)  # too little to sell at all: all dust


def _intent(cid, leg, signal_id="s1", at=60_000, attempt=1, event="order_intent", **more):
    rec = {"event": event, "client_id": cid, "leg": leg, "side": "buy" if leg == "entry" else "sell",
           "amount": 0.5, "attempt": attempt, "signal_id": signal_id, "at": at}
    rec.update(more)
    return rec


def test_the_pending_order_is_the_last_leg_the_journal_did_not_complete():
    entry = _intent("e1", "entry")
    filled = {"event": "order_update", "client_id": "e1", "leg": "entry", "status": "filled", "filled": 0.5,
              "average": 100.0, "cost": 50.0, "fee_base": 0.0005, "fee_quote": 0.0, "at": 60_000}
    opened = {"event": "opened", "signal_id": "s1", "at": 60_000}
    assert pending_order([entry]).status == "unknown"  # intent durable, no answer: unknown, never failed
    assert pending_order([entry, filled]).status == "filled"  # a fill whose opened a crash kept out
    assert pending_order([entry, filled, opened]) is None
    exit1 = _intent("x1", "exit", at=120_000)
    rejected = {"event": "order_update", "client_id": "x1", "leg": "exit", "status": "rejected", "at": 120_000}
    assert pending_order([entry, filled, opened, exit1, rejected]).status == "rejected"
    assert attempts_of([entry, filled, opened, exit1, rejected], "s1", "exit") == 1
    closed = {"event": "closed", "signal_id": "s1", "at": 180_000}
    assert pending_order([entry, filled, opened, exit1, rejected, _intent("x2", "exit", attempt=2), closed]) is None
    assert [o.client_id for o in orders_of([entry, filled, opened, exit1])] == ["e1", "x1"]


def test_a_protective_stop_is_never_the_pending_order_and_is_found_for_its_position():
    entry = _intent("e1", "entry")
    filled = {"event": "order_update", "client_id": "e1", "leg": "entry", "status": "filled", "filled": 0.5,
              "average": 100.0, "cost": 50.0, "at": 60_000}
    opened = {"event": "opened", "signal_id": "s1", "at": 60_000}
    stop1 = _intent("s1a", "stop", type="stop_limit", stop_price=95.0, limit_price=94.5, amount=0.4995)
    open_ = {"event": "order_update", "client_id": "s1a", "leg": "stop", "status": "open", "at": 60_000}
    records = [entry, filled, opened, stop1, open_]
    assert pending_order(records) is None  # the stop rests beside the position: the pair is not busy
    stop = protective_stop(records, "s1")
    assert (stop.type, stop.stop_price, stop.limit_price, stop.status) == ("stop_limit", 95.0, 94.5, "open")
    assert protective_stop(records, "other") is None
    assert stop.intent_record()["type"] == "stop_limit" and stop.intent_record()["limit_price"] == 94.5
    with pytest.raises(ValueError):
        orders_of([_intent("z", "stop", type="trailing")])
    # An exit decided while the stop was being cancelled is carried on after a restart ...
    cancel = {"event": "order_cancel", "client_id": "s1a", "leg": "stop", "signal_id": "s1",
              "close_reason": "take_profit", "decided_price": 110.0, "at": 120_000}
    assert exit_decided([*records, cancel], "s1") == ("take_profit", 110.0)
    # ... until its exit order is journaled (the pending order takes over) or the position closed.
    assert exit_decided([*records, cancel, _intent("x1", "exit", at=120_000)], "s1") is None
    assert exit_decided([*records, cancel, {"event": "closed", "signal_id": "s1", "at": 120_000}], "s1") is None
    assert stop_limit_price(100.0, 0.5) == pytest.approx(99.5)


def test_reconciliation_covers_the_oldest_positions_first_and_ignores_the_owners_coins():
    assert uncovered(1.0, [("a", 0.3), ("b", 0.2)]) == []  # 0.5 of the owner's own: not ours to judge
    assert uncovered(0.35, [("a", 0.3), ("b", 0.2)]) == ["b"]  # the shortfall falls on the newest
    assert uncovered(0.0, [("a", 0.3), ("b", 0.2)]) == ["a", "b"]
    assert uncovered(0.49999, [("a", 0.3), ("b", 0.2)], tolerance=0.00001) == []  # within one amount step
    assert uncovered(0.2, [("a", 0.3), ("b", 0.2)]) == ["a"]  # b's own coins are there; a's are not


@given(st.floats(0, 10), st.lists(st.floats(0.001, 3), max_size=6))
def test_reconciliation_never_counts_more_covered_than_held(held, amounts):
    positions = [(str(i), a) for i, a in enumerate(amounts)]
    short = set(uncovered(held, positions))
    assert sum(a for sid, a in positions if sid not in short) <= held + 1e-9


def test_an_order_learns_not_found_as_a_run_and_anything_else_ends_it():
    order = Order("c", "entry", "buy", 1.0, 1, "s", 0)
    seen = order.learn(Answer("not_found"), 1_000).learn(Answer("not_found"), 5_000)
    assert seen.status == "unknown" and seen.not_found_since == 1_000
    found = seen.learn(Answer("filled", filled=1.0, average=10.0, cost=10.0), 9_000)
    assert found.status == "filled" and found.not_found_since is None and found.final


def test_pnl_comes_from_fills_and_the_fees_paid():
    entry = Order("e", "entry", "buy", 1.0, 1, "s", 0, status="filled", filled=1.0, average=100.0, cost=100.0,
                  fee_base=0.001)
    position = Position.of_entry(entry)
    assert position.amount == pytest.approx(0.999) and position.spent == 100.0
    exit_order = Order("x", "exit", "sell", 0.999, 1, "s", 0, status="filled", filled=0.999, average=110.0,
                       cost=109.89, fee_quote=0.10989)
    pnl, percent = realised(position, exit_order)
    assert pnl == pytest.approx(109.89 - 0.10989 - 100.0)
    assert percent == pytest.approx(pnl)  # spent 100


def test_a_position_costs_the_strategys_cost_else_its_risk_profiles_else_the_engines(monkeypatch, tmp_path):
    from livetrader.config import parse_config
    from livetrader.live.engine import Engine
    from livetrader.live.pair import Pair
    from livetrader.strategy.base import Strategy, StrategyRegistry

    monkeypatch.setenv("LIVETRADER_BINANCE_API_KEY", "k-0001")
    monkeypatch.setenv("LIVETRADER_BINANCE_SECRET", "s-0001")
    config = parse_config({
        "engine": {"cost": 100},
        "risk": {"careful": {"max_positions": 2, "cost": 25}},
        "exchanges": {"binance": {"ccxt_id": "binance", "mode": "sandbox",
                                  "urls": {"api_base": "http://127.0.0.1:9"}}},
    })

    class Plain(Strategy):
        name = "plain"

    class Careful(Strategy):
        name = "careful"
        risk = "careful"

    class Sized(Strategy):
        name = "sized"
        risk = "careful"
        cost = 40.0

    engine = Engine(config, StrategyRegistry(tmp_path), data_dir=tmp_path)
    costs = {}
    for cls in (Plain, Careful, Sized):
        pair = Pair("BTC/USDT", cls(), "binance", engine.source("binance"))
        executor = engine._executor(pair, cls)
        assert executor is not None and executor.mode == "sandbox"
        costs[cls.name] = executor.cost
    assert costs == {"plain": 100.0, "careful": 25.0, "sized": 40.0}
    paper = Engine(parse_config({}), StrategyRegistry(tmp_path), data_dir=tmp_path)
    assert paper._executor(Pair("BTCUSDT", Plain(), "sim", paper.source("sim")), Plain) is None
