"""Notifications to a person: Telegram and webhooks (``[notify.<name>]``), fed by the daemon.

:class:`Notifications` holds the configured channels and decides what to tell them:

* from the event bus (listeners, delivered after each sweep, never during it): positions opened,
  closed (PnL in percent and quote currency, reason, duration) and cancelled; errors, which are
  summarised (the first at once, then at most one digest per ``error_interval_seconds``, counting
  what came in between: a failing tick never sends one message per minute);
* from the engine, read between sweeps about once a second (:meth:`Notifications.observe`):
  orders rejected, unknown and resolved, protective stops placed and filled, reconciliation
  discrepancies, pairs degraded or parked, halts and their lifting, and the daily summary when the
  engine's UTC day turns. A state that comes and goes between two reads (a stop placed and filled
  within a second) is not seen: these are read, not hooked into the order path;
* from the daemon's lifecycle: started, ready, stopping.

Each channel (``channel.Channel``) has a bounded queue and its own thread: nothing here blocks
the event loop or slows a sweep.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from livetrader.config import NotifyConfig
from livetrader.logs import get_logger
from livetrader.service.notify import format as fmt
from livetrader.service.notify.channel import Channel
from livetrader.service.notify.format import Message
from livetrader.service.notify.senders import build_channel

__all__ = ["Channel", "Message", "Notifications"]

log = get_logger(__name__)

DAY_MS = 86_400_000


def _quote_of(symbol: str) -> str:
    """The quote currency of a symbol, as far as its name tells: ``BTC/USDT``, ``BTCUSDT`` -> ``USDT``."""
    if "/" in symbol:
        return symbol.split("/")[-1].split(":")[0]
    for quote in ("USDT", "USDC", "BUSD", "FDUSD", "TUSD", "USD", "EUR", "BTC", "ETH", "BNB"):
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return quote
    return "quote"


class _ErrorDigest:
    """Errors of one channel, counted by kind until the next digest is due."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.counts: dict[str, int] = {}
        self.last = ""
        self.since: int | None = None
        self.sent_at: float | None = None

    def add(self, kind: str, text: str, at: int) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.last = text
        if self.since is None:
            self.since = at

    def due(self, now: float) -> bool:
        return bool(self.counts) and (self.sent_at is None or now - self.sent_at >= self.interval)

    def take(self, now: float, at: int) -> Message:
        message = fmt.errors_digest(self.counts, self.last, self.since, at)
        self.counts, self.since, self.sent_at = {}, None, now
        return message


