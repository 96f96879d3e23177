"""The configuration: ``config/livetrader.toml`` read with tomllib, checked strictly.

Layout (every key optional; the built-in defaults equal the shipped file)::

    [livetrader]            data_dir, strategies_dir, exchange
    [engine]                fee_percent, slippage_percent, cost, strategy_timeout_seconds,
                            schedule_timeout_minutes, max_events, watchdog_grace_seconds,
                            stall_seconds
    [exchanges.<name>]      free-form table per candle source ([exchanges.sim] seed = 42)
    [risk.<profile>]        max_positions, max_positions_per_symbol, cost, max_daily_loss_percent,
                            capital
    [metrics]               listen, allow_remote (Prometheus /metrics and /health; off when absent)
    [notify.<name>]         type ("telegram" | "webhook"), events, and the channel's own keys

A typo must not silently fall back to a default in a system that trades money, so an
unknown section or key, a wrong type or an out-of-range value is a ConfigError naming the
file, the key and what is expected. Relative paths are relative to the working directory.
``LIVETRADER_DATA_DIR`` in the environment overrides ``data_dir``.
"""

from __future__ import annotations

import difflib
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from livetrader.errors import ConfigError, LivetraderError, UsageError

if TYPE_CHECKING:
    from livetrader.core.machine import Rules

#: Where ``load_config(None)`` looks, relative to the working directory.
DEFAULT_CONFIG_PATH = Path("config/livetrader.toml")
#: Environment variable that overrides ``[livetrader] data_dir``.
DATA_DIR_ENV = "LIVETRADER_DATA_DIR"
#: The data directory when nothing chooses one.
DEFAULT_DATA_DIR = Path("./dump")
#: The data directory of a simulated run (``--speed``, a ``--candles`` replay) when nothing chooses
#: one: a demo's simulated timeline never lands in the directory a real run uses.
DEMO_DATA_DIR = Path("./dump-demo")


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Numbers the engine runs with (docs/behaviour.md §2, §6, §10)."""

    fee_percent: float = 0.1
    slippage_percent: float = 0.1
    cost: float = 100.0
    strategy_timeout_seconds: float = 180.0
    schedule_timeout_minutes: int = 120
    max_events: int = 250
    watchdog_grace_seconds: float = 30.0
    #: Real seconds the event loop may go without coming round (strategy code that blocks it)
    #: before the stall is logged, naming the strategy and its stack.
    stall_seconds: float = 10.0

    def rules(self) -> Rules:
        """The core's decision rules from these numbers: the same for a live pair and a backtest."""
        from livetrader.core.machine import Rules
        from livetrader.core.pnl import Costs

        return Rules(Costs(self.fee_percent, self.slippage_percent, self.cost), self.schedule_timeout_minutes)


@dataclass(frozen=True, slots=True)
class RiskProfileConfig:
    """One ``[risk.<name>]`` profile; a limit left as None is not checked."""

    name: str
    max_positions: int | None = None
    max_positions_per_symbol: int | None = None
    #: Quote units a position of this profile's strategies costs in sandbox/live mode (None: the
    #: strategy's own ``cost``, else ``[engine] cost``).
    cost: float | None = None
    #: Halt the profile's pairs when the day's loss (realised and unrealised, quote currency)
    #: reaches this percent of ``capital`` (docs/behaviour.md §13); None: no daily limit.
    max_daily_loss_percent: float | None = None
    #: Quote currency the profile trades with: what ``max_daily_loss_percent`` is a percent of.
    capital: float | None = None


def _default_exchanges() -> Mapping[str, Mapping[str, Any]]:
    return MappingProxyType({"sim": MappingProxyType({"seed": 42})})


def _default_risk() -> Mapping[str, RiskProfileConfig]:
    # Built in so the shipped example strategies run even without the config file.
    return MappingProxyType({"conservative": RiskProfileConfig("conservative", 3, 1)})


# --- [metrics] and [notify.<name>] (service/metrics.py, service/notify/) -------------------------


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """``[metrics]``: where Prometheus scrapes ``/metrics`` and ``/health``.

    Off unless the section is present: a port is opened only when asked for, and several daemons on
    one host (``livetrader@.service`` instances) must each be given their own.
    """

    listen: str = "127.0.0.1:9464"
    #: A ``listen`` address other than loopback is refused unless this is true (and then warned about).
    allow_remote: bool = False


