"""livetrader: a crash-safe live trading daemon, one supervised loop per (symbol, strategy) pair.

What a strategy module needs::

    from livetrader import Strategy, Signal
    from livetrader import Exit, Levels      # what ``manage`` may answer (steering an open position)

This package import stays light (no ccxt, rich, typer or engine) because every strategy
module and every CLI call pays for it; ``Live`` is imported only when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from livetrader.core.manage import Exit, Held, Levels
from livetrader.core.signal import Signal
from livetrader.strategy.base import Strategy
from livetrader.strategy.context import Context

if TYPE_CHECKING:
    from livetrader.live.api import Live

__version__ = "0.1.0"

__all__ = ["Context", "Exit", "Held", "Levels", "Live", "Signal", "Strategy", "__version__"]


def __getattr__(name: str) -> Any:
    """Import ``Live`` on first use so ``import livetrader`` never loads the engine."""
    if name == "Live":
        from livetrader.live.api import Live

        return Live
    raise AttributeError(f"module 'livetrader' has no attribute {name!r}")
