"""Prometheus metrics and a health check for a running daemon: ``[metrics] listen = "127.0.0.1:9464"``.

One small HTTP server on its own threads answers two paths:

* ``/metrics``: the text format, from a private ``CollectorRegistry`` (never the global one, so
  a process embedding livetrader does not mix its metrics with ours);
* ``/health``: 200 while the watchdog condition holds (every live pair completed a tick within
  its deadline: the same :class:`~livetrader.service.systemd.WatchdogGate` that withholds
  ``WATCHDOG=1``), 503 naming the late pairs otherwise, and 503 until the daemon is ready.

Nothing here runs per tick. What the engine already counts (ticks, lag, open positions,
realised PnL, orders, discrepancies, the last sweep, the commit log's flushes, the bus's drops)
is read by :meth:`Metrics.refresh` on the event loop between sweeps, about once a second, into a
snapshot; a scrape reads the snapshot, never the engine. Only errors and transitions are counted
as they come, by bus listeners (delivered after a sweep, not during it).

Labels are ``strategy`` and ``exchange`` (bounded by the configuration), ``kind`` and ``state``
(fixed sets), and ``symbol`` only on ``livetrader_pair_late`` (present while a pair is late), so
10,000 pairs do not make 10,000 series per metric.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from livetrader.config import MetricsConfig
from livetrader.errors import ConfigError, MetricsPortError
from livetrader.logs import get_logger

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from livetrader.live.engine import Engine

__all__ = ["Metrics", "MetricsServer", "parse_listen"]

log = get_logger(__name__)

#: Actions of a tick that change a pair's position or signal (``idle``/``active``/``waiting`` do not).
TRANSITIONS = frozenset({"scheduled", "opened", "adjusted", "closed", "cancelled", "entering", "exiting"})
#: Decision lag buckets, seconds after the minute boundary.
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SWEEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: ``(healthy, late pair names)`` at a monotonic time: ``WatchdogGate.check``.
HealthCheck = Callable[[float], tuple[bool, list[str]]]


def parse_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"``, ``"[::1]:9464"``, ``"localhost:9464"`` -> (host, port); port 0: any free one."""
    host, sep, port_text = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"[metrics] listen must be HOST:PORT (e.g. \"127.0.0.1:9464\"), got {listen!r}")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(slots=True)
class Snapshot:
    """What a scrape shows, built on the event loop between sweeps (:meth:`Metrics.refresh`)."""

    ticks: dict[tuple[str, str], int] = field(default_factory=dict)
    open_positions: dict[tuple[str, str], int] = field(default_factory=dict)
    realised_pnl: dict[tuple[str, str], float] = field(default_factory=dict)
    pairs: dict[str, int] = field(default_factory=dict)
    orders: dict[str, int] = field(default_factory=dict)
    unknown_orders: int = 0
    discrepancies: int = 0
    sweep_seconds: float | None = None
    sweep_pairs: int = 0
    commit_flushes: int = 0
    commit_flush_seconds: float = 0.0
    bus_dropped: int = 0
    late: list[tuple[str, str, str]] = field(default_factory=list)
    healthy: bool = False
    halts: int = 0


