"""docs/behaviour.md §5: signal validation reports every problem at once."""

import math

import pytest

from livetrader.core.signal import Signal
from livetrader.core.validate import SignalError, opens_now, signal_problems, validate_signal


def test_a_sound_long_and_short_pass():
    validate_signal(Signal("long", take_profit=102, stop_loss=99), 100)
    validate_signal(Signal("short", take_profit=98, stop_loss=101), 100)


def test_every_problem_is_reported_in_one_error():
    bad = Signal("long", take_profit=math.nan, stop_loss=-1, minutes=0)
    with pytest.raises(SignalError) as err:
        validate_signal(bad, 100)
    problems = err.value.problems
    assert len(problems) == 3
    text = str(err.value)
    assert "take_profit" in text and "stop_loss" in text and "minutes" in text


@pytest.mark.parametrize("position", ["buy", "", None])
def test_position_must_be_long_or_short(position):
    assert any("position" in p for p in signal_problems(Signal(position, 102, 99), 100))


def test_levels_on_the_wrong_side_are_rejected():
    assert any("take_profit > entry > stop_loss" in p for p in signal_problems(Signal("long", 99, 102), 100))
    assert any("take_profit < entry < stop_loss" in p for p in signal_problems(Signal("short", 102, 99), 100))


def test_distances_exactly_half_a_percent_are_accepted_despite_rounding():
    for price in (50000.0, 0.00001234, 3.3, 1234.5678):
        validate_signal(Signal("long", take_profit=price * 1.005, stop_loss=price * 0.995), price)
        validate_signal(Signal("short", take_profit=price * 0.995, stop_loss=price * 1.005), price)


def test_too_close_take_profit_and_stop_loss_are_rejected():
    problems = signal_problems(Signal("long", take_profit=100.4, stop_loss=99.6), 100)
    assert len(problems) == 2
    assert "take_profit is 0.4% from the entry" in problems[0]


def test_stop_loss_at_most_twenty_percent():
    validate_signal(Signal("long", take_profit=110, stop_loss=80), 100)
    assert any("at most 20" in p for p in signal_problems(Signal("long", 110, 79.9), 100))


@pytest.mark.parametrize("minutes", [0, -5, 1441, 10_000, 1.5, "60", True])
def test_lifetime_must_be_whole_minutes_within_a_day(minutes):
    assert any("minutes" in p for p in signal_problems(Signal("long", 102, 99, minutes=minutes), 100))


def test_lifetime_limits_are_inclusive():
    validate_signal(Signal("long", 102, 99, minutes=1), 100)
    validate_signal(Signal("long", 102, 99, minutes=1440), 100)
    validate_signal(Signal("long", 102, 99, minutes=60.0), 100)


def test_an_immediate_entry_already_beyond_an_exit_is_rejected():
    # Market entry: the current price is the entry, so it cannot be beyond; a reached limit entry can.
    reached = Signal("long", take_profit=103, stop_loss=100.5, price_open=101.5)
    assert opens_now(reached, 100)
    assert any("beyond the stop_loss" in p for p in signal_problems(reached, 100))
    short_reached = Signal("short", take_profit=98, stop_loss=99.5, price_open=98.5)
    assert any("beyond the stop_loss" in p for p in signal_problems(short_reached, 100))


def test_a_scheduled_entry_must_lie_between_its_exits():
    scheduled = Signal("long", take_profit=103, stop_loss=98, price_open=99)
    assert not opens_now(scheduled, 100)
    validate_signal(scheduled, 100)


def test_garbage_instead_of_a_signal_is_one_clear_problem():
    assert signal_problems({"position": "long"}, 100) == ["expected a Signal or None, got dict"]


def test_wrong_types_are_reported_not_raised():
    problems = signal_problems(Signal("long", take_profit="102", stop_loss=None), 100)
    assert len(problems) == 2


def test_a_note_that_cannot_be_journaled_is_an_invalid_signal():
    problems = signal_problems(Signal("long", 102, 99, note="half a pair \ud800"), 100)
    assert problems == ["note must be valid Unicode text (UTF-8 encodable); it holds '\\ud800' at position 12, "
                        "half of a surrogate pair"]
    problems[0].encode("utf-8")  # the message itself can be logged
    assert signal_problems(Signal("long", 102, 99, note="x" * 1001), 100) == [
        "note must be at most 1000 characters, got 1001"]
    assert signal_problems(Signal("long", 102, 99, note=42), 100) == ["note must be text (a str), got int"]
    assert any(p.startswith("id must be valid Unicode") for p in signal_problems(Signal("long", 102, 99, id="\udfff"),
                                                                                100))
    validate_signal(Signal("long", 102, 99, note="é 漢字 🚀 " + "x" * 900), 100)