#: What a channel can be sent (``events = [...]``); all of them when the key is absent.
NOTIFY_EVENTS = ("opened", "closed", "cancelled", "orders", "stops", "reconciliation", "degraded", "halts",
                 "lifecycle", "errors", "daily")
NOTIFY_TYPES = ("telegram", "webhook")
WEBHOOK_TEMPLATES = ("json", "discord", "slack")


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    """One ``[notify.<name>]`` channel. Its secret (the bot token, the HMAC key) is never here: it comes
    from ``LIVETRADER_NOTIFY_<NAME>_TOKEN`` / ``_SECRET`` or a mode-600 ``credentials_file``."""

    name: str
    type: str
    events: tuple[str, ...] = NOTIFY_EVENTS
    #: telegram: the Bot API's base URL (a local server in tests) and the chats to send to.
    api_url: str = "https://api.telegram.org"
    chat_ids: tuple[str, ...] = ()
    #: webhook: where to POST, the body's shape, and whether to sign it (``X-Livetrader-Signature``).
    url: str | None = None
    template: str = "json"
    sign: bool = False
    credentials_file: Path | None = None
    #: Messages waiting for delivery before the oldest is dropped (and counted).
    queue: int = 1000
    timeout_seconds: float = 10.0
    #: Attempts per message on 429/5xx/timeouts; the wait doubles from ``retry_seconds`` (or is
    #: what ``Retry-After`` says), at most ``retry_max_seconds``.
    retries: int = 5
    retry_seconds: float = 1.0
    retry_max_seconds: float = 60.0
    #: Errors are summarised: at most one message per this many seconds, counting what came since.
    error_interval_seconds: float = 300.0


# --- end [metrics] and [notify.<name>] ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration. ``path`` is the file it came from, None for built-in defaults."""

    data_dir: Path = DEFAULT_DATA_DIR
    strategies_dir: Path = Path("./strategies")
    exchange: str = "sim"
    engine: EngineConfig = field(default_factory=EngineConfig)
    exchanges: Mapping[str, Mapping[str, Any]] = field(default_factory=_default_exchanges)
    risk: Mapping[str, RiskProfileConfig] = field(default_factory=_default_risk)
    path: Path | None = None
    #: ``[metrics]``: None (no port opened) unless the section is there.
    metrics: MetricsConfig | None = None
    #: ``[notify.<name>]`` channels by name.
    notify: Mapping[str, NotifyConfig] = field(default_factory=lambda: MappingProxyType({}))

    def exchange_options(self, name: str) -> dict[str, Any]:
        """A mutable copy of ``[exchanges.<name>]``, empty when the section is absent."""
        return dict(self.exchanges.get(name, {}))

    def risk_tables(self) -> dict[str, dict[str, int]]:
        """The risk profiles as plain ``{name: {limit: value}}`` tables, unset limits left out
        (the shape ``livetrader.risk.build_profiles`` takes)."""
        return {
            name: {
                key: value
                for key in ("max_positions", "max_positions_per_symbol")
                if (value := getattr(profile, key)) is not None
            }
            for name, profile in self.risk.items()
        }

    def risk_profile(self, name: str) -> RiskProfileConfig:
        """The risk profile called ``name``; ConfigError with close matches when there is none."""
        profile = self.risk.get(name)
        if profile is not None:
            return profile
        source = self.path or "the built-in defaults"
        close = difflib.get_close_matches(name, list(self.risk), n=3)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else "."
        known = ", ".join(sorted(self.risk)) or "none"
        raise ConfigError(
            f"unknown risk profile '{name}'{hint} Add a [risk.{name}] section to {source} (defined: {known})"
        )


# --- value checks: each returns the converted value or raises ConfigError -------------------

Check = Callable[[Any, "_Where"], Any]


@dataclass(frozen=True, slots=True)
class _Where:
    """The file and dotted key a value came from, for error messages."""

    path: Path | None
    key: str

    def error(self, expected: str, value: Any) -> ConfigError:
        return ConfigError(f"{_source(self.path)}: {self.key} must be {expected}, got {value!r}")


def _source(path: Path | None) -> str:
    return str(path) if path is not None else "config"


def _number(minimum: float, inclusive: bool) -> Check:
    """A finite int or float (bool excluded) at or above (or strictly above) ``minimum``."""
    bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"

    def check(value: Any, where: _Where) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise where.error(f"a number {bound}", value)
        if value < minimum or (not inclusive and value == minimum):
            raise where.error(f"a number {bound}", value)
        return float(value)

    return check


