"""Operator commands acting on real orders, found by a review: a halt never lets a scheduled entry
buy, and a close carried on after a failed record is answered as under way, not failed. Each test
failed before its fix."""

from __future__ import annotations

import asyncio

import pytest
from test_order_races import FakeBroker
from test_pair import T0, M, flat_then, make_pair, run_ticks

from livetrader.core.halt import Halt
from livetrader.core.orders import Answer
from livetrader.core.signal import Signal
from livetrader.execution.executor import Executor

HALT = Halt("all", T0, "operator", "", False)
DIP = Signal("long", take_profit=95.0, stop_loss=85.0, price_open=90.0)  # a dip entry: it waits


def test_a_halt_cancels_a_scheduled_entry_even_with_minutes_to_catch_up():
    """§13: 'A scheduled signal is cancelled at the next tick, reason halted'; a halt 'stops new
    entries'. A pair whose last ticks failed (no price: an exchange outage, the reason one halts)
    or a restart (checked_until None) has minutes to catch up: ``_halt_acts`` returns False and
    ``_check_minutes`` activates the scheduled signal and, in sandbox/live, sends a market buy now."""
    pair, store = make_pair(flat_then(88.0, T0 + 3 * M), DIP)
    broker = FakeBroker()
    broker.place_answers.append(Answer("filled", 1.0, 88.0, 88.0, order_id="1"))
    broker.stop_answers.append(Answer("open", order_id="2"))
    pair.executor = Executor(pair.key, broker, mode="sandbox", cost=100.0, unknown_order_minutes=10.0,
                             write=store.write_ahead, report_error=pair.report_error)
    run_ticks(pair, T0, T0 + M)
    assert pair.state == "scheduled"
    pair.halted = HALT  # the operator halts; the ticks of T0+2..T0+9 got no price (not run here)
    run_ticks(pair, T0 + 10 * M)
    buys = [c for c in broker.calls if c[0] == "place" and c[1] == "buy"]
    events = [r["event"] for r in store.journal if r["event"] in ("opened", "cancelled")]
    assert not buys and events == ["cancelled"], f"halted, yet bought {buys}; journal: {events}"


@pytest.mark.parametrize("fails", ["closed", "order_cancel"])
def test_a_close_carried_on_after_a_failed_record_is_answered_under_way(fails):
    """``closed``: the sell filled, only the ``closed`` record failed; ``order_cancel``: nothing was
    sent yet, but ``carry_out`` had set ``exit_due``, so the next tick cancels the stop and sells.
    ``Commands.serve`` answers code 1 "close ... failed" for any exception of ``_close``. When the
    exit sold the position and only the ``closed`` record failed to journal (a full disk that
    clears), the coins are gone and the next tick journals ``closed``: the operator was told it
    failed (and, per §14's refusals, that nothing changed is the natural reading) though it was done."""
    from test_pair import LONG

    from livetrader.errors import StoreWriteError
    from livetrader.live.commands import Commands, Request

    pair, store = make_pair(lambda t: 100.0, LONG)
    broker = FakeBroker()
    broker.place_answers.append(Answer("filled", 1.0, 100.0, 100.0, order_id="1"))
    broker.stop_answers.append(Answer("open", order_id="2"))
    pair.executor = Executor(pair.key, broker, mode="sandbox", cost=100.0, unknown_order_minutes=10.0,
                             write=lambda r: store.write_ahead(r), report_error=pair.report_error)
    run_ticks(pair, T0)
    assert pair.state == "open" and pair.executor.stop is not None
    broker.place_answers.append(Answer("filled", 1.0, 100.0, 100.0, order_id="3"))  # the operator's sell fills
    failing = {fails}
    plain = store.write_ahead

    async def write_ahead(record):
        if record["event"] in failing:
            failing.discard(record["event"])
            raise StoreWriteError("memory", "the disk is full")
        await plain(record)

    store.write_ahead = write_ahead
    now = [T0 + M]
    commands = Commands(lambda: [pair], lambda: now[0])

    async def go():
        asked = asyncio.ensure_future(commands.submit(Request("close", signal_id=pair.row.id)))
        await asyncio.sleep(0)
        await commands.serve(pair)
        answer = await asked
        await pair.tick(T0 + 2 * M)
        return answer

    answer = asyncio.run(go())
    sells = [c for c in broker.calls if c[0] == "place" and c[1] == "sell"]
    closed = [r for r in store.journal if r["event"] == "closed"]
    assert sells and closed  # it was carried out: sold once, journaled at the next tick
    assert answer.code == 0, f"sold on the exchange, yet the operator was told: code {answer.code}: {answer.message}"
    assert "under way" in answer.message and "do not close it by hand" in answer.message
