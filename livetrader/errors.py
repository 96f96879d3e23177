"""Errors a user can act on. Each message says what went wrong and what to do."""

from __future__ import annotations


class LivetraderError(Exception):
    """Base of every user-facing error; the CLI prints its message without a traceback."""

    exit_code = 1


class UsageError(LivetraderError):
    """Bad arguments or configuration (exit code 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """The configuration file is missing, malformed or inconsistent."""


class StrategyLoadError(UsageError):
    """A strategy module failed to import or declares an invalid strategy."""


class UnknownStrategyError(UsageError):
    """``--strategy`` names no loaded strategy."""


class UnknownSymbolError(UsageError):
    """The candle source does not know the symbol."""


class CandleSourceError(LivetraderError):
    """A candle source could not deliver sound candles (file malformed, exchange down, bad data)."""


class NoCandlesError(UsageError):
    """The requested date range holds no candles."""
