"""``livetrader status``: what the daemon of a data directory is doing (or was, when it stopped)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import orjson

from livetrader.config import demo_hint
from livetrader.status import read_status

#: Exit codes: running, or not (like ``systemctl status``).
RUNNING, NOT_RUNNING = 0, 3


def run(data_dir: Path, *, as_json: bool) -> int:
    """Print the status; 0 when a daemon runs, 3 when none does."""
    doc = read_status(data_dir)
    if doc is None:
        if as_json:
            sys.stdout.buffer.write(orjson.dumps({"verdict": "never-ran", "alive": False, "data_dir": str(data_dir)}))
            sys.stdout.write("\n")
        else:
            sys.stdout.write(f"No daemon has run in {data_dir} (no status file){demo_hint(data_dir)}.\n")
        return NOT_RUNNING
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print_status(doc, data_dir)
    return RUNNING if doc["alive"] else NOT_RUNNING


def print_status(doc: dict[str, Any], data_dir: Path) -> None:
    """A readable account: the verdict first, then one row per pair."""
    from rich.console import Console
    from rich.table import Table

    from livetrader.cli import iso
    from livetrader.report import format_price

    written = doc.get("written_at") or 0
    age = max(0.0, time.time() - written / 1000)
    verdict = {
        "running": f"[green]running[/green] (pid {doc['pid']}, status written {age:.0f} s ago)",
        "stopped": f"stopped cleanly (pid {doc['pid']} wrote its final status at {iso(written)})",
        "dead": f"[red]not running[/red]: pid {doc['pid']} ended without a clean stop (killed or crashed); "
                f"its last status is from {iso(written)}. Start it again; recovery is automatic.",
    }[doc["verdict"]]
    # Piped output (scripts, journald) gets full lines rather than an 80-column wrap.
    console = Console() if sys.stdout.isatty() else Console(width=200)
    console.print(f"livetrader in {data_dir}: {verdict}")
    sweep = doc.get("last_sweep")
    if sweep and sweep.get("seconds") is not None:
        console.print(f"last minute's sweep: {sweep['pairs']} pairs ticked in {sweep['seconds']:.3f} s")
    table = Table()
    for column in ("pair", "state", "price", "position", "last tick", "lag", "errors (1 h)"):
        table.add_column(column)
    for p in doc.get("pairs", []):
        position = "-"
        if p.get("signal_id"):
            position = (f"{p['position']} @ {format_price(p['price_open'])} "
                        f"TP {format_price(p['take_profit'])} SL {format_price(p['stop_loss'])}")
        lag = f"{p['lag_ms'] / 1000:.1f} s" if p.get("lag_ms") is not None else "-"
        errors = str(p.get("errors_last_hour", 0))
        if p.get("last_error"):
            errors += f" (last: {p['last_error'][:60]})"
        table.add_row(f"{p['symbol']} / {p['strategy']} / {p['exchange']}", p["state"], format_price(p.get("price")),
                      position, iso(p.get("last_tick_at")), lag, errors)
    console.print(table)
