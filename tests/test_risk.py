"""docs/behaviour.md §7: risk profiles and their built-in and custom checks."""

from livetrader.core.signal import SignalRow
from livetrader.strategy.risk import RiskProfile, build_profiles, max_positions, max_positions_per_symbol, risk_check


def row(symbol="BTCUSDT", sid="a", strategy="s"):
    return SignalRow(sid, symbol, strategy, "sim", "long", 100.0, 102.0, 99.0, 60, 0, 0)


def test_max_positions_counts_every_pair_of_the_profile():
    p = RiskProfile("p", [max_positions(2)])
    assert p.check(row(sid="1"), 100, 0) is None
    p.add(row("BTCUSDT", "1"))
    p.add(row("ETHUSDT", "2", strategy="other"))
    assert p.check(row("SOLUSDT", "3"), 100, 0) == "max_positions 2 reached"
    p.remove("1")
    assert p.check(row("SOLUSDT", "3"), 100, 0) is None


def test_max_positions_per_symbol():
    p = RiskProfile("p", [max_positions_per_symbol(1)])
    p.add(row("BTCUSDT", "1"))
    assert "BTCUSDT" in p.check(row("BTCUSDT", "2", strategy="x"), 100, 0)
    assert p.check(row("ETHUSDT", "3"), 100, 0) is None


def test_a_signal_is_not_counted_against_itself_when_it_activates():
    p = RiskProfile("p", [max_positions(1)])
    p.add(row(sid="same"))
    assert p.check(row(sid="same"), 100, 0) is None


def test_a_raising_check_rejects_with_the_reason():
    def broken(candidate):
        raise ZeroDivisionError("oops")

    p = RiskProfile("p", [broken])
    assert "raised ZeroDivisionError: oops" in p.check(row(), 100, 0)


def test_custom_checks_see_the_candidate_price_time_and_positions():
    seen = []

    @risk_check("custom-test-profile")
    def no_trading_at_night(candidate):
        seen.append((candidate.signal.id, candidate.price, candidate.now, len(candidate.positions)))
        return "closed at night" if candidate.now % 86_400_000 < 6 * 3_600_000 else None

    profiles = build_profiles({"custom-test-profile": {"max_positions": 5}})
    p = profiles["custom-test-profile"]
    assert p.check(row(sid="n"), 101.0, 3_600_000) == "closed at night"
    assert p.check(row(sid="d"), 101.0, 12 * 3_600_000) is None
    assert seen == [("n", 101.0, 3_600_000, 0), ("d", 101.0, 12 * 3_600_000, 0)]
    assert len(p.checks) == 2  # the configured limit, then the custom check
