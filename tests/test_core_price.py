"""docs/behaviour.md §3: the VWAP price and candle checks."""

import math

import pytest

from livetrader.core.price import Candle, CandleError, price_window, validate_candles, vwap

M = 60_000


def c(ts, o=100.0, h=101.0, lo=99.0, cl=100.0, v=1.0):
    return Candle(ts, o, h, lo, cl, v)


def test_vwap_weights_typical_price_by_volume():
    candles = [c(0, h=12, lo=6, cl=9, v=1), c(M, h=30, lo=24, cl=27, v=3)]
    # typical 9 and 27; (9*1 + 27*3) / 4 = 22.5
    assert vwap(candles) == pytest.approx(22.5)


def test_vwap_without_volume_is_the_mean_close():
    candles = [c(i * M, cl=100 + i, h=110, v=0) for i in range(5)]
    assert vwap(candles) == pytest.approx(102.0)


def test_price_window_uses_the_five_closed_minutes_before_the_current_one():
    now = 10 * M + 30_000  # 30 s into minute 10: minute 10 is still forming
    assert price_window(now) == (5 * M, 10 * M)
    assert price_window(10 * M) == (5 * M, 10 * M)


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (c(0, h=98, lo=99), "below low"),
        (c(0, o=0, lo=0), "zero or negative"),
        (c(0, cl=math.nan), "finite"),
        (c(0, v=math.inf), "finite"),
        (c(0, o=200), "outside"),
    ],
)
def test_bad_candles_are_errors(bad, words):
    with pytest.raises(CandleError, match=words):
        validate_candles([bad])


def test_gaps_duplicates_and_disorder_are_errors():
    with pytest.raises(CandleError, match="missing"):
        validate_candles([c(0), c(2 * M)])
    with pytest.raises(CandleError, match="duplicate"):
        validate_candles([c(0), c(0)])
    with pytest.raises(CandleError, match="out of order"):
        validate_candles([c(M), c(0)])


def test_requested_window_must_be_covered_exactly():
    validate_candles([c(0), c(M)], 0, 2 * M)
    with pytest.raises(CandleError, match="expected 3"):
        validate_candles([c(0), c(M)], 0, 3 * M)


def test_a_thousandfold_spike_is_bad_data_not_a_price():
    candles = [c(i * M) for i in range(5)]
    candles[2] = c(2 * M, o=100, h=100_000, lo=100, cl=100)
    with pytest.raises(CandleError, match="price spike"):
        validate_candles(candles)
    validate_candles([c(i * M, cl=100 + i, h=110) for i in range(5)])  # ordinary moves pass
