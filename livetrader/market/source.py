"""The one small interface every candle source implements."""

from __future__ import annotations

from typing import Protocol

from livetrader.core.price import Candle


class CandleSource(Protocol):
    """Where closed 1-minute candles come from.

    ``fetch`` returns the candles opening in ``[start_ms, end_ms)``, ordered, validated
    (``livetrader.core.price.validate_candles``) and without gaps; it raises
    ``CandleSourceError`` for bad data and ``UnknownSymbolError`` for a symbol it lacks.
    Sources that only know a finite range (``files``) return the part they have;
    callers check coverage.
    """

    name: str

    def resolve_symbol(self, symbol: str) -> str:
        """The source's spelling of ``symbol``; raises UnknownSymbolError with close matches."""
        ...

    async def fetch(self, symbol: str, start_ms: int, end_ms: int) -> list[Candle]:
        """Closed 1-minute candles opening in ``[start_ms, end_ms)``."""
        ...

    def bounds(self, symbol: str) -> tuple[int, int] | None:
        """``(first, end)`` opening times the source holds for ``symbol``, or None when unbounded."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
