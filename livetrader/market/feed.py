"""The recent validated candles of each symbol on one exchange, fetched once and shared by its pairs.

Every pair asks for candles every minute: five for its price, more when its strategy looks
back, a range when it catches up. Pairs trading the same symbol ask for the same candles,
and consecutive minutes overlap in all but one candle. ``CandleFeed`` sits between the
pairs and a ``CandleSource``: it keeps the last candles of each symbol, fetches only the
minutes it does not hold, validates each candle once as it arrives, and lets concurrent
askers of the same range share one fetch. With a real exchange that is one request per
symbol and minute instead of one per pair and minute (rate limits); with thousands of
pairs it is most of the live loop's work saved.

It answers exactly what the source would, validated as ``Pair`` always validated: a closed,
complete, gap-free range, or ``CandleError`` naming the bad candle. Closed candles never
change, so a held candle is as good as a fetched one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from livetrader.core.price import (
    MINUTE_MS,
    VWAP_CANDLES,
    Candle,
    CandleError,
    Market,
    candle_problem,
    market_of,
    spike_problem,
    validate_candles,
)
from livetrader.market.source import CandleSource

#: The most minutes held per symbol; longer requests are served straight from the source.
MAX_HELD_MINUTES = 240
#: Held candles a new candle's spike check also looks at (a lone new candle has no median):
#: with one new candle, the same five a price is computed from.
SPIKE_CONTEXT = VWAP_CANDLES - 1


class _Held:
    """The candles held for one symbol: consecutive, validated, newest last."""

    __slots__ = ("candles", "first", "end", "keep")

    def __init__(self, candles: list[Candle], keep: int) -> None:
        self.candles = candles
        self.first = candles[0].timestamp
        self.end = candles[-1].timestamp + MINUTE_MS
        self.keep = keep

    def append(self, new: list[Candle]) -> None:
        self.candles.extend(new)
        self.end = self.candles[-1].timestamp + MINUTE_MS
        extra = len(self.candles) - self.keep
        if extra > 0:
            del self.candles[:extra]
            self.first = self.candles[0].timestamp

    def slice(self, start: int, end: int) -> list[Candle]:
        return self.candles[(start - self.first) // MINUTE_MS:(end - self.first) // MINUTE_MS]


class CandleFeed:
    """A ``CandleSource`` that validates, holds recent candles per symbol, and shares fetches."""

    def __init__(self, source: CandleSource) -> None:
        self.source = source
        self.name = source.name
        self._held: dict[str, _Held] = {}
        # Ranges being fetched; a future appears only when a second asker waits for one.
        self._inflight: dict[tuple[str, int, int], asyncio.Future[list[Candle]] | None] = {}
        #: Candles fetched from the source, and requests answered without fetching (for benchmarks).
        self.fetched = 0
        self.served = 0
        self._fetch_sync = _sync_fetch_of(source)
        # The last market data computed per symbol: (minute, Market).
        self._markets: dict[str, tuple[int, Market]] = {}

    def __getattr__(self, name: str) -> Any:
        # Anything else a source offers (a ccxt source's format_price, a sim's symbols) passes through.
        return getattr(self.source, name)

    def resolve_symbol(self, symbol: str) -> str:
        """The source's spelling of ``symbol``."""
        return self.source.resolve_symbol(symbol)

    def bounds(self, symbol: str) -> tuple[int, int] | None:
        """The source's bounds for ``symbol``."""
        return self.source.bounds(symbol)

    async def close(self) -> None:
        """Close the source."""
        self._held.clear()
        self._markets.clear()
        await self.source.close()

    async def fetch(self, symbol: str, start_ms: int, end_ms: int) -> list[Candle]:
        """Closed candles opening in ``[start_ms, end_ms)``: complete and validated, or ``CandleError``."""
        if end_ms <= start_ms:
            return []
        held = self._held.get(symbol)
        if held is not None and held.first <= start_ms <= held.end:
            if end_ms <= held.end:
                self.served += 1
                return held.slice(start_ms, end_ms)
            if end_ms - held.first <= MAX_HELD_MINUTES * MINUTE_MS:
                # Kept from ``start_ms`` on: another asker, or a streamed candle, appending while
                # this fetch is out must not trim away the oldest minutes this asker needs.
                held.keep = max(held.keep, min(MAX_HELD_MINUTES, (end_ms - start_ms) // MINUTE_MS))
                await self._extend(symbol, held, start_ms, end_ms)
                if held.first <= start_ms and end_ms <= held.end:
                    return held.slice(start_ms, end_ms)
                # Moved on meanwhile after all: the range is fetched whole, below.
        candles = await self._shared(symbol, start_ms, end_ms)
        validate_candles(candles, start_ms, end_ms)
        held = self._held.get(symbol)  # another asker may have moved it on meanwhile
        if held is None or end_ms >= held.end:
            keep = min(MAX_HELD_MINUTES, max(len(candles), held.keep if held else 0))
            self._held[symbol] = _Held(candles[-keep:], keep)
        return candles

    def push(self, symbol: str, candle: Candle) -> str:
        """Hold a closed candle a stream pushed (``market.ccxt.stream``), validated as a fetched one.

        Returns what became of it: ``held`` (the next minute of what is held: validated, spike
        checked against the held ones, and held), ``duplicate`` (held already), ``ahead`` (a minute
        before it is missing: not held, the next fetch backfills the gap over the source), or
        ``unheld`` (nothing of the symbol held yet: its first fetch gets it). Raises
        ``CandleError`` for a candle the validation refuses (it is not held).
        """
        held = self._held.get(symbol)
        if held is None:
            return "unheld"
        at = candle.timestamp
        if at < held.end:
            return "duplicate"
        if at > held.end:
            return "ahead"
        self._append(held, at, [candle], at, at + MINUTE_MS)
        return "held"

    def held_end(self, symbol: str) -> int | None:
        """The end (exclusive opening time) of the candles held for ``symbol``, or None."""
        held = self._held.get(symbol)
        return None if held is None else held.end

    @property
    def in_process(self) -> bool:
        """True when the source makes its candles in this process (``fetch_sync``: sim, files):
        a fetch never has to wait, so a tick can run without yielding to the loop."""
        return self._fetch_sync is not None

    def fetch_now(self, symbol: str, start_ms: int, end_ms: int) -> list[Candle] | None:
        """``fetch`` without waiting: the held candles, extended from an in-process source;
        None when that would need the network (or more than is held). Raises as ``fetch``."""
        held = self._held.get(symbol)
        if held is None or not held.first <= start_ms <= held.end or end_ms <= start_ms:
            return None
        if end_ms > held.end:
            if end_ms - held.first > MAX_HELD_MINUTES * MINUTE_MS or self._fetch_sync is None:
                return None
            start = held.end
            new = self._fetch_sync(symbol, start, end_ms)
            self.fetched += len(new)
            self._append(held, start, new, start_ms, end_ms)
        else:
            self.served += 1
        return held.slice(start_ms, end_ms)

    def market_now(self, symbol: str, minute: int) -> Market | None:
        """The ``Market`` of ``symbol`` at ``minute`` (the VWAP of its five closed candles before,
        the low and high of the last) without waiting, as ``fetch_now`` gives the candles; None
        when they cannot be had so. Every pair of the symbol asks for the same minute: it is
        computed once."""
        last = self._markets.get(symbol)
        if last is not None and last[0] == minute:
            return last[1]
        candles = self.fetch_now(symbol, minute - VWAP_CANDLES * MINUTE_MS, minute)
        if candles is None:
            return None
        market = market_of(candles)
        self._markets[symbol] = (minute, market)
        return market

    def price_now(self, symbol: str, minute: int) -> float | None:
        """The VWAP price of ``symbol`` at ``minute`` without waiting (``market_now``), or None."""
        market = self.market_now(symbol, minute)
        return None if market is None else market.price

    async def _extend(self, symbol: str, held: _Held, start_ms: int, end_ms: int) -> None:
        """Fetch the minutes from ``held.end`` to ``end_ms`` and append them, validated.

        What is held grows to the longest range asked for (``start_ms``..``end_ms``), no further.
        """
        start = held.end
        new = await self._shared(symbol, start, end_ms)
        if held.end != start:  # another asker extended it while this fetch was out
            if held.end < end_ms:
                await self._extend(symbol, held, start_ms, end_ms)
            return
        self._append(held, start, new, start_ms, end_ms)

    @staticmethod
    def _append(held: _Held, start: int, new: list[Candle], start_ms: int, end_ms: int) -> None:
        """Validate the candles fetched from ``start`` to ``end_ms`` and hold them."""
        if not (len(new) == 1 and end_ms - start == MINUTE_MS and new[0].timestamp == start
                and candle_problem(new[0]) is None):  # a minute's one new candle: all validate_candles checks
            validate_candles(new, start, end_ms)
        context = held.candles[-SPIKE_CONTEXT:] + new
        spike = spike_problem(context)
        if spike:
            raise CandleError(spike)
        held.keep = max(held.keep, min(MAX_HELD_MINUTES, (end_ms - start_ms) // MINUTE_MS))
        held.append(new)

    async def _shared(self, symbol: str, start_ms: int, end_ms: int) -> list[Candle]:
        """One fetch from the source per range at a time; askers of the same range share it."""
        key = (symbol, start_ms, end_ms)
        if key in self._inflight:
            waiter = self._inflight[key]
            if waiter is None:
                waiter = self._inflight[key] = asyncio.get_running_loop().create_future()
            return list(await asyncio.shield(waiter))
        self._inflight[key] = None
        try:
            candles = await self.source.fetch(symbol, start_ms, end_ms)
        except BaseException as exc:
            waiter = self._inflight.pop(key)
            if waiter is not None and not waiter.done():
                if isinstance(exc, asyncio.CancelledError):
                    waiter.cancel()
                else:
                    waiter.set_exception(exc)
            raise
        waiter = self._inflight.pop(key)
        if waiter is not None and not waiter.done():
            waiter.set_result(candles)
        self.fetched += len(candles)
        return candles


def _sync_fetch_of(source: CandleSource) -> Any:
    """The source's ``fetch_sync`` when its ``fetch`` only wraps it (defined by the same class:
    a subclass that changes ``fetch`` keeps its own behaviour), else None."""
    cls = type(source)
    owner = {name: next((c for c in cls.__mro__ if name in vars(c)), None) for name in ("fetch", "fetch_sync")}
    if owner["fetch_sync"] is None or owner["fetch"] is not owner["fetch_sync"]:
        return None
    return source.fetch_sync  # type: ignore[attr-defined]  # not in CandleSource: found in the class just above
