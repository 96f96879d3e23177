"""The status file a running daemon rewrites, and what ``livetrader status`` makes of it.

``<data-dir>/status.json`` is rewritten atomically about once a second: the pid, each
pair's state, open position, last tick and lag, and its errors of the last hour, and how
long the last minute's sweep of every pair took (``last_sweep``). Whether
the daemon still runs is decided by the data-directory lock (it dies with the process),
never by the file alone: a stale file of a killed daemon is shown as such.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from livetrader.core.format import format_time
from livetrader.core.price import MINUTE_MS
from livetrader.errors import StoreError
from livetrader.live.engine import Engine
from livetrader.redaction import redact
from livetrader.store.atomic import read_json, write_json_atomic

STATUS_FILE = "status.json"
# The loop writes the status file, and the stall watcher's thread while the loop cannot.
_WRITING = threading.Lock()
HOUR_MS = 60 * MINUTE_MS


def _order_of(pair: Any) -> dict[str, Any] | None:
    """The order a pair is waiting on (entering/exiting), for the status file; None when none."""
    executor = pair.executor
    order = executor.order if executor is not None else None
    if order is None:
        return None
    return {"client_id": order.client_id, "leg": order.leg, "status": order.status, "filled": order.filled,
            "amount": order.amount, "attempt": order.attempt}


def _protection_of(pair: Any) -> dict[str, Any] | None:
    """What protects the pair's open position on the exchange, for the status file; None in paper
    mode. ``type`` is ``stop_market``, ``stop_limit``, ``none`` (the market takes no stop, or the
    config says off: said at start) or ``unknown``; ``stop`` the current protective stop, if any."""
    executor = pair.executor
    if executor is None:
        return None
    stop = executor.stop if executor.position is not None else None
    return {"type": executor.protection,
            "stop": None if stop is None else {"client_id": stop.client_id, "status": stop.status,
                                               "stop_price": stop.stop_price, "amount": stop.amount,
                                               "attempt": stop.attempt}}


def status_document(engine: Engine, *, state: str = "running") -> dict[str, Any]:
    """What the status file holds."""
    now = engine.clock.now_ms()
    pairs = []
    for p in engine.pairs:
        row = p.row
        errors = [(at, msg) for at, msg in p.recent_errors if at > now - HOUR_MS]
        pairs.append({
            "symbol": p.symbol, "strategy": p.strategy_name, "exchange": p.exchange,
            "state": "degraded" if p.unreconciled else p.state,
            "price": p.price, "signal_id": row.id if row else None, "position": row.position if row else None,
            "price_open": row.price_open if row else None, "take_profit": row.take_profit if row else None,
            "stop_loss": row.stop_loss if row else None, "pending_at": row.pending_at if row else None,
            "last_tick_at": p.last_tick_at, "lag_ms": p.lag_ms, "ticks": p.ticks,
            # From the candle's close (the minute boundary) to the tick done: what a decision waited.
            "decision_lag_ms": p.decision_lag_ms,
            "closed_trades": p.closed_trades, "realised_pnl": p.realised_pnl,
            # Redacted where they are made (Pair.report_error); again here, cheaply (errors are
            # rare), because this file is read by anyone who may read the data directory.
            "errors_last_hour": len(errors), "last_error": redact(errors[-1][1]) if errors else None,
            "accepting": p.accepting,
            "degraded": redact(p.unreconciled or p.degraded or "") or None,
            "mode": p.executor.mode if p.executor is not None else "paper",
            "order": _order_of(p),
            "protection": _protection_of(p),
            "halted": p.halted.as_dict() if p.halted is not None else None,
            "paused": p.paused,  # since when an operator's `livetrader pause` holds it (ms), or None
            # Which code the pair runs, and the reloaded code it takes at its next ask (hot reload).
            "code": p.code_version,
            "code_pending": p.reload_to[1] if p.reload_to is not None else None,
        })
    sweep = engine.metronome.last
    last_sweep = None if sweep is None else {"minute": sweep.minute, "pairs": sweep.pairs, "seconds": sweep.seconds}
    return {"pid": os.getpid(), "state": state, "started_at": engine.started_at, "now": now,
            "written_at": int(time.time() * 1000), "speed": engine.clock.speed, "pairs": pairs,
            "last_sweep": last_sweep, "not_running": engine.not_running, "control": engine.halts.status(),
            "reload": engine.last_reload.as_dict() if engine.last_reload is not None else None,
            # Per exchange whose candles are pushed: the stream's state and counters (market.ccxt.stream).
            "streams": {name: stream.status() for name, stream in engine.streams.items()}}


def write_status(engine: Engine, *, state: str = "running") -> None:
    """Rewrite the status file atomically."""
    doc = status_document(engine, state=state)
    with _WRITING:
        write_json_atomic(engine.data_dir / STATUS_FILE, doc)


def mark_stalled(data_dir: Path, stall: dict[str, Any]) -> None:
    """Add ``stalled`` to the status file: from the stall watcher's thread, while the event loop,
    which writes the file, cannot. Its next write (once it runs again) drops it."""
    path = Path(data_dir) / STATUS_FILE
    with _WRITING:
        try:
            doc = read_json(path)
        except (FileNotFoundError, StoreError):  # stalled before the first status was written
            doc = None
        if not isinstance(doc, dict):
            doc = {"pid": os.getpid(), "state": "running", "pairs": []}
        doc["stalled"] = stall
        doc["written_at"] = int(time.time() * 1000)
        write_json_atomic(path, doc)


def one_line(engine: Engine) -> str:
    """The STATUS= line for systemd: pairs, open positions, last tick."""
    s = engine.summary()
    parked = sum(1 for p in engine.pairs if p.state == "parked")
    text = f"{s['pairs']} pairs, {s['open']} open positions, last tick {format_time(s['last_tick_at'] or None)}"
    return text + (f", {parked} parked" if parked else "")


def halt_lines(halts: list[dict[str, Any]], taken: list[dict[str, Any]] | None) -> list[str]:
    """One line per halt in force: scope, since when, by whom and why, flatten or not; whether the
    running daemon took it yet (``taken``: the halts its status shows; None: no daemon runs)."""
    lines = []
    for h in halts:
        who = h.get("by", "operator") + (f": {h['reason']}" if h.get("reason") else "")
        what = "closing open positions at market" if h.get("flatten") else "open positions still managed"
        scope = "every pair" if h.get("scope") == "all" else f"risk profile {str(h.get('scope'))[8:]}"
        line = f"HALTED ({scope}) since {format_time(h.get('since'))} by {who}; no new entries, {what}"
        if taken is None:
            line += "; no daemon runs: in force from its next start"
        elif not any(t.get("scope") == h.get("scope") and t.get("flatten") == h.get("flatten") for t in taken):
            line += "; not yet taken by the running daemon"
        lines.append(line + ". `livetrader resume` lifts it.")
    return lines


def pid_alive(pid: int) -> bool:
    """True when a process with ``pid`` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_status(data_dir: Path) -> dict[str, Any] | None:
    """The status file with ``alive`` and ``verdict`` added, or None when there is none."""
    from livetrader.store.lock import is_locked

    try:
        doc = read_json(Path(data_dir) / STATUS_FILE)
    except FileNotFoundError:
        return None
    if not isinstance(doc, dict):
        return None
    locked = is_locked(Path(data_dir))
    alive = locked and pid_alive(int(doc.get("pid", 0)))
    if alive:
        verdict = "stalled" if doc.get("stalled") else "running"
    elif doc.get("state") == "stopped":
        verdict = "stopped"
    else:
        verdict = "dead"  # the process ended without writing its final status: killed or crashed
    doc["alive"] = alive
    doc["verdict"] = verdict
    return doc
