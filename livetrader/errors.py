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


class TimelineMismatch(UsageError):
    """The data directory was written on another clock: a ``--speed`` demo's simulated one, or the real one."""


class CandleSourceError(LivetraderError):
    """A candle source could not deliver sound candles (file malformed, exchange down, bad data)."""


class NoCandlesError(UsageError):
    """The requested date range holds no candles."""


class StoreError(LivetraderError):
    """A file in the data directory could not be read or written."""


class StoreReadError(StoreError):
    """A durable file is unreadable or not valid JSON; callers quarantine it rather than guess.

    ``path`` is the file (a ``Path`` or ``str``), ``reason`` the short cause.
    """

    def __init__(self, path: object, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot read {path}: {reason}")


class StoreWriteError(StoreError):
    """A durable write failed (disk full, read-only filesystem, ...); ``reason`` says what was kept."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"cannot write {path}: {reason}; free disk space or fix the filesystem (permissions, read-only "
            "mount), then restart"
        )


class DataDirLocked(StoreError):
    """Another live process holds the data directory lock (exit code 1).

    ``directory`` is the data directory, ``pid`` the holder's pid when it could be read.
    """

    def __init__(self, message: str, directory: object, pid: int | None = None) -> None:
        self.directory = directory
        self.pid = pid
        super().__init__(message)


class MetricsPortError(LivetraderError):
    """The ``[metrics]`` port could not be opened: taken by another process, or not an address of
    this machine (exit code 1)."""
