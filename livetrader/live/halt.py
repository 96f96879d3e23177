"""The running daemon's side of stopping trading (docs/behaviour.md §13).

``Halts`` reads the operator journal (``store.control``) at start, before any strategy is asked,
then notices each new record within a fraction of a second (a ``stat`` of the file, not a read
per tick), and sets ``Pair.halted`` on every pair concerned; the pairs do the rest. It also keeps
the day's PnL of each risk profile that sets ``max_daily_loss_percent`` and halts that profile's
pairs (a journaled record) when the loss reaches the limit (``core.halt.daily_loss`` decides).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livetrader.core.halt import ALL, Halt, daily_loss, day_start, halt_of, halts_in_force, last_resume, profile_scope
from livetrader.core.price import MINUTE_MS
from livetrader.core.signal import TickResult
from livetrader.errors import StoreError
from livetrader.events import ErrorEvent, EventBus
from livetrader.live.pair import Pair
from livetrader.logs import get_logger
from livetrader.store.control import POSITION_EVENTS, append_control, control_path, read_control

log = get_logger(__name__)

#: Real seconds between two looks at the operator journal (and at the daily losses).
POLL_SECONDS = 0.25


@dataclass(slots=True, frozen=True)
class DailyLimit:
    """A risk profile's ``max_daily_loss_percent`` and the ``capital`` it is a percent of."""

    limit_percent: float
    capital: float


