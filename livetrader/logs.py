"""The one logging API of livetrader: ``log = get_logger(__name__)``, then ``log.info("event", key=value)``.

Every module logs through structlog, key-values style, and :func:`livetrader.service.console.configure_logging`
configures it in exactly one place (JSON lines off a terminal, the console renderer on one, secret
redaction on every line). Third-party libraries that log with the standard ``logging`` module (ccxt,
asyncio) are routed by that same configuration into the same renderer and redaction; livetrader
itself never logs through ``logging`` (the ccxt source only adds a redacting filter to ccxt's).

Why not ``structlog.get_logger`` directly: importing structlog imports rich (``structlog.dev``
probes for it), about 0.1 s, and modules that users import (``livetrader.events``) or that the CLI
imports to answer ``--help`` must stay light. The logger handed out here imports structlog on its
first call, and every call follows the configuration of that moment (tests and ``livetrader
run`` configure after modules are imported). Each line carries the module as its ``logger`` field.

This module imports nothing of livetrader: everything may use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

__all__ = ["get_logger"]


class _DeferredLogger:
    """Stands in for a structlog logger until the first call; see the module docstring."""

    __slots__ = ("_initial",)

    def __init__(self, initial: dict[str, Any]) -> None:
        self._initial = initial

    def __getattr__(self, name: str) -> Any:
        import structlog

        # Bound per call, on the configuration of the moment. (structlog.get_logger(logger=...)
        # is not an option: `logger` clashes with the name of wrap_logger's first parameter.)
        return getattr(structlog.get_logger().bind(**self._initial), name)

    def __repr__(self) -> str:
        return f"<logger {self._initial.get('logger', '(root)')}>"


def get_logger(name: str | None = None) -> FilteringBoundLogger:
    """A structlog logger; ``name`` (typically ``__name__``) is logged as the ``logger`` field.

    Cheap to call at import time: structlog is imported on the first log call. Each call uses
    the configuration current at that moment. ``.bind()`` fixes the configuration of the moment
    in the logger it returns, so bind after ``configure_logging``, or use
    ``structlog.contextvars.bound_contextvars`` (merged into every line) for per-task context.
    """
    return cast("FilteringBoundLogger", _DeferredLogger({"logger": name} if name else {}))
