"""Stopping trading (docs/behaviour.md §13), as pure functions: which halts are in force after the
operator journal's records, which one a pair obeys, and whether a profile's daily loss reached its limit.

The operator journal (``store.control``) holds ``halted`` and ``resumed`` records. A halt has a
scope: ``all`` (every pair) or ``profile:NAME`` (the pairs of one risk profile, as the
``max_daily_loss_percent`` limit halts them). ``livetrader resume`` lifts every halt (scope
``all``); a resume scoped ``profile:NAME`` lifts only that profile's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

#: A day for ``max_daily_loss_percent``: the UTC day, in ms.
DAY_MS = 86_400_000
#: The scope of a halt of every pair.
ALL = "all"
PROFILE_PREFIX = "profile:"


@dataclass(slots=True, frozen=True)
class Halt:
    """A halt in force: since when (the first ``halted`` record of its scope since the last resume),
    by whom (``operator``, ``max_daily_loss_percent``), why, and whether positions are flattened
    (any of its records asked for it)."""

    scope: str
    since: int
    by: str
    reason: str
    flatten: bool
    #: The figures of a daily-loss halt (realised, unrealised, capital, loss and limit in percent).
    figures: Mapping[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of the halt (status file, ``livetrader status``)."""
        out: dict[str, Any] = {"scope": self.scope, "since": self.since, "by": self.by, "reason": self.reason,
                               "flatten": self.flatten}
        if self.figures:
            out["figures"] = dict(self.figures)
        return out


def profile_scope(profile: str) -> str:
    """The scope of a halt of ``profile``'s pairs."""
    return PROFILE_PREFIX + profile


def halts_in_force(records: Iterable[Mapping[str, Any]]) -> dict[str, Halt]:
    """The halts in force after ``records`` (oldest first), by scope.

    A second ``halted`` of a scope already halted keeps the first one's time and reason and adds
    its ``flatten``: an operator who halts, then halts with ``--flatten``, gets the flatten.
    """
    halts: dict[str, Halt] = {}
    for record in records:
        scope = str(record.get("scope", ALL))
        if record.get("event") == "resumed":
            if scope == ALL:
                halts.clear()
            else:
                halts.pop(scope, None)
            continue
        if record.get("event") != "halted":
            continue
        flatten = bool(record.get("flatten", False))
        held = halts.get(scope)
        if held is not None:
            if flatten and not held.flatten:
                halts[scope] = replace(held, flatten=True)
            continue
        figures = record.get("figures")
        halts[scope] = Halt(scope, int(record.get("at", 0)), str(record.get("by", "operator")),
                            str(record.get("reason", "") or ""), flatten,
                            figures if isinstance(figures, Mapping) else None)
    return halts


def halt_of(halts: Mapping[str, Halt], profile: str | None) -> Halt | None:
    """The halt a pair of risk ``profile`` (None: none) obeys: the halt of every pair, else its
    profile's; flattening when either flattens."""
    every = halts.get(ALL)
    own = halts.get(profile_scope(profile)) if profile is not None else None
    if every is None:
        return own
    if own is not None and own.flatten and not every.flatten:
        return replace(every, flatten=True)
    return every


def last_resume(records: Iterable[Mapping[str, Any]], profile: str) -> int | None:
    """When the halts of ``profile`` were last lifted (a resume of every pair or of the profile)."""
    last = None
    for record in records:
        if record.get("event") == "resumed" and record.get("scope", ALL) in (ALL, profile_scope(profile)):
            at = record.get("at")
            if isinstance(at, int):
                last = at if last is None else max(last, at)
    return last


def day_start(ms: int) -> int:
    """The start (00:00 UTC) of the day of ``ms``."""
    return ms - ms % DAY_MS


@dataclass(slots=True, frozen=True)
class DailyLoss:
    """A risk profile's PnL of the day in quote currency, against its limit."""

    realised: float
    unrealised: float
    capital: float
    limit_percent: float

    @property
    def loss_percent(self) -> float:
        """The day's loss as a percent of the capital (negative: a gain)."""
        return -(self.realised + self.unrealised) / self.capital * 100.0

    @property
    def breached(self) -> bool:
        """True when the loss reached the limit."""
        return self.loss_percent >= self.limit_percent

    def figures(self) -> dict[str, float]:
        """The figures a daily-loss halt journals and shows."""
        return {"realised": round(self.realised, 8), "unrealised": round(self.unrealised, 8),
                "capital": self.capital, "loss_percent": round(self.loss_percent, 4),
                "limit_percent": self.limit_percent}


def daily_loss(
    closed: Iterable[tuple[int, float]],
    unrealised: float,
    capital: float,
    limit_percent: float,
    now: int,
    since: int | None = None,
) -> DailyLoss:
    """A profile's loss today: the quote PnL of the positions ``closed`` (``(closed at, pnl)``) on the
    UTC day of ``now``, plus the ``unrealised`` PnL of its open positions, against ``capital``.

    ``since`` (a resume of the profile's halt) starts the count later: what was lost before a
    resume is forgiven by it, what is still open is counted in full.
    """
    start = day_start(now)
    if since is not None and since > start:
        start = since
    realised = sum(pnl for at, pnl in closed if start <= at <= now)
    return DailyLoss(realised, unrealised, capital, limit_percent)
