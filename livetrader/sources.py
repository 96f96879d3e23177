"""Open the candle source a command names: ``sim``, ``files`` or a configured exchange."""

from __future__ import annotations

from pathlib import Path

from livetrader.config import Config
from livetrader.errors import UsageError
from livetrader.exchanges.base import CandleSource

BUILT_IN = ("sim", "files")


def open_source(name: str, config: Config, candles: Path | None = None, strict: bool = False) -> CandleSource:
    """The candle source called ``name``; UsageError saying what to do when it cannot be opened."""
    if candles is not None and name != "files":
        raise UsageError(f"--candles only goes with --exchange files (the exchange is {name!r})")
    if name == "sim":
        from livetrader.exchanges.sim import SimSource

        seed = config.exchange_options("sim").get("seed", 42)
        return SimSource(seed=int(seed))
    if name == "files":
        if candles is None:
            raise UsageError("--exchange files needs --candles PATH (a CSV or JSON file of 1-minute candles)")
        from livetrader.exchanges.files import FileSource

        return FileSource(candles, strict=strict)
    known = sorted({*BUILT_IN, *config.exchanges})
    raise UsageError(
        f"unknown exchange {name!r}; known: {', '.join(known)}. "
        f"Add an [exchanges.{name}] section to the config for a ccxt exchange"
    )
