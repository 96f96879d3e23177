"""The ``livetrader run`` process, from start to exit (docs/behaviour.md §8-§10).

:func:`run_daemon` is the whole lifecycle: logging set up, the data directory taken, the
engine built (``service.startup``), then, while the loops run, the signal handlers (SIGINT
and SIGTERM stop gracefully, a second SIGINT exits at once, SIGHUP reloads the strategies folder),
systemd's notifications (start timeout extended while catching up, READY=1, STATUS=, the
watchdog), the status file, the stall watcher, the control socket (``livetrader close|cancel|
pause|resume``) and the live view on a terminal; at the end,
the graceful stop with its cap, one report per pair and the final status. The CLI only
parses the command line into a :class:`RunRequest`, calls it and exits with its code.
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from livetrader.config import Config
from livetrader.errors import LivetraderError
from livetrader.live.collector import freeze_startup_objects
from livetrader.live.engine import Engine
from livetrader.logs import get_logger
from livetrader.service.startup import RunRequest, build_engine, check_data_dir

if TYPE_CHECKING:
    from livetrader.service.control_socket import ControlServer
    from livetrader.service.observers import Observers
    from livetrader.service.stall import StallWatcher
    from livetrader.service.systemd import Notifier

__all__ = ["STATUS_DEFER_LIMIT", "STATUS_INTERVAL", "STOP_GRACE_SECONDS", "RunRequest", "ShutdownError", "run_daemon"]

log = get_logger(__name__)

#: Said for a SIGHUP that comes while the daemon still starts: the reload needs the running engine.
SIGHUP_MESSAGE = ("SIGHUP received while starting: ignored, the strategies being loaded now are the newest; "
                  "send it again once running to reload")


def run_daemon(request: RunRequest, config: Config, strategies_dir: Path) -> int:
    """Run the daemon until SIGINT/SIGTERM; write the reports; return the exit code.

    Raises a ``LivetraderError`` (one message, its exit code) for a start that is refused,
    and ``ShutdownError`` when it stopped but a report or the final status was not written.
    """
    from livetrader.live.restore import take_data_dir
    from livetrader.service.console import configure_logging
    from livetrader.service.stall import log_hard_exits
    from livetrader.service.systemd import Notifier

    configure_logging()
    faulthandler.enable()  # a crash in native code leaves its Python stack on stderr (the journal)
    log_hard_exits(log)  # before any strategy module is imported: an os._exit() in them says so
    # A closed terminal or a `kill -HUP` must not kill the daemon like a crash, not even
    # while it starts (the event loop installs its own handler, saying the same).
    signal.signal(signal.SIGHUP, lambda signum, frame: log.warning(SIGHUP_MESSAGE))
    # SIGINT/SIGTERM while starting (importing strategies, restoring, catching up) are a
    # graceful stop too: the start finishes its current step, then the daemon stops as it
    # would once running, with its reports, exit 0. A second SIGINT exits at once (130).
    early: list[int] = []

    def stop_while_starting(signum: int, frame: object) -> None:
        early.append(signum)
        if len(early) > 1:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        log.info("stop requested while starting: the start finishes its current step, then stops",
                 signal=signal.Signals(signum).name)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop_while_starting)
    data_dir = check_data_dir(request.data_dir_of(config))
    notifier = Notifier.from_env()
    lock = take_data_dir(data_dir)  # before any strategy code runs: one daemon per directory
    observers = None
    try:
        # --- metrics and notifications (service/observers.py): a taken port refuses the start now ---
        from livetrader.service.observers import Observers

        observers = Observers.from_config(config)
        # ---
        engine = build_engine(request, config, strategies_dir, lock=lock, notifier=notifier)
    except BaseException:
        if observers is not None:
            observers.close()
        lock.release()  # a start refused with an error message is a clean stop, not an abnormal end
        raise
    try:
        return asyncio.run(_main(engine, data_dir, request, notifier, early, observers))
    finally:
        # Start-up's objects were frozen out of the collector's sight (live/collector.py), strategies
        # included; Python never finalizes frozen objects, so a strategy's unclosed file would lose
        # its last buffer at exit. Handed back now, the exit finalizes them as it would.
        gc.unfreeze()


#: Real seconds a graceful stop waits for the current ticks before cancelling them (under
#: systemd's TimeoutStopSec=90, so a stop never ends in SIGKILL).
STOP_GRACE_SECONDS = 30.0
#: Real seconds between rewrites of the status file (and systemd STATUS= lines).
STATUS_INTERVAL = 1.0
#: Longest a status write waits for a running sweep to end.
STATUS_DEFER_LIMIT = 5.0


async def _main(engine: Engine, data_dir: Path, request: RunRequest, notifier: Notifier,  # noqa: C901 - one lifecycle
                early: list[int] | None = None, observers: Observers | None = None) -> int:
    """Run the built engine until a signal stops it, with its helpers (status, systemd, stall
    watcher, live view) around it; then the reports, the final status and the storage closed."""
    from livetrader.live.api import Live
    from livetrader.service.status import one_line, write_status
    from livetrader.service.systemd import PairProgress, WatchdogGate, watchdog_loop

    Live.use_engine(engine)
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1 and signum == signal.SIGINT:
            # Every write is atomic and every journal line fsync'ed: leaving now loses nothing.
            sys.stderr.write("second interrupt: exiting at once\n")
            os._exit(130)
        if signals_seen > 1:
            return
        log.info("stopping", signal=signal.Signals(signum).name)
        notifier.stopping("stopping: finishing the current ticks")
        engine.stop()
        loop.call_later(STOP_GRACE_SECONDS, engine.abort)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    # --- hot reload: SIGHUP (`systemctl reload`) imports the strategies folder again --------
    def on_reload() -> None:
        if signals_seen:
            log.warning("SIGHUP received while stopping: ignored")
            return
        log.info("reload requested", signal="SIGHUP")
        try:
            engine.reload()
        except Exception as exc:  # noqa: BLE001 - a failed reload leaves every pair on its code; trading goes on
            log.error("reload failed: every pair keeps its code", error=str(exc))

    loop.add_signal_handler(signal.SIGHUP, on_reload)
    # --- end hot reload ---------------------------------------------------------------------
    if early:  # asked to stop while starting: stop now, gracefully (the first signal counts once)
        on_signal(early[0])
    watcher = _stall_watcher(engine)
    watcher.start()
    # Every time in a log line's fields (at=) and in the live view is on the engine's clock; the
    # line's own stamp is the wall clock's. A simulated run says so once, with its time now.
    log.info("started", pairs=[f"{p.symbol}/{p.strategy_name}/{p.exchange}" for p in engine.pairs],
             data_dir=str(data_dir), speed=engine.clock.speed,
             clock="simulated" if engine.clock.simulated else "real", now=engine.clock.now_ms())
    started = time.monotonic()

    def progress() -> dict[str, PairProgress]:
        deadline = engine.watchdog_deadline()
        return {f"{p.symbol}/{p.strategy_name}": PairProgress(p.progress_at, deadline)
                for p in engine.pairs if p.state != "parked" and not p.stopping.is_set()}

    async def extend_while_catching_up() -> None:
        # Catch-up after a long downtime may outlast TimeoutStartSec: keep asking for more.
        while True:
            notifier.extend_timeout(60)
            await asyncio.sleep(20)

    async def report_status() -> None:
        while True:
            # Between sweeps: a mid-sweep file would show half the pairs ticked, and building it
            # (tens of ms with 10,000 pairs) would delay the ticks still to run.
            await engine.metronome.between_sweeps(STATUS_DEFER_LIMIT)
            try:
                write_status(engine)
            except Exception as exc:  # noqa: BLE001 - the status file is a convenience; never let it stop trading
                log.warning("cannot write the status file", error=str(exc))
            notifier.status(one_line(engine))
            await asyncio.sleep(STATUS_INTERVAL)

    extender = asyncio.create_task(extend_while_catching_up())

    # One condition for systemd's watchdog and for /health (service/metrics.py): every live pair ticked in time.
    gate = WatchdogGate(progress, started)
    if observers is not None:
        observers.attach(engine, gate.check)

    def on_ready() -> None:
        extender.cancel()
        notifier.ready(one_line(engine))
        log.info("ready", pairs=len(engine.pairs), open=engine.summary()["open"])
        helpers.append(asyncio.create_task(watchdog_loop(notifier, gate)))
        if observers is not None:
            observers.ready(one_line(engine))

    # --- operator commands: the control socket (``service.control_socket``), while the lock is held ---
    control = await _control_server(engine, data_dir)
    # ---
    freeze_startup_objects()
    helpers = [extender, asyncio.create_task(report_status()), asyncio.create_task(watcher.heartbeat())]
    view = _live_view(engine, request)
    try:
        if view is not None:
            with view:
                await engine.run(on_ready=on_ready)
        else:
            await engine.run(on_ready=on_ready)
    finally:
        watcher.stop()  # writing 10,000 reports may hold the loop: that is no stall
        for task in helpers:
            task.cancel()
        notifier.stopping("writing reports")
        if observers is not None:
            observers.stopping()
        if control is not None:
            await control.close()  # before the reports: a request still waiting is refused, not left hanging
        _say_exposures(engine)
        failures = _finish(engine)
        await engine.bus.drain(5.0)
        await engine.close()
        notifier.close()
        if observers is not None:
            from livetrader.service.observers import closing

            await asyncio.to_thread(closing(observers))  # up to 5 s of deliveries: not on the loop
    log.info("stopped", pairs=len(engine.pairs))
    if failures:
        raise ShutdownError("stopped, but " + "; ".join(failures))
    return 0


async def _control_server(engine: Engine, data_dir: Path) -> ControlServer | None:
    """Listen on ``<data-dir>/control.sock`` for ``livetrader close|cancel|pause|resume``; None (said)
    when it cannot be made: the daemon trades all the same, only those commands are unavailable."""
    from livetrader.service.control_socket import ControlServer

    server = ControlServer(data_dir, engine.commands)
    try:
        await server.start()
    except OSError as exc:
        log.error("cannot make the control socket: livetrader close/cancel/pause/resume are unavailable",
                  path=str(server.path), error=str(exc))
        return None
    return server


def _stall_watcher(engine: Engine) -> StallWatcher:
    """The thread that notices strategy code blocking the event loop, and says so: in the log
    (the strategy, where, its stack) and in the status file (``livetrader status``: stalled)."""
    from livetrader.service.stall import Stall, StallWatcher
    from livetrader.service.status import mark_stalled

    def on_stall(stall: Stall) -> None:
        fields = stall.fields()
        log.error("event loop stalled", **fields, hint="code running on the event loop has not yielded: every pair "
                  "waits and no strategy timeout can fire; make blocking work async or move it to a thread")
        try:
            mark_stalled(engine.data_dir, fields)
        except Exception as exc:  # noqa: BLE001 - the status file is a convenience
            log.warning("cannot write the status file", error=str(exc))

    def on_recover(seconds: float) -> None:
        log.warning("event loop running again", stalled_seconds=round(seconds, 1))

    return StallWatcher(engine.config.engine.stall_seconds, on_stall, on_recover)


class ShutdownError(LivetraderError):
    """The daemon stopped, but a report or the final status could not be written."""


def _say_exposures(engine: Engine) -> None:
    """Warn, per pair, of what is left on the exchange without a protective stop known to rest:
    nothing watches it until the next start (§12: never a position left unwatched unsaid)."""
    for pair in engine.pairs:
        executor = pair.executor
        why = executor.exposure if executor is not None else None
        if why is not None:
            log.warning("stopping with a position not protected on the exchange", symbol=pair.symbol,
                        strategy=pair.strategy_name, signal_id=pair.row.id if pair.row else None, why=why,
                        consequence="nothing sells at its stop-loss until the next start, which resolves it first")


def _finish(engine: Engine) -> list[str]:
    """Write every report and the final status; each failure is logged, none stops the others."""
    from livetrader.service.status import write_status

    failures = []
    for pair in engine.pairs:
        try:
            path = engine.write_report(pair)
            log.info("report written", path=str(path))
        except Exception as exc:  # noqa: BLE001 - one pair's report failing stops neither the others nor the shutdown
            failures.append(f"the report of {pair.symbol}/{pair.strategy_name} was not written: {exc}")
            log.error("report not written", symbol=pair.symbol, strategy=pair.strategy_name, error=str(exc))
    try:
        write_status(engine, state="stopped")
    except Exception as exc:  # noqa: BLE001 - the shutdown goes on; the failure is in the exit message
        failures.append(f"the final status was not written: {exc}")
    return failures


def _live_view(engine: Engine, request: RunRequest):
    """The rich table of pairs, on a terminal only."""
    wanted = request.live_view if request.live_view is not None else sys.stdout.isatty()
    if not wanted:
        return None
    from livetrader.service.console import ClockView, LiveView, PairView

    def views() -> list[PairView]:
        out = []
        for p in engine.pairs:
            row = p.row
            last = p.last_result
            out.append(PairView(
                symbol=p.symbol, strategy=p.strategy_name, exchange=p.exchange,
                # A pair placing real orders says so in its state (``open·live``, ``entering·sandbox``).
                state=(p.state if p.executor is None else f"{p.state}·{p.executor.mode}")
                + ("·halted" if p.halted is not None else "") + ("·paused" if p.paused is not None else ""),
                price=p.price,
                position=row.position if row else None, price_open=row.price_open if row else None,
                take_profit=row.take_profit if row else None, stop_loss=row.stop_loss if row else None,
                pnl_percentage=last.pnl_percentage if last is not None and last.action == "active" else None,
                last_tick_at=p.last_tick_at,
                # The decision lag: candle's close to tick done.
                lag_ms=p.decision_lag_ms if p.decision_lag_ms is not None else p.lag_ms,
                error_count=p.error_count, last_error=p.last_error,
                closed_trades=p.closed_trades, won_trades=p.won_trades, lost_trades=p.lost_trades,
                realised_pnl=p.realised_pnl,
            ))
        return out

    def notices() -> list[str]:
        from livetrader.service.status import halt_lines

        halts = [h.as_dict() for _, h in sorted(engine.halts.in_force.items())]
        return halt_lines(halts, halts)

    clock = engine.clock
    return LiveView(views, clock_provider=lambda: ClockView(clock.now_ms(), clock.simulated, clock.speed),
                    notices_provider=notices)