def _positive_int(value: Any, where: _Where) -> int:
    # TOML has real booleans, and True is an int in Python: refuse it explicitly.
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise where.error("an integer > 0", value)
    return value


def _non_empty_str(value: Any, where: _Where) -> str:
    if not isinstance(value, str) or not value.strip():
        raise where.error("a non-empty string", value)
    return value


def _path(value: Any, where: _Where) -> Path:
    return Path(_non_empty_str(value, where))


_LIVETRADER_KEYS: dict[str, Check] = {
    "data_dir": _path,
    "strategies_dir": _path,
    "exchange": _non_empty_str,
}
_ENGINE_KEYS: dict[str, Check] = {
    "fee_percent": _number(0, inclusive=True),
    "slippage_percent": _number(0, inclusive=True),
    "cost": _number(0, inclusive=False),
    "strategy_timeout_seconds": _number(0, inclusive=False),
    "schedule_timeout_minutes": _positive_int,
    "max_events": _positive_int,
    "watchdog_grace_seconds": _number(0, inclusive=False),
    "stall_seconds": _number(0, inclusive=False),
}
_RISK_KEYS: dict[str, Check] = {
    "max_positions": _positive_int,
    "max_positions_per_symbol": _positive_int,
    "cost": _number(0, inclusive=False),
    "max_daily_loss_percent": _number(0, inclusive=False),
    "capital": _number(0, inclusive=False),
}
_SECTIONS = ("livetrader", "engine", "exchanges", "risk", "metrics", "notify")


def _read_table(table: Any, section: str, checks: dict[str, Check], path: Path | None) -> dict[str, Any]:
    """Check every key of one table against ``checks``; unknown keys are errors."""
    where = _Where(path, section)
    if not isinstance(table, dict):
        raise where.error("a table", table)
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key not in checks:
            raise _unknown(path, f"{section}.{key}", [f"{section}.{k}" for k in checks])
        out[key] = checks[key](value, _Where(path, f"{section}.{key}"))
    return out


def _unknown(path: Path | None, key: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]}?" if close else "."
    return ConfigError(f"{_source(path)}: unknown key {key}{hint} Known: {', '.join(known)}")


def _read_exchanges(table: Any, path: Path | None) -> Mapping[str, Mapping[str, Any]]:
    """``[exchanges.<name>]`` tables, kept free-form except the sim seed."""
    where = _Where(path, "exchanges")
    if not isinstance(table, dict):
        raise where.error("a table of [exchanges.<name>] sections", table)
    merged = {name: dict(options) for name, options in _default_exchanges().items()}
    for name, options in table.items():
        if not isinstance(options, dict):
            raise _Where(path, f"exchanges.{name}").error("a table", options)
        merged.setdefault(name, {}).update(options)
    seed = merged["sim"].get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise _Where(path, "exchanges.sim.seed").error("an integer", seed)
    return MappingProxyType({name: MappingProxyType(options) for name, options in merged.items()})


def _read_risk(table: Any, path: Path | None) -> Mapping[str, RiskProfileConfig]:
    """``[risk.<profile>]`` tables; a profile in the file replaces a built-in one of that name."""
    where = _Where(path, "risk")
    if not isinstance(table, dict):
        raise where.error("a table of [risk.<profile>] sections", table)
    profiles = dict(_default_risk())
    for name, options in table.items():
        values = _read_table(options, f"risk.{name}", _RISK_KEYS, path)
        if "max_daily_loss_percent" in values and "capital" not in values:
            # A percent of nothing: the limit could never be judged, and trading would go on unguarded.
            raise ConfigError(f"{_source(path)}: risk.{name}.capital is required with max_daily_loss_percent "
                              f"(the quote currency the profile trades with; the limit is a percent of it)")
        profiles[name] = RiskProfileConfig(name=name, **values)
    return MappingProxyType(profiles)


# --- checks of [metrics] and [notify.<name>] ---


def _bool(value: Any, where: _Where) -> bool:
    if not isinstance(value, bool):
        raise where.error("true or false", value)
    return value


def _one_of(choices: tuple[str, ...]) -> Check:
    def check(value: Any, where: _Where) -> str:
        if value not in choices:
            raise where.error("one of " + ", ".join(repr(c) for c in choices), value)
        return str(value)

    return check


