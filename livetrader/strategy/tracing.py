"""Describe a strategy's exception by where it happened in the user's own code."""

from __future__ import annotations

import traceback
from pathlib import Path

from livetrader.redaction import redact

# The livetrader package (this file is in livetrader/strategy/): frames inside it are not the user's.
_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)


def is_user_file(name: str) -> bool:
    """True for a file of the user's code: not livetrader's, not the stdlib's or an installed package's."""
    return not (name.startswith((_PACKAGE_DIR, "<")) or "/lib/python" in name)


def user_frame(exc: BaseException) -> str | None:
    """``path:line`` of the innermost traceback frame outside livetrader and the stdlib, if any."""
    found = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if is_user_file(frame.filename):
            found = f"{frame.filename}:{frame.lineno}"
    return found


def describe(exc: BaseException) -> str:
    """``Type: message (at path:line)`` for a log line or an error event, secrets redacted."""
    where = user_frame(exc)
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return redact(f"{text} (at {where})" if where else text)
