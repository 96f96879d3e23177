"""The embedded simulated market (``sim``): deterministic candles for any symbol and any minute.

A candle is a pure function of ``(seed, symbol, minute)``: nothing is carried from one minute to
the next, so any range can be generated again identically, in any order. The log-price at each
minute boundary is a sum of value-noise layers (random knots, smoothly interpolated) at several
time scales: per-minute noise, swings over minutes to hours, and trends over days to months. The
short-scale layers are multiplied by a slowly varying volatility factor, which gives calm and
agitated periods (volatility clusters). A candle opens at the price of its opening boundary and
closes at the price of the next one, so the open of minute ``m`` is exactly the close of ``m - 1``.

Randomness comes from ``random.Random`` seeded per block of minutes (or knots) with an integer
derived from ``(seed, symbol, stream, block)`` and read only through ``random()``, whose sequence
for an integer seed Python guarantees stable across versions.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import random
from collections.abc import Callable
from functools import lru_cache
from itertools import repeat

from livetrader.core.price import MINUTE_MS, Candle
from livetrader.errors import UnknownSymbolError, UsageError

DEFAULT_SYMBOLS: dict[str, float] = {
    "BTCUSDT": 50_000.0,
    "ETHUSDT": 3_000.0,
    "BNBUSDT": 600.0,
    "SOLUSDT": 150.0,
    "XRPUSDT": 0.5,
    "DOGEUSDT": 0.15,
    "PEPEUSDT": 0.00001234,
}

# Value-noise layers: (stream id, knot spacing in minutes, size of a knot in log-price units).
# Knots are triangular variates scaled to unit variance. The short layers are scaled by the
# volatility factor; the long ones set the trend, which stays within a band of the base price
# (roughly a quarter to four times it) however far in time one goes.
_SHORT_LAYERS = ((1, 15, 0.0010), (2, 60, 0.0022), (3, 240, 0.0045), (4, 1440, 0.0080))
_LONG_LAYERS = ((5, 4320, 0.012), (6, 10080, 0.025), (7, 43200, 0.06), (8, 259200, 0.18))
# The volatility factor is exp(sum of these layers), clipped below by its own smoothness.
_VOL_LAYERS = ((9, 360, 0.25), (10, 2880, 0.35))
# Per-minute streams: noise of each boundary's price, excursions above/below the body, volume.
_NOISE, _HIGH, _LOW, _VOLUME = 11, 12, 13, 14
_NOISE_SIZE = 0.00045  # one boundary's own noise; sets the typical 1-minute move (~0.06 %)
_WICK_SIZE = 0.0008  # largest excursion of a wick beyond the candle body, at volatility 1
_VOLUME_NOTIONAL = 250_000.0  # quote currency traded in a typical minute, at volatility 1

_MINUTE_BLOCK = 1440  # minutes per cached block of per-minute randomness
_KNOT_BLOCK = 256  # knots per cached block of layer randomness
_BLOCK_OFFSET = 1 << 47  # keeps block numbers positive: Random() seeds with abs(), so -1 == 1
_SQRT6 = math.sqrt(6.0)  # a difference of two uniforms has variance 1/6

_new_tuple = tuple.__new__  # builds Candle tuples in C, several times faster than Candle(...)


def normalize_symbol(symbol: str) -> str:
    """``btc/usdt`` -> ``BTCUSDT``: the spelling used as a key."""
    return symbol.strip().upper().replace("/", "")


@lru_cache(maxsize=128)
def _block(key: int, stream: int, block: int, size: int) -> list[float]:
    """``size`` unit-variance triangular variates of one block of one stream (cached)."""
    rng = random.Random((((key << 8) | stream) << 48) | (block + _BLOCK_OFFSET))
    r = rng.random
    return [(r() - r()) * _SQRT6 for _ in repeat(None, size)]


def _stream(key: int, stream: int, first: int, count: int, block_size: int) -> list[float]:
    """Values ``first .. first + count - 1`` of a stream, whichever blocks they fall in."""
    out: list[float] = []
    index = first
    end = first + count
    while index < end:
        block, offset = divmod(index, block_size)
        take = min(end - index, block_size - offset)
        out.extend(_block(key, stream, block, block_size)[offset : offset + take])
        index += take
    return out


@lru_cache(maxsize=32)
def _weights(spacing: int) -> tuple[float, ...]:
    """Smoothstep weights of the next knot at each minute of a knot interval."""
    return tuple(f * f * (3.0 - 2.0 * f) for f in (i / spacing for i in range(spacing)))


def _layer(key: int, stream: int, spacing: int, size: float, first: int, count: int) -> list[float]:
    """One value-noise layer at boundaries ``first .. first + count - 1``."""
    k0 = first // spacing
    k1 = (first + count - 1) // spacing + 1
    knots = [v * size for v in _stream(key, stream, k0, k1 - k0 + 1, _KNOT_BLOCK)]
    weights = _weights(spacing)
    out: list[float] = []
    b = first
    end = first + count
    while b < end:
        k, offset = divmod(b, spacing)
        take = min(end - b, spacing - offset)
        a = knots[k - k0]
        d = knots[k - k0 + 1] - a
        out.extend([a + d * w for w in weights[offset : offset + take]])
        b += take
    return out


class SimSource:
    """A deterministic simulated market; implements the ``CandleSource`` protocol.

    ``symbols`` maps each symbol to its base price (default: ``DEFAULT_SYMBOLS``); prices wander
    around it. Unbounded in time: any minute, past or future, has a candle.
    """

    name = "sim"

    def __init__(self, seed: int = 42, symbols: dict[str, float] | None = None) -> None:
        self.seed = seed
        self.symbols: dict[str, float] = {}
        for symbol, base in (DEFAULT_SYMBOLS if symbols is None else symbols).items():
            if not (isinstance(base, (int, float)) and math.isfinite(base) and base > 0):
                raise UsageError(f"sim symbol {symbol}: base price {base!r} must be a positive number")
            self.symbols[normalize_symbol(symbol)] = float(base)
        # One 64-bit key per symbol; blake2b rather than hash() because str hashes vary per run.
        self._keys = {
            s: int.from_bytes(hashlib.blake2b(f"{seed}\0{s}".encode(), digest_size=8).digest(), "big")
            for s in self.symbols
        }

    def resolve_symbol(self, symbol: str) -> str:
        """Canonical spelling (``BTC/USDT``, ``btcusdt`` -> ``BTCUSDT``); UnknownSymbolError if absent."""
        canonical = normalize_symbol(symbol)
        if canonical in self.symbols:
            return canonical
        known = sorted(self.symbols)
        close = difflib.get_close_matches(canonical, known, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UnknownSymbolError(
            f"the sim exchange has no symbol {symbol!r}; {hint}known symbols: {', '.join(known)}"
        )

    def bounds(self, symbol: str) -> tuple[int, int] | None:
        """None: the simulated market has a candle for every minute."""
        self.resolve_symbol(symbol)
        return None

    async def fetch(self, symbol: str, start_ms: int, end_ms: int) -> list[Candle]:
        """Candles opening in ``[start_ms, end_ms)``; see ``fetch_sync``."""
        return self.fetch_sync(symbol, start_ms, end_ms)

    def fetch_sync(self, symbol: str, start_ms: int, end_ms: int) -> list[Candle]:
        """Candles opening in ``[start_ms, end_ms)`` at whole minutes, generated in bulk."""
        canonical = self.resolve_symbol(symbol)
        first = -(-start_ms // MINUTE_MS)  # ceil: the first whole minute at or after start
        end = -(-end_ms // MINUTE_MS)
        if end <= first:
            return []
        return self._generate(canonical, first, end - first)

    async def close(self) -> None:
        """Nothing to release."""

    def _generate(self, symbol: str, first: int, count: int) -> list[Candle]:
        """``count`` candles from minute number ``first`` (minutes since the epoch)."""
        key = self._keys[symbol]
        base = self.symbols[symbol]
        n = count + 1  # boundaries: the opening of each candle, and the close of the last
        vol = _volatility(key, first, n)
        short = [_layer(key, s, spacing, size, first, n) for s, spacing, size in _SHORT_LAYERS]
        long = [_layer(key, s, spacing, size, first, n) for s, spacing, size in _LONG_LAYERS]
        noise = _stream(key, _NOISE, first, n, _MINUTE_BLOCK)
        exp = math.exp
        log_base = math.log(base)
        prices = [
            exp(log_base + v * (e * _NOISE_SIZE + a + b + c + d) + f + g + h + i)
            for v, e, a, b, c, d, f, g, h, i in zip(vol, noise, *short, *long, strict=True)
        ]
        return _candles(key, first, count, prices, vol, base)


def _volatility(key: int, first: int, n: int) -> list[float]:
    """The volatility factor at each boundary: median 1, mostly between about 0.4 and 2.5."""
    a, b = (_layer(key, s, spacing, size, first, n) for s, spacing, size in _VOL_LAYERS)
    exp = math.exp
    return [exp(x + y) for x, y in zip(a, b, strict=True)]


def _candles(key: int, first: int, count: int, prices: list[float], vol: list[float], base: float) -> list[Candle]:
    """Candles from boundary prices: bodies from consecutive prices, wicks and volume from noise."""
    highs = _stream(key, _HIGH, first, count, _MINUTE_BLOCK)
    lows = _stream(key, _LOW, first, count, _MINUTE_BLOCK)
    volumes = _stream(key, _VOLUME, first, count, _MINUTE_BLOCK)
    units = _VOLUME_NOTIONAL / base  # volume is in the base asset, so scale it by the price level
    wick = _WICK_SIZE / _SQRT6  # the variates span (-sqrt 6, sqrt 6); wicks use their magnitude
    make: Callable[..., Candle] = _new_tuple
    out: list[Candle] = []
    append = out.append
    ts = first * MINUTE_MS
    for i in range(count):
        o = prices[i]
        c = prices[i + 1]
        v = vol[i]
        top, bottom = (o, c) if o >= c else (c, o)
        move = abs(c - o) / o
        append(
            make(
                Candle,
                (
                    ts,
                    o,
                    top * (1.0 + v * wick * abs(highs[i])),
                    bottom * (1.0 - v * wick * abs(lows[i])),
                    c,
                    # Busier when volatile and when the price moves: never zero, always varying.
                    units * v * (1.0 + 0.3 * volumes[i]) * (1.0 + move * 1500.0),
                ),
            )
        )
        ts += MINUTE_MS
    return out
