"""Profit and loss with fees and slippage (docs/behaviour.md §6)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_FEE_PERCENT = 0.1
DEFAULT_SLIPPAGE_PERCENT = 0.1
DEFAULT_COST = 100.0


@dataclass(slots=True, frozen=True)
class Costs:
    """Trading costs: fee and slippage per side in percent, and the position cost in quote currency."""

    fee_percent: float = DEFAULT_FEE_PERCENT
    slippage_percent: float = DEFAULT_SLIPPAGE_PERCENT
    cost: float = DEFAULT_COST


DEFAULT_COSTS = Costs()


def pnl_percentage(position: str, price_open: float, price_close: float, costs: Costs = DEFAULT_COSTS) -> float:
    """Net PnL in percent of the entry.

    Slippage worsens both fills; the entry fee is charged on the entry notional and the
    exit fee on the exit notional: ``pnl = raw - F * (1 + close'/open')``.
    """
    s = costs.slippage_percent / 100.0
    if position == "long":
        entry = price_open * (1 + s)
        exit_ = price_close * (1 - s)
        raw = (exit_ - entry) / entry * 100.0
    else:
        entry = price_open * (1 - s)
        exit_ = price_close * (1 + s)
        raw = (entry - exit_) / entry * 100.0
    return raw - costs.fee_percent * (1 + exit_ / entry)


def pnl_cost(pnl_percent: float, costs: Costs = DEFAULT_COSTS) -> float:
    """PnL in quote currency for a position of ``costs.cost``."""
    return pnl_percent / 100.0 * costs.cost
