"""An operator's commands to the running daemon: close, cancel, pause, resume (docs/behaviour.md §14).

``livetrader close|cancel|pause|resume`` reach the daemon through its control socket
(``service.control_socket``), which hands each request to :meth:`Commands.submit`. A request is
queued for its pair and carried out by that pair's own loop between two ticks
(:meth:`Commands.serve`, called by ``Engine.loop``), never while the pair is mid-tick: a close
and the pair's own decision never race. A sleeping loop is woken for it at once.

The outcome comes back as an :class:`Answer`: what was done (``closed BTCUSDT/x signal abc at
42,000.10 (pnl +0.40 %)``), or why nothing was (exit code 2: a wrong id, nothing open, a pair
this daemon does not run).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from livetrader.core.format import format_percent, format_price, format_time
from livetrader.core.machine import close
from livetrader.core.price import MINUTE_MS
from livetrader.core.signal import TickResult
from livetrader.live.pair import Pair
from livetrader.logs import get_logger
from livetrader.strategy.tracing import describe

log = get_logger(__name__)

#: What a request may ask.
COMMANDS = frozenset({"close", "cancel", "pause", "resume"})
#: Exit codes an answer carries: done; refused (usage: nothing changed).
DONE, REFUSED = 0, 2


@dataclass(slots=True, frozen=True)
class Answer:
    """The outcome of one request: ``code`` 0 when done, 2 when refused with nothing changed."""

    code: int
    message: str

    def as_dict(self) -> dict[str, Any]:
        """The JSON answer the control socket sends back."""
        return {"ok": self.code == DONE, "code": self.code, "message": self.message}


def refused(message: str) -> Answer:
    """An answer saying why nothing was done."""
    return Answer(REFUSED, message)


@dataclass(slots=True, frozen=True)
class Request:
    """One operator request: the command and whom it is for (a signal id, or symbol and strategy)."""

    command: str
    signal_id: str | None = None
    symbol: str | None = None
    strategy: str | None = None

    @classmethod
    def of(cls, doc: object) -> Request | str:
        """The request a JSON document asks for, or why it is not one."""
        if not isinstance(doc, dict):
            return "a request is one JSON object"
        command = doc.get("command")
        if command not in COMMANDS:
            return f"unknown command {command!r} (known: {', '.join(sorted(COMMANDS))})"
        fields = {name: doc.get(name) for name in ("signal_id", "symbol", "strategy")}
        for name, value in fields.items():
            if value is not None and (not isinstance(value, str) or not value):
                return f"{name} must be a non-empty string"
        if fields["signal_id"] is None and (fields["symbol"] is None or fields["strategy"] is None):
            return "name a signal id, or a symbol and its strategy"
        if command in ("pause", "resume") and fields["symbol"] is None:
            return f"{command} names a symbol and its strategy"
        return cls(str(command), fields["signal_id"], fields["symbol"], fields["strategy"])

    def describe(self) -> str:
        """Whom the request is for, as the operator said it."""
        if self.signal_id is not None:
            return f"signal {self.signal_id}"
        return f"{self.symbol} --strategy {self.strategy}"


def _plain(symbol: str) -> str:
    """A symbol as compared: ``btc/usdt`` and ``BTCUSDT`` are one market."""
    return symbol.replace("/", "").replace("-", "").replace("_", "").upper()


class Commands:
    """The requests waiting for their pair's loop, and carrying them out (see the module docstring)."""

    def __init__(self, pairs: Callable[[], Iterable[Pair]], now: Callable[[], int]) -> None:
        self._pairs = pairs
        self._now = now
        self._queue: dict[tuple[str, str, str], deque[tuple[Request, asyncio.Future[Answer]]]] = {}
        #: False once the daemon stops: a request then is refused rather than left waiting.
        self.open = True

    # --- the control socket's side ------------------------------------------------------------

    async def submit(self, request: Request) -> Answer:
        """Queue ``request`` for its pair, wake the pair's loop, and wait for the outcome."""
        found = self.find(request)
        if isinstance(found, Answer):
            return found
        pair = found
        if not self.open or pair.stopping.is_set() or pair.state in ("parked", "stopped", "finished"):
            return refused(f"{_name(pair)} is not running any more ({pair.state}): nothing changed")
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._queue.setdefault(pair.key, deque()).append((request, future))
        wake = pair.wake
        if wake is not None and not wake.done():
            wake.set_result(False)  # the loop ticks nothing early (the minute is ticked), serves, sleeps on
        return await future

    def find(self, request: Request) -> Pair | Answer:
        """The pair of this daemon ``request`` is for, or the refusal saying why there is none."""
        pairs = list(self._pairs())
        if request.signal_id is not None:
            for pair in pairs:
                if pair.row is not None and pair.row.id == request.signal_id:
                    return pair
            held = [f"{p.row.id} ({_name(p)}, {'open' if p.row.pending_at is not None else 'scheduled'})"
                    for p in pairs if p.row is not None][:10]
            return refused(f"no open position or scheduled signal with id {request.signal_id!r} on this daemon "
                           f"(it holds: {', '.join(held) or 'none'}): nothing changed")
        assert request.symbol is not None and request.strategy is not None
        matches = [p for p in pairs if _plain(p.symbol) == _plain(request.symbol)
                   and p.strategy_name == request.strategy]
        if not matches:
            running = ", ".join(_name(p) for p in pairs[:10]) or "none"
            return refused(f"this daemon runs no pair {request.symbol} / {request.strategy} (it runs: {running}): "
                           "nothing changed")
        if len(matches) > 1:
            ids = [p.row.id for p in matches if p.row is not None]
            return refused(f"{request.symbol} / {request.strategy} runs on several exchanges "
                           f"({', '.join(p.exchange for p in matches)}): name the signal id instead "
                           f"({', '.join(ids) or 'none held'}); nothing changed")
        return matches[0]

    def shut(self) -> None:
        """The daemon stops: refuse every request still waiting (and any later one)."""
        self.open = False
        for waiting in self._queue.values():
            while waiting:
                request, future = waiting.popleft()
                if not future.done():
                    future.set_result(refused(f"the daemon stopped before carrying out {request.command} "
                                              f"{request.describe()}: nothing changed"))
        self._queue.clear()

    # --- the pair's loop's side ---------------------------------------------------------------

    def waiting(self, pair: Pair) -> bool:
        """True when a request waits for ``pair``."""
        return bool(self._queue.get(pair.key))

    async def serve(self, pair: Pair) -> None:
        """Carry out the requests waiting for ``pair``, in order; called by its loop between ticks."""
        waiting = self._queue.get(pair.key)
        while waiting:
            request, future = waiting.popleft()
            if future.done():
                continue
            try:
                answer = await self._carry_out(pair, request)
            except asyncio.CancelledError:
                if not future.done():
                    future.set_result(Answer(1, f"{request.command} {request.describe()} was interrupted (the daemon "
                                                "is stopping): see livetrader status"))
                raise
            except Exception as exc:  # noqa: BLE001 - an operator's request failing must never end the pair's loop
                pair.report_error(self._now(), f"{request.command} failed: {describe(exc)}", "operator")
                executor = pair.executor
                if request.command == "close" and executor is not None and executor.state == "exiting":
                    # The exit is decided and the pair carries it on at its next ticks (what failed was
                    # a record, say): the close happens, and saying "failed" would invite a second one.
                    answer = Answer(0, f"close {request.describe()} is under way but not complete: {describe(exc)}; "
                                       "the pair carries it on at its next tick: do not close it by hand; see "
                                       "livetrader status")
                else:
                    answer = Answer(1, f"{request.command} {request.describe()} failed: {describe(exc)}; "
                                       "see livetrader status")
            if not future.done():
                future.set_result(answer)

    async def _carry_out(self, pair: Pair, request: Request) -> Answer:
        if request.command == "pause":
            return self._pause(pair)
        if request.command == "resume":
            return self._resume(pair)
        row = pair.row
        if row is not None and request.signal_id is not None and row.id != request.signal_id:
            row = None  # what the operator named is gone meanwhile (closed by its take-profit, say)
        if row is None:
            return refused(f"{_name(pair)} holds no {'open position' if request.command == 'close' else 'signal'}"
                           f"{' ' + request.signal_id if request.signal_id else ''} now: nothing changed")
        executor = pair.executor
        if executor is not None and executor.busy:
            return refused(f"{_name(pair)} has an order out ({executor.state}): nothing changed; try again once "
                           "it is settled (livetrader status)")
        if pair.unreconciled is not None or pair.settle is not None:
            return refused(f"{_name(pair)} is degraded ({pair.unreconciled or 'a positions command is pending'}): "
                           "settle it first (livetrader recover); nothing changed")
        opened = row.pending_at is not None
        if request.command == "cancel":
            if opened:
                return refused(f"{row.id} is an open position, not a scheduled signal: `livetrader close {row.id}` "
                               "closes it; nothing changed")
            return await self._cancel(pair)
        if not opened:
            return refused(f"{row.id} is a scheduled signal, not an open position: `livetrader cancel {row.id}` "
                           "cancels it; nothing changed")
        return await self._close(pair)

    def _minute(self, pair: Pair) -> int:
        """The current minute, never before the last one the pair journaled (a clock gone back)."""
        now = self._now()
        minute = now - now % MINUTE_MS
        return max(minute, pair.last_minute or minute)

    async def _close(self, pair: Pair) -> Answer:
        """Close the open position at the current minute's price (``closed``, reason ``closed``),
        through the order path in sandbox/live mode, as a halt's ``--flatten`` does."""
        row = pair.row
        assert row is not None
        minute = self._minute(pair)
        market = await pair.market_at(minute)
        pair.price = market.price
        result = close(row, minute, market.price, market.price, "closed", pair.settings.rules)
        executor = pair.executor
        orders: list[str] = []
        if executor is not None:
            result = await pair._carry_out(executor, result, scheduled=False)
            # Said before ``apply``: a completed exit forgets its orders there.
            sent = [*executor.sold, *([executor.order] if executor.order is not None else [])]
            orders = [f"{o.side} order {o.client_id} {o.status}" for o in sent]
        await pair.apply(result)
        pair.checked_until = minute
        log.warning("closed by the operator", signal_id=row.id, symbol=pair.symbol, strategy=pair.strategy_name,
                    exchange=pair.exchange, outcome=result.action)
        return Answer(DONE, _said(pair, result, orders))

    async def _cancel(self, pair: Pair) -> Answer:
        row = pair.row
        assert row is not None
        result = await pair.cancel_scheduled(self._minute(pair))
        if result is None:
            return refused(f"{_name(pair)}: signal {row.id} could not be cancelled now: nothing changed")
        return Answer(DONE, f"cancelled {_name(pair)} signal {row.id} at {format_time(result.at)} (reason user)")

    def _pause(self, pair: Pair) -> Answer:
        if pair.paused is not None:
            return Answer(DONE, f"{_name(pair)} is paused already (since {format_time(pair.paused)})")
        pair.paused = self._now()
        held = ""
        if pair.row is not None:
            held = (f"; its open position {pair.row.id} is still managed (TP/SL/expiry)" if pair.row.pending_at
                    is not None else f"; its scheduled signal {pair.row.id} still waits (livetrader cancel)")
        log.warning("pair paused", symbol=pair.symbol, strategy=pair.strategy_name, exchange=pair.exchange)
        return Answer(DONE, f"paused {_name(pair)}: its strategy is not asked until `livetrader resume "
                            f"{pair.symbol} --strategy {pair.strategy_name}`{held}")

    def _resume(self, pair: Pair) -> Answer:
        if pair.paused is None:
            return Answer(DONE, f"{_name(pair)} is not paused: nothing changed")
        pair.paused = None
        log.warning("pair resumed", symbol=pair.symbol, strategy=pair.strategy_name, exchange=pair.exchange)
        halted = f" (but a halt is in force: {pair.halted.scope})" if pair.halted is not None else ""
        return Answer(DONE, f"resumed {_name(pair)}: its strategy is asked again{halted}")


def _name(pair: Pair) -> str:
    """``BTCUSDT/my-strategy``; spaced when the symbol has a slash of its own (``BTC/USDT / my-strategy``)."""
    return f"{pair.symbol}{' / ' if '/' in pair.symbol else '/'}{pair.strategy_name}"


def _said(pair: Pair, result: TickResult, orders: list[str]) -> str:
    """A close's outcome in one line: closed (and at what), or the order it waits for."""
    sent = "; ".join(orders)
    if result.action == "closed":
        pnl = format_percent(result.pnl_percentage, signed=True)
        mode = f" ({pair.executor.mode}: {sent or 'nothing left to sell'})" if pair.executor is not None else ""
        return (f"closed {_name(pair)} signal {result.signal_id} at {format_price(result.price_close)} (pnl {pnl})"
                f"{mode}")
    if sent:
        return f"{result.action}: {sent}; livetrader status shows when it fills"
    return f"{result.action}: {result.reason or 'the exit is under way'}; livetrader status shows when it is done"
