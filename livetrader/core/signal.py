"""Signal values: what a strategy returns, what is persisted, and what a tick reports (docs/behaviour.md §1–2)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

Position = Literal["long", "short"]
Action = Literal["idle", "scheduled", "waiting", "opened", "active", "adjusted", "closed", "cancelled",
                 "entering", "exiting"]
#: ``signal``: the strategy's ``manage`` closed the position (``core.manage``).
CloseReason = Literal["take_profit", "stop_loss", "time_expired", "closed", "signal"]
CancelReason = Literal["timeout", "price_reject", "user", "halted"]

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
    #: A trailing stop: once open, the stop-loss follows the price at this fraction behind it
    #: (0.01: 1 % below the price for a long), moving only in the position's favour (``core.manage``).
    trailing_stop: float | None = None


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
    trailing_stop: float | None = None

    @property
    def is_open(self) -> bool:
        """True once the position has opened."""
        return self.pending_at is not None


class TickResult(NamedTuple):
    """The outcome of one tick of one pair (docs/behaviour.md §2). Times in integer ms UTC.

    ``reason`` is the cancel reason for ``cancelled`` and a short text for an ``idle``
    caused by an error or a risk rejection; ``close_reason`` is set for ``closed``.

    Immutable. A named tuple rather than a frozen dataclass: every pair builds one every
    minute, and a frozen dataclass takes five times as long to build.
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

    @property
    def signal_id(self) -> str | None:
        """The id of the signal this result concerns, if any."""
        return self.signal.id if self.signal else None


def make_signal_id(symbol: str, strategy: str, now_ms: int) -> str:
    """A readable id, unique per pair: a pair accepts at most one signal per minute."""
    return f"{symbol}-{strategy}-{_minute_stamp(now_ms - now_ms % 60_000)}"


@functools.lru_cache(maxsize=64)
def _minute_stamp(minute_ms: int) -> str:
    # Every pair asked at a boundary stamps the same minute: formatted once.
    return datetime.fromtimestamp(minute_ms / 1000, tz=UTC).strftime("%Y%m%dT%H%MZ")


_ROW_FIELDS = ("position", "price_open", "take_profit", "stop_loss", "minutes", "scheduled_at", "pending_at", "note")


def record_of(result: TickResult) -> dict[str, Any]:
    """The flat JSON-ready record of a tick result: the journal line, the report row, the event.

    Keys: ``event`` (the tick action), ``signal_id``, ``symbol``, ``strategy``, ``exchange``,
    ``at`` (ms UTC), ``price`` (the VWAP of the tick), the signal's fields, and whichever of
    ``close_reason``, ``price_close``, ``pnl_percentage``, ``pnl_cost``, ``progress_tp``,
    ``progress_sl``, ``reason`` apply. Absent values are omitted.
    """
    rec: dict[str, Any] = {
        "event": result.action,
        "signal_id": result.signal.id if result.signal else None,
        "symbol": result.symbol,
        "strategy": result.strategy,
        "exchange": result.exchange,
        "at": result.at,
        "price": result.price,
    }
    if result.signal is not None:
        for name in _ROW_FIELDS:
            rec[name] = getattr(result.signal, name)
        if result.signal.trailing_stop is not None:  # most signals have none: their records stay as they were
            rec["trailing_stop"] = result.signal.trailing_stop
    for name in ("close_reason", "price_close", "pnl_percentage", "pnl_cost", "progress_tp", "progress_sl", "reason"):
        value = getattr(result, name)
        if value is not None:
            rec[name] = value
    if rec["signal_id"] is None:
        del rec["signal_id"]
    return rec


def row_of(record: dict[str, Any]) -> SignalRow:
    """Rebuild the SignalRow a record carries; raises KeyError/TypeError/ValueError when malformed."""
    return SignalRow(
        id=str(record["signal_id"]),
        symbol=str(record["symbol"]),
        strategy=str(record["strategy"]),
        exchange=str(record["exchange"]),
        position=record["position"],
        price_open=float(record["price_open"]),
        take_profit=float(record["take_profit"]),
        stop_loss=float(record["stop_loss"]),
        minutes=int(record["minutes"]),
        scheduled_at=int(record["scheduled_at"]),
        pending_at=None if record.get("pending_at") is None else int(record["pending_at"]),
        note=str(record.get("note", "")),
        trailing_stop=None if record.get("trailing_stop") is None else float(record["trailing_stop"]),
    )
