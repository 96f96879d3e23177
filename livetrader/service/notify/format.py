"""What a notification says: one :class:`Message` per thing an operator wants to hear about.

Each message has a ``kind`` (one of ``config.NOTIFY_EVENTS``: what a channel selects with
``events = [...]``), a one-line ``text`` a person reads on a phone, and ``fields``, the same facts
as JSON values (what a webhook receiver parses). Every text and field is redacted when the
channel sends it (``channel.Channel``), so nothing here needs to think about secrets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from livetrader.core.format import format_duration, format_minute, format_percent, format_price


@dataclass(slots=True, frozen=True)
class Message:
    """One notification: ``kind`` selects the channels, ``text`` is read, ``fields`` are parsed."""

    kind: str
    text: str
    fields: dict[str, Any] = field(default_factory=dict)


def _pair(symbol: str, strategy: str, exchange: str) -> str:
    return f"{symbol} {strategy} on {exchange}"


def _pair_fields(result: Any) -> dict[str, Any]:
    return {"symbol": result.symbol, "strategy": result.strategy, "exchange": result.exchange, "at": result.at}


def opened(result: Any) -> Message:
    """A position opened (a ``TickResult`` with action ``opened``)."""
    row = result.signal
    position = row.position if row else "?"
    text = (f"Opened {position} {_pair(result.symbol, result.strategy, result.exchange)} at "
            f"{format_price(row.price_open if row else result.price)}")
    if row is not None:
        text += f" (take profit {format_price(row.take_profit)}, stop loss {format_price(row.stop_loss)})"
    fields = _pair_fields(result) | {"signal_id": result.signal_id, "position": position,
                                     "price_open": row.price_open if row else result.price,
                                     "take_profit": row.take_profit if row else None,
                                     "stop_loss": row.stop_loss if row else None}
    return Message("opened", text, fields)


def closed(result: Any, quote: str) -> Message:
    """A position closed: its PnL in percent and in quote currency, why, and how long it was held."""
    row = result.signal
    position = row.position if row else "?"
    held = result.at - row.pending_at if row is not None and row.pending_at is not None else None
    cost = result.pnl_cost
    text = (f"Closed {position} {_pair(result.symbol, result.strategy, result.exchange)}: {result.close_reason}, "
            f"{format_percent(result.pnl_percentage, signed=True)}"
            + (f" ({cost:+.2f} {quote})" if cost is not None else "")
            + (f", held {format_duration(held)}" if held is not None else ""))
    fields = _pair_fields(result) | {"signal_id": result.signal_id, "position": position,
                                     "close_reason": result.close_reason, "price_close": result.price_close,
                                     "pnl_percentage": result.pnl_percentage, "pnl_cost": cost, "quote": quote,
                                     "duration_ms": held}
    return Message("closed", text, fields)


def cancelled(result: Any) -> Message:
    """A signal cancelled before it opened (timeout, price, user, halted, rejected entry)."""
    text = f"Cancelled {_pair(result.symbol, result.strategy, result.exchange)}: {result.reason}"
    return Message("cancelled", text, _pair_fields(result) | {"signal_id": result.signal_id, "reason": result.reason})


def pair_message(kind: str, what: str, key: tuple[str, str, str], at: int, detail: str = "",
                 **extra: Any) -> Message:
    """A message about one pair seen by the engine's poll (orders, stops, degraded, reconciliation)."""
    symbol, strategy, exchange = key
    text = f"{what}: {_pair(symbol, strategy, exchange)}" + (f": {detail}" if detail else "")
    return Message(kind, text, {"symbol": symbol, "strategy": strategy, "exchange": exchange, "at": at,
                                "event": what, "detail": detail or None} | extra)


def errors_digest(counts: dict[str, int], last: str, since: int | None, at: int) -> Message:
    """Errors since the last digest, counted by kind, with the last one's text."""
    total = sum(counts.values())
    kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    span = f" since {format_minute(since)}" if since is not None else ""
    text = f"{total} error{'s' if total != 1 else ''}{span} ({kinds}); last: {last}"
    return Message("errors", text, {"at": at, "count": total, "by_kind": dict(counts), "last": last})


def daily(day: str, figures: dict[str, Any]) -> Message:
    """The summary of one UTC day (engine clock)."""
    closed_n = figures["closed"]
    text = (f"Daily summary {day}: {closed_n} trade{'s' if closed_n != 1 else ''} closed "
            f"({figures['won']} won, {figures['lost']} lost), PnL {figures['pnl_cost']:+.2f} {figures['quote']}, "
            f"{figures['open']} open, {figures['pairs']} pairs, {figures['errors']} errors")
    return Message("daily", text, {"day": day} | figures)
