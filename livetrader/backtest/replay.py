"""Backtest (docs/behaviour.md §11): the live decisions run over a finite range of candles, fast-forward.

Backtest time is live time: at frame ``t`` the price is the VWAP of the candles opening in
``[t-5m, t)``; a decision taken from the candle opening at ``c`` is stamped ``c + 1m``.

Every frame that can change anything is decided by ``core.machine.decide`` and ``answer``,
the functions live ticks call; the strategy is asked through ``signal_asker`` (live's
``ask_signal``, prepared once) and its callbacks called through ``run_callback``, as live.
The results are exactly those of a plain per-minute replay (tests compare them trade by
trade); the speed comes from skipping the frames that cannot change them:

- a pair with no signal jumps straight to the next throttle bucket: no frame inside one
  bucket can ask the strategy, so nothing can happen there;
- an open position can only end at the first frame whose VWAP reaches TP or SL, at its
  expiry, or at the end of the range; it is decided once, at the frame that closes it: no
  ``active`` result is built. Finding that frame needs no VWAP while all five candles of a
  frame lie well inside the band between TP and SL (their average does too, see
  ``_inner_band``): a cheap test per candle skips those frames, and the others are priced
  in bulk (``core.price.vwaps``) and compared;
- a scheduled signal likewise ends or activates only at the first candle whose low (high
  for a short) reaches its entry or stop-loss, or at its timeout; it is decided there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from livetrader.core.format import format_minute
from livetrader.core.interval import SIGNAL_INTERVALS
from livetrader.core.machine import ASK, DEFAULT_RULES, Rules, answer, cancel, close, decide
from livetrader.core.manage import Held, steer, trail
from livetrader.core.price import MINUTE_MS, VWAP_CANDLES, Candle, Market, market_of, vwap, vwaps
from livetrader.core.signal import SignalRow, TickResult
from livetrader.core.validate import SignalError
from livetrader.errors import LivetraderError, NoCandlesError
from livetrader.events import BUS, EventBus
from livetrader.redaction import redact
from livetrader.strategy.base import HOOKS, adopt, ask_manage, run_callback, signal_asker
from livetrader.strategy.context import Context
from livetrader.strategy.risk import RiskProfile
from livetrader.strategy.tracing import describe


class StrategyFailure(LivetraderError):
    """The strategy raised or returned an invalid signal during a backtest."""


@dataclass(slots=True)
class BacktestResult:
    """Everything a backtest produced; times in integer ms UTC."""

    symbol: str
    strategy: str
    exchange: str
    start: int
    end: int
    trades: list[TickResult] = field(default_factory=list)
    cancelled: list[TickResult] = field(default_factory=list)
    frames: int = 0
    candles: int = 0
    strategy_calls: int = 0
    risk_rejections: int = 0
    #: Open positions' levels moved by ``manage`` or a trailing stop (``adjusted``).
    adjustments: int = 0
    ended_open: int = 0
    ended_scheduled: int = 0
    #: Strategy errors counted instead of stopping (not ``strict``), by kind: ``strategy`` (it
    #: raised or timed out), ``signal`` (an invalid signal), ``callback`` (a callback raised).
    errors: dict[str, int] = field(default_factory=dict)
    #: The first error of each kind: ``{"at": ms, "message": text with file:line}``.
    first_errors: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __repr__(self) -> str:
        # Counts, not every trade: asyncio.run (3.11) reprs the main task's result while it
        # restores the SIGINT handler, and the full repr of a year of trades takes ~0.1 s.
        return (
            f"BacktestResult({self.symbol} {self.strategy} {self.exchange} [{self.start}, {self.end}): "
            f"{len(self.trades)} trades, {len(self.cancelled)} cancelled, {self.frames} frames)"
        )


class _Series:
    """Gap-free 1-minute candles, indexed by frame: frame ``f`` is the decision stamped
    ``base + f minutes``, priced by candles ``f-5 .. f-1``; candle ``f-1`` is the one that
    closed at it."""

    __slots__ = ("candles", "base")

    #: Frames priced in bulk at a time once a candle outside the band is met (``first_exit``).
    SEGMENT = 16

    def __init__(self, candles: Sequence[Candle]) -> None:
        # Not copied when already a list (it is only read): a fresh list of a year of candles
        # would be walked by the garbage collector's young-generation passes, ~15 ms each.
        self.candles = candles if isinstance(candles, list) else list(candles)
        self.base = self.candles[0].timestamp

    def index(self, ts: int) -> int:
        """The candle index of the candle opening at ``ts`` (also the frame index of ``ts``)."""
        return (ts - self.base) // MINUTE_MS

    def stamp(self, frame_index: int) -> int:
        """The time of frame ``frame_index``."""
        return self.base + frame_index * MINUTE_MS

    def market(self, frame_index: int) -> Market:
        """The ``Market`` of frame ``frame_index``: the VWAP of candles i-5 .. i-1, the low and high of i-1."""
        return market_of(self.candles[frame_index - VWAP_CANDLES:frame_index])

    def first_exit(self, row: SignalRow, f: int, stop: int) -> int | None:
        """The first frame in ``[f, stop)`` whose price reaches the open ``row``'s TP or SL, or None.

        The same comparisons as ``core.machine.check_open``: a frame is a hit when its price is
        at or beyond the lower level or the upper one. Every frame before the one returned is
        an ``active`` tick with nothing to record, so none is built.

        Most frames need no price at all: while every candle of a frame's window lies well
        inside the band between the levels (``_inner_band``), its VWAP, an average of those
        candles, lies inside too. Those frames are skipped by a cheap test per candle; from the
        first candle that is not inside, the next frames are priced exactly, in bulk.
        """
        lower, upper = (row.stop_loss, row.take_profit) if row.position == "long" else (row.take_profit, row.stop_loss)
        band = _inner_band(lower, upper)
        while f < stop:
            if band is not None:
                outside = self.first_outside(f - VWAP_CANDLES, stop - 1, *band)
                if outside is None:
                    return None
                # Frames up to ``outside`` are priced by candles before it, all inside the band.
                f = max(f, outside + 1)
                if f >= stop:
                    return None
            segment = min(stop, f + self.SEGMENT)
            for j, price in enumerate(vwaps(self.candles[f - VWAP_CANDLES:segment - 1]), f):
                if price <= lower or price >= upper:
                    return j
            f = segment
        return None

    def first_outside(self, k: int, stop: int, floor: float, ceiling: float) -> int | None:
        """The first candle in ``[k, stop)`` not strictly inside ``(floor, ceiling)``, or None.

        Inside means ``floor < low <= close <= high < ceiling`` (so all three prices of the
        typical price are inside; a NaN is never inside) and a volume that is 0 or in
        ``[_MIN_VOLUME, _MAX_VOLUME]`` (so no product or sum underflows or overflows).
        """
        candles = self.candles
        for j in range(k, stop):
            _, _, high, low, last, volume = candles[j]
            if not (floor < low <= last <= high < ceiling and (_MIN_VOLUME <= volume <= _MAX_VOLUME or volume == 0)):
                return j
        return None

    def first_touch(self, row: SignalRow, k: int, stop: int) -> int | None:
        """The first candle in ``[k, stop)`` whose low (long; short: high) reaches the scheduled
        ``row``'s entry or stop-loss, or None.

        The same comparisons as ``core.machine.check_scheduled`` on a candle: a candle that
        reaches neither leaves the signal ``waiting``, with nothing to record.
        """
        candles = self.candles
        po, sl = row.price_open, row.stop_loss
        if row.position == "long":
            for j in range(k, stop):
                low = candles[j][3]
                if low <= sl or low <= po:
                    return j
        else:
            for j in range(k, stop):
                high = candles[j][2]
                if high >= sl or high >= po:
                    return j
        return None


#: The relative margin of ``_inner_band``: far above the float rounding of a VWAP (about
#: 16 rounding errors of 1.1e-16 each), far below any price move that matters.
_BAND_MARGIN = 1e-9
#: Prices and volumes in this range keep every product and sum of the VWAP normal floats.
_MIN_PRICE, _MAX_PRICE = 1e-100, 1e100
_MIN_VOLUME, _MAX_VOLUME = 1e-100, 1e100


def _inner_band(lower: float, upper: float) -> tuple[float, float] | None:
    """Bounds that keep the VWAP of candles lying between them strictly between ``lower`` and ``upper``.

    A VWAP is a volume-weighted average of typical prices ``(high + low + close) / 3`` (or,
    without volume, the mean close): with every price of the five candles in ``(a, b)`` and
    volumes >= 0, the exact average lies in ``(a, b)`` too, and the computed one within
    about 16 rounding errors (relative 2e-15) of it. Narrowing the band by ``_BAND_MARGIN``
    on each side leaves room for that rounding, so such a frame cannot reach either level.
    None when the levels are outside the range where that argument holds.
    """
    floor, ceiling = lower * (1 + _BAND_MARGIN), upper * (1 - _BAND_MARGIN)
    if not (_MIN_PRICE <= floor < ceiling <= _MAX_PRICE):
        return None
    return floor, ceiling


class BacktestStrategy(Protocol):
    """What ``run_backtest`` needs of a strategy: a ``livetrader.Strategy``, or any object with these
    (``get_signal`` plain or ``async``; the callbacks ``on_open`` ... are optional)."""

    @property
    def name(self) -> str: ...

    @property
    def interval(self) -> str: ...

    def get_signal(self, ctx: Context) -> Any: ...


async def run_backtest(  # noqa: C901 - the fast-forward loop in one frame: it runs millions of minutes a second
    strategy: BacktestStrategy,
    candles: Sequence[Candle],
    symbol: str,
    start: int,
    end: int,
    *,
    exchange: str = "sim",
    rules: Rules = DEFAULT_RULES,
    risk: RiskProfile | None = None,
    progress: Callable[[int], None] | None = None,
    strategy_timeout_seconds: float | None = None,
    bus: EventBus = BUS,
    strict: bool = True,
) -> BacktestResult:
    """Run ``strategy`` over ``candles`` for frames in ``[start, end)``.

    ``candles`` must be gap-free 1-minute candles covering at least ``[start - 5m, end)``;
    candles before that serve as history for ``ctx.candles``. ``progress`` is called now
    and then with the current frame time. Every transition (``scheduled``, ``opened``,
    ``closed``, ``cancelled``) goes to the strategy's callback and, when someone listens, to
    the bus's ``signal`` and ``signal_backtest`` topics. ``strategy`` is a ``Strategy``, or
    any object with ``name``, ``interval`` and ``get_signal`` (and callbacks). The strategy is
    asked as live asks it (``ask_signal``); with ``strategy_timeout_seconds``, an answer that
    takes longer stops the backtest (``livetrader backtest`` sets none: it waits, alone on its
    loop, and Ctrl-C stops it).

    A strategy error (it raises, times out, returns an invalid signal, a callback raises)
    stops the backtest with ``StrategyFailure`` when ``strict``; otherwise it is counted in
    ``result.errors`` (the first of each kind kept with its time and file:line) and that tick
    is idle, as live carries on.
    """
    strategy = adopt(strategy)
    # The ask of live (``ask_signal``), prepared once: untraced, as no stall watcher runs here.
    ask = signal_asker(strategy, strategy_timeout_seconds, traced=False)
    name = strategy.name
    interval_ms = SIGNAL_INTERVALS[strategy.interval]
    start += -start % MINUTE_MS
    series = _Series(candles)
    first_frame = series.base + VWAP_CANDLES * MINUTE_MS
    last_candle_end = series.base + len(series.candles) * MINUTE_MS
    start = max(start, first_frame)
    end = min(end, last_candle_end)
    if start >= end:
        raise NoCandlesError(
            f"no candles to backtest {symbol} in the requested range: a frame needs the 5 candles before it"
        )
    result = BacktestResult(symbol, name, exchange, start, end, candles=len(series.candles))
    key = (symbol, name, exchange)
    all_candles = series.candles
    base = series.base
    callbacks = strategy.callbacks
    # Looked up once: a backtest nobody listens to builds no event (listeners added later miss it).
    publish = bus.has_listeners("signal") or bus.has_listeners("signal_backtest")

    def candles_in(lo: int, hi: int) -> list[Candle]:
        """The candles opening in ``[lo, hi)`` (``Context``'s ``in_memory``: no coroutine per read)."""
        a = (lo - base) // MINUTE_MS
        b = (hi - base) // MINUTE_MS
        return all_candles[a if a > 0 else 0:b if b > 0 else 0]

    async def load(lo: int, hi: int) -> list[Candle]:  # Context's loader; ``candles_in`` answers first
        return candles_in(lo, hi)

    def price_at(t: int) -> float:
        """The price of frame ``t``: the VWAP of the five candles before it (``_Series.market``'s)."""
        i = (t - base) // MINUTE_MS
        return vwap(all_candles[i - VWAP_CANDLES:i])

    gate = risk.check if risk else None

    def failed(kind: str, at: int, message: str, exc: BaseException) -> None:
        """Stop (``strict``), or count the error and let the tick be idle, as live does."""
        if strict:
            raise StrategyFailure(message) from exc
        result.errors[kind] = result.errors.get(kind, 0) + 1
        if kind not in result.first_errors:
            result.first_errors[kind] = {"at": at, "message": redact(message)}

    async def emit(res: TickResult) -> None:
        """A transition, as live's ``Pair.apply`` makes it known: events, then the callback."""
        if publish:
            bus.emit("signal", res)
            bus.emit("signal_backtest", res)
        hook = HOOKS.get(res.action)
        if hook is not None and hook in callbacks:
            try:
                await run_callback(strategy, hook, res)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - a sys.exit() must not end the backtest as a success
                failed("callback", res.at,
                       f"strategy {name!r}: callback {hook} raised at {format_minute(res.at)}: {describe(exc)}", exc)

    steers = strategy.manage_kind is not None

    async def steered(active: TickResult) -> TickResult:
        """``manage``'s (or the trailing stop's) answer to an ``active`` minute, as live's ``Pair._steer``."""
        row_ = active.signal
        assert row_ is not None
        reply: object = None
        if steers:
            try:
                ctx = Context(symbol, name, exchange, active.at, active.price, load, candles_in)
                reply = await ask_manage(strategy, ctx, Held.of(active), strategy_timeout_seconds)
            except TimeoutError as exc:
                failed("strategy", active.at, f"strategy {name!r}: manage timed out at {format_minute(active.at)}",
                       exc)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - the strategy's error, whatever it is
                failed("strategy", active.at,
                       f"strategy {name!r}: manage raised at {format_minute(active.at)}: {describe(exc)}", exc)
        if reply is None and row_.trailing_stop is not None:
            reply = trail(row_, active.price)
        try:
            return steer(active, reply, rules)
        except SignalError as exc:
            failed("signal", active.at,
                   redact(f"strategy {name!r}: manage answered at {format_minute(active.at)}: {exc}"), exc)
            return active

    last_frame = series.index(end)  # held signals are decided up to and including the frame stamped ``end``
    row: SignalRow | None = None
    last_bucket: int | None = None
    last_opened_id: str | None = None
    t = start
    next_progress = start
    while True:
        if row is None:
            if t >= end:
                break  # new signals come only from frames inside the range
            if progress is not None and t >= next_progress:
                progress(t)
                next_progress = t + 1440 * MINUTE_MS
            b = t - t % interval_ms  # the throttle bucket (``core.interval.bucket``)
            if b == last_bucket:
                # Fast-forward: with nothing held, ``decide`` is ``idle`` until the throttle lets the
                # strategy be asked again (``core.machine.may_ask``): at the next bucket.
                t = b + interval_ms
                continue
            # Here ``decide`` says ``ASK`` (nothing held, a new bucket): not called, it would only
            # cost the ask (the benchmark's idle mode is little else) the building of a ``Market``.
            last_bucket = b
            result.strategy_calls += 1
            # Priced when read (``price_at``): most asks end without the strategy reading it.
            ctx = Context(symbol, name, exchange, t, None, load, candles_in, price_at)
            try:
                signal = await ask(ctx)
            except TimeoutError as exc:
                failed("strategy", t, f"strategy {name!r} timed out at {format_minute(t)}: no answer after "
                       f"{strategy_timeout_seconds} s", exc)
                t = b + interval_ms
                continue
            # SystemExit too: a strategy's sys.exit() is its failure, not a backtest that succeeded. Not
            # KeyboardInterrupt: in a backtest that is the user's Ctrl-C (the CLI says "interrupted").
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - the strategy's error, whatever it is
                failed("strategy", t, f"strategy {name!r} raised at {format_minute(t)}: {describe(exc)}", exc)
                t = b + interval_ms
                continue
            if signal is None:  # ``answer``'s first rule, without the call: most asks end here
                t = b + interval_ms
                continue
            try:
                tick = answer(signal, key, t, ctx.price, last_opened_id, (), gate)
            except SignalError as exc:
                failed("signal", t,
                       redact(f"strategy {name!r} returned an invalid signal at {format_minute(t)}: {exc}"), exc)
                t = b + interval_ms
                continue
            assert tick is not None
            if tick.action == "idle":
                if tick.reason and tick.reason.startswith("risk:"):
                    # A risk rejection hands the bucket back: ask again next minute.
                    result.risk_rejections += 1
                    last_bucket = None
                    t += MINUTE_MS
                else:  # ignored: the same id as the last opened signal
                    t = b + interval_ms
                continue
            row = tick.signal
        elif row.pending_at is not None and (steers or row.trailing_stop is not None):
            # The strategy (or its trailing stop) steers the open position: every minute is decided
            # and steered, as live does (``Pair._check_minutes``); no fast-forward.
            f = series.index(t)
            if f > last_frame:
                break
            decision = decide(key, row, series.stamp(f), series.market(f), False, rules, gate)
            assert decision is not ASK
            tick = decision
            if tick.action == "active":
                tick = await steered(tick)
            if tick.action == "active":
                t += MINUTE_MS
                continue
            if tick.action == "adjusted":
                row = tick.signal
                result.adjustments += 1
                await emit(tick)
                t = tick.at + MINUTE_MS
                continue
            assert tick.action == "closed", tick
            row = None
            result.trades.append(tick)
            if risk:
                risk.remove(tick.signal_id or "")
        else:
            # Fast-forward to the one frame that can change the held signal, and decide it there.
            frame = _next_change(series, row, series.index(t), last_frame, rules)
            if frame is None:
                break  # the range ended first
            decision = decide(key, row, series.stamp(frame), series.market(frame), False, rules, gate)
            assert decision is not ASK  # a held signal asks nothing
            tick = decision
            if tick.action == "waiting":  # a risk rejection at activation: the signal keeps waiting
                t = tick.at + MINUTE_MS
                continue
            row = tick.signal if tick.action == "opened" else None
            if tick.action == "closed":
                result.trades.append(tick)
                if risk:
                    risk.remove(tick.signal_id or "")
            elif tick.action == "cancelled":
                result.cancelled.append(tick)
            else:
                assert tick.action == "opened", tick
        if tick.action == "opened":
            assert row is not None
            last_opened_id = row.id
            if risk:
                risk.add(row)
        await emit(tick)
        t = tick.at + MINUTE_MS
    if row is not None:
        # Still held after the decision stamped ``end``: the range ends it, priced at ``end``.
        price = series.market(last_frame).price
        if row.pending_at is None:
            tick = cancel(row, end, price, "timeout")
            result.cancelled.append(tick)
            result.ended_scheduled += 1
        else:
            tick = close(row, end, price, price, "time_expired", rules)
            result.trades.append(tick)
            result.ended_open += 1
            if risk:
                risk.remove(row.id)
        await emit(tick)
    result.frames = (end - start) // MINUTE_MS
    if progress is not None:
        progress(end)
    return result


def _next_change(series: _Series, row: SignalRow, f: int, last: int, rules: Rules) -> int | None:
    """The first frame in ``[f, last]`` that can change the held ``row``, or None.

    A scheduled signal: the first frame whose closed candle's low (long; short: high) reaches
    its entry or stop-loss (``first_touch``), or its timeout. An open position: the first frame
    whose VWAP reaches its TP or SL (``first_exit``), or its expiry. Every frame before it
    decides ``waiting`` or ``active``, with nothing to record.
    """
    if row.pending_at is None:
        timeout = _first_frame_at(series, row.scheduled_at + rules.schedule_timeout_minutes * MINUTE_MS)
        # Candle j is decided at frame j + 1; frames before ``timeout`` cannot time out.
        j = series.first_touch(row, f - 1, min(timeout, last + 1) - 1)
        if j is not None:
            return j + 1
        return max(timeout, f) if timeout <= last else None
    expiry = max(_first_frame_at(series, row.pending_at + row.minutes * MINUTE_MS), f)
    hit = series.first_exit(row, f, min(expiry, last + 1))
    if hit is None and expiry <= last:
        hit = expiry
    return hit


def _first_frame_at(series: _Series, ms: int) -> int:
    """The index of the first frame at or after ``ms``."""
    return -(-(ms - series.base) // MINUTE_MS)

