"""Risk profiles (docs/behaviour.md §7): checks run before a signal is accepted and again when it activates.

A profile is shared by every pair whose strategy names it, and tracks their open positions.
A check receives a ``RiskCandidate`` and rejects by returning a reason (or by raising).
Custom checks are registered from a strategies module with ``@risk_check("profile")``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from livetrader.core.signal import SignalRow

#: What a strategies module uses to add its own checks (the rest serves the engine).
__all__ = ["OpenPosition", "RiskCandidate", "RiskCheck", "risk_check"]


@dataclass(slots=True, frozen=True)
class OpenPosition:
    """An open position as a risk profile sees it."""

    symbol: str
    strategy: str
    exchange: str
    signal_id: str
    position: str
    price_open: float
    pending_at: int

    @classmethod
    def of(cls, row: SignalRow) -> OpenPosition:
        """The position an open ``row`` holds."""
        return cls(row.symbol, row.strategy, row.exchange, row.id, row.position, row.price_open,
                   row.pending_at if row.pending_at is not None else row.scheduled_at)


@dataclass(slots=True, frozen=True)
class RiskCandidate:
    """What a check decides on: the candidate signal, the price, and the profile's open positions."""

    signal: SignalRow
    price: float
    now: int
    positions: tuple[OpenPosition, ...]


RiskCheck = Callable[[RiskCandidate], "str | None"]

_REGISTERED: dict[str, list[RiskCheck]] = {}


def risk_check(profile: str) -> Callable[[RiskCheck], RiskCheck]:
    """Decorator adding a custom check to the named profile."""

    def register(check: RiskCheck) -> RiskCheck:
        _REGISTERED.setdefault(profile, []).append(check)
        return check

    return register


def max_positions(limit: int) -> RiskCheck:
    """Reject when the profile already holds ``limit`` open positions."""

    def check(c: RiskCandidate) -> str | None:
        if len(c.positions) >= limit:
            return f"max_positions {limit} reached"
        return None

    check.__name__ = f"max_positions({limit})"
    return check


def max_positions_per_symbol(limit: int) -> RiskCheck:
    """Reject when the profile already holds ``limit`` open positions on the candidate's symbol."""

    def check(c: RiskCandidate) -> str | None:
        same = sum(1 for p in c.positions if p.symbol == c.signal.symbol)
        if same >= limit:
            return f"max_positions_per_symbol {limit} reached for {c.signal.symbol}"
        return None

    check.__name__ = f"max_positions_per_symbol({limit})"
    return check


@dataclass(slots=True)
class RiskProfile:
    """A named list of checks and the open positions of every pair that uses it."""

    name: str
    checks: list[RiskCheck] = field(default_factory=list)
    positions: dict[str, OpenPosition] = field(default_factory=dict)
    #: Called after every change of ``positions`` (the engine persists the profile there).
    on_change: Callable[[RiskProfile], None] | None = None

    def check(self, row: SignalRow, price: float, now: int) -> str | None:
        """The first rejection reason of any check, or None when all accept."""
        others = tuple(p for key, p in self.positions.items() if key != row.id)
        candidate = RiskCandidate(row, price, now, others)
        for check in self.checks:
            try:
                reason = check(candidate)
            except Exception as exc:  # noqa: BLE001 - a broken check rejects rather than letting a trade through
                return f"check {getattr(check, '__name__', check)!s} raised {type(exc).__name__}: {exc}"
            if reason:
                return str(reason)
        return None

    def add(self, row: SignalRow) -> None:
        """Record ``row`` as an open position."""
        self.positions[row.id] = OpenPosition.of(row)
        if self.on_change is not None:
            self.on_change(self)

    def remove(self, signal_id: str) -> None:
        """Forget a closed position."""
        if self.positions.pop(signal_id, None) is not None and self.on_change is not None:
            self.on_change(self)


def position_dict(p: OpenPosition) -> dict[str, object]:
    """The JSON shape of an open position."""
    return {name: getattr(p, name) for name in p.__slots__}


def build_profiles(config: dict[str, dict[str, int]]) -> dict[str, RiskProfile]:
    """Profiles from the config's ``[risk.<name>]`` tables plus the registered custom checks."""
    profiles: dict[str, RiskProfile] = {}
    for name in {*config, *_REGISTERED}:
        settings = config.get(name, {})
        checks: list[RiskCheck] = []
        if settings.get("max_positions"):
            checks.append(max_positions(int(settings["max_positions"])))
        if settings.get("max_positions_per_symbol"):
            checks.append(max_positions_per_symbol(int(settings["max_positions_per_symbol"])))
        checks += _REGISTERED.get(name, [])
        profiles[name] = RiskProfile(name, checks)
    return profiles
