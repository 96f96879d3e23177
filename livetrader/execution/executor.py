"""One pair's orders: how its decided ``opened`` and ``closed`` become orders on the exchange
(docs/behaviour.md §12).

The state machine still decides; the executor carries the decision out and says what came of
it as a tick result the pair applies like any other:

- ``opened`` only once the entry has a fill (price_open = the fills' average), ``closed`` only
  once the exit has filled the position (price_close = the fills' average, PnL from the fills
  and the fees paid, a remainder below the market minimum recorded as ``dust``);
- ``entering``/``exiting`` while an order's outcome is not known yet: the pair is not asked
  for a signal, and each tick asks the exchange for the order by its client id;
- ``cancelled`` (reason ``rejected: ...``) when an entry was definitively refused or never
  placed; an exit refused is sent again, as a new attempt, on the next tick.

Protection (``guard``): once an entry has filled, a protective stop (leg ``stop``) sells the
position on the exchange at the signal's stop-loss, so it is protected while the daemon is down.
The stop is asked for every ``stop_check_minutes``: found filled, it closes the position
``stop_loss`` at its own fill; found cancelled (by hand) or never placed, it is placed again and
reported; "would trigger immediately" closes at market at once. To close by its own decision the
executor first cancels the stop (``order_cancel`` journaled before), then sells what is left: a
stop that filled before the cancel reached it is the exit, and nothing is sold twice.

Write-ahead: every order's ``order_intent`` is journaled (durable) before its request leaves,
every answer is journaled as ``order_update`` before it changes anything, and nothing is ever
sent again while an earlier attempt's outcome is unknown.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from livetrader.core.format import format_time
from livetrader.core.machine import cancel
from livetrader.core.orders import (
    Answer,
    Leg,
    Order,
    Position,
    SizingRefused,
    client_order_id,
    entry_amount,
    exit_amount,
    exit_decided,
    orders_of,
    pending_order,
    protective_stop,
    realised,
    retry_delay_minutes,
    stop_limit_price,
)
from livetrader.core.price import MINUTE_MS
from livetrader.core.signal import SignalRow, TickResult, record_of, row_of
from livetrader.execution.broker import Broker
from livetrader.logs import get_logger

log = get_logger(__name__)

#: A test seam, read once: ``LIVETRADER_CRASH_AT=<point>`` SIGKILLs the process at that point of
#: the order path, so the crash tests can stop it exactly between two steps (``CRASH_POINTS``).
CRASH_AT = os.environ.get("LIVETRADER_CRASH_AT", "")
CRASH_POINTS = ("entry_intent_durable", "entry_answered", "entry_answer_durable", "exit_intent_durable",
                "exit_answered", "exit_answer_durable", "stop_intent_durable", "stop_answered",
                "stop_answer_durable", "cancel_durable", "cancel_answered")


def _crash_point(leg: str, step: str) -> None:
    if CRASH_AT and CRASH_AT == f"{leg}_{step}":
        os.kill(os.getpid(), signal.SIGKILL)

Write = Callable[[dict[str, Any]], Awaitable[None]]
ReportError = Callable[[int, str, str], None]


class Executor:
    """The orders of one pair (``key``) in ``sandbox`` or ``live`` ``mode`` through ``broker``.

    ``write`` journals a record durably (the pair's store); ``report_error`` is the pair's.
    ``cost`` is what one position costs in quote units; ``unknown_order_minutes`` how long an
    order must stay "not found" (with no trade of the account explaining it) to be taken as
    never placed.
    """

    def __init__(self, key: tuple[str, str, str], broker: Broker, *, mode: str, cost: float,
                 unknown_order_minutes: float, write: Write, report_error: ReportError,
                 protective_stop: str = "auto", stop_limit_gap_percent: float = 0.5,
                 stop_check_minutes: float = 1.0) -> None:
        self.key = key
        self.broker = broker
        self.mode = mode
        self.cost = cost
        self.unknown_ms = int(unknown_order_minutes * MINUTE_MS)
        self.write = write
        self.report_error = report_error
        #: The order being carried out (unresolved, or final but not yet followed by its transition).
        self.order: Order | None = None
        #: The signal that order is for: an entry's candidate row, an exit's open position.
        self.row: SignalRow | None = None
        #: What the open position holds (from its entry's fills); None when none is open.
        self.position: Position | None = None
        #: An exit decided and not yet placed (a refusal: the next tick sends a new attempt).
        self.exit_due: tuple[str, float] | None = None
        #: The exit fills of the position so far (a partial exit leaves the rest to sell).
        self.sold: list[Order] = []
        #: The last refused exit attempt (why, and when the next may be sent).
        self.refused: Order | None = None
        self.next_exit_at = 0
        self.attempts: dict[tuple[str, Leg], int] = {}
        #: Order ids (the exchange's) this pair's journal knows: a trade of the account with
        #: another id may be an order of ours whose answer was lost.
        self.known_ids: set[str] = set()
        #: ``auto``, ``market``, ``limit`` or ``off``: the protective stop asked for in the config.
        self.wanted_stop = protective_stop
        self.stop_gap_percent = stop_limit_gap_percent
        self.stop_check_ms = max(1, int(stop_check_minutes * MINUTE_MS))
        #: ``stop_market``/``stop_limit`` once the market was asked; ``none`` when it takes no stop.
        self.stop_type: str | None = None
        #: The open position's protective stop (the latest attempt), None when none was sent.
        self.stop: Order | None = None
        #: When the stop is next asked for (or, after a refusal, placed again).
        self.next_guard_at = 0
        #: The stop is being cancelled for the decided exit (its ``order_cancel`` is journaled).
        self.withdrawing = False
        #: The position is being closed by ``forget``: its coins are not the account's any more.
        self.forgotten = False
        #: Entries that filled at a price the exchange did not say: client id -> when first seen.
        self.unpriced_since: dict[str, int] = {}
        #: The open position's stops taken for never placed (not found for unknown_order_minutes):
        #: the ones an exit refused for locked coins asks for again.
        self.unplaced_stops: set[str] = set()
        #: When those were last asked for (at most every ``stop_check_minutes`` while an exit is refused).
        self.stops_asked_at: int | None = None

    @property
    def protection(self) -> str:
        """What protects an open position on the exchange: ``stop_market``, ``stop_limit``,
        ``none`` (the exchange takes no stop orders, or the config says ``off``) or ``unknown``
        (not asked yet)."""
        return self.stop_type or "unknown"

    @property
    def held(self) -> float:
        """What the open position still holds: its entry's fills (base fees taken off) less what
        was sold (0 when none is open)."""
        if self.position is None:
            return 0.0
        return max(0.0, self.position.amount - sum(o.filled for o in self.sold))

    @property
    def exposure(self) -> str | None:
        """Why what this pair may hold on the exchange is not known to rest under a protective stop
        now: said when the daemon stops, as nothing watches it until the next start. None when it
        is protected, holds nothing, or the market takes no stop (said at start)."""
        if self.stop_type == "none":
            return None
        order = self.order
        if self.position is None:
            if order is not None and order.leg == "entry" and not order.final:
                return f"its entry {order.client_id} is {order.status}: if it filled, no stop protects it"
            return None
        stop = self.stop
        if stop is None:
            return "its protective stop is not placed yet"
        if stop.status in ("open", "filled"):
            return None  # resting, or it sold the position (the next start closes it ``stop_loss``)
        if stop.status == "unknown":
            seen = " (not found on the exchange yet)" if stop.not_found_since is not None else ""
            return f"its protective stop {stop.client_id} is unknown{seen}"
        return f"its protective stop {stop.client_id} is {stop.status}"

    def guard_due(self, minute: int) -> bool:
        """True when an open position's protective stop is to be placed or asked for at ``minute``."""
        return (self.position is not None and not self.busy and minute >= self.next_guard_at
                and self.stop_type != "none")

    @property
    def busy(self) -> bool:
        """True while an order (or an exit to resend) decides the pair's ticks."""
        return self.order is not None or self.exit_due is not None

    @property
    def state(self) -> str | None:
        """``entering``/``exiting`` while busy, else None."""
        if not self.busy:
            return None
        return "exiting" if self.exit_due is not None or (self.order and self.order.leg == "exit") else "entering"

    # --- restore ----------------------------------------------------------------------------

    def restore(self, records: list[dict[str, Any]], row: SignalRow | None) -> None:
        """Take the pair's orders from its journal: the order to carry on with, the open
        position's amount, the exit fills so far, the attempts made."""
        for order in orders_of(records):
            if order.order_id:
                self.known_ids.add(order.order_id)
            leg_key = (order.signal_id, order.leg)
            self.attempts[leg_key] = max(self.attempts.get(leg_key, 0), order.attempt)
        self.order = carried = pending_order(records)
        if carried is not None and carried.leg == "entry" and carried.filled > 0 and carried.average is None:
            # Filled at a price not said: the wait for it runs from its first such answer, across restarts.
            self.unpriced_since[carried.client_id] = min(
                (int(r["at"]) for r in records if r.get("event") == "order_update"
                 and r.get("client_id") == carried.client_id and (r.get("filled") or 0) > 0),
                default=carried.intent_at)
        self.position = None
        self.sold = []
        opened = next((r for r in reversed(records) if r.get("event") == "opened"), None)
        pending = self.order.client_id if self.order is not None else None
        if row is not None and row.pending_at is not None and opened is not None and opened.get("amount") is not None:
            self.position = Position(float(opened["amount"]), float(opened["price_open"]),
                                     float(opened.get("spent", 0.0)))
            # The exit fills so far; the pending order's own are counted when it is carried on with.
            # (A stop's fills count too: a stop-limit that filled in part sold that part.)
            self.sold = [o for o in orders_of(records) if o.signal_id == row.id and o.leg in ("exit", "stop")
                         and o.final and o.filled > 0 and o.client_id != pending]
        self.row = row
        self.stop, self.next_guard_at, self.withdrawing, self.forgotten = None, 0, False, False
        self.unplaced_stops, self.stops_asked_at = set(), None
        if self.position is not None and row is not None:
            adopted = [r for r in records if r.get("event") == "position_adopted" and r.get("signal_id") == row.id]
            if adopted:  # a person settled what the position holds (``livetrader positions adopt``)
                self.position = replace(self.position, amount=float(adopted[-1]["position_amount"]))
            self.stop = protective_stop(records, row.id)
            self.unplaced_stops = {o.client_id for o in orders_of(records)
                                   if o.leg == "stop" and o.signal_id == row.id and o.status == "not_placed"}
            decided = exit_decided(records, row.id)
            if decided is not None and self.order is None:
                self.exit_due, self.withdrawing = decided, True  # the stop was being cancelled for this exit
        if self.order is not None:
            if self.order.leg == "entry":
                intent = next(r for r in reversed(records)
                              if r.get("event") == "order_intent" and r.get("client_id") == pending)
                self.row = row_of(intent)
            else:
                self.exit_due = (self.order.close_reason or "closed",
                                 self.order.decided_price if self.order.decided_price is not None else 0.0)

    # --- carrying a decision out ----------------------------------------------------------------

    async def carry_out(self, decided: TickResult, scheduled: bool) -> TickResult:
        """What the decided ``opened`` or ``closed`` comes to on the exchange (see the module docstring).

        ``scheduled``: the entry activates a journaled scheduled signal (a refusal cancels it)
        rather than a new one (a refusal leaves the pair idle).
        """
        assert decided.signal is not None
        if decided.action == "opened":
            return await self._enter(decided, scheduled)
        assert decided.close_reason is not None and decided.price_close is not None
        self.exit_due = (decided.close_reason, decided.price_close)
        self.row = decided.signal
        return await self._exit(decided.at, decided.price)

    async def advance(self, now: int, price: float) -> TickResult:
        """One tick of a busy pair: ask for the unresolved order (or resend a refused exit)."""
        order = self.order
        if order is None:
            if now < self.next_exit_at:
                return self._waiting(now, price, f"exit refused ({self.refused.reason if self.refused else ''}); "
                                                 f"sent again at {format_time(self.next_exit_at)}")
            return await self._exit(now, price)
        if not order.final:
            answer = await self.broker.query(self.key[0], order.client_id)
            if answer.status == "unknown":
                return self._waiting(now, price, f"order {order.client_id} not answered yet: {answer.reason}")
            learnt = order.learn(answer, now)
            if answer.status == "not_found":
                assert learnt.not_found_since is not None
                if now - learnt.not_found_since < self.unknown_ms:
                    if learnt.not_found_since != order.not_found_since:
                        await self._journal_update(learnt, now, price)
                    self.order = learnt
                    return self._waiting(now, price, f"order {order.client_id} not found (yet)")
                explained = await self._explained_by_trades(learnt)
                if explained is not None:
                    self.order = learnt
                    self.report_error(now, explained, "order")
                    return self._waiting(now, price, explained)
                learnt = replace(learnt, status="not_placed",
                                 reason=f"not found for {self.unknown_ms // MINUTE_MS} minutes and no trade of "
                                        "the account explains it")
            known = (order.filled, order.cost, order.fee_base, order.fee_quote, order.order_id)
            if not (learnt.status == "filled" and learnt.average is None and order.client_id in self.unpriced_since
                    and (learnt.filled, learnt.cost, learnt.fee_base, learnt.fee_quote, learnt.order_id) == known):
                await self._journal_update(learnt, now, price)  # (an unpriced fill asked again: journaled once)
            order = learnt
        return self._after(order, now, price)

    def applied(self, result: TickResult) -> None:
        """The pair journaled ``result``: the order it completed is done with."""
        if result.action in ("opened", "cancelled") and self.order is not None and self.order.leg == "entry":
            if result.action == "opened":
                self.position = Position.of_entry(self.order)
                self.sold = []
                self.stop, self.next_guard_at, self.withdrawing = None, 0, False  # protected at once
                self.order, self.row = None, result.signal  # the open position's row: its stop-loss
            else:
                self.order = self.row = None
        elif result.action == "adjusted" and self.position is not None:
            self.row = result.signal  # new levels: a moved stop-loss moves the protective stop (``guard``)
            if self.stop is not None and result.signal is not None and self.stop.stop_price != result.signal.stop_loss:
                self.next_guard_at = 0
        elif result.action == "closed":
            self.order = self.row = self.position = self.refused = self.stop = None
            self.unplaced_stops, self.stops_asked_at = set(), None
            self.exit_due = None
            self.withdrawing = self.forgotten = False
            self.next_exit_at = 0
            self.sold = []

    def extra(self, result: TickResult) -> dict[str, Any]:
        """Fields a transition's journal record carries beyond the signal's: the mode, and what
        the fills came to (the amount held and its cost; the amount sold, the dust, the PnL in quote)."""
        out: dict[str, Any] = {"mode": self.mode}
        order = self.order
        if result.action == "opened" and order is not None:
            position = Position.of_entry(order)
            out.update(amount=position.amount, spent=position.spent, decided_price=order.decided_price,
                       entry_client_id=order.client_id)
        elif result.action == "closed" and self.position is not None and self.forgotten:
            out.update(amount=self.position.amount, amount_sold=sum(o.filled for o in self.sold), dust=0.0,
                       spent=self.position.spent, forgotten=True)
        elif result.action == "closed" and self.position is not None:
            sold = sum(o.filled for o in self.sold)
            out.update(amount=self.position.amount, amount_sold=sold, dust=max(0.0, self.position.amount - sold),
                       spent=self.position.spent)
            if self.exit_due is not None:
                out["decided_price"] = self.exit_due[1]
        return out

    # --- legs ---------------------------------------------------------------------------------

    async def _enter(self, decided: TickResult, scheduled: bool) -> TickResult:
        row, now, price = decided.signal, decided.at, decided.price
        assert row is not None
        try:
            rules = await self.broker.rules(self.key[0])
            free = await self.broker.free(rules.quote)
            amount = entry_amount(self.cost, price, rules, free)
        except SizingRefused as exc:
            message = f"entry refused before any order: {exc}"
            self.report_error(now, message, "order")
            if scheduled:
                return cancel(row, now, price, f"rejected: {exc}")
            return TickResult("idle", *self.key, now, price, reason=f"rejected: {exc}")
        attempt = self.attempts.get((row.id, "entry"), 0) + 1
        order = Order(client_order_id(self.key, row.id, "entry", attempt), "entry", "buy", amount, attempt, row.id,
                      now, decided_price=price)
        self.row = row
        return await self._send(order, now, price)

    async def _exit(self, now: int, price: float) -> TickResult:
        assert self.exit_due is not None and self.row is not None
        row = self.row
        if self.position is None:
            message = (f"cannot close {row.id}: the journal does not say what its entry filled; the position is "
                       "left open on the exchange (close it by hand, then `livetrader recover`)")
            self.report_error(now, message, "order")
            return self._waiting(now, price, message)
        if self.stop is not None and self.stop.status == "filled":
            return self._stopped(self.stop, now, price)  # the stop was the exit
        if self.stop is not None and self.stop.status not in ("rejected", "not_placed", "cancelled", "expired"):
            withdrawn = await self._withdraw_stop(now, price)
            if withdrawn is not None:
                return withdrawn  # not cancelled yet, or the stop filled: it was the exit
        try:
            rules = await self.broker.rules(self.key[0])
        except Exception as exc:  # noqa: BLE001 - no market rules now: the exit is tried again next tick
            self.report_error(now, f"exit not sent: market rules unavailable: {exc}", "order")
            return self._waiting(now, price, "exit not sent yet")
        remaining = self.position.amount - sum(o.filled for o in self.sold)
        amount, _dust = exit_amount(remaining, rules)
        if amount <= 0:
            return self._closed(now, price)  # nothing (more) that can be sold: the rest is dust
        if self.refused is not None and "InsufficientFunds" in (self.refused.reason or ""):
            # The coins may be locked by a stop of this position taken for never placed: asked for
            # first. Found resting, it is cancelled before any sell; found filled, it was the exit.
            found = None
            asked = self.stops_asked_at
            if self.unplaced_stops and (asked is None or now - asked >= self.stop_check_ms):
                self.stops_asked_at = now  # a few requests per stop_check_minutes, never one per stop per tick
                stops = self.attempts.get((row.id, "stop"), 0)
                found = await self._earlier_stop_resting(row.id, stops + 1, now, price, only=self.unplaced_stops)
            if isinstance(found, TickResult):
                return found
            if found:
                self.withdrawing = False  # its own cancel is journaled before it is sent, next tick
                return self._waiting(now, price, f"protective stop {self.stop.client_id if self.stop else ''} "
                                                 "rests after all: cancelled before the exit")
            # The account holds less than the journal says this position bought: sell what is there,
            # loudly, rather than be refused forever (the shortfall stays in the journal as dust).
            free = await self.broker.free(rules.base, fresh=True)
            if free is not None and free < amount:
                held, _ = exit_amount(free, rules)
                self.report_error(now, f"the account holds {free:g} {rules.base}, less than the {amount:g} this "
                                       f"position bought; selling {held:g}", "order")
                if held <= 0:
                    return self._waiting(now, price, f"nothing of {rules.base} left to sell")
                amount = held
        attempt = self.attempts.get((row.id, "exit"), 0) + 1
        order = Order(client_order_id(self.key, row.id, "exit", attempt), "exit", "sell", amount, attempt, row.id, now,
                      decided_price=self.exit_due[1], close_reason=self.exit_due[0])
        return await self._send(order, now, price)

    async def _send(self, order: Order, now: int, price: float) -> TickResult:
        """Journal the intent, send the order, journal the answer, and say what it came to."""
        assert self.row is not None
        self.attempts[(order.signal_id, order.leg)] = order.attempt
        await self.write(self._record("order_intent", now, price, order.intent_record()))
        # From here on the order may exist: it is this pair's until the exchange says otherwise.
        self.order = order
        _crash_point(order.leg, "intent_durable")
        # Logged once answered, not before: the journal holds the intent already, and a log line
        # (formatted and written to a pipe) between the decision and the request would delay it.
        answer = await self.broker.place(self.key[0], order.side, order.amount, order.client_id)
        log.info("order sent", client_id=order.client_id, leg=order.leg, side=order.side, amount=order.amount,
                 answer=answer.status, filled=answer.filled, symbol=self.key[0], strategy=self.key[1],
                 mode=self.mode, reason=answer.reason)
        _crash_point(order.leg, "answered")
        learnt = order.learn(answer, now) if answer.status != "not_found" else order
        await self._journal_update(learnt, now, price)
        _crash_point(order.leg, "answer_durable")
        return self._after(learnt, now, price)

    def _after(self, order: Order, now: int, price: float) -> TickResult:
        """The tick result an order's (journaled) state leads to."""
        self.order = order
        row = self.row
        assert row is not None
        if not order.final:
            return self._waiting(now, price, order.reason)
        if order.leg == "entry":
            if order.filled > 0 and order.average is None:
                # Bought, at a price the answer did not say: never taken for nothing bought. It is
                # asked for again (the query reads the order's trades) for unknown_order_minutes;
                # then the position opens at the decided price, loudly, so that its coins get their
                # protective stop rather than wait unprotected for a price that may never come.
                since = self.unpriced_since.setdefault(order.client_id, now)
                if now - since < self.unknown_ms:
                    self.report_error(now, f"entry {order.client_id} filled {order.filled:g} but the exchange said "
                                           "no price; asking for it again", "order")
                    self.order = replace(order, status="unknown")
                    return self._waiting(now, price, "entry filled at a price not known yet")
                estimate = order.decided_price or row.price_open
                self.report_error(now, f"entry {order.client_id} filled {order.filled:g} and the exchange never said "
                                       f"its price: opened at the decided price {estimate:g} (the PnL is an "
                                       "estimate)", "order")
                order = self.order = replace(order, average=estimate, cost=order.filled * estimate)
            if order.filled > 0 and order.average is not None:
                opened = replace(row, price_open=order.average, pending_at=row.pending_at or now)
                self.row = opened
                return TickResult("opened", *self.key, now, price, opened)
            why = order.reason or f"entry order {order.status}, nothing filled"
            self.report_error(now, f"entry {order.client_id} {order.status}: {why}", "order")
            return cancel(row, now, price, f"rejected: {why}")
        # An exit (a stop leg comes with the protection work).
        if order.filled > 0:
            self.sold.append(order)
        self.order = None
        if order.status in ("rejected", "not_placed") or order.filled <= 0:
            self.refused = order
            self.next_exit_at = now + retry_delay_minutes(order.attempt) * MINUTE_MS
            self.report_error(now, f"exit {order.client_id} {order.status}: {order.reason or 'nothing filled'}; "
                                   "the position stays open and the exit is sent again, as a new attempt",
                              "order")
            return self._waiting(now, price, f"exit {order.status}")
        remaining = self.position.amount - sum(o.filled for o in self.sold) if self.position else 0.0
        if remaining > 1e-12 and order.filled < order.amount * (1 - 1e-9):
            return self._waiting(now, price, f"exit filled {order.filled:g} of {order.amount:g}; the rest next tick")
        return self._closed(now, price)

    # --- protection ---------------------------------------------------------------------------

    async def resolve_protection(self) -> str:
        """Ask the market once which protective stop it takes (``protection``); logged when none."""
        if self.stop_type is None:
            try:
                kind = await self.broker.stop_type(self.key[0], self.wanted_stop)
            except Exception as exc:  # noqa: BLE001 - asked again at the next guard
                log.warning("protective stop type not known yet", symbol=self.key[0], error=str(exc))
                return self.protection
            self.stop_type = kind or "none"
            if kind is None:
                why = ("protective_stop = \"off\" in the config" if self.wanted_stop == "off"
                       else f"{self.key[2]} takes no stop orders on {self.key[0]} through ccxt")
                log.warning("positions run without a protective stop on the exchange", symbol=self.key[0],
                            strategy=self.key[1], exchange=self.key[2], why=why,
                            consequence="while the daemon is down, nothing sells at the stop-loss")
        return self.protection

    async def guard(self, now: int, price: float) -> TickResult | None:
        """Protect the open position: place its stop when it has none (or lost it), else ask the
        exchange for it. A result when the position is closed (or being closed) by it, else None."""
        assert self.position is not None and self.row is not None
        if await self.resolve_protection() in ("none", "unknown"):
            self.next_guard_at = now + self.stop_check_ms
            return None
        stop = self.stop
        filled_at: int | None = None
        if stop is not None and not stop.final and stop.status != "unknown" and stop.stop_price != self.row.stop_loss:
            # The stop-loss moved (``adjusted``): the resting stop is replaced by one at the new level.
            if not await self._cancel_resting_stop(now, price):
                return None  # asked again next tick
            stop = self.stop
            assert stop is not None
            if stop.status == "filled":
                return self._stopped(stop, now, price)
            return await self._place_stop(now, price)
        if stop is not None and not stop.final:
            asked = await self._ask_stop(stop, now, price)
            if asked is None:
                self.next_guard_at = now + self.stop_check_ms
                return None  # resting as it was, or nothing known yet
            stop, filled_at = asked
        if stop is None:
            return await self._place_stop(now, price)
        if not stop.final:
            self.next_guard_at = now + self.stop_check_ms
            return None
        if stop.status == "filled":
            return self._stopped(stop, now, price, filled_at)
        if stop.filled > 0 and stop not in self.sold:
            self.sold.append(stop)  # a stop-limit that filled in part before it ended: the rest stays held
        return await self._place_stop(now, price)  # rejected, never placed, or ended on the exchange

    async def _ask_stop(self, stop: Order, now: int, price: float) -> tuple[Order, int | None] | None:
        """Ask the exchange for the unresolved ``stop``: its state as journaled now (and when the
        exchange last changed it), or None when there is nothing new to act on."""
        if stop.status == "open":
            # Resting as it was: one open-orders request per symbol and minute says so for every
            # pair on the symbol; only a stop missing from it is asked for by its client id.
            resting = await self.broker.open_client_ids(self.key[0], now)
            if resting is not None and stop.client_id in resting:
                return None
        answer = await self.broker.query(self.key[0], stop.client_id)
        if answer.status == "unknown":
            return None
        if answer.status == "not_found":
            gone = await self._stop_not_found(stop, answer, now, price)
            if gone is None:
                return None
            learnt = gone
            self.report_error(now, f"protective stop {stop.client_id} is not on the exchange; placing it again",
                              "order")
        else:
            learnt = stop.learn(answer, now)
        if learnt.status in ("cancelled", "expired"):
            self.report_error(now, f"protective stop {stop.client_id} was {learnt.status} on the exchange, not by "
                                   "livetrader; placing it again", "order")
        if learnt != stop:
            await self._journal_stop(learnt, now, price)
        return learnt, answer.updated_at

    async def _place_stop(self, now: int, price: float) -> TickResult | None:
        """Journal and send a new protective stop for what the position holds."""
        assert self.position is not None and self.row is not None and self.stop_type is not None
        row = self.row
        try:
            rules = await self.broker.rules(self.key[0])
        except Exception as exc:  # noqa: BLE001 - asked again at the next check
            self.report_error(now, f"protective stop not placed yet: market rules unavailable: {exc}", "order")
            self.next_guard_at = now + self.stop_check_ms
            return None
        remaining = self.position.amount - sum(o.filled for o in self.sold)
        amount, _dust = exit_amount(remaining, rules)
        if amount <= 0:
            if self.sold:  # an earlier stop sold all that can be sold: the rest is dust
                self.exit_due = ("stop_loss", row.stop_loss)
                return self._closed(now, price)
            self.next_guard_at = now + self.stop_check_ms
            return None  # nothing a stop could sell
        attempt = self.attempts.get((row.id, "stop"), 0) + 1
        limit = stop_limit_price(row.stop_loss, self.stop_gap_percent) if self.stop_type == "stop_limit" else None
        order = Order(client_order_id(self.key, row.id, "stop", attempt), "stop", "sell", amount, attempt, row.id, now,
                      decided_price=row.stop_loss, close_reason="stop_loss", type=self.stop_type,
                      stop_price=row.stop_loss, limit_price=limit)
        self.attempts[(row.id, "stop")] = attempt
        await self.write(self._record("order_intent", now, price, order.intent_record()))
        self.stop = order
        _crash_point("stop", "intent_durable")
        answer = await self.broker.place_stop(self.key[0], order.type, amount, row.stop_loss, limit, order.client_id)
        log.info("protective stop sent", client_id=order.client_id, amount=amount, stop_price=row.stop_loss,
                 limit_price=limit, answer=answer.status, symbol=self.key[0], strategy=self.key[1], mode=self.mode,
                 reason=answer.reason)
        _crash_point("stop", "answered")
        learnt = order.learn(answer, now) if answer.status != "not_found" else order
        await self._journal_stop(learnt, now, price)
        _crash_point("stop", "answer_durable")
        if learnt.status == "rejected" and "ImmediatelyFillable" in (learnt.reason or ""):
            # The market is below the stop already: what the stop was for is due now, at market.
            self.report_error(now, f"protective stop at {row.stop_loss:g} would trigger immediately (the price is "
                                   "past it): closing the position at market now", "order")
            self.exit_due = ("stop_loss", price)
            return await self._exit(now, price)
        if learnt.status == "rejected" and "InsufficientFunds" in (learnt.reason or ""):
            # The coins are locked: perhaps by an earlier stop of this position taken for never
            # placed (an answer lost, then "not found" for long). Ask for those again first.
            found = await self._earlier_stop_resting(row.id, attempt, now, price)
            if found is not None:
                return found if isinstance(found, TickResult) else None
        if learnt.status == "rejected":
            self.report_error(now, f"protective stop {order.client_id} refused: {learnt.reason}; the position is "
                                   "unprotected on the exchange; placing it again later", "order")
            self.next_guard_at = now + retry_delay_minutes(attempt) * MINUTE_MS
            return None
        if learnt.filled > 0 and learnt.final:
            return self._stopped(learnt, now, price)
        self.next_guard_at = now + self.stop_check_ms
        return None

    async def _withdraw_stop(self, now: int, price: float) -> TickResult | None:
        """Cancel the protective stop before the decided exit: None once it is out of the way
        (what it filled before is counted as sold), the ``closed`` result when it had filled
        (the stop was the exit), or a waiting result while the cancel's outcome is unknown."""
        stop = self.stop
        assert stop is not None and self.exit_due is not None
        if not self.withdrawing:
            reason, decided = self.exit_due
            await self.write(self._record("order_cancel", now, price, {
                "client_id": stop.client_id, "leg": "stop", "close_reason": reason, "decided_price": decided}))
            self.withdrawing = True
            _crash_point("cancel", "durable")
        answer = await self.broker.cancel(self.key[0], stop.client_id)
        _crash_point("cancel", "answered")
        if answer.status in ("unknown", "open"):
            self.report_error(now, f"protective stop {stop.client_id} not cancelled yet "
                                   f"({answer.reason or answer.status}); the exit waits for it", "order")
            return self._waiting(now, price, "cancelling the protective stop")
        if answer.status == "not_found":
            # "Not found" right after placing can be transient: the exit waits until it has lasted
            # unknown_order_minutes (a stop resting unseen would sell the coins the exit sells).
            gone = await self._stop_not_found(stop, answer, now, price)
            if gone is None:
                return self._waiting(now, price, f"protective stop {stop.client_id} not found (yet)")
            learnt = gone
        else:
            learnt = stop.learn(answer, now)
        await self._journal_stop(learnt, now, price)
        if learnt.status == "filled":
            return self._stopped(learnt, now, price, answer.updated_at)
        if learnt.filled > 0:
            self.sold.append(learnt)  # a stop-limit that filled in part: the exit sells the rest
        return None

    # --- a person settles a position the account does not hold (``livetrader positions``) ------

    def unforget(self) -> None:
        """The ``closed`` of a ``forget`` was not journaled (storage failed): the position is as it
        was, and the forget is carried out again at the next tick. Nothing is sold meanwhile."""
        self.forgotten = False
        self.exit_due = None

    async def forget(self, now: int, price: float) -> TickResult | None:
        """Close the open position without selling: its coins left the account outside livetrader.
        The resting stop is cancelled first (None, reported, while that cannot be done); the
        ``closed`` record says ``forgotten`` and its PnL is an estimate at ``price``."""
        assert self.position is not None and self.row is not None
        if not await self._cancel_resting_stop(now, price):
            return None
        held = self.held
        self.forgotten = True
        self.exit_due = ("closed", price)
        sold = [*self.sold, Order("", "exit", "sell", held, 1, self.row.id, now, status="filled", filled=held,
                                  average=price, cost=held * price)] if held > 0 else list(self.sold)
        filled = sum(o.filled for o in sold)
        if filled <= 0:
            return TickResult("closed", *self.key, now, price, self.row, close_reason="closed",
                              price_close=price, pnl_percentage=-100.0, pnl_cost=-self.position.spent)
        merged = Order("", "exit", "sell", filled, 1, self.row.id, now, status="filled", filled=filled,
                       average=sum(o.cost for o in sold) / filled, cost=sum(o.cost for o in sold),
                       fee_base=sum(o.fee_base for o in sold), fee_quote=sum(o.fee_quote for o in sold))
        pnl_quote, pnl_percent = realised(self.position, merged)
        return TickResult("closed", *self.key, now, price, self.row, close_reason="closed",
                          price_close=merged.average, pnl_percentage=pnl_percent, pnl_cost=pnl_quote)

    async def adopt(self, now: int, price: float, others_held: dict[str, float],
                    requested_at: int | None = None) -> TickResult | bool:
        """Make what the account holds the position's amount (at most what it held): the
        account's total of the base asset less what ``others_held`` (base asset -> amount of the
        other positions on this account) claim. A ``position_adopted`` record says so; the resting
        stop is cancelled and a new one placed for the new amount. True once adopted, False while it
        cannot be done yet (said); nothing held at all: ``forget``'s result."""
        assert self.position is not None and self.row is not None
        rules = await self.broker.rules(self.key[0])
        totals = await self.broker.totals()
        if totals is None:
            self.report_error(now, "adopt: the account's balance cannot be read now; asked again next tick", "order")
            return False
        share = min(self.held, max(0.0, totals.get(rules.base, 0.0) - others_held.get(rules.base, 0.0)))
        amount, _dust = exit_amount(share, rules)
        if amount <= 0:
            log.warning("adopt: the account holds none of this position; it is forgotten", signal_id=self.row.id,
                        symbol=self.key[0], strategy=self.key[1], held=share)
            return await self.forget(now, price) or False
        if not await self._cancel_resting_stop(now, price):
            return False
        total = amount + sum(o.filled for o in self.sold)
        # ``requested_at``: the operator record's own time, by which a restart knows it was done.
        await self.write(self._record("position_adopted", now, price, {
            "amount": amount, "previous_amount": self.held, "position_amount": total,
            **({"requested_at": requested_at} if requested_at is not None else {})}))
        log.warning("position adopted: it holds what the account holds", signal_id=self.row.id, symbol=self.key[0],
                    strategy=self.key[1], amount=amount, previous_amount=self.held)
        self.position = replace(self.position, amount=total)
        self.stop, self.next_guard_at = None, 0  # protected again at once, for the new amount
        return True

    async def _cancel_resting_stop(self, now: int, price: float) -> bool:
        """Cancel the protective stop if one may rest; True once none does (journaled)."""
        stop = self.stop
        if stop is None or stop.final:
            return True
        answer = await self.broker.cancel(self.key[0], stop.client_id)
        if answer.status in ("unknown", "open"):
            self.report_error(now, f"protective stop {stop.client_id} not cancelled yet "
                                   f"({answer.reason or answer.status})", "order")
            return False
        if answer.status == "not_found":
            gone = await self._stop_not_found(stop, answer, now, price)
            if gone is None:
                return False  # not found (yet): asked again next tick
            learnt = gone
        else:
            learnt = stop.learn(answer, now)
        await self._journal_stop(learnt, now, price)
        if learnt.filled > 0 and learnt not in self.sold:
            self.sold.append(learnt)
        return True

    async def _earlier_stop_resting(self, signal_id: str, attempt: int, now: int, price: float,
                                    only: set[str] | None = None) -> TickResult | bool | None:
        """Ask again for this position's earlier stops that were taken for never placed: one found
        resting becomes the protective stop again (True), one found filled closes the position
        (its result); None when none is there."""
        for earlier in range(attempt - 1, 0, -1):
            client_id = client_order_id(self.key, signal_id, "stop", earlier)
            if only is not None and client_id not in only:
                continue  # known final otherwise: not asked again
            answer = await self.broker.query(self.key[0], client_id)
            if answer.status in ("unknown", "not_found") or answer.status in ("cancelled", "expired", "rejected"):
                continue
            assert self.row is not None
            stop = Order(client_id, "stop", "sell", self.held, earlier, signal_id, now,
                         type=self.stop_type or "stop_market", stop_price=self.row.stop_loss).learn(answer, now)
            self.report_error(now, f"protective stop {client_id}, taken for never placed, is on the exchange after "
                                   f"all ({answer.status}); it protects the position again", "order")
            await self._journal_stop(stop, now, price)
            if stop.status == "filled":
                return self._stopped(stop, now, price, answer.updated_at)
            self.next_guard_at = now + self.stop_check_ms
            return True
        return None

    async def _stop_not_found(self, stop: Order, answer: Answer, now: int, price: float) -> Order | None:
        """A stop the exchange says it does not know (neither cancellable nor found): None while
        that has lasted less than ``unknown_order_minutes`` (the run of "not found" journaled),
        then the stop as ``not_placed``: "not found" right after placing can be transient."""
        learnt = stop.learn(answer, now)
        assert learnt.not_found_since is not None
        if now - learnt.not_found_since < self.unknown_ms:
            if learnt.not_found_since != stop.not_found_since:
                await self._journal_stop(learnt, now, price)
            self.stop = learnt
            return None
        return replace(learnt, status="not_placed", reason=f"not found for {self.unknown_ms // MINUTE_MS} minutes")

    def _stopped(self, stop: Order, now: int, price: float, filled_at: int | None = None) -> TickResult:
        """The position closed ``stop_loss`` by its protective stop's fill, said in one line: what
        the exchange did (when, how much, at what price) even if the daemon was down meanwhile."""
        if stop not in self.sold:
            self.sold.append(stop)
        self.exit_due = ("stop_loss", stop.stop_price if stop.stop_price is not None else price)
        result = self._closed(now, price)
        log.warning("protective stop filled", client_id=stop.client_id, sold=stop.filled, average=stop.average,
                    stop_price=stop.stop_price, filled_at=format_time(filled_at) if filled_at else None,
                    noticed_at=format_time(now), pnl_cost=result.pnl_cost, pnl_percentage=result.pnl_percentage,
                    signal_id=stop.signal_id, symbol=self.key[0], strategy=self.key[1], mode=self.mode)
        return result

    async def _journal_stop(self, stop: Order, now: int, price: float) -> None:
        await self.write(self._record("order_update", now, price, stop.update_record()))
        if stop.status == "not_placed":
            self.unplaced_stops.add(stop.client_id)
        else:
            self.unplaced_stops.discard(stop.client_id)
        if stop.order_id:
            self.known_ids.add(stop.order_id)
        self.stop = stop

    def _closed(self, now: int, price: float) -> TickResult:
        """The ``closed`` result of the position at its exit fills' average."""
        row, position = self.row, self.position
        assert row is not None and position is not None and self.exit_due is not None
        reason, decided = self.exit_due
        sold = sum(o.filled for o in self.sold)
        if sold > 0:
            merged = Order("", "exit", "sell", sold, 1, row.id, now, status="filled", filled=sold,
                           average=sum(o.cost for o in self.sold) / sold, cost=sum(o.cost for o in self.sold),
                           fee_base=sum(o.fee_base for o in self.sold), fee_quote=sum(o.fee_quote for o in self.sold))
            average = merged.average
            pnl_quote, pnl_percent = realised(position, merged)
        else:
            average, pnl_quote, pnl_percent = decided, -position.spent, -100.0
        return TickResult("closed", *self.key, now, price, row, close_reason=reason,  # type: ignore[arg-type]
                          price_close=average, pnl_percentage=pnl_percent, pnl_cost=pnl_quote)

    def _waiting(self, now: int, price: float, reason: str | None) -> TickResult:
        action = "exiting" if self.state == "exiting" else "entering"
        return TickResult(action, *self.key, now, price, self.row, reason=reason)  # type: ignore[arg-type]

    async def _explained_by_trades(self, order: Order) -> str | None:
        """Why an order not found for long cannot yet be taken as never placed, or None.

        A trade of the account on this market, on the order's side, since its intent, by an
        order this journal does not know, may be that order (the exchange's query may lag):
        the pair then keeps waiting, loudly, rather than guess.
        """
        trades = await self.broker.trades_since(self.key[0], order.intent_at - MINUTE_MS)
        if trades is None:
            return f"order {order.client_id} not found, and the account's trades cannot be read to confirm it " \
                   "was never placed; asking again next tick"
        for trade in trades:
            if trade.get("side") == order.side and str(trade.get("order")) not in self.known_ids:
                return (f"order {order.client_id} is not found, but the account has a {order.side} trade on "
                        f"{self.key[0]} by an order this pair does not know ({trade.get('order')}); it may be "
                        "this order. The pair waits: check the account and run `livetrader recover`")
        return None

    async def _journal_update(self, order: Order, now: int, price: float) -> None:
        await self.write(self._record("order_update", now, price, order.update_record()))
        if order.order_id:
            self.known_ids.add(order.order_id)
        self.order = order

    def _record(self, event: str, now: int, price: float, fields: dict[str, Any]) -> dict[str, Any]:
        """A journal record of an order: the signal's fields (what a restore rebuilds it from),
        the mode, then the order's."""
        assert self.row is not None
        record = record_of(TickResult(event, *self.key, now, price, self.row))  # type: ignore[arg-type]
        record["mode"] = self.mode
        record.update(fields)
        return record
