"""Signal values: what a strategy returns, what is persisted, and what a tick reports (SPEC §1–2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

Position = Literal["long", "short"]
Action = Literal["idle", "scheduled", "waiting", "opened", "active", "closed", "cancelled"]
CloseReason = Literal["take_profit", "stop_loss", "time_expired", "closed"]
CancelReason = Literal["timeout", "price_reject", "user"]

DEFAULT_MINUTES = 1440
MAX_MINUTES = 1440
SCHEDULE_TIMEOUT_MINUTES = 120


@dataclass(slots=True, frozen=True)
class Signal:
    """A trade idea returned by a strategy.

    ``price_open`` absent means a market entry at the current price; present and not yet
    reached, the signal is *scheduled* until the price comes to it. ``minutes`` is the
    lifetime of the open position, counted from when it opens.
    """

    position: Position
    take_profit: float
    stop_loss: float
    price_open: float | None = None
    minutes: int = DEFAULT_MINUTES
    note: str = ""
    id: str | None = None


@dataclass(slots=True, frozen=True)
class SignalRow:
    """An accepted signal as the engine keeps and persists it (times in integer ms UTC).

    ``pending_at`` is None while the signal is scheduled and set when the position opens.
    """

    id: str
    symbol: str
    strategy: str
    exchange: str
    position: Position
    price_open: float
    take_profit: float
    stop_loss: float
    minutes: int
    scheduled_at: int
    pending_at: int | None = None
    note: str = ""

    @property
    def is_open(self) -> bool:
        """True once the position has opened."""
        return self.pending_at is not None


@dataclass(slots=True, frozen=True)
class TickResult:
    """The outcome of one tick of one pair (SPEC §2). Times in integer ms UTC.

    ``reason`` is the cancel reason for ``cancelled`` and a short text for an ``idle``
    caused by an error or a risk rejection; ``close_reason`` is set for ``closed``.
    """

    action: Action
    symbol: str
    strategy: str
    exchange: str
    at: int
    price: float
    signal: SignalRow | None = None
    close_reason: CloseReason | None = None
    reason: str | None = None
    price_close: float | None = None
    pnl_percentage: float | None = None
    pnl_cost: float | None = None
    progress_tp: float | None = None
    progress_sl: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def signal_id(self) -> str | None:
        """The id of the signal this result concerns, if any."""
        return self.signal.id if self.signal else None


def make_signal_id(symbol: str, strategy: str, now_ms: int) -> str:
    """A readable id, unique per pair: a pair accepts at most one signal per minute."""
    stamp = datetime.fromtimestamp(now_ms / 1000, tz=UTC).strftime("%Y%m%dT%H%MZ")
    return f"{symbol}-{strategy}-{stamp}"