class Metrics:
    """The daemon's metrics: a private registry, the snapshot it serves, the counters fed by the bus."""

    def __init__(self, engine: Engine | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram
        from prometheus_client.process_collector import ProcessCollector

        self.engine = engine
        self.registry: CollectorRegistry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_start_time_seconds, cpu, memory, fds
        self.snapshot = Snapshot()
        self.ready = False
        self.health: HealthCheck | None = None
        #: Notification channels' counters, read at scrape: name -> (sent, dropped, failed).
        self.channels: Callable[[], dict[str, tuple[int, int, int]]] = dict
        self.started_at = time.time()
        self.tick_errors = Counter("livetrader_tick_errors", "Errors of pairs, by kind (strategy, source, order...)",
                                   ["kind"], registry=self.registry)
        self.transitions = Counter("livetrader_transitions", "Signal transitions, by kind (opened, closed...)",
                                   ["kind"], registry=self.registry)
        self.decision_lag = Histogram("livetrader_decision_lag_seconds",
                                      "Seconds from the candle's close (the minute boundary) to the pair's tick done",
                                      buckets=LAG_BUCKETS, registry=self.registry)
        self.sweep_duration = Histogram("livetrader_sweep_duration_seconds",
                                        "Seconds one minute's sweep of every pair took",
                                        buckets=SWEEP_BUCKETS, registry=self.registry)
        self.registry.register(_SnapshotCollector(self))
        # Per pair: the tick count last seen, so each tick's lag is observed once.
        self._seen_ticks: dict[tuple[str, str, str], int] = {}
        self._lock = threading.Lock()

    # --- fed by the event bus (delivered after a sweep, never during it) ----------------------

    def listen(self, bus: Any) -> list[Callable[[], None]]:
        """Count errors and transitions from ``bus``; returns the unsubscribe functions."""
        transitions = self.transitions
        transition_kinds = TRANSITIONS

        def on_tick(result: Any) -> None:
            if result.action in transition_kinds:
                transitions.labels(result.action).inc()

        def on_error(event: Any) -> None:
            self.tick_errors.labels(event.kind or "other").inc()

        return [bus.listen("signal_live", on_tick), bus.listen("error", on_error)]

    def on_sweep(self, sweep: Any) -> None:
        """A sweep completed (a ``Metronome`` listener: once a minute, after the sweep's last tick)."""
        if sweep.seconds is not None:
            self.sweep_duration.observe(sweep.seconds)

    # --- the snapshot, on the event loop ------------------------------------------------------

    def refresh(self) -> None:
        """Read what the engine counts, and the watchdog condition, into a new snapshot (on the loop, between
        sweeps)."""
        snap = Snapshot()
        engine = self.engine
        if engine is not None:
            self._read_engine(engine, snap)
        if self.health is not None and self.ready:
            snap.healthy, late = self.health(time.monotonic())
            by_name = {f"{p.symbol}/{p.strategy_name}": p.key for p in engine.pairs} if late and engine else {}
            snap.late = [by_name[name] for name in late if name in by_name]
        self.snapshot = snap

    def _read_engine(self, engine: Engine, snap: Snapshot) -> None:
        ticks: Tally[tuple[str, str]] = Tally()
        opened: Tally[tuple[str, str]] = Tally()
        pnl: dict[tuple[str, str], float] = {}
        states: Tally[str] = Tally()
        orders: Tally[str] = Tally()
        seen = self._seen_ticks
        observe = self.decision_lag.observe
        for pair in engine.pairs:
            group = (pair.strategy_name, pair.exchange)
            ticks[group] += pair.ticks
            pnl[group] = pnl.get(group, 0.0) + (pair.realised_pnl or 0.0)
            state = "degraded" if pair.unreconciled else pair.state
            states[state] += 1
            if pair.state == "open":
                opened[group] += 1
            if pair.unreconciled:
                snap.discrepancies += 1
            if seen.get(pair.key, 0) != pair.ticks:
                seen[pair.key] = pair.ticks
                lag = pair.decision_lag_ms if pair.decision_lag_ms is not None else pair.lag_ms  # close -> tick done
                if lag is not None:
                    observe(lag / 1000)
            executor = pair.executor
            if executor is not None:
                for order in (executor.order, executor.stop):
                    if order is not None and not getattr(order, "final", False):
                        orders[order.status] += 1
        snap.ticks, snap.open_positions, snap.realised_pnl = dict(ticks), dict(opened), pnl
        snap.pairs, snap.orders = dict(states), dict(orders)
        snap.unknown_orders = orders.get("unknown", 0)
        for group in ticks:
            snap.open_positions.setdefault(group, 0)
        sweep = engine.metronome.last
        if sweep is not None and sweep.seconds is not None:
            snap.sweep_seconds, snap.sweep_pairs = sweep.seconds, sweep.pairs
        commits = engine.restorer.commits
        if commits is not None:
            snap.commit_flushes, snap.commit_flush_seconds = commits.batches, commits.flush_seconds
        snap.bus_dropped = engine.bus.dropped()
        snap.halts = len(engine.halts.in_force)

    async def refresh_loop(self, interval: float = 1.0) -> None:
        """Refresh the snapshot every ``interval`` seconds, between sweeps; run until cancelled."""
        import asyncio

        engine = self.engine
        assert engine is not None
        while True:
            await engine.metronome.between_sweeps(5.0)
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - metrics are a view; they must never stop trading
                log.warning("cannot refresh the metrics", error=str(exc))
            await asyncio.sleep(interval)

    # --- /health --------------------------------------------------------------------------------

    def health_answer(self) -> tuple[int, str]:
        """(HTTP status, text) of ``/health``: the watchdog condition, read now."""
        if not self.ready or self.health is None:
            return 503, "starting: not ready yet\n"
        try:
            healthy, late = self.health(time.monotonic())
        except Exception as exc:  # noqa: BLE001 - a broken check is unhealthy, never a 500 with a traceback
            return 503, f"unhealthy: the progress check failed: {exc}\n"
        if healthy:
            return 200, "ok\n"
        if not late:
            return 503, "unhealthy: no pair is running\n"
        shown = ", ".join(late[:20]) + (f" and {len(late) - 20} more" if len(late) > 20 else "")
        return 503, f"unhealthy: {len(late)} pair(s) late (no tick completed within the deadline): {shown}\n"


class _SnapshotCollector:
    """Turns the latest :class:`Snapshot` into metric families at scrape time (on the server's thread)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterable[Any]:
        return []  # dynamic families: registered without a describe-time collect

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        m = self.metrics
        s = m.snapshot
        group = ["strategy", "exchange"]
        ticks = CounterMetricFamily("livetrader_ticks", "Ticks completed, by strategy and exchange", labels=group)
        for (strategy, exchange), value in sorted(s.ticks.items()):
            ticks.add_metric([strategy, exchange], value)
        yield ticks
        opened = GaugeMetricFamily("livetrader_open_positions", "Open positions", labels=group)
        for (strategy, exchange), value in sorted(s.open_positions.items()):
            opened.add_metric([strategy, exchange], value)
        yield opened
        pnl = GaugeMetricFamily("livetrader_realised_pnl", "Realised PnL in quote currency since the daemon started "
                                "(closed trades)", labels=group)
        for (strategy, exchange), amount in sorted(s.realised_pnl.items()):
            pnl.add_metric([strategy, exchange], amount)
        yield pnl
        pairs = GaugeMetricFamily("livetrader_pairs", "Pairs, by state", labels=["state"])
        for state, value in sorted(s.pairs.items()):
            pairs.add_metric([state], value)
        yield pairs
        orders = GaugeMetricFamily("livetrader_orders", "Orders not final yet (entries, exits, stops), by state",
                                   labels=["state"])
        for state, value in sorted(s.orders.items()):
            orders.add_metric([state], value)
        yield orders
        yield GaugeMetricFamily("livetrader_unknown_orders", "Orders whose outcome is unknown", value=s.unknown_orders)
        yield GaugeMetricFamily("livetrader_reconciliation_discrepancies",
                                "Pairs whose position disagrees with the account (degraded)", value=s.discrepancies)
        yield GaugeMetricFamily("livetrader_halts", "Halts in force", value=s.halts)
        if s.sweep_seconds is not None:
            yield GaugeMetricFamily("livetrader_last_sweep_seconds", "Seconds the last completed sweep took",
                                    value=s.sweep_seconds)
            yield GaugeMetricFamily("livetrader_last_sweep_pairs", "Pairs the last completed sweep ticked",
                                    value=s.sweep_pairs)
        yield CounterMetricFamily("livetrader_commit_log_flushes", "Batches written and fdatasync'ed to the commit "
                                  "log", value=s.commit_flushes)
        yield CounterMetricFamily("livetrader_commit_log_flush_seconds", "Seconds spent writing and fdatasync'ing "
                                  "commit-log batches", value=s.commit_flush_seconds)
        yield CounterMetricFamily("livetrader_event_bus_dropped_events", "Events the bus dropped (a listener's "
                                  "queue was full)", value=s.bus_dropped)
        sent = CounterMetricFamily("livetrader_notifications_sent", "Notifications delivered", labels=["channel"])
        dropped = CounterMetricFamily("livetrader_notifications_dropped", "Notifications dropped (queue full or "
                                      "retries exhausted)", labels=["channel"])
        failed = CounterMetricFamily("livetrader_notification_failures", "Failed delivery attempts",
                                     labels=["channel"])
        for name, (n_sent, n_dropped, n_failed) in sorted(m.channels().items()):
            sent.add_metric([name], n_sent)
            dropped.add_metric([name], n_dropped)
            failed.add_metric([name], n_failed)
        yield sent
        yield dropped
        yield failed
        yield GaugeMetricFamily("livetrader_start_time_seconds", "When the daemon started, Unix seconds",
                                value=m.started_at)
        yield GaugeMetricFamily("livetrader_ready", "1 once the daemon is ready (caught up, trading)",
                                value=1 if m.ready else 0)
        late = GaugeMetricFamily("livetrader_pair_late", "1 for each pair that has not completed a tick within its "
                                 "watchdog deadline", labels=["symbol", "strategy", "exchange"])
        for key in s.late:
            late.add_metric(list(key), 1)
        yield late
        # From the snapshot: judging 10,000 pairs on the server's thread could hold the GIL during a sweep.
        yield GaugeMetricFamily("livetrader_healthy", "1 while every live pair completes its ticks within its "
                                "deadline (what /health answers), as of the last refresh",
                                value=1 if m.ready and s.healthy else 0)


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr: the daemon's log is JSON lines, and scrapes come every few seconds."""

    def log_message(self, format: str, *args: Any) -> None:
        return


class MetricsServer:
    """``/metrics`` and ``/health`` on one port, served by a thread (a WSGI app around prometheus_client's)."""

    def __init__(self, metrics: Metrics, server: WSGIServer) -> None:
        self.metrics = metrics
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                       name="livetrader-metrics", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the server listens on (the port the system chose, for ``:0``)."""
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    @classmethod
    def bind(cls, config: MetricsConfig, metrics: Metrics) -> MetricsServer:
        """Open the port now (a start-up error if it cannot be), serving once :meth:`start` is called.

        ConfigError for an address other than loopback without ``allow_remote = true``;
        :class:`MetricsPortError` when the port is taken or the address is not this machine's.
        """
        from prometheus_client import make_wsgi_app
        from prometheus_client.exposition import ThreadingWSGIServer

        host, port = parse_listen(config.listen)
        if not is_loopback(host):
            if not config.allow_remote:
                raise ConfigError(f"[metrics] listen = {config.listen!r} is not a loopback address: /metrics would "
                                  "be readable from other machines. Set allow_remote = true in [metrics] to mean it, "
                                  "or listen on 127.0.0.1 and scrape through a tunnel or a reverse proxy")
            log.warning("metrics served beyond this machine: anyone who reaches the port reads positions and PnL",
                        listen=config.listen)
        prometheus_app = make_wsgi_app(metrics.registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
            path = environ.get("PATH_INFO", "")
            if path == "/health":
                code, text = metrics.health_answer()
                start_response(f"{code} {'OK' if code == 200 else 'Service Unavailable'}",
                               [("Content-Type", "text/plain; charset=utf-8")])
                return [text.encode()]
            if path in ("/metrics", "/metrics/"):
                result: list[bytes] = prometheus_app(environ, start_response)
                return result
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"not found: try /metrics or /health\n"]

        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        except OSError as exc:
            raise MetricsPortError(f"[metrics] listen = {config.listen!r}: cannot resolve {host}: {exc}") from None

        class Server(ThreadingWSGIServer):
            address_family = family

        try:
            server = make_server(host, port, app, Server, handler_class=_QuietHandler)
        except OSError as exc:
            why = ("the port is in use by another process (another daemon? give each its own port)"
                   if exc.errno in (98, 48) else exc.strerror or str(exc))
            raise MetricsPortError(f"cannot serve metrics on {config.listen}: {why}; change [metrics] listen") from None
        return cls(metrics, server)

    def start(self) -> None:
        """Serve on the background thread."""
        self.thread.start()
        log.info("metrics served", url=f"http://{_url_host(self.address[0])}:{self.address[1]}/metrics")

    def close(self) -> None:
        """Stop serving and free the port."""
        if self.thread.is_alive():
            self.server.shutdown()
            self.thread.join(5.0)
        self.server.server_close()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
