"""The one registry of secrets every output path scrubs.

Secrets (an exchange's API key, secret and password) are registered once, as soon as they are
known: when a command has loaded its configuration (``sources.register_secrets``, before any
strategy module is imported) and when a ccxt source is built with its credentials. Every
path that turns something into text a person or a file can see calls :func:`redact`: the
log renderer, a pair's error (its event, ``last_error``, the status file), ``livetrader
status``, the CLI's error message, reports, and the ccxt source's own messages and log records.

A secret is replaced by ``***`` as written and in the forms it takes on the way out: URL-encoded
(a request URL in an exchange's error), escaped as Python's ``repr`` and JSON escape it (an
exception's repr, a JSON document). :func:`redact` costs one substring search per registered form
and runs on messages (errors, log lines, documents), never on every tick.

This module imports nothing of livetrader: everything may use it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

__all__ = ["MIN_SECRET_LENGTH", "REDACTED", "clear", "redact", "redact_value", "register", "secrets"]

#: What replaces a secret wherever it appears.
REDACTED = "***"
#: Shorter strings are not treated as secrets: redacting "abc" would mangle ordinary text.
MIN_SECRET_LENGTH = 4
# Deeper than this, containers are redacted through their repr: it bounds the walk on cyclic data.
_MAX_DEPTH = 8

# Every registered form, longest first so a secret that contains another is replaced whole.
# Replaced as a whole tuple (never mutated), so a reader on another thread sees a consistent set.
_forms: tuple[str, ...] = ()
_lock = threading.Lock()


def _forms_of(secret: str) -> set[str]:
    """``secret`` as written, URL-encoded, and as ``repr`` and JSON escape it inside quotes."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret), repr(secret)[1:-1], json.dumps(secret)[1:-1]}
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}


def register(values: Iterable[Any]) -> None:
    """Register secrets to be replaced by ``***`` in every output from now on.

    Values shorter than 4 characters, and non-strings, are ignored. Registering is cumulative,
    idempotent and thread-safe; call it as soon as a secret is loaded, before anything can
    print it.
    """
    global _forms
    new: set[str] = set()
    for value in values:
        if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH:
            new |= _forms_of(value)
    if not new or new <= set(_forms):
        return
    with _lock:
        _forms = tuple(sorted(set(_forms) | new, key=len, reverse=True))


def clear() -> None:
    """Forget every registered secret (for tests that must not leak state into each other)."""
    global _forms
    with _lock:
        _forms = ()


def secrets() -> tuple[str, ...]:
    """Every registered form of every secret, longest first."""
    return _forms


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    for form in _forms:
        if form in text:
            text = text.replace(form, REDACTED)
    return text


def redact_value(value: Any, depth: int = 0) -> Any:
    """``value`` with every string in it redacted: dicts, lists, tuples and sets recursively.

    Anything else (an exception, an exchange object, bytes) is returned as its redacted repr
    when that repr holds a secret (the repr is the text that would carry it), else unchanged.
    """
    if not _forms:  # the common case outside production: no walk at all
        return value
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth < _MAX_DEPTH:
        if isinstance(value, Mapping):
            return {redact_value(k, depth + 1): redact_value(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple):
            items = [redact_value(v, depth + 1) for v in value]
            return items if isinstance(value, list) else tuple(items)
        if isinstance(value, set | frozenset):
            return {redact_value(v, depth + 1) for v in value}
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not break the output that called us
        return value
    cleaned = redact(text)
    return value if cleaned == text else cleaned