def _strings(choices: tuple[str, ...] | None) -> Check:
    def check(value: Any, where: _Where) -> tuple[str, ...]:
        items = [value] if isinstance(value, str | int) and not isinstance(value, bool) else value
        if not isinstance(items, list) or not items or not all(
                isinstance(v, str | int) and not isinstance(v, bool) for v in items):
            raise where.error("a non-empty list of strings", value)
        out = tuple(str(v) for v in items)
        bad = [v for v in out if choices is not None and v not in choices]
        if bad:
            raise where.error("a list of " + ", ".join(choices or ()), value)
        return out

    return check


def _url(value: Any, where: _Where) -> str:
    text = _non_empty_str(value, where)
    if not text.startswith(("http://", "https://")):
        raise where.error("an http:// or https:// URL", value)
    return text.rstrip("/") if where.key.endswith("api_url") else text


_METRICS_KEYS: dict[str, Check] = {"listen": _non_empty_str, "allow_remote": _bool}
_NOTIFY_KEYS: dict[str, Check] = {
    "type": _one_of(NOTIFY_TYPES),
    "events": _strings(NOTIFY_EVENTS),
    "api_url": _url,
    "chat_ids": _strings(None),
    "url": _url,
    "template": _one_of(WEBHOOK_TEMPLATES),
    "sign": _bool,
    "credentials_file": _path,
    "queue": _positive_int,
    "timeout_seconds": _number(0, inclusive=False),
    "retries": _positive_int,
    "retry_seconds": _number(0, inclusive=False),
    "retry_max_seconds": _number(0, inclusive=False),
    "error_interval_seconds": _number(0, inclusive=False),
}
#: Keys that would put a secret into the config file: refused with a pointer to where it goes.
_NOTIFY_SECRET_KEYS = ("token", "bot_token", "secret", "hmac_secret", "password")


def _read_metrics(table: Any, path: Path | None) -> MetricsConfig | None:
    if table is None:
        return None
    return MetricsConfig(**_read_table(table, "metrics", _METRICS_KEYS, path))


def _read_notify(table: Any, path: Path | None) -> Mapping[str, NotifyConfig]:
    if not isinstance(table, dict):
        raise _Where(path, "notify").error("a table of [notify.<name>] sections", table)
    channels = {}
    for name, options in table.items():
        where = f"notify.{name}"
        if isinstance(options, dict):
            for key in options:
                if key in _NOTIFY_SECRET_KEYS:
                    env = f"LIVETRADER_NOTIFY_{notify_env_name(name)}_{'SECRET' if 'secret' in key else 'TOKEN'}"
                    raise ConfigError(f"{_source(path)}: {where}.{key} is a secret; secrets never go in the config "
                                      f"file. Set {env} in the environment, or credentials_file = \"...\" (chmod 600)")
        values = _read_table(options, where, _NOTIFY_KEYS, path)
        kind = values.get("type")
        if kind is None:
            raise _Where(path, f"{where}.type").error("one of 'telegram', 'webhook'", None)
        if kind == "telegram" and not values.get("chat_ids"):
            raise ConfigError(f"{_source(path)}: {where}.chat_ids is required for a telegram channel "
                              "(the chats the bot writes to)")
        # A webhook without url may take it from LIVETRADER_NOTIFY_<NAME>_URL or its credentials_file
        # (Discord's and Slack's URLs are secrets): checked where those are read (service/notify/senders.py).
        channels[name] = NotifyConfig(name=name, **values)
    return MappingProxyType(channels)


def notify_env_name(name: str) -> str:
    """A channel's name as it appears in its environment variables: ``my-phone`` -> ``MY_PHONE``."""
    return "".join(c if c.isalnum() else "_" for c in name).upper()


def parse_config(data: dict[str, Any], path: Path | None = None) -> Config:
    """Build a Config from an already parsed TOML document, checking every section and key."""
    for section in data:
        if section not in _SECTIONS:
            close = difflib.get_close_matches(section, _SECTIONS, n=1)
            hint = f"; did you mean [{close[0]}]?" if close else "."
            raise ConfigError(
                f"{_source(path)}: unknown section [{section}]{hint} Known: [livetrader], [engine], "
                "[exchanges.<name>], [risk.<profile>], [metrics], [notify.<name>]"
            )
    top = _read_table(data.get("livetrader", {}), "livetrader", _LIVETRADER_KEYS, path)
    engine = _read_table(data.get("engine", {}), "engine", _ENGINE_KEYS, path)
    config = Config(
        engine=EngineConfig(**engine),
        exchanges=_read_exchanges(data.get("exchanges", {}), path),
        risk=_read_risk(data.get("risk", {}), path),
        metrics=_read_metrics(data.get("metrics"), path),
        notify=_read_notify(data.get("notify", {}), path),
        path=path,
        **top,
    )
    return _with_env(config)


