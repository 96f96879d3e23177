"""What watches a daemon from outside: the metrics endpoint and the notification channels, together.

The daemon (``service.daemon``) makes one :class:`Observers` from the config before the engine
is built (so a taken port or a missing bot token refuses the start at once, with one message),
attaches the engine once it runs, tells it when the daemon is ready and when it stops, and
closes it last. With neither ``[metrics]`` nor ``[notify.*]`` configured it does nothing at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from livetrader.config import Config
from livetrader.logs import get_logger

if TYPE_CHECKING:
    from livetrader.live.engine import Engine
    from livetrader.service.metrics import HealthCheck, Metrics, MetricsServer
    from livetrader.service.notify import Notifications

log = get_logger(__name__)

#: Real seconds the stop gives the channels to deliver what is queued (the "stopping" message).
NOTIFY_STOP_SECONDS = 5.0


class Observers:
    """The metrics server and the notification channels of one daemon (either may be absent)."""

    def __init__(self, metrics: Metrics | None = None, server: MetricsServer | None = None,
                 notifications: Notifications | None = None) -> None:
        self.metrics = metrics
        self.server = server
        self.notifications = notifications if notifications else None
        self.tasks: list[asyncio.Task[None]] = []

    @classmethod
    def from_config(cls, config: Config, environ: Mapping[str, str] | None = None) -> Observers:
        """Bind the metrics port and build the channels; ConfigError / MetricsPortError refuse the start."""
        notifications = None
        if config.notify:
            from livetrader.service.notify import Notifications

            notifications = Notifications.from_config(config.notify, environ)
        metrics = server = None
        if config.metrics is not None:
            from livetrader.service.metrics import Metrics, MetricsServer

            metrics = Metrics()
            server = MetricsServer.bind(config.metrics, metrics)
        return cls(metrics, server, notifications)

    def attach(self, engine: Engine, health: HealthCheck) -> None:
        """Start watching ``engine`` (on its event loop): listeners, the server, the channels, the polls."""
        if self.metrics is not None and self.server is not None:
            self.metrics.engine = engine
            self.metrics.health = health
            self.metrics.listen(engine.bus)
            engine.metronome.listeners.append(self.metrics.on_sweep)
            if self.notifications is not None:
                self.metrics.channels = self.notifications.counters
            self.server.start()
            self.tasks.append(asyncio.create_task(self.metrics.refresh_loop()))
        if self.notifications is not None:
            self.notifications.listen(engine.bus)
            self.notifications.start()
            self.notifications.lifecycle("started", f"{len(engine.pairs)} pairs")
            self.tasks.append(asyncio.create_task(self.notifications.observe_loop(engine)))

    def ready(self, summary: str) -> None:
        """The daemon caught up and trades: /health may answer 200 from now on."""
        if self.metrics is not None:
            self.metrics.ready = True
        if self.notifications is not None:
            self.notifications.lifecycle("ready", summary)

    def stopping(self) -> None:
        """The daemon stops: the polls end; channels still deliver until :meth:`close`."""
        for task in self.tasks:
            task.cancel()
        if self.metrics is not None:
            self.metrics.ready = False
        if self.notifications is not None:
            self.notifications.lifecycle("stopping")

    def close(self) -> None:
        """Deliver what is queued (at most ``NOTIFY_STOP_SECONDS``), then free the port."""
        if self.notifications is not None:
            self.notifications.close(NOTIFY_STOP_SECONDS)
        if self.server is not None:
            self.server.close()


def closing(observers: Observers) -> Callable[[], None]:
    """``observers.close`` guarded: a failure to close is logged, never raised over the real exit."""

    def close() -> None:
        try:
            observers.close()
        except Exception as exc:  # noqa: BLE001 - the daemon is stopping; say it and go on
            log.warning("cannot close the metrics server or the notification channels", error=str(exc))

    return close