class Halts:
    """The halts in force on one data directory, applied to the pairs of one engine."""

    def __init__(self, data_dir: Path, now: Callable[[], int], bus: EventBus,
                 limits: dict[str, DailyLimit] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.now = now
        self.bus = bus
        self.limits = limits or {}
        self.records: list[dict[str, Any]] = []
        #: How far the operator journal was read (bytes): what ``livetrader halt`` waits for in status.json.
        self.read_to = 0
        self.in_force: dict[str, Halt] = {}
        self.pairs: list[Pair] = []
        self._seen: tuple[int, int, int] | None = None
        # Per limited profile: (closed at, quote PnL) of the positions closed today.
        self._closed: dict[str, list[tuple[int, float]]] = {name: [] for name in self.limits}

    # --- reading the journal ----------------------------------------------------------------

    def start(self, pairs: Iterable[Pair]) -> None:
        """Read the whole operator journal and halt the pairs concerned; count today's closed
        positions of the limited profiles from their journals; listen for their closes."""
        self.pairs = list(pairs)
        self.poll(force=True)
        for pair in self.pairs:
            profile = pair.risk.name if pair.risk is not None else None
            if profile not in self.limits:
                continue
            assert profile is not None
            if pair.store is not None:
                start = day_start(self.now())
                self._closed[profile] += [(int(r["at"]), float(r.get("pnl_cost") or 0.0)) for r in pair.store.records()
                                          if r.get("event") == "closed" and int(r["at"]) >= start]
            pair.listeners.append(self._listener(profile))
        self.check_losses()

    def poll(self, *, force: bool = False) -> bool:
        """Read what was appended to the operator journal since the last look, if anything was
        (one ``stat``); apply the halts in force. True when something new was read."""
        try:
            info = os.stat(control_path(self.data_dir))
            seen = (info.st_ino, info.st_size, info.st_mtime_ns)
        except FileNotFoundError:
            seen = (0, 0, 0)
        except OSError as exc:
            log.warning("cannot look at the operator journal", error=str(exc))
            return False
        if seen == self._seen and not force:
            return False
        try:
            read = read_control(self.data_dir, self.read_to)
        except StoreError as exc:
            log.warning("cannot read the operator journal", error=str(exc))
            return False
        self._seen = seen
        for problem in read.problems:
            log.warning("operator journal: bad line", problem=problem)
        self.read_to = read.end
        if not read.records and not force:
            return False
        first = not self.records and force
        for record in read.records:
            if record.get("event") in POSITION_EVENTS:
                self._settle(record, at_start=first)
        self.records += read.records
        self._apply(halts_in_force(self.records))
        return True

    def _settle(self, record: dict[str, Any], *, at_start: bool) -> None:
        """Hand a ``forget``/``adopt`` to the pair holding that open position (it acts at its next
        tick). At start, a record whose effect the pair's journal holds already is not redone."""
        signal_id = record.get("signal_id")
        pair = next((p for p in self.pairs if p.executor is not None and p.row is not None and p.row.id == signal_id
                     and p.row.pending_at is not None), None)
        if pair is None:
            if not at_start:
                log.warning("no open position with this signal id in sandbox/live mode: nothing to "
                            f"{record.get('event')}", signal_id=signal_id)
            return
        if at_start and pair.store is not None and any(
                r.get("event") == "position_adopted" and _answers(r, record) for r in pair.store.records()):
            return  # adopted already, before the last stop
        assert pair.executor is not None
        others = [p for p in self.pairs if p.executor is not None and p.executor.broker is pair.executor.broker]
        pair.settle = (record, others)
        log.warning(f"position {record.get('event')} requested", signal_id=signal_id, symbol=pair.symbol,
                    strategy=pair.strategy_name, reason=record.get("reason") or None)

    def _apply(self, halts: dict[str, Halt]) -> None:
        """Make ``halts`` the ones in force: each pair obeys its own; say what changed."""
        before, self.in_force = self.in_force, halts
        for scope in sorted(before.keys() - halts.keys()):
            log.warning("trading resumed", scope=scope)
        for scope, halt in sorted(halts.items()):
            old = before.get(scope)
            if old is None or old.flatten != halt.flatten:
                pairs = sum(1 for p in self.pairs if scope == ALL or self._profile(p) == scope)
                log.warning("trading halted: no new entries" + (", open positions closed at market"
                                                                  if halt.flatten else ", open positions managed"),
                            scope=scope, by=halt.by, reason=halt.reason, flatten=halt.flatten, since=halt.since,
                            pairs=pairs)
        for pair in self.pairs:
            pair.halted = halt_of(halts, pair.risk.name if pair.risk is not None else None)

    @staticmethod
    def _profile(pair: Pair) -> str | None:
        return profile_scope(pair.risk.name) if pair.risk is not None else None

    async def watch(self) -> None:
        """Look at the operator journal and the daily losses every ``POLL_SECONDS``, until cancelled."""
        while True:
            await asyncio.sleep(POLL_SECONDS)
            self.poll()
            self.check_losses()

    # --- the daily loss limit ---------------------------------------------------------------

    def _listener(self, profile: str) -> Callable[[TickResult], None]:
        closed = self._closed[profile]

        def on_result(result: TickResult) -> None:
            if result.action != "closed":
                return
            closed.append((result.at, float(result.pnl_cost or 0.0)))
            self.check_losses(profile)

        return on_result

    def check_losses(self, only: str | None = None) -> None:
        """Halt each limited profile (not halted yet) whose loss today reached its limit."""
        now = self.now()
        start = day_start(now)
        for profile, limit in self.limits.items():
            if only is not None and profile != only:
                continue
            if ALL in self.in_force or profile_scope(profile) in self.in_force:
                continue
            closed = self._closed[profile]
            if closed and closed[0][0] < start:
                closed[:] = [c for c in closed if c[0] >= start]  # a new day: yesterday's losses are done
            unrealised = 0.0
            for pair in self.pairs:
                if pair.risk is None or pair.risk.name != profile:
                    continue
                last = pair.last_result
                if pair.row is not None and pair.row.pending_at is not None and last is not None \
                        and last.action == "active":
                    unrealised += float(last.pnl_cost or 0.0)
            loss = daily_loss(closed, unrealised, limit.capital, limit.limit_percent, now,
                              last_resume(self.records, profile))
            if loss.breached:
                self._halt_profile(profile, loss.figures(), now)

    def _halt_profile(self, profile: str, figures: dict[str, float], now: int) -> None:
        reason = (f"max_daily_loss_percent {figures['limit_percent']:g} reached: lost "
                  f"{figures['loss_percent']:.2f} % of the capital {figures['capital']:g} today "
                  f"(realised {figures['realised']:.2f}, unrealised {figures['unrealised']:.2f})")
        record = {"event": "halted", "at": now, "scope": profile_scope(profile), "flatten": False,
                  "by": "max_daily_loss_percent", "reason": reason, "figures": figures}
        log.error("risk profile halted: daily loss limit reached", profile=profile, **figures)
        self.bus.emit("error", ErrorEvent("", "", "", now, f"risk profile {profile} halted: {reason}", "risk"))
        try:
            append_control(self.data_dir, record)
        except StoreError as exc:
            # Halted all the same (in memory): stopping entries needs no disk; the restart may not know.
            log.error("cannot journal the halt; halted until this process stops", profile=profile, error=str(exc))
            self.records.append(record)
            self._apply(halts_in_force(self.records))
            return
        self.poll(force=True)

    # --- what the operator sees -------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """For the status file: the halts in force and how far the operator journal was read."""
        return {"read_to": self.read_to, "halts": [h.as_dict() for _, h in sorted(self.in_force.items())],
                "checked_at": int(time.time() * 1000)}

    def report_note(self, pair: Pair) -> str | None:
        """What a pair's report says of the halt it obeys, if any."""
        halt = pair.halted
        if halt is None:
            return None
        from livetrader.core.format import format_time

        flatten = "; open positions closed at market" if halt.flatten else "; open positions managed"
        return (f"Halted since {format_time(halt.since)} ({halt.scope}, by {halt.by}"
                f"{': ' + halt.reason if halt.reason else ''}){flatten}: no new entries until `livetrader resume`.")


def _answers(adopted: dict[str, Any], request: dict[str, Any]) -> bool:
    """True when the ``position_adopted`` record carried out the operator's ``adopt`` request: it
    names the request's time. (Records written before it did are stamped at the minute the adopt
    was carried out, which may be the request's own minute.)"""
    if "requested_at" in adopted:
        return bool(adopted["requested_at"] == request["at"])
    at = int(request["at"])
    return int(adopted.get("at", 0)) >= at - at % MINUTE_MS
