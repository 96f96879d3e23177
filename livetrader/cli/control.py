"""``livetrader halt [--flatten]`` and ``livetrader resume`` (docs/behaviour.md §13).

Each appends one record to the data directory's operator journal (durable before anything is
printed), then, when a daemon runs there, waits for it to acknowledge (its status file shows
that it read that far) and says so; with no daemon, the record waits for the next start.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from livetrader.config import require_data_dir
from livetrader.core.format import format_time
from livetrader.core.halt import ALL, halts_in_force, profile_scope
from livetrader.errors import UsageError
from livetrader.store.control import append_control, control_path, read_control

#: Real seconds ``halt``/``resume`` wait for a running daemon to acknowledge.
ACK_SECONDS = 10.0


def _now(data_dir: Path) -> int:
    """Now on the data directory's clock: a ``--speed`` run's simulated timeline, else the wall clock,
    so a record's time compares with the pairs' journals (a daily loss counts from a resume)."""
    from livetrader.live.clock import saved_clock

    clock = saved_clock(data_dir)
    return clock.now_ms() if clock is not None else int(time.time() * 1000)


def halt(data_dir: Path, *, flatten: bool, profile: str | None, reason: str | None,
         ack_seconds: float = ACK_SECONDS) -> int:
    """Journal a halt and report whether a running daemon took it; exit code 0."""
    require_data_dir(data_dir, "halt")
    scope = profile_scope(profile) if profile else ALL
    record: dict[str, Any] = {"event": "halted", "at": _now(data_dir), "scope": scope, "flatten": flatten,
                              "by": "operator", "reason": reason or ""}
    end = append_control(data_dir, record)
    what = "every pair" if scope == ALL else f"the pairs of risk profile {profile}"
    effect = "open positions are closed at market" if flatten else "open positions are still managed (TP/SL/expiry)"
    _say(f"halted {what}: no new entries; {effect}. Journaled in {control_path(data_dir)}.")
    _acknowledged(data_dir, end, ack_seconds, "livetrader resume lifts it")
    return 0


def resume(data_dir: Path, *, profile: str | None, reason: str | None, ack_seconds: float = ACK_SECONDS) -> int:
    """Journal a resume (every halt, or one profile's) and report whether a running daemon took it; exit 0."""
    require_data_dir(data_dir, "resume")
    before = halts_in_force(read_control(data_dir).records)
    scope = profile_scope(profile) if profile else ALL
    if not before or (scope != ALL and scope not in before):
        _say(f"nothing to resume: {'no halt' if scope == ALL else 'no halt of risk profile ' + str(profile)} "
             f"is in force in {data_dir}.")
        return 0
    record = {"event": "resumed", "at": _now(data_dir), "scope": scope, "by": "operator", "reason": reason or ""}
    end = append_control(data_dir, record)
    lifted = sorted(before) if scope == ALL else [scope]
    _say(f"resumed: lifted {', '.join(lifted)}; new entries are taken again. Journaled in {control_path(data_dir)}.")
    _acknowledged(data_dir, end, ack_seconds, "trading resumes")
    return 0


def settle(data_dir: Path, action: str, signal_id: str, *, reason: str | None,
           ack_seconds: float = ACK_SECONDS) -> int:
    """Journal a ``forget`` or ``adopt`` of the open position ``signal_id`` (docs/behaviour.md §12)
    and report whether a running daemon took it; exit code 0. The daemon carries it out at that
    pair's next tick (or at its next start) and logs what it did."""
    require_data_dir(data_dir, f"positions {action}")
    held = open_positions(data_dir)
    if signal_id not in held:
        shown = sorted(held.items())[:10]
        listed = ", ".join(f"{sid} ({where})" for sid, where in shown) or "none"
        if len(held) > len(shown):
            listed += f", and {len(held) - len(shown)} more (livetrader status)"
        raise UsageError(f"no open position with signal id {signal_id!r} in {data_dir} (its journals hold these open "
                         f"positions: {listed}); nothing journaled")
    record = {"event": action, "at": _now(data_dir), "signal_id": signal_id, "by": "operator",
              "reason": reason or ""}
    end = append_control(data_dir, record)
    what = ("closed without selling (its coins are no longer the account's)" if action == "forget"
            else "given the amount the account holds of it")
    _say(f"position {signal_id} is to be {what}. Journaled in {control_path(data_dir)}.")
    _acknowledged(data_dir, end, ack_seconds, f"the position is {'forgotten' if action == 'forget' else 'adopted'}")
    return 0


def open_positions(data_dir: Path) -> dict[str, str]:
    """The open positions the pairs' journals of ``data_dir`` hold: signal id -> the pair."""
    from livetrader.cli.report import journal_pairs

    held: dict[str, str] = {}
    for pair in journal_pairs(data_dir):
        for record in pair.records:
            if record.get("event") == "opened":
                held[str(record["signal_id"])] = f"{pair.symbol} / {pair.strategy} / {pair.exchange}"
            elif record.get("event") in ("closed", "cancelled"):
                held.pop(str(record.get("signal_id")), None)
    return held


def _acknowledged(data_dir: Path, end: int, seconds: float, then: str) -> None:
    """Wait for the running daemon, if any, to read the operator journal up to ``end``; say what happened."""
    from livetrader.store.lock import is_locked, read_lock_holder

    if not is_locked(data_dir):
        _say(f"no daemon runs on {data_dir}: this takes effect when one starts there.")
        return
    holder = read_lock_holder(data_dir)
    pid = holder.pid if holder is not None else None
    deadline = time.monotonic() + seconds
    while True:
        read_to = _daemon_read_to(data_dir, pid)
        if read_to is not None and read_to >= end:
            _say(f"the running daemon (pid {pid}) acknowledged it at {format_time(int(time.time() * 1000))}.")
            return
        if time.monotonic() >= deadline or not is_locked(data_dir):
            break
        time.sleep(0.1)
    if is_locked(data_dir):
        _say(f"the running daemon (pid {pid}) has not acknowledged it within {seconds:g} s (its loop may be busy or "
             f"stalled: see livetrader status); it reads the journal when it comes round, and any later start "
             f"does. Then {then}.")
    else:
        _say("the daemon stopped meanwhile: this takes effect when one starts there.")


def _daemon_read_to(data_dir: Path, pid: int | None) -> int | None:
    """How far the running daemon read the operator journal, from its status file (None: unknown)."""
    from livetrader.service.status import read_status

    try:
        doc = read_status(data_dir)
    except Exception:  # noqa: BLE001 - a status file being replaced, or damaged: look again
        return None
    if doc is None or (pid is not None and doc.get("pid") != pid) or not doc.get("alive"):
        return None
    control = doc.get("control") or {}
    read_to = control.get("read_to")
    return read_to if isinstance(read_to, int) else None


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
