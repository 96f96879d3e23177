"""An ``[exchanges.<name>]`` table of a ccxt exchange, checked (``parse_settings``), and its
credentials (``load_credentials``): what ``livetrader.market.ccxt.source`` documents, read here,
apart from the source, so that every command can register the secrets it might print
(``market.sources.register_secrets``) without importing the candle source.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from livetrader.credentials import read_credentials_file
from livetrader.errors import ConfigError

#: Keys an ``[exchanges.<name>]`` table of a ccxt exchange may hold.
SETTING_KEYS = (
    "ccxt_id", "options", "urls", "timeout_ms", "rate_limit_ms", "max_retries", "retry_base_seconds",
    "retry_max_seconds", "page_limit", "sandbox", "credentials_file", "mode", "unknown_order_minutes",
    "protective_stop", "stop_limit_gap_percent", "stop_check_minutes", "reconcile_minutes",
    "candles", "stream_stall_seconds",
)
#: Keys that would put a secret into the config file (compared lower-case, without ``_`` and ``-``).
_SECRET_KEYS = frozenset({
    "apikey", "key", "secret", "apisecret", "secretkey", "password", "passphrase", "privatekey", "token",
})

# --- settings -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CcxtSettings:
    """An ``[exchanges.<name>]`` table of a ccxt exchange, checked (see the module docstring)."""

    ccxt_id: str
    options: Mapping[str, Any]
    api_base: str | None = None
    timeout_ms: int | None = None
    rate_limit_ms: float | None = None
    max_retries: int = 4
    retry_base_seconds: float = 0.5
    retry_max_seconds: float = 8.0
    page_limit: int | None = None
    sandbox: bool = False
    credentials_file: Path | None = None
    #: ``paper``, ``sandbox`` or ``live`` (docs/behaviour.md §12); ``sandbox`` implies the test network.
    mode: str = "paper"
    unknown_order_minutes: float = 10.0
    #: The protective stop of open positions (docs/behaviour.md §12): ``auto`` (stop-market where
    #: the market takes one, else stop-limit), ``market``, ``limit`` or ``off``.
    protective_stop: str = "auto"
    stop_limit_gap_percent: float = 0.5
    stop_check_minutes: float = 1.0
    reconcile_minutes: float = 15.0
    #: ``stream`` (closed candles pushed over the exchange's WebSocket, where supported) or ``poll`` (REST).
    candles: str = "stream"
    #: The stream's root URL (``urls.stream_base``), None for the exchange's own.
    stream_base: str | None = None
    #: Real seconds a connected stream may stay silent before it counts as stalled and reconnects.
    stream_stall_seconds: float = 30.0

    @property
    def test_network(self) -> bool:
        """True when requests go to the exchange's sandbox: ``sandbox = true`` or ``mode = "sandbox"``."""
        return self.sandbox or self.mode == "sandbox"


def env_prefix(name: str) -> str:
    """``LIVETRADER_<NAME>_``: the name upper-cased, anything not alphanumeric as ``_``."""
    return "LIVETRADER_" + re.sub(r"[^A-Z0-9]", "_", name.upper()) + "_"


def _plain_key(key: str) -> str:
    return re.sub(r"[_\-\s]", "", key.lower())


