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
import gc
import hashlib
import math
import random
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
# Knots are unit-variance variates. ``_FAST`` layers are evaluated every minute; the slower ones
# only every ``_GRID`` minutes and interpolated linearly in between (they are smooth at that
# scale, and it keeps generation fast). ``_FAST`` and ``_SWING`` are scaled by the volatility
# factor; ``_TREND`` is not, and keeps the price within a band of the base price (roughly a
# quarter to four times it) however far in time one goes.
_FAST = ((1, 15, 0.0012), (2, 60, 0.0030))
_SWING = ((3, 240, 0.0060), (4, 1440, 0.0110))
_TREND = ((5, 4320, 0.012), (6, 10080, 0.025), (7, 43200, 0.06), (8, 259200, 0.18))
# The volatility factor is exp(sum of these layers): median 1, mostly between about 0.4 and 2.5.
_VOL = ((9, 360, 0.25), (10, 2880, 0.35))
_GRID = 15
assert all(spacing % _GRID == 0 for _, spacing, _ in _SWING + _TREND + _VOL)
# Per-minute streams: each boundary's own noise; wicks above/below the body; volume.
_NOISE, _HIGH, _LOW, _VOLUME = 11, 12, 13, 14
_NOISE_SIZE = 0.0006  # sets the typical 1-minute move (~0.06 %)
_WICK_SIZE = 0.0012  # largest excursion of a wick beyond the candle body, at volatility 1
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
def _block(key: int, stream: int, block: int, size: int, uniform: bool) -> list[float]:
    """One block of a stream (cached): uniforms in [0, 1), or unit-variance triangular variates."""
    rng = random.Random((((key << 8) | stream) << 48) | (block + _BLOCK_OFFSET))
    r = rng.random
    if uniform:
        return [r() for _ in repeat(None, size)]
    return [(r() - r()) * _SQRT6 for _ in repeat(None, size)]


def _stream(key: int, stream: int, first: int, count: int, block_size: int, uniform: bool = False) -> list[float]:
    """Values ``first .. first + count - 1`` of a stream, whichever blocks they fall in."""
    out: list[float] = []
    index = first
    end = first + count
    while index < end:
        block, offset = divmod(index, block_size)
        take = min(end - index, block_size - offset)
        out.extend(_block(key, stream, block, block_size, uniform)[offset : offset + take])
        index += take
    return out


@lru_cache(maxsize=32)
def _smoothstep(spacing: int) -> tuple[float, ...]:
    """Weight of the next knot at each step of a knot interval (zero slope at the knots)."""
    return tuple(f * f * (3.0 - 2.0 * f) for f in (i / spacing for i in range(spacing)))