def _with_env(config: Config) -> Config:
    """Apply environment overrides: LIVETRADER_DATA_DIR, else systemd's STATE_DIRECTORY
    when the config leaves data_dir at its default."""
    data_dir = os.environ.get(DATA_DIR_ENV, "").strip()
    if not data_dir and config.data_dir == DEFAULT_DATA_DIR:
        # Under systemd, StateDirectory= hands us the place for durable state.
        data_dir = os.environ.get("STATE_DIRECTORY", "").split(":")[0].strip()
    if not data_dir:
        return config
    values = {f.name: getattr(config, f.name) for f in fields(config)}
    values["data_dir"] = Path(data_dir)
    return Config(**values)


def data_dir_chosen(config: Config) -> bool:
    """True when the config or the environment (``LIVETRADER_DATA_DIR``, systemd's ``STATE_DIRECTORY``)
    chose the data directory; a config that leaves it at ``./dump``, as the shipped one does, did not."""
    if config.data_dir != DEFAULT_DATA_DIR:
        return True
    return any(os.environ.get(name, "").strip() for name in (DATA_DIR_ENV, "STATE_DIRECTORY"))


def require_data_dir(data_dir: Path, command: str) -> None:
    """Raise unless ``data_dir`` is a folder this user may look into: UsageError (2) when it does
    not exist, LivetraderError (1) when permission is denied on it or on its path (a service's
    directory read by another user, or ``./dump`` from a working directory this user cannot enter).
    ``command`` (``report``, ``recover``) goes into the hint."""
    try:
        present = Path(data_dir).is_dir()
        if present:
            os.listdir(data_dir)
    except PermissionError:
        raise LivetraderError(
            f"cannot read the data directory {data_dir} (permission denied); run as the user that owns it, e.g. "
            f"sudo -u livetrader livetrader {command} --data-dir {Path(data_dir).absolute()}") from None
    if not present:
        raise UsageError(f"data directory {data_dir} does not exist; pass --data-dir or set LIVETRADER_DATA_DIR"
                         + demo_hint(data_dir))


def demo_hint(data_dir: Path) -> str:
    """A pointer to the demo's directory, for a command that found nothing in the default one."""
    try:
        demo_here = DEMO_DATA_DIR.is_dir()
    except PermissionError:  # a working directory this user cannot look into has no demo for it
        demo_here = False
    if Path(data_dir) == DEFAULT_DATA_DIR and demo_here:
        return f" (a --speed or --candles run without --data-dir keeps its data in {DEMO_DATA_DIR}: pass " \
               "--data-dir dump-demo)"
    return ""


def load_config(path: Path | None = None) -> Config:
    """Load the configuration.

    With ``path`` None, read ``config/livetrader.toml`` under the working directory when it
    exists, else use the built-in defaults; a working directory this user may not look into
    (``sudo -u livetrader livetrader status`` run in root's home) holds no config file for it.
    An explicit ``path`` must exist.
    Raises ConfigError for a missing explicit file, a file that cannot be read, malformed TOML
    (with its line) or any invalid section, key or value.
    """
    if path is None:
        if not _default_config_here():
            return _with_env(Config())
        path = DEFAULT_CONFIG_PATH
    path = Path(path)
    try:
        is_file = path.is_file()
        exists = is_file or path.exists()
    except PermissionError:
        raise ConfigError(f"config file {path} cannot be read: permission denied on a folder of its path; run as "
                          "a user who can read it, or pass another --config") from None
    if not is_file:
        what = "is not a file" if exists else "does not exist"
        raise ConfigError(f"config file {path} {what}; pass an existing file or leave --config out")
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except PermissionError:
        raise ConfigError(f"{path}: cannot be read: permission denied; run as a user who can read it (the "
                          "service's user needs read access to its config), or pass another --config") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    return parse_config(data, path)


def _default_config_here() -> bool:
    """True when ``config/livetrader.toml`` exists under the working directory.

    A working directory (or ``config/``) this user cannot search raises PermissionError on
    the mere check: nothing there is readable, so it holds no config for this process. A
    file that exists but cannot be read is reported when it is opened.
    """
    try:
        return DEFAULT_CONFIG_PATH.is_file()
    except PermissionError:
        return False
