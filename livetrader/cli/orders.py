"""``livetrader orders``: every order of every pair, from the journals (daemon running or not)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

from livetrader import redaction
from livetrader.cli.report import journal_pairs
from livetrader.config import demo_hint
from livetrader.core.format import format_price, format_time
from livetrader.core.orders import orders_of


def order_rows(data_dir: Path) -> list[dict[str, Any]]:
    """One row per order: the pair, the signal, the leg, its client id and what the journal last knew."""
    rows = []
    for pair in journal_pairs(data_dir):
        # Each order in the mode its own intent was made in (an idle pair may change modes).
        modes = {r.get("client_id"): str(r.get("mode", "paper")) for r in pair.records if r["event"] == "order_intent"}
        for order in orders_of(pair.records):
            rows.append({
                "symbol": pair.symbol, "strategy": pair.strategy, "exchange": pair.exchange,
                "mode": modes.get(order.client_id, "paper"),
                "signal_id": order.signal_id, "leg": order.leg, "client_id": order.client_id, "side": order.side,
                "attempt": order.attempt, "amount": order.amount, "status": order.status, "filled": order.filled,
                "average": order.average, "cost": order.cost, "fee_base": order.fee_base,
                "fee_quote": order.fee_quote, "order_id": order.order_id, "intent_at": order.intent_at,
                "reason": order.reason,
            })
    return rows


def run(data_dir: Path, *, as_json: bool) -> int:
    """Print the orders; 0 (even when there are none: paper mode places none)."""
    rows = redaction.redact_value(order_rows(data_dir))
    if as_json:
        sys.stdout.buffer.write(orjson.dumps({"data_dir": str(data_dir), "orders": rows},
                                             option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    if not rows:
        sys.stdout.write(f"No orders in {data_dir}: no pair there ran in sandbox or live mode{demo_hint(data_dir)}.\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=220)
    table = Table()
    for column in ("sent", "pair", "leg", "client id", "side", "amount", "status", "filled", "average", "fees"):
        table.add_column(column)
    for r in rows:
        fees = " + ".join(part for part in (f"{r['fee_base']:g} base" if r["fee_base"] else "",
                                            f"{r['fee_quote']:g} quote" if r["fee_quote"] else "") if part) or "-"
        table.add_row(format_time(r["intent_at"]), f"{r['symbol']} / {r['strategy']} ({r['mode']})",
                      f"{r['leg']} #{r['attempt']}", r["client_id"], r["side"], f"{r['amount']:g}", r["status"],
                      f"{r['filled']:g}", format_price(r["average"]), fees)
    console.print(table)
    return 0
