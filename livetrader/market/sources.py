"""Open the candle source a command names: ``sim``, ``files`` or a real exchange through ccxt."""

from __future__ import annotations

import difflib
from pathlib import Path

from livetrader import redaction
from livetrader.config import Config
from livetrader.errors import ConfigError, UsageError
from livetrader.market.source import CandleSource

BUILT_IN = ("sim", "files")


def open_source(name: str, config: Config, candles: Path | None = None, strict: bool = False) -> CandleSource:
    """The candle source called ``name``; UsageError saying what to do when it cannot be opened.

    ``sim`` and ``files`` are built in. Any other name is a ccxt exchange when its
    ``[exchanges.<name>]`` table names a ``ccxt_id``, or when the name itself is a ccxt
    exchange id (``binance``); ccxt is imported only then. One call, one source: the engine
    keeps one per exchange and shares it by every pair.
    """
    if candles is not None and name != "files":
        raise UsageError(f"--candles only goes with --exchange files (the exchange is {name!r})")
    if name in BUILT_IN and config.exchange_options(name).get("mode", "paper") != "paper":
        raise ConfigError(f"[exchanges.{name}] mode must be \"paper\": the {name} source has no exchange to place "
                          "orders on (sandbox and live modes are for real exchanges through ccxt)")
    if name == "sim":
        from livetrader.market.sim import SimSource

        seed = config.exchange_options("sim").get("seed", 42)
        return SimSource(seed=int(seed))
    if name == "files":
        if candles is None:
            raise UsageError("--exchange files needs --candles PATH (a CSV or JSON file of 1-minute candles)")
        from livetrader.market.files import FileSource
        from livetrader.market.parsed import folder_of

        # A large file's parsed copy lives in the data directory (market.parsed): the next load skips the parse.
        return FileSource(candles, strict=strict, parsed_copies=folder_of(config.data_dir))
    table = config.exchange_options(name)
    if "ccxt_id" in table or (name and _is_ccxt_id(name)):
        from livetrader.market.ccxt.settings import load_credentials, parse_settings
        from livetrader.market.ccxt.source import CcxtSource

        where = str(config.path) if config.path else "config"
        credentials = load_credentials(name, parse_settings(name, table, where))
        if credentials is not None:
            redaction.register(credentials.secrets())  # no output may ever carry them
        return CcxtSource(name, table, credentials, config_path=config.path)
    known = sorted({*BUILT_IN, *config.exchanges})
    close = difflib.get_close_matches(name, _ccxt_ids() + known, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UsageError(
        f"unknown exchange {name!r}; known: {', '.join(known)}, or any ccxt exchange id (binance, kraken, ...).{hint} "
        f"For a ccxt exchange under another name, add an [exchanges.{name}] section with ccxt_id = \"...\" "
        "to the config"
    )


def register_secrets(config: Config) -> None:
    """Register every credential this process could know with the redaction registry.

    Call it as soon as the configuration is loaded, before any strategy module is imported or
    run, so that no output made later (a strategy's exception quoting a key, a log line, a
    status file) can carry one: every ``LIVETRADER_<NAME>_API_KEY`` / ``_SECRET`` /
    ``_PASSWORD`` in the environment, and the credentials of every ccxt exchange the config
    names (its environment variables or its ``credentials_file``). A configured exchange whose
    credentials cannot be read is skipped here: opening it reports why (``open_source``).
    """
    from livetrader.market.ccxt.settings import environment_secrets, load_credentials, parse_settings

    redaction.register(environment_secrets())
    where = str(config.path) if config.path else "config"
    for name in config.exchanges:
        table = config.exchange_options(name)
        if name in BUILT_IN:
            continue
        try:
            credentials = load_credentials(name, parse_settings(name, table, where))
        except ConfigError:
            continue
        if credentials is not None:
            redaction.register(credentials.secrets())


def _ccxt_ids() -> list[str]:
    """ccxt's exchange ids, or none when ccxt is not installed."""
    try:
        from livetrader.market.ccxt.source import ccxt_exchange_ids

        return ccxt_exchange_ids()
    except ImportError:
        return []


def _is_ccxt_id(name: str) -> bool:
    return name in _ccxt_ids()