def parse_settings(name: str, table: Mapping[str, Any], source: str = "config") -> CcxtSettings:  # noqa: C901 - one branch per setting, each with its own error message
    """Check ``[exchanges.<name>]``; ConfigError naming ``source``, the key and what is expected.

    A credential in the table is refused: config files get copied, committed and shared.
    """
    where = f"{source}: [exchanges.{name}]"
    prefix = env_prefix(name)
    for key, value in table.items():
        nested = value.keys() if key == "options" and isinstance(value, Mapping) else ()
        for k in (key, *nested):
            if _plain_key(str(k)) in _SECRET_KEYS:
                raise ConfigError(
                    f"{where} holds a credential ({k}); credentials never go in the config file. Set "
                    f"{prefix}API_KEY and {prefix}SECRET in the environment, or name a file readable only by "
                    f"you with credentials_file = \"...\" (chmod 600)"
                )
        if key not in SETTING_KEYS:
            close = difflib.get_close_matches(key, SETTING_KEYS, n=1)
            hint = f"; did you mean {close[0]}?" if close else "."
            raise ConfigError(f"{where}: unknown key {key}{hint} Known: {', '.join(SETTING_KEYS)}")

    def error(key: str, expected: str) -> ConfigError:
        return ConfigError(f"{where} {key} must be {expected}, got {table[key]!r}")

    def number(key: str, default: float | None, minimum: float, strict: bool = False) -> float | None:
        if key not in table:
            return default
        value = table[key]
        bad = isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
        if bad or value < minimum or (strict and value == minimum):
            raise error(key, f"a number {'>' if strict else '>='} {minimum:g}")
        return float(value)

    def integer(key: str, default: int | None, minimum: int) -> int | None:
        if key not in table:
            return default
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise error(key, f"an integer >= {minimum}")
        return value

    ccxt_id = table.get("ccxt_id", name)
    if not isinstance(ccxt_id, str) or not ccxt_id.strip():
        raise error("ccxt_id", "a ccxt exchange id such as \"binance\"")
    options = table.get("options", {})
    if not isinstance(options, Mapping):
        raise error("options", "a table (the ccxt constructor's options)")
    urls = table.get("urls", {})
    if not isinstance(urls, Mapping):
        raise error("urls", "a table such as { api_base = \"http://127.0.0.1:8080\" }")
    for key in urls:
        if key not in ("api_base", "stream_base"):
            raise ConfigError(f"{where} urls: unknown key {key}; only api_base and stream_base are supported")

    def url(key: str, schemes: tuple[str, str], example: str) -> str | None:
        value = urls.get(key)
        if value is not None and (not isinstance(value, str) or urlsplit(value).scheme not in schemes
                                  or not urlsplit(value).netloc):
            raise ConfigError(f"{where} urls.{key} must be a {schemes[0]}(s) URL such as \"{example}\", "
                              f"got {value!r}")
        return value

    stream_base = url("stream_base", ("ws", "wss"), "ws://127.0.0.1:8765")
    candles = table.get("candles", "stream")
    if candles not in ("stream", "poll"):
        raise error("candles", '"stream" (the exchange pushes closed candles over a WebSocket) or "poll" (REST)')
    stall = number("stream_stall_seconds", 30.0, 0.0, strict=True)
    assert stall is not None
    api_base = url("api_base", ("http", "https"), "http://127.0.0.1:8080")
    sandbox = table.get("sandbox", False)
    if not isinstance(sandbox, bool):
        raise error("sandbox", "true or false")
    credentials_file = table.get("credentials_file")
    if credentials_file is not None and (not isinstance(credentials_file, str) or not credentials_file.strip()):
        raise error("credentials_file", "a file path")
    base = number("retry_base_seconds", 0.5, 0.0)
    cap = number("retry_max_seconds", 8.0, 0.0)
    unknown_minutes = number("unknown_order_minutes", 10.0, 0.0, strict=True)
    assert base is not None and cap is not None and unknown_minutes is not None
    stop_kind = table.get("protective_stop", "auto")
    if stop_kind not in ("auto", "market", "limit", "off"):
        raise error("protective_stop", '"auto", "market" (stop-market), "limit" (stop-limit) or "off"')
    gap = number("stop_limit_gap_percent", 0.5, 0.0, strict=True)
    check = number("stop_check_minutes", 1.0, 0.0, strict=True)
    every = number("reconcile_minutes", 15.0, 0.0, strict=True)
    assert gap is not None and check is not None and every is not None
    if gap >= 100:
        raise error("stop_limit_gap_percent", "a percentage above 0 and below 100")
    mode = table.get("mode", "paper")
    if mode not in ("paper", "sandbox", "live"):
        raise error("mode", '"paper" (no orders), "sandbox" (orders on the test network) or "live" (real orders)')
    return CcxtSettings(
        ccxt_id=ccxt_id.strip(),
        options=dict(options),
        api_base=api_base.rstrip("/") if api_base else None,
        timeout_ms=integer("timeout_ms", None, 1),
        rate_limit_ms=number("rate_limit_ms", None, 0.0),
        max_retries=integer("max_retries", 4, 0) or 0,
        retry_base_seconds=base,
        retry_max_seconds=cap,
        page_limit=integer("page_limit", None, 1),
        sandbox=sandbox,
        credentials_file=Path(credentials_file) if credentials_file else None,
        mode=mode,
        unknown_order_minutes=unknown_minutes,
        protective_stop=stop_kind,
        stop_limit_gap_percent=gap,
        stop_check_minutes=check,
        reconcile_minutes=every,
        candles=candles,
        stream_base=stream_base.rstrip("/") if stream_base else None,
        stream_stall_seconds=stall,
    )


