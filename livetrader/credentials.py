"""The one reader of credentials files: private (mode 600), written as TOML, JSON or ``KEY=VALUE`` lines.

An exchange's API key and secret (``[exchanges.NAME] credentials_file``) and a notification
channel's token, signing key or webhook URL (``[notify.NAME] credentials_file``) can come from such
a file instead of the environment. The file must be a regular file that neither group nor others
can read; a parser's error is reported by position only, never with the text, so no message can
show a secret.
"""

from __future__ import annotations

import json
import stat
import tomllib
from pathlib import Path
from typing import Any

from livetrader.errors import ConfigError


def read_credentials_file(path: Path, where: str) -> dict[str, Any]:
    """The table in ``path`` after checking that only its owner can read it. ``where`` names the
    file (and the config section that points at it) in every message; errors are ConfigError."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist; create it (chmod 600) or remove credentials_file") from None
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise ConfigError(f"{where} is not a regular file")
    if mode & 0o077:
        raise ConfigError(
            f"{where} is accessible by group or others (mode {stat.S_IMODE(mode):o}); refusing to start. "
            f"Run: chmod 600 {path}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{where} cannot be read: {reason}") from None
    data: Any
    suffix = path.suffix.lower()
    if suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:  # its message gives a position only
            raise ConfigError(f"{where}: invalid TOML ({exc})") from None
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: invalid JSON (line {exc.lineno}, column {exc.colno})") from None
    else:
        data = {}
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.removeprefix("export ").partition("=")
            if not sep:
                raise ConfigError(f"{where} line {number}: expected KEY=VALUE")
            data[key.strip()] = value.strip().strip("'\"")
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must hold a table of keys and values")
    return data
