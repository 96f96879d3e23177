"""``livetrader status``: what the daemon of a data directory is doing (or was, when it stopped)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import orjson

from livetrader import redaction
from livetrader.config import demo_hint
from livetrader.core.format import format_duration, format_price, format_time
from livetrader.errors import LivetraderError, StoreReadError
from livetrader.service.status import halt_lines, read_status

#: Exit codes: running, or not (like ``systemctl status``), or unknown: the data directory
#: cannot be read by this user (LSB's "status unknown").
RUNNING, NOT_RUNNING, UNKNOWN = 0, 3, 4
NO_CLEAN_STOP = "no clean stop was recorded (killed, power cut, os._exit or a crash)"


class StatusUnknown(LivetraderError):
    """This user may not read the data directory: whether a daemon runs there is unknown."""

    exit_code = UNKNOWN


def _read(data_dir: Path) -> tuple[dict[str, Any] | None, Any]:
    """The status document, and when there is none the lock's record of a daemon that died
    starting; a directory this user may not read raises :class:`StatusUnknown`."""
    from livetrader.store.lock import is_locked, read_lock_holder

    try:
        doc = read_status(data_dir)
        # No status file yet, but a lock record never cleared: a daemon died during its start.
        holder = None if doc is not None or is_locked(data_dir) else read_lock_holder(data_dir)
    except (PermissionError, StoreReadError) as exc:
        denied = isinstance(exc, PermissionError) or isinstance(exc.__cause__, PermissionError)
        if not denied:
            raise
        raise StatusUnknown(
            f"cannot read the data directory {data_dir} (permission denied), so whether a daemon runs there is "
            f"unknown; run as the user that owns it, e.g. sudo -u livetrader livetrader status --data-dir "
            f"{Path(data_dir).absolute()}") from None
    return doc, holder


def run(data_dir: Path, *, as_json: bool) -> int:
    """Print the status; 0 when a daemon runs, 3 when none does; :class:`StatusUnknown` (4) when
    this user cannot read the data directory."""
    doc, holder = _read(data_dir)
    halts = _halts(data_dir)
    if doc is not None:
        # The daemon redacted what it wrote; this process knows its own secrets too (from the
        # config and the environment, registered by the CLI): what it prints is scrubbed again.
        doc = redaction.redact_value(doc)
    if doc is None:
        if as_json:
            verdict = {"verdict": "never-ran", "alive": False, "data_dir": str(data_dir)}
            if holder is not None:
                verdict.update(verdict="dead", pid=holder.pid, started_at=holder.started_at)
            verdict["halts"] = halts
            sys.stdout.buffer.write(orjson.dumps(verdict))
            sys.stdout.write("\n")
        elif holder is not None:
            sys.stdout.write(f"livetrader in {data_dir}: not running: pid {holder.pid} (started "
                             f"{holder.started_iso}) ended abnormally before its first status: {NO_CLEAN_STOP}.\n")
        else:
            sys.stdout.write(f"No daemon has run in {data_dir} (no status file){demo_hint(data_dir)}.\n")
        if not as_json:
            for line in halt_lines(halts, None):
                sys.stdout.write(line + "\n")
        return NOT_RUNNING
    doc["halts"] = halts
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print_status(doc, data_dir)
    return RUNNING if doc["alive"] else NOT_RUNNING


def _halts(data_dir: Path) -> list[dict[str, Any]]:
    """The halts in force by the operator journal (the truth, whether a daemon runs or not)."""
    from livetrader.core.halt import halts_in_force
    from livetrader.store.control import read_control

    try:
        records = read_control(data_dir).records
    except StoreReadError:
        return []  # the journal's own problems are the daemon's and recover's to report
    return [h.as_dict() for _, h in sorted(halts_in_force(records).items())]


def _stalled(doc: dict[str, Any]) -> str:
    """The verdict of a daemon whose event loop is held: since when, and by what."""
    stall = doc.get("stalled") or {}
    since = stall.get("since") or 0
    held = max(0, int(time.time() * 1000) - since)
    who = (f"strategy {stall['strategy']} on {stall.get('symbol')} ({stall.get('call')})"
           if stall.get("strategy") else "code not inside a strategy call")
    where = f" at {stall['where']}" if stall.get("where") else ""
    return (f"[red]stalled[/red] (pid {doc['pid']}): the event loop has not come round since {format_time(since)} "
            f"({format_duration(held)}): {who} is blocking it{where}; every pair waits (the log has its stack)")


def stream_lines(streams: dict[str, Any]) -> list[str]:
    """One line per exchange whose candles are streamed: its state and counters."""
    return [f"{name} candle stream: {s['state']} ({s['connected']}/{s['connections']} connections, "
            f"{s['symbols']} symbols; {s['candles']} candles, {s['disconnects']} disconnects, {s['stalls']} stalls, "
            f"{s['out_of_sequence']} out of sequence, {s['malformed']} malformed)" for name, s in streams.items()]


def _lag_of(pair: dict[str, Any]) -> Any:
    """The decision lag: the candle's close to the tick done (older status files: to the tick's start)."""
    return pair["decision_lag_ms"] if pair.get("decision_lag_ms") is not None else pair.get("lag_ms")


def print_status(doc: dict[str, Any], data_dir: Path) -> None:
    """A readable account: the verdict first, then one row per pair."""
    from rich.console import Console
    from rich.table import Table

    written = doc.get("written_at") or 0
    age = max(0, int(time.time() * 1000) - written)
    verdict = {
        "running": f"[green]running[/green] (pid {doc['pid']}, status written {format_duration(age)} ago)",
        "stalled": _stalled(doc),
        "stopped": f"stopped cleanly (pid {doc['pid']} wrote its final status at {format_time(written)})",
        "dead": f"[red]not running[/red]: pid {doc['pid']} ended abnormally: {NO_CLEAN_STOP}; "
                f"its last status is from {format_time(written)}. Start it again; recovery is automatic.",
    }[doc["verdict"]]
    # Piped output (scripts, journald) gets full lines rather than an 80-column wrap.
    console = Console() if sys.stdout.isatty() else Console(width=200)
    console.print(f"livetrader in {data_dir}: {verdict}")
    taken = (doc.get("control") or {}).get("halts") if doc.get("alive") else None
    for line in [*halt_lines(doc.get("halts") or [], taken), *stream_lines(doc.get("streams") or {})]:
        console.print(line, highlight=False)
    reload = doc.get("reload")
    if reload:
        console.print(f"last reload at {format_time(reload['at'])}: {reload['changed']} pair(s) take new code at "
                      f"their next ask, {reload['kept']} keep theirs", highlight=False)
        for problem in reload.get("problems") or []:
            console.print(f"  reload problem: {problem}", highlight=False, markup=False)
    sweep = doc.get("last_sweep")
    if sweep and sweep.get("seconds") is not None:
        console.print(f"last minute's sweep: {sweep['pairs']} pairs ticked in {sweep['seconds']:.3f} s")
    table = Table()
    for column in ("pair", "state", "price", "position", "last tick", "lag", "errors (1 h)", "code"):
        table.add_column(column)
    for p in doc.get("pairs", []):
        position = "-"
        if p.get("signal_id"):
            position = (f"{p['position']} @ {format_price(p['price_open'])} "
                        f"TP {format_price(p['take_profit'])} SL {format_price(p['stop_loss'])}")
        lag = format_duration(_lag_of(p))
        errors = str(p.get("errors_last_hour", 0))
        if p.get("last_error"):
            errors += f" (last: {p['last_error'][:60]})"
        state = p["state"]
        if p.get("mode", "paper") != "paper":
            state += f" ({p['mode']})"
        if p.get("paused") and doc.get("alive"):  # a pause ends with its daemon
            state += f", paused since {format_time(p['paused'])} (livetrader resume)"
        if p.get("order"):
            order = p["order"]
            state += f": {order['leg']} {order['client_id']} {order['status']}"
        protection = p.get("protection") or {}
        if protection.get("type") == "none":
            state += ", no stop on the exchange"
        elif protection.get("stop") and p.get("signal_id"):
            stop = protection["stop"]
            state += f", stop {stop['status']}"
        code = p.get("code") or "-"
        if p.get("code_pending"):
            code += f" (next ask: {p['code_pending']})"
        table.add_row(f"{p['symbol']} / {p['strategy']} / {p['exchange']}", state, format_price(p.get("price")),
                      position, format_time(p.get("last_tick_at")), lag, errors, code)
    console.print(table)