# --- credentials ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class Credentials:
    """An API key and its secret (and a password, for exchanges that want one). Never printed."""

    api_key: str
    secret: str
    password: str | None = None

    def __repr__(self) -> str:
        return "Credentials(api_key='***', secret='***'" + (", password='***')" if self.password else ")")

    __str__ = __repr__

    def secrets(self) -> tuple[str, ...]:
        """Every value to hide from messages."""
        return tuple(v for v in (self.api_key, self.secret, self.password) if v)

    def ccxt_config(self) -> dict[str, str]:
        """The ccxt constructor's credential keys."""
        config = {"apiKey": self.api_key, "secret": self.secret}
        if self.password:
            config["password"] = self.password
        return config


def _credential_field(key: str) -> str | None:
    """Which credential a key of a credentials file or env file names (``API_KEY``, ``apiKey``, ...)."""
    plain = _plain_key(key)
    if plain.endswith("apikey") or plain == "key":
        return "api_key"
    if plain.endswith(("secret", "secretkey")):
        return "secret"
    if plain.endswith(("password", "passphrase")):
        return "password"
    return None


def _read_credentials_file(path: Path, name: str) -> dict[str, str]:
    """The API key and secret in ``path`` (``livetrader.credentials``: mode 600, TOML, JSON or lines)."""
    where = f"credentials_file {path} of [exchanges.{name}]"
    data = read_credentials_file(path, where)
    found: dict[str, str] = {}
    for key, value in data.items():
        which = _credential_field(str(key))
        if which is None:
            continue
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {key} must be a string")
        found[which] = value.strip()
    return found


def load_credentials(name: str, settings: CcxtSettings, environ: Mapping[str, str] | None = None) -> Credentials | None:
    """The credentials of exchange ``name``: from ``credentials_file`` when set, else the environment.

    None when there are none (candles need none). ConfigError for a credentials file readable by
    others, unreadable or incomplete, and for a key without its secret (or the reverse).
    """
    environ = os.environ if environ is None else environ
    prefix = env_prefix(name)
    if settings.credentials_file is not None:
        values = _read_credentials_file(settings.credentials_file, name)
        origin = f"credentials_file {settings.credentials_file}"
    else:
        values = {
            field: environ.get(prefix + suffix, "").strip()
            for field, suffix in (("api_key", "API_KEY"), ("secret", "SECRET"), ("password", "PASSWORD"))
        }
        origin = f"the environment ({prefix}API_KEY, {prefix}SECRET)"
    api_key, secret = values.get("api_key", ""), values.get("secret", "")
    if not api_key and not secret:
        if settings.credentials_file is not None:
            raise ConfigError(f"{origin} of [exchanges.{name}] holds no apiKey and secret")
        return None
    if not api_key or not secret:
        missing = "the secret" if api_key else "the API key"
        raise ConfigError(f"{origin} gives only one of API key and secret for {name}; add {missing}")
    return Credentials(api_key, secret, values.get("password") or None)


#: The environment variables that hold credentials, whatever the exchange: ``LIVETRADER_<NAME>_API_KEY``...
_CREDENTIAL_VARIABLE = re.compile(r"LIVETRADER_[A-Z0-9_]+_(API_KEY|SECRET|PASSWORD)")


def environment_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """The values of every credential variable in the environment, of any exchange, configured or not."""
    environ = os.environ if environ is None else environ
    return [value.strip() for key, value in environ.items() if _CREDENTIAL_VARIABLE.fullmatch(key)]