class Notifications:
    """The configured channels, and what the daemon tells them (see the module doc)."""

    def __init__(self, channels: Iterable[Channel], *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.channels = list(channels)
        self.monotonic = monotonic
        self.digests = {c.name: _ErrorDigest(c.config.error_interval_seconds)
                        for c in self.channels if c.wants("errors")}
        self.engine: Any = None
        # What the last observe saw, to tell what changed since.
        self._seen_pairs: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        self._seen_halts: set[str] = set()
        self._day: int | None = None
        self._day_figures = self._zero_day()
        self._unsubscribe: list[Callable[[], None]] = []

    @classmethod
    def from_config(cls, configs: Mapping[str, NotifyConfig],
                    environ: Mapping[str, str] | None = None) -> Notifications:
        """Build every ``[notify.<name>]`` channel (ConfigError for a missing secret), not started yet."""
        return cls([build_channel(c, environ) for c in configs.values()])

    def __bool__(self) -> bool:
        return bool(self.channels)

    # --- plumbing ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start every channel's delivery thread."""
        for channel in self.channels:
            channel.start()

    def send(self, message: Message) -> None:
        """Queue ``message`` on every channel that selected its kind; never blocks."""
        for channel in self.channels:
            channel.offer(message)

    def counters(self) -> dict[str, tuple[int, int, int]]:
        """``{channel: (sent, dropped, failed attempts)}``, for the metrics."""
        return {c.name: (c.sent, c.dropped, c.failures) for c in self.channels}

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued within ``timeout`` seconds (all channels together), then stop."""
        for listener in self._unsubscribe:
            listener()
        self._unsubscribe = []
        deadline = time.monotonic() + timeout
        for channel in self.channels:  # all at once: a stuck channel must not eat the others' time
            channel.begin_close(deadline)
        for channel in self.channels:
            channel.finish_close()

    # --- from the event bus ----------------------------------------------------------------------

    def listen(self, bus: Any) -> None:
        """Subscribe to the bus's live tick results and errors."""
        wanted = {kind for c in self.channels for kind in c.events}
        actions = {a for a in ("opened", "closed", "cancelled") if a in wanted} | {"closed"}  # closed feeds the day
        self._unsubscribe.append(bus.listen("signal_live", self._tick_listener(frozenset(actions))))
        if self.digests or "daily" in wanted:  # the daily summary counts the errors too
            self._unsubscribe.append(bus.listen("error", self.on_error))

    def _tick_listener(self, actions: frozenset[str]) -> Callable[[Any], None]:
        def on_tick(result: Any) -> None:
            if result.action in actions:  # the common case, every pair every minute, stops here
                self.on_transition(result)

        return on_tick

    def on_transition(self, result: Any) -> None:
        """A position opened, closed or cancelled."""
        if result.action == "opened":
            self.send(fmt.opened(result))
        elif result.action == "cancelled":
            self.send(fmt.cancelled(result))
        elif result.action == "closed":
            quote = _quote_of(result.symbol)
            day = self._day_figures
            day["closed"] += 1
            pnl = result.pnl_percentage or 0.0
            day["won" if pnl > 0 else "lost"] += 1
            day["pnl_cost"] += result.pnl_cost or 0.0
            day["quote"] = quote if day["quote"] in ("quote", quote) else "quote"
            self.send(fmt.closed(result, quote))

    def on_error(self, event: Any) -> None:
        """An error event: counted into each channel's digest, sent when the digest is due."""
        self._day_figures["errors"] += 1
        if event.kind in ("parked", "listener"):
            return  # parked pairs are told by observe; a listener's failure is ours, not the operator's
        where = "/".join(x for x in (event.symbol, event.strategy) if x)
        text = f"{where}: {event.message}" if where else event.message
        if not self.digests:
            return
        for digest in self.digests.values():
            digest.add(event.kind, text, event.at)
        self.flush_errors(event.at)

    def flush_errors(self, at: int) -> None:
        """Send each channel's error digest that is due."""
        now = self.monotonic()
        for channel in self.channels:
            digest = self.digests.get(channel.name)
            if digest is not None and digest.due(now):
                channel.offer(digest.take(now, at))

    # --- lifecycle ------------------------------------------------------------------------------

    def lifecycle(self, what: str, detail: str = "") -> None:
        """``started``, ``ready``, ``stopping``: one message each."""
        self.send(Message("lifecycle", f"livetrader {what}" + (f": {detail}" if detail else ""),
                          {"event": what, "detail": detail or None, "at": int(time.time() * 1000)}))

    # --- from the engine, between sweeps ---------------------------------------------------------

    @staticmethod
    def _zero_day() -> dict[str, Any]:
        return {"closed": 0, "won": 0, "lost": 0, "pnl_cost": 0.0, "quote": "quote", "errors": 0}

    def observe(self, engine: Any) -> None:
        """Compare the engine with what the last call saw; tell what changed (see the module doc)."""
        now = engine.clock.now_ms()
        self._observe_day(engine, now)
        for pair in engine.pairs:
            self._observe_pair(pair, now)
        halts = engine.halts.in_force
        for scope in sorted(set(halts) - self._seen_halts):
            halt = halts[scope]
            detail = "; ".join(str(x) for x in (getattr(halt, "by", ""), getattr(halt, "reason", "")) if x)
            self.send(Message("halts", f"HALTED ({scope}): no new entries" + (f"; {detail}" if detail else ""),
                              {"scope": scope, "at": now, "event": "halted"}))
        for scope in sorted(self._seen_halts - set(halts)):
            self.send(Message("halts", f"Halt lifted ({scope}): trading resumes", {"scope": scope, "at": now,
                                                                                   "event": "resumed"}))
        self._seen_halts = set(halts)
        if self.digests:
            self.flush_errors(now)

    def _observe_day(self, engine: Any, now: int) -> None:
        day = now // DAY_MS
        if self._day is None:
            self._day = day
            return
        if day == self._day:
            return
        figures = self._day_figures | {"open": sum(1 for p in engine.pairs if p.state == "open"),
                                       "pairs": len(engine.pairs)}
        label = datetime.fromtimestamp(self._day * DAY_MS / 1000, tz=UTC).strftime("%Y-%m-%d")
        self.send(fmt.daily(label, figures))
        self._day, self._day_figures = day, self._zero_day()

    def _observe_pair(self, pair: Any, now: int) -> None:
        executor = pair.executor
        order = executor.order if executor is not None else None
        stop = executor.stop if executor is not None else None
        seen = (pair.state, pair.unreconciled, pair.degraded,
                None if order is None else (order.client_id, order.status),
                None if stop is None else (stop.client_id, stop.status))
        before = self._seen_pairs.get(pair.key)
        if before == seen:
            return
        self._seen_pairs[pair.key] = seen
        old = before or (None, None, None, None, None)
        key = pair.key
        if pair.state == "parked" and old[0] != "parked":
            self.send(fmt.pair_message("degraded", "Parked", key, now, pair.last_error or "its loop crashed too often"))
        if pair.unreconciled and pair.unreconciled != old[1]:
            self.send(fmt.pair_message("reconciliation", "Reconciliation discrepancy", key, now, pair.unreconciled))
        if pair.degraded and pair.degraded != old[2]:
            self.send(fmt.pair_message("degraded", "Degraded", key, now, pair.degraded))
        if order is not None and seen[3] != old[3]:
            self._observe_order(key, now, order, old[3])
        if stop is not None and seen[4] != old[4]:
            self._observe_stop(key, now, stop, old[4])

    def _observe_order(self, key: tuple[str, str, str], now: int, order: Any, old: Any) -> None:
        was = old[1] if old is not None and old[0] == order.client_id else None
        extra = {"client_id": order.client_id, "leg": order.leg, "status": order.status}
        if order.status in ("rejected", "not_placed"):
            self.send(fmt.pair_message("orders", f"Order {order.status.replace('_', ' ')}", key, now,
                                       f"{order.leg} {order.client_id}: {order.reason or ''}".strip(), **extra))
        elif order.status == "unknown" and order.order_id is None and was is None:
            return  # just sent: "unknown" until the exchange answers; not worth a message
        elif order.status == "unknown":
            self.send(fmt.pair_message("orders", "Order outcome unknown", key, now,
                                       f"{order.leg} {order.client_id}", **extra))
        elif was == "unknown":
            self.send(fmt.pair_message("orders", "Order resolved", key, now,
                                       f"{order.leg} {order.client_id}: {order.status}", **extra))

    def _observe_stop(self, key: tuple[str, str, str], now: int, stop: Any, old: Any) -> None:
        was = old[1] if old is not None and old[0] == stop.client_id else None
        extra = {"client_id": stop.client_id, "stop_price": stop.stop_price, "status": stop.status}
        if stop.status == "open" and was != "open":
            self.send(fmt.pair_message("stops", "Stop placed", key, now, f"at {stop.stop_price}", **extra))
        elif stop.status == "filled":
            self.send(fmt.pair_message("stops", "Stop filled", key, now, f"at {stop.stop_price}", **extra))

    async def observe_loop(self, engine: Any, interval: float = 1.0) -> None:
        """Call :meth:`observe` every ``interval`` seconds between sweeps; run until cancelled."""
        import asyncio

        while True:
            await engine.metronome.between_sweeps(5.0)
            try:
                self.observe(engine)
            except Exception as exc:  # noqa: BLE001 - notifications are a convenience; never let them stop trading
                log.warning("cannot read the engine for notifications", error=str(exc))
            await asyncio.sleep(interval)
