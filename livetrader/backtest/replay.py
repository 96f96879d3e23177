"""Backtest (docs/behaviour.md §11): the live state machine run over a finite range of candles, fast-forward.

Backtest time is live time: at frame ``t`` the price is the VWAP of the candles opening in
``[t-5m, t)``; a decision taken from the candle opening at ``c`` is stamped ``c + 1m``.

The results are exactly those of a plain per-minute replay of the core (tests compare them
trade by trade); the speed comes from doing only the work that can change them:

- a pair with no signal jumps straight to the next throttle bucket: no frame inside one
  bucket can ask the strategy, so nothing can happen there;
- an open position can only end at the first frame whose VWAP reaches TP or SL, at its
  expiry, or at the end of the range, and ``check_open`` (the live code) is called once, at
  the frame that closes it: no ``active`` result is built. Finding that frame needs no VWAP
  while all five candles of a frame lie well inside the band between TP and SL (their
  average does too, see ``_inner_band``): a cheap test per candle skips those frames, and
  the others are priced in bulk (``_Series.vwaps``) and compared;
- a scheduled signal likewise ends or activates only at the first candle whose low (high
  for a short) reaches its entry or stop-loss, or at its timeout; ``check_scheduled``
  decides there.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from livetrader.core.format import format_minute
from livetrader.core.interval import SIGNAL_INTERVALS
from livetrader.core.machine import DEFAULT_RULES, Rules, accept, cancel, check_open, check_scheduled, close
from livetrader.core.price import MINUTE_MS, VWAP_CANDLES, Candle
from livetrader.core.signal import SignalRow, TickResult, make_signal_id
from livetrader.core.validate import SignalError
from livetrader.errors import LivetraderError, NoCandlesError
from livetrader.redaction import redact
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
    ended_open: int = 0
    ended_scheduled: int = 0

    def __repr__(self) -> str:
        # Counts, not every trade: asyncio.run (3.11) reprs the main task's result while it
        # restores the SIGINT handler, and the full repr of a year of trades takes ~0.1 s.
        return (
            f"BacktestResult({self.symbol} {self.strategy} {self.exchange} [{self.start}, {self.end}): "
            f"{len(self.trades)} trades, {len(self.cancelled)} cancelled, {self.frames} frames)"
        )


# The VWAP code below sums exactly five candles, written out for speed.
assert VWAP_CANDLES == 5


class _Series:
    """Gap-free 1-minute candles, and the VWAP of any frame, bit-identical to ``core.price.vwap``.

    Frame ``f`` is the decision stamped ``base + f minutes``, priced by candles ``f-5 .. f-1``.
    ``vwap_at`` prices one frame, ``vwaps`` a run of frames in bulk; both use the arithmetic
    of ``core.price.vwap`` in the same order, so they give the same floats.
    """

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

    def vwap_at(self, frame_index: int) -> float:
        """VWAP of the five candles before frame ``frame_index`` (candles i-5 .. i-1).

        ``core.price.vwap``'s loop written out: the same sums in the same order.
        """
        a, b, c, d, e = self.candles[frame_index - VWAP_CANDLES:frame_index]
        volume = 0.0 + a[5] + b[5] + c[5] + d[5] + e[5]
        weighted = (
            0.0
            + (a[2] + a[3] + a[4]) / 3.0 * a[5]
            + (b[2] + b[3] + b[4]) / 3.0 * b[5]
            + (c[2] + c[3] + c[4]) / 3.0 * c[5]
            + (d[2] + d[3] + d[4]) / 3.0 * d[5]
            + (e[2] + e[3] + e[4]) / 3.0 * e[5]
        )
        if volume > 0:
            return weighted / volume
        return self._mean_close(frame_index)

    def _mean_close(self, frame_index: int) -> float:
        # core.price.vwap's fallback when no volume traded, with the same sum.
        return sum(c.close for c in self.candles[frame_index - VWAP_CANDLES:frame_index]) / VWAP_CANDLES

    def vwaps(self, first: int, stop: int) -> list[float]:
        """The VWAPs of frames ``first .. stop-1``, in bulk.

        Each ``typical * volume`` is computed once per candle, and each window is summed left
        to right starting from 0.0, exactly as ``core.price.vwap`` accumulates in its loop: the
        results are the same floats, and a frame costs a few additions and one division.
        """
        chunk = self.candles[first - VWAP_CANDLES:stop - 1]
        tv = [(high + low + last) / 3.0 * volume for _, _, high, low, last, volume in chunk]
        vol = [c[5] for c in chunk]
        # Five shifted views: element j of the k-th is candle j + k of the chunk; zip stops
        # with the shortest, at the last complete window.
        out: list[float | None] = [
            (0.0 + a + b + c + d + e) / y if (y := 0.0 + p + q + r + s + t) > 0 else None
            for a, b, c, d, e, p, q, r, s, t in zip(
                tv, tv[1:], tv[2:], tv[3:], tv[4:], vol, vol[1:], vol[2:], vol[3:], vol[4:], strict=False
            )
        ]
        if None in out:  # windows without volume: the mean close, as core.price.vwap
            return [self._mean_close(first + j) if x is None else x for j, x in enumerate(out)]
        return cast("list[float]", out)  # no None: checked just above

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
            for j, price in enumerate(self.vwaps(f, segment), f):
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
) -> BacktestResult:
    """Run ``strategy`` over ``candles`` for frames in ``[start, end)``.

    ``candles`` must be gap-free 1-minute candles covering at least ``[start - 5m, end)``;
    candles before that serve as history for ``ctx.candles``. ``progress`` is called now
    and then with the current frame time.
    """
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
    get_signal = strategy.get_signal
    is_async = inspect.iscoroutinefunction(get_signal)
    callbacks = {hook: getattr(strategy, hook, None) for hook in ("on_open", "on_close", "on_schedule", "on_cancel")}
    all_candles = series.candles

    async def load(lo: int, hi: int) -> list[Candle]:
        a = max(0, series.index(lo))
        b = max(0, min(len(all_candles), series.index(hi)))
        return all_candles[a:b]

    gate = risk.check if risk else None

    async def emit(res: TickResult) -> None:
        hook_name = _HOOKS.get(res.action, "")
        hook = callbacks.get(hook_name)
        if hook is not None:
            try:
                out = hook(res)
                if inspect.isawaitable(out):
                    await out
            except (Exception, SystemExit) as exc:  # a sys.exit() must not end the backtest as a success
                raise StrategyFailure(f"strategy {name!r}: callback {hook_name} raised at "
                                      f"{format_minute(res.at)}: {describe(exc)}") from exc

    last_bucket: int | None = None
    last_opened_id: str | None = None
    t = start
    next_progress = start
    while t < end:
        if progress is not None and t >= next_progress:
            progress(t)
            next_progress = t + 1440 * MINUTE_MS
        b = t - t % interval_ms
        if b == last_bucket:
            # Nothing can happen before the next bucket: no signal exists and the strategy
            # may not be asked again inside this one.
            t = b + interval_ms
            continue
        last_bucket = b
        i = series.index(t)
        price = series.vwap_at(i)
        result.strategy_calls += 1
        ctx = Context(symbol, name, exchange, t, price, load)
        try:
            signal = (await get_signal(ctx)) if is_async else get_signal(ctx)
        # SystemExit too: a strategy's sys.exit() is its failure, not a backtest that succeeded. Not
        # KeyboardInterrupt: in a backtest that is the user's Ctrl-C (the CLI says "interrupted").
        except (Exception, SystemExit) as exc:
            raise StrategyFailure(f"strategy {name!r} raised at {format_minute(t)}: {describe(exc)}") from exc
        if signal is None:
            t = b + interval_ms
            continue
        if signal.id is not None and signal.id == last_opened_id:
            t = b + interval_ms
            continue
        try:
            tick = accept(signal, symbol, name, exchange, signal.id or make_signal_id(symbol, name, t), t, price, gate)
        except SignalError as exc:
            raise StrategyFailure(
                redact(f"strategy {name!r} returned an invalid signal at {format_minute(t)}: {exc}")) from exc
        if tick.action == "idle":  # risk rejection: hand the bucket back, ask again next minute
            result.risk_rejections += 1
            last_bucket = None
            t += MINUTE_MS
            continue
        await emit(tick)
        row = tick.signal
        assert row is not None
        k = i  # the first candle to check is the one opening at t
        if tick.action == "scheduled":
            row, k, finished = await _scan_scheduled(series, row, k, end, rules, gate, result, emit)
            if finished is not None:
                t = finished + MINUTE_MS
                continue
            last_opened_id = row.id
        else:
            last_opened_id = row.id
        if risk:
            risk.add(row)
        closed_at = await _scan_open(series, row, k, end, rules, result, emit)
        if risk:
            risk.remove(row.id)
        t = closed_at + MINUTE_MS
    result.frames = (end - start) // MINUTE_MS
    if progress is not None:
        progress(end)
    return result


_HOOKS = {"opened": "on_open", "closed": "on_close", "scheduled": "on_schedule", "cancelled": "on_cancel"}


async def _scan_scheduled(series, row, k, end, rules, gate, result, emit):
    """Scan candles from index ``k`` until the scheduled ``row`` activates or is cancelled.

    Returns ``(row, next_candle_index, None)`` on activation, or ``(row, k, stamp)`` when it
    was cancelled at ``stamp``. Candles that reach neither the entry nor the stop-loss are
    skipped in one tight loop (``first_touch``); ``check_scheduled`` decides at the candle
    that does, at the timeout, and again after a risk rejection kept the signal waiting.
    """
    last = series.index(end)  # the last decision is the one stamped ``end``
    timeout = _first_frame_at(series, row.scheduled_at + rules.schedule_timeout_minutes * MINUTE_MS)
    while True:
        # Candle j is decided at frame j + 1; frames before ``timeout`` cannot time out.
        stop = min(timeout, last + 1) - 1
        j = series.first_touch(row, k, stop)
        if j is None:
            if timeout > last:
                break
            j = max(timeout - 1, k)
        c = series.candles[j]
        tick = check_scheduled(row, c.timestamp + MINUTE_MS, series.vwap_at(j + 1), c.low, c.high, gate, rules)
        if tick.action == "cancelled":
            result.cancelled.append(tick)
            await emit(tick)
            return row, j, tick.at
        if tick.action == "opened":
            await emit(tick)
            assert tick.signal is not None
            return tick.signal, j + 1, None
        k = j + 1  # a risk rejection at activation: the signal keeps waiting
    tick = cancel(row, end, series.vwap_at(last), "timeout")
    result.cancelled.append(tick)
    result.ended_scheduled += 1
    await emit(tick)
    return row, k, end


async def _scan_open(series, row, k, end, rules, result, emit) -> int:
    """Check the open ``row`` from the candle at index ``k`` on; return the close time.

    Only three frames can close it: the first whose price reaches TP or SL (found by
    ``first_exit`` over the bulk VWAPs), the expiry, or the end of the range. The close
    itself is built by ``check_open``, the live code path, so its result is the live one.
    """
    f = k + 1  # candle k is decided at frame k + 1
    last = series.index(end)
    expiry = max(_first_frame_at(series, row.pending_at + row.minutes * MINUTE_MS), f)
    hit = series.first_exit(row, f, min(expiry, last + 1))
    if hit is None and expiry <= last:
        hit = expiry
    if hit is not None:
        tick = check_open(row, series.stamp(hit), series.vwap_at(hit), rules)
        assert tick.action == "closed", tick
        result.trades.append(tick)
        await emit(tick)
        return tick.at
    price = series.vwap_at(last)
    tick = close(row, end, price, price, "time_expired", rules)
    result.trades.append(tick)
    result.ended_open += 1
    await emit(tick)
    return end


def _first_frame_at(series: _Series, ms: int) -> int:
    """The index of the first frame at or after ``ms``."""
    return -(-(ms - series.base) // MINUTE_MS)

