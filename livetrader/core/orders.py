"""Orders as values: client order ids, sizing, fills and what an order's answers add up to
(docs/behaviour.md §12). Pure: no I/O, no clock; the shell (``livetrader.execution``) sends,
asks and journals.

An order's story in a pair's journal is one ``order_intent`` record (durable before the request
leaves) followed by ``order_update`` records, one per answer. ``status`` of an update is one of
``STATUSES``; ``FINAL`` ones end the order. ``unknown`` is never failure: the request may have
reached the exchange, so the order is asked for by its client id before anything is sent again.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, replace
from decimal import ROUND_DOWN, Decimal
from typing import Any, Literal

Leg = Literal["entry", "exit", "stop"]
Side = Literal["buy", "sell"]
Mode = Literal["paper", "sandbox", "live"]
MODES: tuple[Mode, ...] = ("paper", "sandbox", "live")

#: What an order can be known as. ``unknown``: sent (or maybe sent), no answer seen;
#: ``open``: on the book, maybe partly filled; ``filled``: completely; ``rejected``: refused,
#: never placed; ``not_placed``: asked for long enough and never found (docs/behaviour.md §12);
#: ``cancelled``/``expired``: ended by the exchange (or a cancel) with ``filled`` what it got.
STATUSES = ("unknown", "open", "filled", "rejected", "not_placed", "cancelled", "expired")
FINAL = frozenset({"filled", "rejected", "not_placed", "cancelled", "expired"})
#: Journal events of orders (beside the signal's transitions). ``order_cancel`` is journaled
#: before a protective stop is cancelled to make way for an exit: it says which exit was decided.
#: ``position_adopted``: a person settled a position the account holds less of (``livetrader
#: positions adopt``): its ``position_amount`` is what the position holds from then on.
ORDER_EVENTS = frozenset({"order_intent", "order_update", "order_cancel", "position_adopted"})
#: What an order is: a market order (entries, exits), or a protective stop that sells at market
#: (``stop_market``) or at a limit a gap below (``stop_limit``) once the price falls to its stop.
ORDER_TYPES = ("market", "stop_market", "stop_limit")

_LEG_LETTER = {"entry": "e", "exit": "x", "stop": "s"}


def client_order_id(key: tuple[str, str, str], signal_id: str, leg: Leg, attempt: int) -> str:
    """The client order id of ``leg``'s ``attempt`` for signal ``signal_id`` of pair ``key``.

    The same after any restart (derived, never random), unique per pair, signal, leg and
    attempt, and at most 32 characters of ``[A-Za-z0-9_-]`` starting ``lt`` (what Binance,
    OKX and bybit all accept): ``lt`` + leg letter + attempt + ``-`` + 20 characters of a hash.
    """
    if attempt < 1 or attempt > 99999:
        raise ValueError(f"attempt {attempt} out of range 1..99999")
    material = "\x1f".join((*key, signal_id)).encode()
    digest = hashlib.blake2b(material, digest_size=15).digest()
    tail = base64.b32encode(digest).decode().lower()[:20]
    return f"lt{_LEG_LETTER[leg]}{attempt}-{tail}"


@dataclass(frozen=True, slots=True)
class MarketRules:
    """What an exchange allows on one market: the amount step and the minimums."""

    base: str
    quote: str
    amount_step: float | None = None
    min_amount: float | None = None
    min_cost: float | None = None


class SizingRefused(ValueError):
    """An order that must not be sent: below a minimum, above the free balance, or zero."""


def retry_delay_minutes(refusals: int) -> int:
    """Minutes to wait before sending a refused exit again: the next tick for the first ten
    refusals, then doubling up to an hour (a refusal that persists needs a person, and an
    exchange must not be hammered; every refusal is reported)."""
    return 1 if refusals <= 10 else min(60, 2 ** min(refusals - 10, 6))


def truncate(amount: float, step: float | None) -> float:
    """``amount`` rounded down to a multiple of ``step`` (no step: unchanged), without float drift."""
    if not step:
        return amount
    exact = Decimal(repr(amount)) / Decimal(repr(step))
    return float(exact.to_integral_value(rounding=ROUND_DOWN) * Decimal(repr(step)))


def entry_amount(cost: float, price: float, rules: MarketRules, free_quote: float | None) -> float:
    """The amount to buy for ``cost`` quote units at ``price``, truncated to the market's step.

    Raises ``SizingRefused`` saying which limit and by how much: the free quote balance
    (``None``: not known, not checked), the minimum amount, the minimum notional.
    """
    if free_quote is not None and cost > free_quote:
        raise SizingRefused(f"cost {cost:g} {rules.quote} is above the free balance {free_quote:g} {rules.quote}")
    amount = truncate(cost / price, rules.amount_step)
    if amount <= 0:
        raise SizingRefused(f"cost {cost:g} {rules.quote} buys nothing at {price:g} (amount step "
                            f"{rules.amount_step:g})")
    if rules.min_amount is not None and amount < rules.min_amount:
        raise SizingRefused(f"amount {amount:g} {rules.base} is below the market minimum {rules.min_amount:g} "
                            f"{rules.base} (raise cost to at least {rules.min_amount * price:.6g} {rules.quote})")
    if rules.min_cost is not None and amount * price < rules.min_cost:
        raise SizingRefused(f"notional {amount * price:g} {rules.quote} is below the market minimum "
                            f"{rules.min_cost:g} {rules.quote}")
    return amount


def exit_amount(held: float, rules: MarketRules) -> tuple[float, float]:
    """``(to_sell, dust)``: what of ``held`` can be sold (truncated to the step) and the remainder.

    A remainder below the market minimum cannot be sold on its own: it is recorded as dust.
    When even the whole is below the minimum, nothing can be sold and all of it is dust.
    """
    to_sell = truncate(held, rules.amount_step)
    if rules.min_amount is not None and to_sell < rules.min_amount:
        return 0.0, held
    return to_sell, max(0.0, held - to_sell)


@dataclass(frozen=True, slots=True)
class Answer:
    """What the exchange said of one order (a placement's answer or a query's), normalised.

    ``status`` is one of ``STATUSES``, or ``not_found`` for a query the exchange answered
    "no such order" (which right after placing can be transient). ``cost`` is the quote
    amount the fills came to; fees are split by the asset they were charged in (``fee_other``
    counts fees in a third asset, e.g. BNB, which change neither side's amount).
    """

    status: str
    filled: float = 0.0
    average: float | None = None
    cost: float = 0.0
    fee_base: float = 0.0
    fee_quote: float = 0.0
    fee_other: float = 0.0
    order_id: str | None = None
    reason: str | None = None
    trade_ids: tuple[str, ...] = ()
    #: When the exchange last changed the order (ms), if it said: a stop's fill time.
    updated_at: int | None = None


@dataclass(frozen=True, slots=True)
class Order:
    """One order of a pair as its journal tells it: the intent and what was learnt since."""

    client_id: str
    leg: Leg
    side: Side
    amount: float
    attempt: int
    signal_id: str
    intent_at: int
    status: str = "unknown"
    filled: float = 0.0
    average: float | None = None
    cost: float = 0.0
    fee_base: float = 0.0
    fee_quote: float = 0.0
    order_id: str | None = None
    reason: str | None = None
    #: Time (ms) of the first "not found" in the current run of them, None when the last
    #: answer found the order (or none was asked yet).
    not_found_since: int | None = None
    #: Where the decision that made this order came from: the close reason and decided price
    #: of an exit, the decided price of an entry.
    decided_price: float | None = None
    close_reason: str | None = None
    #: ``market``, ``stop_market`` or ``stop_limit`` (``ORDER_TYPES``); a stop's trigger and limit.
    type: str = "market"
    stop_price: float | None = None
    limit_price: float | None = None

    @property
    def final(self) -> bool:
        """True when nothing more can happen to the order."""
        return self.status in FINAL

    def learn(self, answer: Answer, now: int) -> Order:
        """The order after ``answer``. A "not found" starts (or continues) the not-found run and
        leaves the status as it was; any other answer ends that run."""
        if answer.status == "not_found":
            return replace(self, not_found_since=self.not_found_since if self.not_found_since is not None else now,
                           reason=answer.reason)
        return replace(self, status=answer.status, filled=answer.filled, average=answer.average, cost=answer.cost,
                       fee_base=answer.fee_base, fee_quote=answer.fee_quote,
                       order_id=answer.order_id or self.order_id, reason=answer.reason, not_found_since=None)

    def intent_record(self) -> dict[str, Any]:
        """The order fields of its ``order_intent`` journal record."""
        out: dict[str, Any] = {"client_id": self.client_id, "leg": self.leg, "side": self.side, "type": self.type,
                               "amount": self.amount, "attempt": self.attempt}
        for name in ("decided_price", "close_reason", "stop_price", "limit_price"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    def update_record(self) -> dict[str, Any]:
        """The order fields of an ``order_update`` journal record."""
        out: dict[str, Any] = {"client_id": self.client_id, "leg": self.leg, "status": self.status,
                               "filled": self.filled, "cost": self.cost, "fee_base": self.fee_base,
                               "fee_quote": self.fee_quote}
        for name in ("average", "order_id", "reason", "not_found_since"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


def order_of_intent(record: dict[str, Any]) -> Order:
    """The ``Order`` an ``order_intent`` journal record starts; KeyError/TypeError/ValueError when malformed."""
    leg = record["leg"]
    side = record["side"]
    type_ = record.get("type", "market")
    if leg not in _LEG_LETTER or side not in ("buy", "sell") or type_ not in ORDER_TYPES:
        raise ValueError(f"order_intent with leg {leg!r}, side {side!r} and type {type_!r}")
    return Order(client_id=str(record["client_id"]), leg=leg, side=side, amount=float(record["amount"]),
                 attempt=int(record["attempt"]), signal_id=str(record["signal_id"]), intent_at=int(record["at"]),
                 decided_price=_float_or_none(record.get("decided_price")), close_reason=record.get("close_reason"),
                 type=type_, stop_price=_float_or_none(record.get("stop_price")),
                 limit_price=_float_or_none(record.get("limit_price")))


def with_update(order: Order, record: dict[str, Any]) -> Order:
    """``order`` after the ``order_update`` journal record ``record`` (of the same client id)."""
    status = str(record["status"])
    if status not in STATUSES:
        raise ValueError(f"order_update with status {status!r}")
    nf = record.get("not_found_since")
    return replace(order, status=status, filled=float(record.get("filled", 0.0)),
                   average=_float_or_none(record.get("average")), cost=float(record.get("cost", 0.0)),
                   fee_base=float(record.get("fee_base", 0.0)), fee_quote=float(record.get("fee_quote", 0.0)),
                   order_id=record.get("order_id", order.order_id), reason=record.get("reason"),
                   not_found_since=None if nf is None else int(nf))


def orders_of(records: list[dict[str, Any]]) -> list[Order]:
    """Every order a journal's records tell of, oldest first, each as its last record left it."""
    by_id: dict[str, Order] = {}
    for rec in records:
        event = rec.get("event")
        if event == "order_intent":
            by_id[str(rec["client_id"])] = order_of_intent(rec)
        elif event == "order_update":
            cid = str(rec["client_id"])
            if cid in by_id:
                by_id[cid] = with_update(by_id[cid], rec)
    return list(by_id.values())


def pending_order(records: list[dict[str, Any]]) -> Order | None:
    """The order a pair's journal leaves to carry on with, or None.

    That is the last order whose leg the journal has not completed: an entry (or exit) with no
    ``opened`` (or ``closed``/``cancelled``) of its signal after its intent. It may be final
    already (a fill whose ``opened`` a crash kept from the journal: the pair completes it) or
    still unresolved (asked for at start). A protective stop is never pending: it rests on the
    exchange beside an open position (``protective_stop``).
    """
    pending: Order | None = None
    for rec in records:
        event = rec.get("event")
        if event == "order_intent":
            if rec.get("leg") == "stop":
                continue
            pending = order_of_intent(rec)
        elif event == "order_update" and pending is not None and rec.get("client_id") == pending.client_id:
            pending = with_update(pending, rec)
        elif pending is not None and rec.get("signal_id") == pending.signal_id:
            if (pending.leg == "entry" and event in ("opened", "cancelled")) or (
                    pending.leg == "exit" and event == "closed"):
                pending = None
    return pending


def protective_stop(records: list[dict[str, Any]], signal_id: str) -> Order | None:
    """The protective stop of the position of ``signal_id``, as its records left it: the one the
    journal last spoke of, and one that may still rest before any that has ended.

    Not simply the last attempt: an earlier attempt taken for never placed can be found resting
    after all (``Executor._earlier_stop_resting``) once a later one was refused, and it is then
    the stop to cancel before an exit."""
    last_said: dict[str, int] = {}
    for index, rec in enumerate(records):
        if rec.get("signal_id") == signal_id and rec.get("leg") == "stop" and rec.get("client_id") is not None:
            last_said[str(rec["client_id"])] = index
    stops = [o for o in orders_of(records) if o.leg == "stop" and o.signal_id == signal_id]
    if not stops:
        return None
    return max(stops, key=lambda o: (not o.final, last_said.get(o.client_id, -1)))


def exit_decided(records: list[dict[str, Any]], signal_id: str) -> tuple[str, float] | None:
    """``(close_reason, decided_price)`` of an exit decided for ``signal_id`` whose protective stop
    was being cancelled when the journal ends (an ``order_cancel`` with no exit order and no
    ``closed`` after it), else None: a restart carries that exit on."""
    decided: tuple[str, float] | None = None
    for rec in records:
        if rec.get("signal_id") != signal_id:
            continue
        event = rec.get("event")
        if event == "order_cancel" and rec.get("close_reason"):
            decided = (str(rec["close_reason"]), float(rec.get("decided_price") or 0.0))
        elif event == "closed" or (event == "order_intent" and rec.get("leg") == "exit"):
            decided = None
    return decided


def stop_limit_price(stop: float, gap_percent: float) -> float:
    """The limit of a stop-limit sell ``gap_percent`` below its ``stop`` (what it sells down to)."""
    return stop * (1.0 - gap_percent / 100.0)


def attempts_of(records: list[dict[str, Any]], signal_id: str, leg: Leg) -> int:
    """The highest attempt number journaled for ``leg`` of ``signal_id`` (0: none)."""
    return max((int(r["attempt"]) for r in records
                if r.get("event") == "order_intent" and r.get("signal_id") == signal_id and r.get("leg") == leg),
               default=0)


@dataclass(frozen=True, slots=True)
class Position:
    """What an entry's fills bought: the amount held (base fees taken off) and what it cost."""

    amount: float
    price: float
    spent: float  # quote paid, quote fees included

    @classmethod
    def of_entry(cls, entry: Order) -> Position:
        """The position an entry order's fills opened."""
        if entry.filled <= 0 or entry.average is None:
            raise ValueError(f"entry {entry.client_id} filled nothing")
        return cls(amount=max(0.0, entry.filled - entry.fee_base), price=entry.average,
                   spent=entry.cost + entry.fee_quote)


def realised(position: Position, exit_order: Order) -> tuple[float, float]:
    """``(pnl_quote, pnl_percentage)`` of a position closed by ``exit_order``'s fills: proceeds
    after the fees actually paid, minus what the position cost (its fees included)."""
    proceeds = exit_order.cost - exit_order.fee_quote
    if exit_order.fee_base and exit_order.average:
        proceeds -= exit_order.fee_base * exit_order.average
    pnl = proceeds - position.spent
    return pnl, (pnl / position.spent * 100.0 if position.spent else 0.0)


def uncovered(held: float, positions: list[tuple[str, float]], tolerance: float = 0.0) -> list[str]:
    """The positions (signal ids) an account holding ``held`` of their base asset cannot cover.

    ``positions`` are ``(signal_id, amount)`` of every pair holding that asset, oldest first:
    each pair owns exactly its own fills, so the oldest are covered first and a shortfall falls on
    the newest. An amount within ``tolerance`` (the market's amount step) of being covered is.
    Coins held beyond every position are the account owner's and are not counted against anything.
    """
    left = held
    short: list[str] = []
    for signal_id, amount in positions:
        if left + tolerance >= amount:
            left -= amount
        else:
            short.append(signal_id)
    return short


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)
