"""docs/behaviour.md §3: the VWAP price and candle checks."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livetrader.core.price import Candle, CandleError, price_window, validate_candles, vwap, vwaps

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


# --- the bulk VWAP is the scalar one -------------------------------------------------------------

_prices = st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False)
# Zero volumes often (a window without volume prices at the mean close), and wild ones.
_volumes = st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=1e12, allow_nan=False), st.integers(0, 10**6))


@st.composite
def _candles(draw):
    n = draw(st.integers(min_value=5, max_value=40))
    out = []
    for i in range(n):
        a, b, close = draw(_prices), draw(_prices), draw(_prices)
        out.append(Candle(i * M, close, max(a, b, close), min(a, b, close), close, draw(_volumes)))
    return out


def _loop_vwap(candles):
    """``vwap``'s definition, spelled as its loop: the order of the sums is the contract."""
    total, weighted = 0.0, 0.0
    for cd in candles:
        total += cd.volume
        weighted += (cd.high + cd.low + cd.close) / 3.0 * cd.volume
    return weighted / total if total > 0 else sum(cd.close for cd in candles) / len(candles)


@settings(max_examples=300, deadline=None)
@given(_candles())
def test_bulk_vwaps_are_the_scalar_vwap_of_every_window_bit_for_bit(candles):
    bulk = vwaps(candles)
    assert len(bulk) == len(candles) - 4
    for j, price in enumerate(bulk):
        window = candles[j:j + 5]
        assert price == vwap(window) == _loop_vwap(window)  # the same floats, not approximately


@settings(max_examples=100, deadline=None)
@given(_candles())
def test_vwap_of_any_length_is_its_loop(candles):
    assert vwap(candles) == _loop_vwap(candles)