def _interpolate(
    knots: list[float], k0: int, spacing: int, weights: tuple[float, ...], first: int, count: int
) -> list[float]:
    """Values at points ``first .. first + count - 1`` between knots ``k0, k0 + 1, ...``.

    Knot ``k`` sits at point ``k * spacing``; ``weights[i]`` is the share of the next knot ``i``
    points past a knot.
    """
    start = first - k0 * spacing  # relative to knot k0
    end = start + count
    out: list[float] = []
    extend = out.extend
    for i in range(start // spacing, (end - 1) // spacing + 1):
        a = knots[i]
        d = knots[i + 1] - a
        lo = max(start - i * spacing, 0)
        hi = min(end - i * spacing, spacing)
        # Whole intervals (the common case in bulk) skip the slice copy.
        extend([a + d * w for w in (weights if lo == 0 and hi == spacing else weights[lo:hi])])
    return out


def _layer(key: int, layer: tuple[int, int, float], first: int, count: int, unit: int = 1) -> list[float]:
    """A value-noise layer at points ``first .. first + count - 1``; point ``p`` is minute ``p * unit``.

    The knots (one every ``spacing`` minutes) are the same whatever ``unit``, so a coarse
    evaluation agrees with a minute-by-minute one at the points they share.
    """
    stream, spacing, size = layer
    spacing //= unit
    k0 = first // spacing
    k1 = (first + count - 1) // spacing + 1
    knots = [v * size for v in _stream(key, stream, k0, k1 - k0 + 1, _KNOT_BLOCK)]
    return _interpolate(knots, k0, spacing, _smoothstep(spacing), first, count)


_LINEAR = tuple(i / _GRID for i in range(_GRID))


def _slow(key: int, first: int, count: int) -> tuple[list[float], list[float]]:
    """The volatility factor and the slow log-price (swings and trend) at each minute boundary."""
    g0 = first // _GRID
    n = (first + count - 1) // _GRID + 2 - g0  # grid points around the range
    exp = math.exp
    vol_a, vol_b = (_layer(key, layer, g0, n, _GRID) for layer in _VOL)
    vol = [exp(a + b) for a, b in zip(vol_a, vol_b, strict=True)]
    swing = [_layer(key, layer, g0, n, _GRID) for layer in _SWING]
    trend = [_layer(key, layer, g0, n, _GRID) for layer in _TREND]
    slow = [v * (a + b) + c + d + e + f for v, a, b, c, d, e, f in zip(vol, *swing, *trend, strict=True)]
    return (
        _interpolate(vol, g0, _GRID, _LINEAR, first, count),
        _interpolate(slow, g0, _GRID, _LINEAR, first, count),
    )


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
        raise UnknownSymbolError(f"the sim exchange has no symbol {symbol!r}; {hint}known symbols: {', '.join(known)}")

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
        vol, slow = _slow(key, first, n)
        fast_a, fast_b = (_layer(key, layer, first, n) for layer in _FAST)
        noise = _stream(key, _NOISE, first, n, _MINUTE_BLOCK)
        exp = math.exp
        log_base = math.log(base)
        prices = [
            exp(log_base + v * (e * _NOISE_SIZE + a + b) + s)
            for v, e, a, b, s in zip(vol, noise, fast_a, fast_b, slow, strict=True)
        ]
        return _candles(key, first, count, prices, vol, base)


def _candles(key: int, first: int, count: int, prices: list[float], vol: list[float], base: float) -> list[Candle]:
    """Candles from boundary prices: bodies from consecutive prices, wicks and volume from noise."""
    opens = prices[:-1]
    closes = prices[1:]
    vol = vol[:-1]
    ups = _stream(key, _HIGH, first, count, _MINUTE_BLOCK, uniform=True)
    downs = _stream(key, _LOW, first, count, _MINUTE_BLOCK, uniform=True)
    noise = _stream(key, _VOLUME, first, count, _MINUTE_BLOCK, uniform=True)
    # Squared uniforms: short wicks are common, long ones rare.
    w = _WICK_SIZE
    highs = [(o if o >= c else c) * (1.0 + v * w * u * u) for o, c, v, u in zip(opens, closes, vol, ups, strict=True)]
    lows = [(c if o >= c else o) * (1.0 - v * w * u * u) for o, c, v, u in zip(opens, closes, vol, downs, strict=True)]
    units = _VOLUME_NOTIONAL / base  # volume is in the base asset, so it scales with 1 / price
    # Busier when volatile and when the price moves; never zero, always varying.
    volumes = [
        units * v * (0.5 + u) * (1.0 + abs(c - o) / o * 1500.0)
        for o, c, v, u in zip(opens, closes, vol, noise, strict=True)
    ]
    start = first * MINUTE_MS
    rows = zip(range(start, start + count * MINUTE_MS, MINUTE_MS), opens, highs, lows, closes, volumes, strict=True)
    # A million fresh tuples would set off repeated full garbage collections that cost more
    # than the generation itself; these tuples of numbers cannot form cycles.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return list(map(_new_tuple, repeat(Candle, count), rows))
    finally:
        if was_enabled:
            gc.enable()
