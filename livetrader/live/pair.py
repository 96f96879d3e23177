"""One pair (symbol, strategy, exchange): its state, one tick, and applying a tick's result.

The decisions are the core's (``core.machine.decide`` and ``answer``, as in a backtest);
this module only gets the minute's market data, asks the strategy, and moves the result
out: to the journal and snapshot (write-ahead, through ``PairStore``), to the risk
profile, to the strategy's callbacks, to the event bus and to the in-memory report window.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from livetrader.core.halt import Halt
from livetrader.core.interval import SIGNAL_INTERVALS, bucket
from livetrader.core.machine import ASK, DEFAULT_RULES, Rules, answer, cancel, close, decide, idle, may_ask
from livetrader.core.manage import Held, steer, trail
from livetrader.core.price import MINUTE_MS, VWAP_CANDLES, Candle, Market, market_of, price_window
from livetrader.core.signal import SignalRow, TickResult, record_of
from livetrader.core.validate import SignalError
from livetrader.errors import StoreError
from livetrader.events import BUS, ErrorEvent, EventBus, PerformanceEvent, RiskEvent
from livetrader.execution.executor import Executor
from livetrader.logs import get_logger
from livetrader.market.feed import CandleFeed
from livetrader.market.source import CandleSource
from livetrader.redaction import redact
from livetrader.store.state import snapshot_dict
from livetrader.strategy.base import HOOKS, Strategy, ask_manage, ask_signal, call_strategy, run_callback
from livetrader.strategy.context import Context
from livetrader.strategy.risk import RiskProfile
from livetrader.strategy.tracing import describe

log = get_logger(__name__)

#: Tick actions that change durable state: journaled before the in-memory state changes.
TRANSITIONS = frozenset({"scheduled", "opened", "adjusted", "closed", "cancelled"})
#: What strategy code may raise that is not the strategy's error: asyncio's cancellation (the
#: strategy timeout and a stop that took too long rely on it) and a coroutine being closed.
#: Everything else, ``SystemExit`` and ``KeyboardInterrupt`` included, is the strategy's error:
#: reported, that tick idle, the daemon running on (a ``sys.exit()`` must not stop every pair).
NOT_STRATEGY_ERRORS = (asyncio.CancelledError, GeneratorExit)


class PairStore(Protocol):
    """Durable storage of one pair: everything the pair and the engine do with it.

    The persistence layer implements it (``store.state.FilePairStore``); a test may keep it
    in memory. Nothing outside ``store/`` reaches past it to the files.
    """

    async def write_ahead(self, record: dict[str, Any]) -> None:
        """Append a transition to the journal, durably, before the state changes; raise
        ``StoreError`` with nothing journaled when storage fails."""

    def snapshot(self, state: dict[str, Any]) -> None:
        """Replace the pair's snapshot with ``state``, atomically."""

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Replace the strategy's saved state (its ``checkpoint()``), atomically; only called for
        strategies that define ``checkpoint``."""

    def records(self) -> list[dict[str, Any]]:
        """Every transition journaled so far, oldest first (reports cover the whole history)."""

    def close(self) -> None:
        """Release what the store holds open (the journal); once, at exit."""


class EventSink(Protocol):
    """Where a pair puts every tick's result for the reports (``report.markdown.EventWindow``):
    given to the pair by whoever builds it, and read back by the reports."""

    def add(self, event: dict[str, Any] | TickResult) -> None:
        """Add a tick result, or a journaled record (on restore), as the newest event."""

    def events(self) -> list[dict[str, Any]]:
        """The events kept, as records, newest first."""


class _Unkept:
    """The event sink of a pair built without one: it keeps nothing."""

    __slots__ = ()

    def add(self, event: dict[str, Any] | TickResult) -> None:
        """Forget ``event``."""

    def events(self) -> list[dict[str, Any]]:
        """Nothing was kept."""
        return []


@dataclass(slots=True, frozen=True)
class PairSettings:
    """The numbers a pair runs with."""

    rules: Rules = DEFAULT_RULES
    strategy_timeout_seconds: float = 180.0
    max_events: int = 250


class Pair:
    """The live state of one (symbol, strategy, exchange) pair and how it ticks."""

    # Slots: every pair's attributes are read every minute, 10,000 pairs at a time. (A
    # ``__dict__`` too, for anything else attached to a pair, e.g. a test's replaced method.)
    __slots__ = ("__dict__", "symbol", "strategy", "strategy_name", "exchange", "source", "settings", "risk", "bus",
                 "store", "interval_ms", "window", "row", "last_bucket", "last_opened_id", "accepting", "degraded",
                 "stopping", "wake", "state", "price", "last_tick_at", "lag_ms", "last_result", "error_count",
                 "decision_lag_ms", "last_error", "ticks", "progress_at", "recent_errors", "checked_until",
                 "closed_trades", "won_trades", "lost_trades", "realised_pnl", "listeners", "last_minute", "signal_ids",
                 "clock_back_logged", "executor", "key", "unreconciled", "halted", "settle", "steers",
                 "paused",
                 # strategy state and hot reload (``_save_checkpoint``, ``_take_reload``)
                 "checkpoints", "checkpoint_text", "checkpoint_state", "code_version", "reload_to")

    def __init__(
        self,
        symbol: str,
        strategy: Strategy,
        exchange: str,
        source: CandleSource,
        *,
        settings: PairSettings = PairSettings(),
        risk: RiskProfile | None = None,
        bus: EventBus = BUS,
        store: PairStore | None = None,
        window: EventSink | None = None,
    ) -> None:
        self.symbol = symbol
        self.strategy = strategy
        self.strategy_name: str = strategy.name
        self.exchange = exchange
        #: (symbol, strategy, exchange): who the pair is, fixed for its life (built once: every
        #: tick of every pair passes it on).
        self.key: tuple[str, str, str] = (symbol, strategy.name, exchange)
        # Pairs of one engine share their exchange's feed; a pair built alone gets its own.
        self.source = source if isinstance(source, CandleFeed) else CandleFeed(source)
        self.settings = settings
        self.risk = risk
        self.bus = bus
        self.store = store
        self.interval_ms = SIGNAL_INTERVALS[strategy.interval]
        # The recent events the reports show (the engine gives an ``EventWindow``).
        self.window: EventSink = window if window is not None else _Unkept()
        # State that decides: the signal, the throttle bucket, the whipsaw guard.
        self.row: SignalRow | None = None
        self.last_bucket: int | None = None
        self.last_opened_id: str | None = None
        # When False the pair asks for no new signal (stopping, or storage failing).
        self.accepting = True
        # Why the pair runs degraded (e.g. its strategy failed to load), for status and logs.
        self.degraded: str | None = None
        # Set to end the loop after its current tick.
        self.stopping = asyncio.Event()
        # What the loop's sleep until the next minute waits on (resolved early by a stop).
        self.wake: asyncio.Future[int | bool] | None = None
        # What the operator sees.
        self.state = "idle"
        self.price: float | None = None
        self.last_tick_at: int | None = None
        self.lag_ms: int | None = None
        #: From the close of the candle a tick decided on (its minute boundary) to that tick done, ms.
        self.decision_lag_ms: int | None = None
        self.last_result: TickResult | None = None
        self.error_count = 0
        self.last_error: str | None = None
        self.ticks = 0
        # Monotonic time of the last tick that completed (for the systemd watchdog).
        self.progress_at: float | None = None
        # Recent errors as (time ms, message), for `livetrader status`.
        self.recent_errors: deque[tuple[int, str]] = deque(maxlen=200)
        # The last minute at which the held signal was checked (None: since it was created).
        self.checked_until: int | None = None
        self.closed_trades = 0
        # Closed with a PnL above / below zero (the live view's wins and losses).
        self.won_trades = 0
        self.lost_trades = 0
        self.realised_pnl = 0.0
        self.listeners: list[Any] = []
        # The last minute ticked (at start: the minute of the last journaled record). The pair
        # never ticks a minute at or before it, so a wall clock stepping back stamps nothing
        # earlier than what is journaled and generates no signal id twice.
        self.last_minute: int | None = None
        # Every signal id in the pair's journal (restored at start): a new signal never reuses one.
        self.signal_ids: set[str] = set()
        # "clock went back" is logged once per step, not at every tick it holds back.
        self.clock_back_logged = False
        # Places the orders of a sandbox/live exchange (``livetrader.execution``); None in paper mode.
        self.executor: Executor | None = None
        #: Why the account does not hold this pair's position (``live.reconcile``): while set, the
        #: pair manages nothing and asks nothing. None when reconciled (or in paper mode).
        self.unreconciled: str | None = None
        #: A person's ``livetrader positions forget|adopt`` for this pair's open position, carried
        #: out at the next tick: ``(the operator record, the other pairs on this pair's account)``.
        self.settle: tuple[dict[str, Any], list[Pair]] | None = None
        #: The strategy defines ``manage``: it is asked once a minute about an open position.
        self.steers = getattr(strategy, "manage_kind", None) is not None
        # The operator's halt (or its risk profile's daily-loss halt) this pair obeys; None: trading
        # (docs/behaviour.md §13). Set by the engine (``live.halt``); while set, no strategy is asked.
        self.halted: Halt | None = None
        # --- operator commands (``live.commands``) ---
        #: When an operator's ``livetrader pause`` paused this pair (engine clock, ms); None: not
        #: paused. While set, no strategy is asked; a held signal is still managed. Not journaled.
        self.paused: int | None = None
        # --- strategy state and hot reload (docs/behaviour.md, "Strategy state", "Reload") ---
        #: True when the strategy defines ``checkpoint``: only such pairs save state after their ticks.
        self.checkpoints = callable(getattr(strategy, "checkpoint", None))
        #: The last state saved (as written, and as parsed back): a tick that changed nothing writes nothing.
        self.checkpoint_text: str | None = None
        self.checkpoint_state: dict[str, Any] | None = None
        #: Which code the pair runs (``strategy.base.code_version`` of its module), for status and logs.
        self.code_version: str | None = None
        #: A reloaded class and its version, taken at the pair's next ask (``_take_reload``).
        self.reload_to: tuple[type[Strategy], str] | None = None

    def __repr__(self) -> str:
        return f"Pair({self.symbol}, {self.strategy_name}, {self.exchange})"

    # --- the tick -------------------------------------------------------------------------

    async def tick(self, now: int) -> TickResult | None:
        """Run one tick at ``now``; None when no price could be had (an error event says why).

        Results are stamped at the minute boundary: the price only changes per minute.
        A pair holding a signal checks every minute since the last one it checked, in
        order, so a tick that comes late (a slow tick, a restart after downtime) applies a
        take-profit, stop-loss, expiry or activation at the minute and price it happened.
        A minute at or before the last one ticked is not ticked (``held_back``): None.
        """
        if self.held_back(now) is not None:
            return None
        if self.settle is not None and self.executor is not None and not self.executor.busy:
            return await self._settle(self.executor, now)
        if self.unreconciled is not None:
            self.progress_at = time.monotonic()  # alive, and said why it does nothing (status, errors)
            return None
        started = time.perf_counter()
        previous = self.last_tick_at
        minute = now - now % MINUTE_MS
        try:
            executor = self.executor
            if executor is not None and executor.busy:
                # An order's outcome decides this tick: ask the exchange, ask no strategy.
                market = await self.market_at(minute)
                self.price = market.price
                result = await executor.advance(minute, market.price)
                await self.apply(result)
                self.checked_until = minute
            elif self.row is None:
                market = await self.market_at(minute)
                self.price = market.price
                decision = decide(self.key, None, minute, market, self._may_ask(minute) and self.halted is None)
                result = await self._ask(minute, market.price) if decision is ASK else decision
                if executor is not None and result.action == "opened":
                    result = await self._carry_out(executor, result, scheduled=False)
                await self.apply(result)
                self.checked_until = minute
            elif self._halt_acts(minute):
                result = await self._obey_halt(minute)
            else:
                # A protective stop filled while the daemon was down (or since the last check) is
                # what happened to the position: known before any minute is checked on the VWAP.
                guarded = await self._guard(executor, minute) if executor is not None else None
                result = guarded if guarded is not None else await self._check_minutes(minute)
            if executor is not None and result.action != "closed":
                # A position that just opened is protected on the exchange in the same tick.
                result = await self._guard(executor, minute) or result
        except StoreError as exc:
            # The durable state did not move on; keep checking the held signal (a close is
            # retried next tick) but take no new signal until storage works and we restart.
            self.accepting = False
            self.report_error(minute, f"storage failed, no new signals: {exc}", "storage")
            self.progress_at = time.monotonic()
            return None
        except Exception as exc:  # noqa: BLE001 - a source failure must never end the loop
            self.report_error(minute, f"no price: {describe(exc)}", "source")
            self.progress_at = time.monotonic()  # the loop is alive: it reported and will retry
            return None
        self.last_tick_at = now
        self.last_minute = minute
        self.clock_back_logged = False
        self.progress_at = time.monotonic()
        self.ticks += 1
        if self.checkpoints:
            self._save_checkpoint(minute)
        if self.bus.has_listeners("performance"):
            self.bus.emit("performance", PerformanceEvent(
                self.symbol, self.strategy_name, self.exchange, now, (time.perf_counter() - started) * 1000, previous))
        return result

    def tick_in_place(self, boundary: int, now: int) -> bool:  # noqa: C901 - the per-minute hot path of every pair, kept in one frame for speed
        """Run the tick of the minute ``boundary`` at ``now`` without yielding to the event loop,
        when it can be: True if it ran (exactly as ``tick`` would have), False, with nothing
        changed, if it needs ``tick``.

        Most ticks of a minute decide nothing durable: a pair inside its throttle bucket stays
        idle, a held signal stays waiting or active. When the candles are held by the feed (or
        made in-process) such a tick needs no await, and running it in place spares waking the
        pair's task. Anything else — asking the strategy, a transition to journal, several
        minutes to catch up, an async callback, a candle to wait for or an error to report —
        is left to ``tick``, as is the tick of a pair asked to stop. Every pair comes here
        every minute (``Metronome.fire``): the body is kept flat.
        """
        minute = now - now % MINUTE_MS
        executor = self.executor
        if self.stopping.is_set() or (executor is not None and (executor.busy or executor.guard_due(minute)
                                                               or self.unreconciled is not None
                                                               or self.settle is not None)):
            return False
        halted = self.halted
        if halted is not None and self.row is not None and (halted.flatten or self.row.pending_at is None):
            return False  # the halt cancels or closes what the pair holds: ``tick`` journals it
        timed = self.bus.has_listeners("performance")
        started = time.perf_counter() if timed else 0.0
        last = self.last_minute
        if last is not None and minute <= last:
            return False  # ticked already, or the clock went back: ``tick`` and the loop see to it
        row = self.row
        if row is not None and row.pending_at is not None and (self.steers or row.trailing_stop is not None):
            return False  # the strategy (or its trailing stop) steers the position: ``tick`` asks it
        # What the tick decides; nothing but the feed's held candles changes until it is known.
        try:
            if row is not None:
                since = row.pending_at or row.scheduled_at
                since -= since % MINUTE_MS
                if minute <= since:
                    return False  # never check a minute before the signal's own
                checked = self.checked_until
                if (checked if checked is not None and checked > since else since) + MINUTE_MS < minute:
                    return False  # minutes to catch up
            market = self.source.market_now(self.symbol, minute)
            if market is None:
                return False
            # (No bound ``_gate`` made for a pair without a risk profile, nor ``_may_ask`` for one
            # holding a signal: this runs for every pair every minute.)
            result = decide(self.key, row, minute, market,
                            row is None and halted is None and self.paused is None
                            and may_ask(self.accepting, minute, self.interval_ms, self.last_bucket),
                            self.settings.rules, self._gate if self.risk is not None else None)
            if result is ASK or result.action in TRANSITIONS:
                return False  # the strategy is asked, or a transition is journaled: ``tick``
        except Exception:  # noqa: BLE001 - a bad candle, a broken risk check: ``tick`` reports it
            return False
        price = market.price
        hook = HOOKS.get(result.action)
        callback = self.strategy.callbacks.get(hook) if hook is not None else None
        if callback:
            return False  # an async callback is awaited by ``tick``
        # From here on the tick happens.
        previous = self.last_tick_at
        self.price = price
        if row is not None:
            if result.reason and result.action == "waiting":
                self._risk_event(minute, result.reason, row.id)
            self.row = result.signal
        self.checked_until = minute
        self._publish(result, None)
        if callback is False and hook is not None:  # a plain (not async) callback
            try:
                fn = getattr(self.strategy, hook)
                call_strategy((self.strategy_name, self.symbol, hook), fn, result)
            except BaseException as exc:  # SystemExit and KeyboardInterrupt too: see NOT_STRATEGY_ERRORS
                if isinstance(exc, NOT_STRATEGY_ERRORS):
                    raise
                self.report_error(result.at, f"callback {hook} raised {describe(exc)}", "strategy")
        self.last_tick_at = now
        self.last_minute = minute
        self.clock_back_logged = False
        self.lag_ms = now - boundary if now > boundary else 0
        self.decision_lag_ms = now - minute  # in place: done within the reading of ``now``
        self.progress_at = time.monotonic()
        self.ticks += 1
        if self.checkpoints:
            self._save_checkpoint(minute)
        if timed:
            self.bus.emit("performance", PerformanceEvent(
                self.symbol, self.strategy_name, self.exchange, now, (time.perf_counter() - started) * 1000, previous))
        return True

    def held_back(self, now: int) -> int | None:
        """None when the minute of ``now`` may be ticked; else the boundary to wait for.

        A pair ticks each minute once, in order, and only after the minute of the signal it
        holds: a minute at or before the last one ticked (or journaled) is not ticked again.
        When ``now`` is earlier than that tick (the wall clock stepped back, or the journal was
        written on a clock ahead of this one), "clock went back" is logged once, with how far.
        """
        last = self.last_minute
        row = self.row
        if row is not None:  # never check a minute before the signal's own
            own = row.pending_at if row.pending_at is not None else row.scheduled_at
            own -= own % MINUTE_MS
            if last is None or own > last:
                last = own
        if last is None or now - now % MINUTE_MS > last:
            return None
        ticked = max(self.last_tick_at or last, last)  # when that last tick happened, as far as known
        if now < ticked and not self.clock_back_logged:
            self.clock_back_logged = True
            log.warning("clock went back", symbol=self.symbol, strategy=self.strategy_name, exchange=self.exchange,
                        behind_seconds=round((ticked - now) / 1000, 3), last_minute=_iso(last),
                        clock=_iso(now), waits_until=_iso(last + MINUTE_MS))
        return last + MINUTE_MS

    async def _settle(self, executor: Executor, now: int) -> TickResult | None:
        """Carry out a person's ``forget``/``adopt`` of the open position (``Executor.forget``/
        ``adopt``); the pair is reconciled again by it. None while it cannot be done yet (said)."""
        assert self.settle is not None
        record, others = self.settle
        minute = now - now % MINUTE_MS
        self.progress_at = time.monotonic()
        if self.row is None or self.row.pending_at is None or self.row.id != record.get("signal_id") \
                or executor.position is None:
            log.warning("no such open position here: nothing to settle", signal_id=record.get("signal_id"),
                        action=record.get("event"), symbol=self.symbol, strategy=self.strategy_name)
            self.settle = None
            return None
        try:
            market = await self.market_at(minute)
            self.price = market.price
            if record["event"] == "forget":
                result = await executor.forget(minute, market.price)
            else:
                mine = (await executor.broker.rules(self.symbol)).base
                held: dict[str, float] = {}
                for other in others:
                    if other is self or other.executor is None:
                        continue
                    # An order out (entry or exit) may have filled already, in the balance but not
                    # in its pair's position yet: what this pair would adopt could be those coins, or
                    # coins it would take for gone. (An exit waiting to be resent has none out.)
                    in_flight = other.executor.order is not None
                    if in_flight or other.executor.position is not None:
                        base = (await executor.broker.rules(other.symbol)).base
                        if in_flight and base == mine:
                            self.report_error(minute, f"cannot adopt {record.get('signal_id')} yet: {other.symbol} "
                                                      f"has an order in flight on {base}; asked again next tick",
                                              "order")
                            return None
                        if other.executor.position is not None:
                            held[base] = held.get(base, 0.0) + other.executor.held
                adopted = await executor.adopt(minute, market.price, held, requested_at=record.get("at"))
                if adopted is True:
                    self.settle, self.unreconciled = None, None
                    return await self._guard(executor, minute)  # protected again, for the adopted amount
                result = adopted or None
            if result is None:
                return None
        except StoreError as exc:
            self.report_error(minute, f"storage failed while settling {record.get('signal_id')}: {exc}", "storage")
            return None
        except Exception as exc:  # noqa: BLE001 - asked again next tick
            self.report_error(minute, f"cannot settle {record.get('signal_id')} yet: {describe(exc)}", "order")
            return None
        try:
            await self.apply(result)
        except StoreError as exc:
            if executor.forgotten:  # a forget, or an adopt of nothing held
                executor.unforget()  # not closed: nothing may be sold for it; settled again next tick
            self.report_error(minute, f"storage failed while settling {record.get('signal_id')}: {exc}", "storage")
            return None
        self.checked_until = minute
        self.settle, self.unreconciled = None, None
        return result

    async def _guard(self, executor: Executor, minute: int) -> TickResult | None:
        """Place or ask for the open position's protective stop when due (``Executor.guard``);
        the applied result when the stop closed the position (or is closing it), else None."""
        if not executor.guard_due(minute):
            return None
        market = await self.market_at(minute)
        self.price = market.price
        result = await executor.guard(minute, market.price)
        if result is not None:
            await self.apply(result)
            self.checked_until = minute
        return result

    async def _check_minutes(self, minute: int) -> TickResult:
        """Check the held signal at every minute in ``(checked_until, minute]``; return the last result.

        ``minute`` is after the signal's own minute (``held_back`` sees to that).
        """
        row = self.row
        assert row is not None
        since = self.checked_until if self.checked_until is not None else _minute_of(row.pending_at or row.scheduled_at)
        first = max(since + MINUTE_MS, _minute_of(row.pending_at or row.scheduled_at) + MINUTE_MS)
        if first > minute:
            raise RuntimeError(f"minute {_iso(minute)} was checked already; not checked again")
        candles = await self.candles(first - VWAP_CANDLES * MINUTE_MS, minute)
        result: TickResult | None = None
        key, rules, gate = self.key, self.settings.rules, self._gate
        for t in range(first, minute + MINUTE_MS, MINUTE_MS):
            i = (t - first) // MINUTE_MS
            market = market_of(candles[i:i + VWAP_CANDLES])
            self.price = market.price
            decision = decide(key, row, t, market, False, rules, gate)
            assert decision is not ASK  # a pair holding a signal asks nothing
            result = decision
            if result.reason and result.action == "waiting":
                self._risk_event(t, result.reason, row.id)
            if result.action == "active" and (self.steers or row.trailing_stop is not None):
                result = await self._steer(result)
            if self.executor is not None and result.action in ("opened", "closed"):
                result = await self._carry_out(self.executor, result, scheduled=result.action == "opened")
                if result.action not in TRANSITIONS:  # an order's outcome is awaited: the next ticks
                    await self.apply(result)
                    self.checked_until = t
                    return result
            if result.action in TRANSITIONS:
                # Journaled first: if that fails, this minute is checked again next tick.
                await self.apply(result)
                self.checked_until = t
                if self.row is None:
                    return result  # the strategy is asked again from the next tick on
                row = self.row
            else:
                self.checked_until = t
        assert result is not None
        if result.action not in TRANSITIONS:
            await self.apply(result)
        return result

    # --- a halt (docs/behaviour.md §13) ----------------------------------------------------------

    def _halt_acts(self, minute: int) -> bool:
        """True when the halt in force does something to the held signal at ``minute``: cancels a
        scheduled one, closes an open position under ``--flatten``.

        A scheduled signal is cancelled at once, even with minutes still to catch up: checking them
        could open it, and its entry would be bought now, under the halt. An open position's
        minutes are checked first, as usual (they can only close it): ``--flatten`` acts at the
        next tick."""
        halted, row = self.halted, self.row
        if halted is None or row is None or not (halted.flatten or row.pending_at is None):
            return False
        if row.pending_at is None:
            return True
        since = self.checked_until if self.checked_until is not None else _minute_of(row.pending_at)
        return since + MINUTE_MS >= minute

    async def _obey_halt(self, minute: int) -> TickResult:
        """Cancel the scheduled signal (reason ``halted``) or close the open position at market
        (reason ``closed``: by the user), through the path a decided close takes (the executor
        sells in sandbox/live mode)."""
        row = self.row
        assert row is not None
        market = await self.market_at(minute)
        self.price = market.price
        if row.pending_at is None:
            result = cancel(row, minute, market.price, "halted")
        else:
            result = close(row, minute, market.price, market.price, "closed", self.settings.rules)
            if self.executor is not None:
                result = await self._carry_out(self.executor, result, scheduled=False)
        await self.apply(result)
        self.checked_until = minute
        return result

    async def _steer(self, active: TickResult) -> TickResult:
        """What the strategy's ``manage`` (and the signal's trailing stop) make of an ``active``
        minute (``core.manage.steer``): the same, ``adjusted`` or ``closed`` (``signal``). A
        ``manage`` that raises, times out or answers nonsense is the strategy's error: reported,
        and the position carries on as it was."""
        row = active.signal
        assert row is not None
        answer: object = None
        if self.steers:
            ctx = Context(self.symbol, self.strategy_name, self.exchange, active.at, active.price, self.candles)
            try:
                answer = await ask_manage(self.strategy, ctx, Held.of(active), self.settings.strategy_timeout_seconds)
            except TimeoutError:
                self.report_error(active.at, f"manage timed out after {self.settings.strategy_timeout_seconds:g} s",
                                  "strategy")
            except NOT_STRATEGY_ERRORS:
                raise
            except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt too: the strategy's
                self.report_error(active.at, f"manage raised {describe(exc)}", "strategy")
        if answer is None and row.trailing_stop is not None:
            answer = trail(row, active.price)
        try:
            return steer(active, answer, self.settings.rules)
        except SignalError as exc:
            self.report_error(active.at, f"manage answered {exc}; the position carries on as it was", "signal")
            return active

    async def market_at(self, now: int) -> Market:
        """The ``Market`` at the minute of ``now``: the VWAP of the five closed minutes before it
        and the last one's low and high, from validated candles."""
        start, end = price_window(now)
        try:
            market = self.source.market_now(self.symbol, end)  # computed once per symbol and minute
        except Exception:  # noqa: BLE001 - the fetch below meets the problem again and reports it
            market = None
        if market is not None:
            return market
        return market_of(await self.candles(start, end))

    async def candles(self, start: int, end: int) -> list[Candle]:
        """Closed 1-minute candles opening in ``[start, end)``, complete and validated."""
        return await self.source.fetch(self.symbol, start, end)

    def _may_ask(self, minute: int) -> bool:
        return self.paused is None and may_ask(self.accepting, minute, self.interval_ms, self.last_bucket)

    async def _ask(self, now: int, price: float) -> TickResult:
        """Ask the strategy at ``now`` (``decide`` said ``ASK``) and make its answer the result."""
        if self.reload_to is not None:
            self._take_reload(now)
        handed_back, self.last_bucket = self.last_bucket, bucket(now, self.interval_ms)
        ctx = Context(self.symbol, self.strategy_name, self.exchange, now, price, self.candles)
        try:
            # A timeout in the pair's own task, and only for an ask that waits (most do not).
            signal = await ask_signal(self.strategy, ctx, self.settings.strategy_timeout_seconds)
        except TimeoutError:
            message = f"strategy timed out after {self.settings.strategy_timeout_seconds:g} s"
            self.report_error(now, message, "strategy")
            return idle(*self.key, now, price, reason=message)
        except NOT_STRATEGY_ERRORS:
            raise
        except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt too: the strategy's, not ours
            self.report_error(now, f"strategy raised {describe(exc)}", "strategy")
            return idle(*self.key, now, price, reason="strategy error")
        if self.halted is not None:
            return idle(*self.key, now, price, reason="halted")  # halted while the strategy was thinking
        try:
            result = answer(signal, self.key, now, price, self.last_opened_id, self.signal_ids, self._gate)
        except SignalError as exc:
            self.report_error(now, str(exc), "signal")
            return idle(*self.key, now, price, reason=exc.reason)
        if result is None:
            return idle(*self.key, now, price)
        if self.executor is not None and result.signal is not None and result.signal.position == "short":
            # Spot only places orders (docs/behaviour.md §12): a short would need to borrow.
            message = (f"invalid signal: a short needs a margin or derivatives market; {self.exchange} trades spot "
                       f"in {self.executor.mode} mode, so shorts are refused")
            self.report_error(now, message, "signal")
            return idle(*self.key, now, price, reason="invalid signal: short on a spot market")
        if result.action == "idle" and result.reason and result.reason.startswith("risk:"):
            self.last_bucket = handed_back  # a risk rejection may be asked again next tick
            self._risk_event(now, result.reason, getattr(signal, "id", None))
        return result

    async def _carry_out(self, executor: Executor, decided: TickResult, scheduled: bool) -> TickResult:
        """What a decided ``opened``/``closed`` comes to on the exchange (``Executor.carry_out``).

        An entry is counted by the risk profile while its order is out, as an open position,
        so that no other pair takes its place meanwhile; it is taken back when the entry ends
        without a position.
        """
        row = decided.signal
        reserved = decided.action == "opened" and self.risk is not None and row is not None
        if reserved:
            assert self.risk is not None and row is not None
            self.risk.add(row)
        try:
            outcome = await executor.carry_out(decided, scheduled)
        except BaseException:
            # Once its intent is journaled the entry may exist (a cancelled or failed await says
            # nothing of the exchange): it keeps its place until its outcome is known.
            in_flight = executor.order is not None and executor.order.leg == "entry"
            if reserved and not in_flight:
                assert self.risk is not None and row is not None
                self.risk.remove(row.id)
            raise
        if reserved and outcome.action not in ("opened", "entering"):
            assert self.risk is not None and row is not None
            self.risk.remove(row.id)
        return outcome

    def _gate(self, row: SignalRow, price: float, now: int) -> str | None:
        return self.risk.check(row, price, now) if self.risk else None

    # --- applying a result ----------------------------------------------------------------

    async def apply(self, result: TickResult) -> None:  # noqa: C901 - the one place a result becomes state, in order
        """Make ``result`` the pair's state: journal first, then memory, snapshot, events.

        The journal write waits for its group commit (``CommitLog``), so other pairs run
        meanwhile. An opening position is therefore counted by the risk profile before the
        wait, and taken back if the journal write fails: another pair's risk check never
        misses a position that is about to open.
        """
        action = result.action
        transition = action in TRANSITIONS
        # The flat record is built for transitions only (journal, log); the window renders others when read.
        record = record_of(result) if transition else None
        executor = self.executor
        if record is not None and executor is not None:
            record.update(executor.extra(result))
        reserved = action == "opened" and self.risk is not None
        if reserved:
            assert result.signal is not None and self.risk is not None
            self.risk.add(result.signal)
        if record is not None and self.store is not None:
            try:
                await self.store.write_ahead(record)  # raises on a storage failure: the state stays as it was
            except BaseException:
                if reserved:
                    assert self.risk is not None
                    self.risk.remove(result.signal_id or "")
                raise
        if transition and executor is not None:
            executor.applied(result)
        if transition:
            at = result.at - result.at % MINUTE_MS
            if self.last_minute is None or at > self.last_minute:
                self.last_minute = at  # journaled: never ticked again, even if the tick fails later
            if result.signal is not None:
                self.signal_ids.add(result.signal.id)
        if action in ("closed", "cancelled"):
            self.row = None
        elif result.signal is not None and action not in ("entering", "exiting"):
            # (An entering result carries the candidate signal: held by the executor, not open yet.)
            self.row = result.signal
        if action == "opened":
            assert result.signal is not None
            self.last_opened_id = result.signal.id
        elif action == "cancelled" and self.risk is not None and self.executor is not None:
            self.risk.remove(result.signal_id or "")  # an entry that ended without a position
        elif action == "closed":
            if self.risk:
                self.risk.remove(result.signal_id or "")
            self.closed_trades += 1
            pnl = result.pnl_percentage or 0.0
            self.won_trades += pnl > 0
            self.lost_trades += pnl < 0
            self.realised_pnl += pnl
        if transition and self.store is not None:
            self.store.snapshot(self.snapshot())
        self._publish(result, record)
        hook = HOOKS.get(action)
        if hook is None or hook not in self.strategy.callbacks:
            return  # most strategies define no callback: no coroutine to build and await
        try:
            await run_callback(self.strategy, hook, result)
        except NOT_STRATEGY_ERRORS:
            raise
        except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt too
            self.report_error(result.at, f"callback {hook} raised {describe(exc)}", "strategy")

    def _publish(self, result: TickResult, record: dict[str, Any] | None) -> None:
        """The state the operator sees, the event window, the log line of a transition, the events."""
        self.state = "idle" if self.row is None else ("open" if self.row.pending_at is not None else "scheduled")
        if self.executor is not None and self.executor.busy:
            self.state = self.executor.state or self.state
        self.last_result = result
        self.window.add(result)
        if record is not None:
            log.info(result.action, **_log_fields(record))
        self.bus.emit("signal", result)
        self.bus.emit("signal_live", result)
        for listener in self.listeners:
            try:
                listener(result)
            except Exception as exc:  # noqa: BLE001 - the tick happened all the same: report, never redo it
                self.report_error(result.at, f"tick listener raised {describe(exc)}", "crash")

    def snapshot(self) -> dict[str, Any]:
        """What the pair needs to resume: its signal, throttle bucket and whipsaw guard."""
        return snapshot_dict(self.key, self.row, self.last_bucket, self.last_opened_id)

    async def cancel_scheduled(self, now: int) -> TickResult | None:
        """Cancel a waiting scheduled signal (reason ``user``), as ``stop`` does."""
        if self.row is None or self.row.pending_at is not None:
            return None
        if self.executor is not None and self.executor.busy:
            return None  # its entry order may have filled: the next start asks the exchange first
        if self.last_minute is not None and now < self.last_minute:
            now = self.last_minute  # a clock behind the journal stamps nothing before its last record
        result = cancel(self.row, now, self.price or self.row.price_open, "user")
        await self.apply(result)
        return result

    def request_stop(self) -> None:
        """End the loop after its current tick, and accept no new signal from now on."""
        self.accepting = False
        self.stopping.set()
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(False)

    # --- strategy state and hot reload ---------------------------------------------------------

    def _save_checkpoint(self, at: int) -> None:
        """Save the strategy's ``checkpoint()`` when it changed since the last save.

        It must return a dict that JSON carries unchanged (string keys, lists rather than
        tuples, finite numbers): exactly what ``restore`` gets back. Anything else, or an
        exception, is the strategy's error: reported, the last good state kept, the pair on.
        """
        try:
            state = call_strategy((self.strategy_name, self.symbol, "checkpoint"), _call_checkpoint, self.strategy)
        except NOT_STRATEGY_ERRORS:
            raise
        except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt too: the strategy's
            self.report_error(at, f"checkpoint raised {describe(exc)}; the last good state is kept", "strategy")
            return
        problem = None
        text = ""
        if not isinstance(state, dict):
            problem = f"returned {type(state).__name__}, not a dict"
        else:
            try:
                text = json.dumps(state, allow_nan=False, separators=(",", ":"))
            except (TypeError, ValueError) as exc:
                problem = f"returned a value JSON cannot hold: {exc}"
        if problem is None and text == self.checkpoint_text:
            return  # unchanged: nothing to write
        parsed: dict[str, Any] = json.loads(text) if problem is None else {}
        if problem is None and parsed != state:
            problem = "returned a value JSON does not give back unchanged (keys must be strings; no tuples)"
        if problem is not None:
            self.report_error(at, f"checkpoint {problem}; the last good state is kept", "strategy")
            return
        self.checkpoint_text, self.checkpoint_state = text, parsed
        if self.store is None:
            return
        try:
            self.store.save_checkpoint(parsed)
        except StoreError as exc:
            self.report_error(at, f"the strategy state was not saved: {exc}", "storage")

    def restore_strategy(self, state: dict[str, Any], at: int) -> bool:
        """Give the strategy its saved ``state`` (its ``restore``, if it defines one); False, said
        as the strategy's error, when ``restore`` raised. It gets a copy: what it keeps of it
        is its own."""
        self.checkpoint_state = state
        self.checkpoint_text = json.dumps(state, allow_nan=False, separators=(",", ":"))
        return self._restore_into(self.strategy, state, at)

    def _restore_into(self, strategy: Strategy, state: dict[str, Any], at: int) -> bool:
        restore = getattr(strategy, "restore", None)
        if not callable(restore):
            return True
        try:
            call_strategy((self.strategy_name, self.symbol, "restore"), restore, json.loads(json.dumps(state)))
        except NOT_STRATEGY_ERRORS:
            raise
        except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt too: the strategy's
            self.report_error(at, f"restore raised {describe(exc)}", "strategy")
            return False
        return True

    def _take_reload(self, now: int) -> None:
        """Switch to the reloaded class (``Engine.reload``) before asking: a new instance, given
        the last saved state. If it cannot be created or restored, the pair stays on its code."""
        cls, version = self.reload_to or (None, "")
        self.reload_to = None
        assert cls is not None
        try:
            strategy = cls()
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a broken constructor is the new code's error
            self.report_error(now, f"reload of {version}: the strategy could not be created: {describe(exc)}; "
                              f"it keeps running {self.code_version}", "strategy")
            return
        state = self.checkpoint_state
        if state is not None and not self._restore_into(strategy, state, now):
            self.report_error(now, f"reload of {version} refused; it keeps running {self.code_version}", "strategy")
            return
        log.info("strategy reloaded", symbol=self.symbol, strategy=self.strategy_name, exchange=self.exchange,
                 version=version, previous=self.code_version, restored=state is not None)
        self.strategy = strategy
        self.interval_ms = SIGNAL_INTERVALS[strategy.interval]
        self.checkpoints = callable(getattr(strategy, "checkpoint", None))
        self.steers = getattr(strategy, "manage_kind", None) is not None
        self.code_version = version

    # --- reporting --------------------------------------------------------------------------

    def report_error(self, now: int, message: str, kind: str) -> None:
        """Count, log and emit an error of this pair.

        The message is redacted here, where it is made: it becomes ``last_error`` (the status
        file, ``livetrader status``, the live view) and the ``error`` event's text.
        """
        message = redact(message)
        self.error_count += 1
        self.last_error = message
        self.recent_errors.append((now, message))
        log.warning("tick failed", kind=kind, error=message, symbol=self.symbol, strategy=self.strategy_name,
                    exchange=self.exchange)
        self.bus.emit("error", ErrorEvent(self.symbol, self.strategy_name, self.exchange, now, message, kind))

    def _risk_event(self, now: int, reason: str, signal_id: str | None) -> None:
        profile = self.risk.name if self.risk else ""
        log.info("risk rejected", reason=reason, symbol=self.symbol, strategy=self.strategy_name, profile=profile)
        self.bus.emit("risk", RiskEvent(self.symbol, self.strategy_name, self.exchange, now, profile, reason,
                                        signal_id))


def _call_checkpoint(strategy: Any) -> Any:
    return strategy.checkpoint()


def _minute_of(ms: int) -> int:
    return ms - ms % MINUTE_MS


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _log_fields(record: dict[str, Any]) -> dict[str, Any]:
    keep = ("at", "signal_id", "symbol", "strategy", "exchange", "position", "price", "price_open", "take_profit",
            "stop_loss", "close_reason", "price_close", "pnl_percentage", "reason")
    return {k: record[k] for k in keep if k in record}
