"""Notice an event loop that stopped coming round, and name the strategy code holding it.

Strategy code runs on the event loop's thread. A strategy that blocks it (``time.sleep(120)``
inside ``async def get_signal``, a long computation) never yields: the strategy timeout
cannot fire, no other pair ticks, the status file is not rewritten. The loop cannot see this
itself, so a thread watches it: the loop sets a heartbeat every fraction of the threshold,
and when the heartbeat is older than ``threshold`` seconds the watcher reports a ``Stall``:
the strategy call running at that moment (``livetrader.strategy.base.running``), and the loop
thread's stack with the user's own frames picked out. When the loop comes round again, the
watcher says how long it was held.

Detection, not containment: Python cannot interrupt the blocking code. WATCHDOG=1 comes from
the loop, so it stops too, and systemd's watchdog restarts the daemon once the block outlasts
``WatchdogSec``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from livetrader.strategy import base as strategy_base  # `running` is rebound there: read it at use
from livetrader.strategy.tracing import is_user_file

#: Frames of the loop thread's stack kept when none of them is the user's.
STACK_FRAMES = 12


@dataclass(slots=True, frozen=True)
class Stall:
    """The event loop has not come round for ``seconds`` (since ``since_ms``, wall clock)."""

    seconds: float
    since_ms: int
    #: The strategy code running at detection: (strategy, symbol, what), None when none was.
    call: tuple[str, str, str] | None
    #: ``path:line`` of the innermost frame of the user's code on the loop's stack, if any.
    where: str | None
    #: The loop thread's stack, innermost last: the user's frames, else the last few.
    stack: list[str]

    def fields(self) -> dict[str, Any]:
        """For a log line and the status file."""
        strategy, symbol, what = self.call or (None, None, None)
        return {"seconds": round(self.seconds, 1), "since": self.since_ms, "strategy": strategy, "symbol": symbol,
                "call": what, "where": self.where, "stack": self.stack}


class StallWatcher:
    """A thread watching the heartbeat the event loop keeps (``heartbeat``)."""

    def __init__(self, threshold: float, on_stall: Callable[[Stall], None],
                 on_recover: Callable[[float], None]) -> None:
        """``on_stall`` is called (on the watcher's thread) once per stall, ``on_recover`` with
        its length in seconds once the loop comes round again."""
        self.threshold = threshold
        self.period = max(0.05, threshold / 4)
        self.on_stall = on_stall
        self.on_recover = on_recover
        self.beat_at = time.monotonic()
        self.stalled = False
        self._last_beat_before = self.beat_at
        self._loop_thread = threading.get_ident()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    async def heartbeat(self) -> None:
        """Run on the event loop, until cancelled: prove the loop comes round."""
        self._loop_thread = threading.get_ident()
        while True:
            self.beat_at = time.monotonic()
            await asyncio.sleep(self.period)

    def start(self) -> None:
        """Start watching (a daemon thread: it never holds the process up)."""
        self.beat_at = time.monotonic()
        self._thread = threading.Thread(target=self._watch, name="livetrader-stall-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching; the shutdown that follows may hold the loop legitimately (reports)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        if self.stalled:
            # Called on the loop's thread, so the loop came round, maybe before the watcher
            # looked again: say so now, or a stall right before a stop would never be closed.
            self.stalled = False
            self.on_recover(max(self.beat_at, time.monotonic()) - self._last_beat_before)

    def _watch(self) -> None:
        checked = time.monotonic()
        while not self._stop.wait(self.period):
            now = time.monotonic()
            if now - checked > self.threshold:
                # The watcher itself did not run (the process was stopped or the machine slept):
                # the loop is not to blame; give it a period to beat again.
                checked = now
                self.beat_at = max(self.beat_at, now)
                continue
            checked = now
            try:
                self.check(now)
            except Exception:  # noqa: BLE001 - the watcher must never die, nor take anything down
                pass

    def check(self, now: float) -> Stall | None:
        """Report a stall at ``now`` if the heartbeat is older than the threshold; the stall, if new."""
        quiet = now - self.beat_at
        if quiet < self.threshold:
            if self.stalled:
                self.stalled = False
                self.on_recover(self.beat_at - self._last_beat_before)
            return None
        if self.stalled:
            return None
        self.stalled = True
        self._last_beat_before = self.beat_at
        stall = self.capture(quiet)
        self.on_stall(stall)
        return stall

    def capture(self, quiet: float) -> Stall:
        """What the loop thread is doing now."""
        call = strategy_base.running
        frame = sys._current_frames().get(self._loop_thread)
        frames = traceback.extract_stack(frame) if frame is not None else traceback.StackSummary()
        own = [f for f in frames if is_user_file(f.filename)]
        where = f"{own[-1].filename}:{own[-1].lineno}" if own else None
        shown = own or list(frames)[-STACK_FRAMES:]
        stack = [line.rstrip("\n") for line in traceback.format_list(shown)]
        return Stall(quiet, int((time.time() - quiet) * 1000), call, where, stack)


def log_hard_exits(log: Any) -> Callable[[], None]:
    """Make ``os._exit`` called by the user's code leave a log line before the process ends.

    Nothing can contain ``os._exit``: no exception, no ``finally``, no report. This wraps
    ``os._exit`` for this process (not a forked child: multiprocessing ends its children so)
    and logs who called it, the strategy call running and where, then exits as asked. Calls
    from livetrader itself are not logged. Returns what puts the real ``os._exit`` back.
    """
    real = os._exit
    pid = os.getpid()

    def _exit(status: int) -> NoReturn:  # os._exit's own parameter name: a call by keyword still works
        try:
            if os.getpid() == pid:
                caller = sys._getframe(1)
                call = strategy_base.running
                if call is not None or is_user_file(caller.f_code.co_filename):
                    strategy, symbol, what = call or (None, None, None)
                    log.critical("os._exit called by strategy code: the daemon ends now and nothing can stop it; "
                                 "the next start recovers", code=status, strategy=strategy, symbol=symbol, call=what,
                                 where=f"{caller.f_code.co_filename}:{caller.f_lineno}")
        except BaseException:  # noqa: BLE001 - the exit is what was asked for; logging is a bonus
            pass
        real(status)

    os._exit = _exit

    def restore() -> None:
        os._exit = real

    return restore
