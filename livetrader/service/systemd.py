"""Tell systemd how the daemon is doing: the ``sd_notify`` protocol, in stdlib only.

The protocol is one datagram of newline-separated ``KEY=value`` lines sent to the
``AF_UNIX`` socket named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract
namespace). systemd uses it to learn when the service is ready (``READY=1``), what it is
doing (``STATUS=``), that it is still making progress (``WATCHDOG=1``), that it needs more
time to start (``EXTEND_TIMEOUT_USEC=``) and that it is shutting down (``STOPPING=1``).

Two rules shape this module:

- Notifying must never hurt the daemon. Without ``NOTIFY_SOCKET`` (a terminal, a test, a
  container) every method is a silent no-op; when the socket is gone or full, the error is
  logged once and swallowed, and the socket is non-blocking so a stalled systemd can never
  stall the event loop.
- ``WATCHDOG=1`` must mean *progress*, not *alive*. A ping from an outer loop keeps a bot
  whose pair loops hang in an exchange call "healthy" forever. :class:`WatchdogGate` answers
  whether every pair completed a tick within its deadline; :func:`watchdog_loop` pings only
  then, so a hung loop lets systemd's watchdog fire and ``Restart=on-failure`` restart us.

Typical use by the daemon::

    notifier = Notifier.from_env()
    notifier.extend_timeout(60)          # recovery is slow: ask for more start time
    ...                                   # recover and catch up every pair
    notifier.ready(status="3 pairs, 1 open")
    gate = WatchdogGate(engine_progress, since=time.monotonic())
    task = asyncio.create_task(watchdog_loop(notifier, gate))
    ...
    notifier.stopping()
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

from livetrader.logs import get_logger

__all__ = [
    "Notifier",
    "PairProgress",
    "ProgressProvider",
    "WatchdogGate",
    "watchdog_loop",
]

# livetrader.logs imports nothing of livetrader: this module stays importable (and testable) alone.
log = get_logger(__name__)

#: systemd's own limit for the notification payload it reads is larger, but a STATUS line is
#: shown in `systemctl status`: a screenful of text there helps nobody.
MAX_STATUS_CHARS = 1024


def _socket_address(value: str) -> str | bytes | None:
    """The ``sendto`` address for ``$NOTIFY_SOCKET``, or None when it is not one we can use.

    ``@name`` is the Linux abstract namespace: the name with a leading NUL byte, no file.
    Anything else must be an absolute path; systemd ≥ 254 also knows ``vsock:`` addresses,
    which only matter for VMs reporting to their host, so they are not supported here.
    """
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def _positive_int(value: str | None) -> int | None:
    """``value`` as a positive int, or None when it is missing, malformed, or not positive."""
    if value is None:
        return None
    try:
        number = int(value.strip())
    except ValueError:
        return None
    return number if number > 0 else None


def _one_line(text: str) -> str:
    """``text`` without newlines: a newline would start a new ``KEY=value`` assignment."""
    return " ".join(text.splitlines()).strip()


class Notifier:
    """A client of systemd's notification socket; a no-op when there is none.

    Build it with :meth:`from_env`. One ``AF_UNIX``/``SOCK_DGRAM`` socket is opened on the
    first message and kept open (one syscall per message, no file-descriptor churn every
    watchdog interval). Every method returns whether the message was handed to the socket,
    which tests and logs may use; the daemon can ignore it.
    """

    def __init__(self, address: str | bytes | None, watchdog_usec: int | None = None) -> None:
        """``address``: the socket (a path, or bytes starting with NUL for an abstract name),
        None to disable everything. ``watchdog_usec``: systemd's watchdog timeout, None when
        the watchdog is not enabled for this process."""
        self.address = address
        self.watchdog_usec = watchdog_usec if address is not None else None
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, pid: int | None = None) -> Notifier:
        """A notifier configured like ``sd_notify(3)`` from the environment.

        Reads ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``. The watchdog is
        honoured only when ``WATCHDOG_PID`` is unset or equals ``pid`` (default: ours):
        systemd sets it so that a child which inherited the environment does not feed the
        parent's watchdog. An unusable ``NOTIFY_SOCKET`` is logged and disables the notifier.
        """
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        if not raw:
            return cls(None)
        address = _socket_address(raw)
        if address is None:
            log.warning("NOTIFY_SOCKET is neither an absolute path nor @abstract; not notifying systemd", value=raw)
            return cls(None)
        watchdog_usec = _positive_int(env.get("WATCHDOG_USEC"))
        watchdog_pid = env.get("WATCHDOG_PID")
        if watchdog_pid is not None and _positive_int(watchdog_pid) != (os.getpid() if pid is None else pid):
            watchdog_usec = None  # the watchdog belongs to another process (our parent)
        return cls(address, watchdog_usec)

    # --- state -------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """True when there is a socket to notify."""
        return self.address is not None

    def watchdog_interval(self) -> float | None:
        """How often to send ``WATCHDOG=1``, in seconds: half the watchdog timeout, as
        ``sd_watchdog_enabled(3)`` advises, so one late ping does not kill us. None when
        the watchdog is off (or not ours)."""
        if self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2 / 1_000_000

    # --- messages ----------------------------------------------------------------------------

    def notify(self, message: str) -> bool:
        """Send ``message`` (newline-separated ``KEY=value`` lines) as one datagram.

        Never raises: a missing, dead or full socket is logged once and swallowed, because
        losing a notification is harmless next to crashing a trading daemon.
        """
        if self.address is None or not message:
            return False
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                # A datagram to a receiver whose queue is full blocks; the daemon is an asyncio
                # loop and must not stall on systemd, so drop the message instead (EAGAIN).
                sock.setblocking(False)
                self._sock = sock
            self._sock.sendto(message.encode(), self.address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("could not notify systemd (further failures are not logged)", address=self.address,
                            error=str(exc))
            return False
        return True

    def send(self, **fields: object) -> bool:
        """Send ``KEY=value`` fields in one datagram, e.g. ``send(READY=1, STATUS="up")``.

        Values are converted with ``str`` and flattened to one line; booleans become 1/0.
        """
        lines = []
        for key, value in fields.items():
            text = str(int(value)) if isinstance(value, bool) else str(value)
            lines.append(f"{key}={_one_line(text)}")
        return self.notify("\n".join(lines))

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: startup is finished. Send it only once every pair has recovered and
        caught up, since systemd then starts units ordered after us and stops the start timeout."""
        if status is None:
            return self.send(READY=1)
        return self.send(READY=1, STATUS=status[:MAX_STATUS_CHARS])

    def status(self, text: str) -> bool:
        """``STATUS=text``: the one line `systemctl status` shows (pairs, open positions, last tick)."""
        return self.send(STATUS=text[:MAX_STATUS_CHARS])

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: we are making progress. Not sent when the watchdog is off or belongs
        to another process; call it only when :meth:`WatchdogGate.healthy` says so."""
        if self.watchdog_usec is None:
            return False
        return self.send(WATCHDOG=1)

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: a graceful shutdown has begun, so systemd shows "deactivating"
        and does not take the exit that follows for a crash."""
        if status is None:
            return self.send(STOPPING=1)
        return self.send(STOPPING=1, STATUS=status[:MAX_STATUS_CHARS])

    def extend_timeout(self, seconds: float) -> bool:
        """``EXTEND_TIMEOUT_USEC``: we need ``seconds`` more from now to start (or stop).

        systemd extends its start/stop timeout only this far: repeat the call before it runs
        out while a long recovery or catch-up keeps making progress.
        """
        usec = max(0, int(seconds * 1_000_000))
        return self.send(EXTEND_TIMEOUT_USEC=usec)

    # --- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the socket; a later message opens a new one."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Notifier(address={self.address!r}, watchdog_usec={self.watchdog_usec!r})"


