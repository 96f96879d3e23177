"""The two kinds of channel: Telegram's Bot API and a webhook; and where their secrets come from.

Secrets follow the exchanges' rule (``market/ccxt/source.py``): never in the config file; from
the environment (``LIVETRADER_NOTIFY_<NAME>_TOKEN`` for a bot token, ``..._SECRET`` for a webhook's
HMAC key, ``..._URL`` for a webhook URL that is itself a secret, as Discord's and Slack's are), or
from a ``credentials_file`` readable by its owner only (mode 600; TOML, JSON or ``KEY=VALUE``
lines with ``token`` / ``secret`` / ``url``). Each is registered with ``livetrader.redaction`` the
moment it is read, so no log line, status file or message can show it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from livetrader.config import NotifyConfig, notify_env_name
from livetrader.credentials import read_credentials_file
from livetrader.errors import ConfigError
from livetrader.redaction import redact, redact_value, register
from livetrader.service.notify.channel import Channel, Request
from livetrader.service.notify.format import Message

#: Telegram refuses a message longer than 4096 characters; a long error is cut, not lost.
TELEGRAM_MAX_TEXT = 4000
#: The header carrying a webhook body's signature: ``sha256=<hex HMAC-SHA256 of the body>``.
SIGNATURE_HEADER = "X-Livetrader-Signature"


def _read_file(path: Path, where: str) -> dict[str, str]:
    """``token`` / ``secret`` / ``url`` from a credentials file (``livetrader.credentials``: mode 600)."""
    data = read_credentials_file(path, f"credentials_file {path} of {where}")
    found = {}
    for key, value in data.items():
        plain = str(key).lower().replace("-", "_")
        for name in ("token", "secret", "url"):
            if (plain == name or plain.endswith("_" + name)) and isinstance(value, str) and value.strip():
                found[name] = value.strip()
    return found


def load_secrets(config: NotifyConfig, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The channel's secrets (``token``, ``secret``, ``url``) from its credentials file, else the environment;
    each registered for redaction at once."""
    environ = os.environ if environ is None else environ
    where = f"[notify.{config.name}]"
    if config.credentials_file is not None:
        found = _read_file(config.credentials_file, where)
    else:
        prefix = f"LIVETRADER_NOTIFY_{notify_env_name(config.name)}_"
        found = {name: environ.get(prefix + name.upper(), "").strip() for name in ("token", "secret", "url")}
        found = {k: v for k, v in found.items() if v}
    register(found.values())
    return found


def telegram(config: NotifyConfig, environ: Mapping[str, str] | None = None) -> Channel:
    """A channel sending ``sendMessage`` to each of ``chat_ids`` through the Bot API at ``api_url``."""
    token = load_secrets(config, environ).get("token")
    if not token:
        raise ConfigError(f"[notify.{config.name}] needs the bot token: set LIVETRADER_NOTIFY_"
                          f"{notify_env_name(config.name)}_TOKEN, or token = \"...\" in its "
                          "credentials_file (chmod 600)")
    url = f"{config.api_url}/bot{token}/sendMessage"

    def prepare(message: Message) -> list[Request]:
        text = redact(message.text)[:TELEGRAM_MAX_TEXT]
        return [Request(url, json.dumps({"chat_id": chat, "text": text, "disable_web_page_preview": True}).encode(),
                        {"Content-Type": "application/json"}, f"telegram sendMessage to chat {chat}")
                for chat in config.chat_ids]

    return Channel(config, prepare)


def webhook_body(message: Message, template: str) -> dict[str, Any]:
    """The JSON document POSTed: livetrader's own (``json``), or the shape of Discord's or Slack's webhooks."""
    if template == "discord":
        return {"content": message.text[:2000]}  # Discord refuses longer content
    if template == "slack":
        return {"text": message.text}
    return {"event": message.kind, "text": message.text, **message.fields}


def webhook(config: NotifyConfig, environ: Mapping[str, str] | None = None) -> Channel:
    """A channel POSTing one JSON document per message to ``url``, signed when ``sign = true``."""
    secrets = load_secrets(config, environ)
    url = secrets.get("url") or config.url
    if not url:
        raise ConfigError(f"[notify.{config.name}] needs a url: url = \"...\" in the config, LIVETRADER_NOTIFY_"
                          f"{notify_env_name(config.name)}_URL in the environment, or url = \"...\" in its "
                          "credentials_file (a Discord or Slack URL is a secret: not in the config)")
    key = secrets.get("secret")
    if config.sign and not key:
        raise ConfigError(f"[notify.{config.name}] sign = true needs the HMAC key: set LIVETRADER_NOTIFY_"
                          f"{notify_env_name(config.name)}_SECRET, or secret = \"...\" in its "
                          "credentials_file (chmod 600)")

    def prepare(message: Message) -> list[Request]:
        body = json.dumps(redact_value(webhook_body(message, config.template)), default=str).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "livetrader"}
        if config.sign and key:
            headers[SIGNATURE_HEADER] = "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
        return [Request(url, body, headers, f"webhook {message.kind}")]

    return Channel(config, prepare)


def build_channel(config: NotifyConfig, environ: Mapping[str, str] | None = None) -> Channel:
    """The channel ``config`` describes (not started)."""
    if config.type == "telegram":
        return telegram(config, environ)
    return webhook(config, environ)