class PairProgress(NamedTuple):
    """How far one pair's loop has got: the input of :class:`WatchdogGate`."""

    #: ``time.monotonic()`` when the pair last *completed* a tick; None before its first one.
    last_tick: float | None
    #: Seconds a tick may take to come round again (the interval, plus the slowest legitimate
    #: tick: a strategy timeout, an exchange timeout) before the loop counts as stuck.
    deadline: float


#: Returns, for each pair (by a name used in logs), its progress. Plain tuples do too.
ProgressProvider = Callable[[], Mapping[str, PairProgress | tuple[float | None, float]]]


class WatchdogGate:
    """Decides whether the daemon deserves a ``WATCHDOG=1``: pure, no I/O, no clock of its own.

    Healthy only while *every* pair completed a tick within its deadline. One pair hung in
    an exchange call is enough to withhold the ping, so systemd's watchdog fires and the
    service restarts, instead of an outer loop keeping a stuck bot alive.
    """

    def __init__(self, progress: ProgressProvider, since: float) -> None:
        """``progress``: called on every check. ``since``: the monotonic time the loops
        started; a pair that has not completed its first tick is measured from it."""
        self.progress = progress
        self.since = since

    def check(self, now: float) -> tuple[bool, list[str]]:
        """``(healthy, stale)`` at ``now`` from one call of the provider: see :meth:`healthy`
        and :meth:`stale`."""
        progress = self.progress()
        late = []
        for name, entry in progress.items():
            last_tick, deadline = entry
            reference = self.since if last_tick is None else last_tick
            if now - reference > deadline:
                late.append(name)
        return bool(progress) and not late, late

    def stale(self, now: float) -> list[str]:
        """The names of the pairs whose last completed tick is older than their deadline at ``now``."""
        return self.check(now)[1]

    def healthy(self, now: float) -> bool:
        """True when there is at least one pair and none is stale at ``now``.

        No pairs at all is not healthy: a daemon whose loops have all gone is not making
        progress, whatever its outer loop says.
        """
        return self.check(now)[0]


async def watchdog_loop(
    notifier: Notifier,
    gate: WatchdogGate,
    clock: Callable[[], float] = time.monotonic,
    interval: float | None = None,
) -> None:
    """Send ``WATCHDOG=1`` every ``interval`` seconds while ``gate`` is healthy; run until cancelled.

    ``interval`` defaults to :meth:`Notifier.watchdog_interval`; without a watchdog this
    returns at once. A change of health is logged (with the stale pairs), not every check.
    """
    period = interval if interval is not None else notifier.watchdog_interval()
    if period is None or period <= 0:
        return
    was_healthy = True
    while True:
        now = clock()
        try:
            healthy, stale = gate.check(now)
        except Exception:  # a broken progress provider must not take the daemon down
            log.exception("watchdog progress check failed; withholding WATCHDOG=1")
            stale, healthy = [], False
        if healthy:
            notifier.watchdog()
            if not was_healthy:
                log.warning("every pair is ticking again; resuming WATCHDOG=1")
        elif was_healthy:
            log.error("pairs stuck past their deadline; withholding WATCHDOG=1 so systemd restarts us",
                      stuck=", ".join(stale) or "(no pairs)")
        was_healthy = healthy
        await asyncio.sleep(period)
