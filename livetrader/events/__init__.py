"""The in-process event bus (docs/behaviour.md §8): tick results, errors, timings, ends of loops, risk rejections.

Topics and their payloads:

* ``signal``, ``signal_live``, ``signal_backtest`` — a :class:`~livetrader.core.signal.TickResult`;
* ``error`` — an :class:`ErrorEvent`;
* ``performance`` — a :class:`PerformanceEvent`;
* ``done`` — a :class:`DoneEvent`;
* ``risk`` — a :class:`RiskEvent`.

Delivery guarantees, and why:

* :meth:`EventBus.emit` never blocks and never raises: it only appends to queues. The live loops
  of every pair emit from the same event loop, so one slow listener must not stall a tick.
* Every listener has its own bounded queue and its own delivery task (created lazily on the
  running event loop), so a slow or failing listener delays nobody but itself.
* A listener receives its events one at a time, in emission order (per emitting thread).
* A listener may be a plain function or an ``async`` function. Plain functions run on the event
  loop inside their delivery task: keep them quick (no blocking I/O), or make them ``async``.
* An exception in a listener is logged and reported to the ``error`` listeners as an
  :class:`ErrorEvent` of kind ``"listener"``; the listener keeps receiving later events. A failure
  of an ``error`` listener itself is only logged, so a broken error handler cannot loop forever.
* A queue holds at most ``max_queue`` events (10,000 by default); when it is full the *oldest*
  event is dropped and counted (:meth:`EventBus.dropped`), so a stalled listener costs bounded
  memory however long the daemon runs. Drops are logged, never emitted as events (a stalled
  ``error`` listener would otherwise feed its own queue).

Without a running event loop (a plain script, a synchronous test), :meth:`EventBus.emit` delivers
synchronously to the plain-function listeners and *drops* the ``async`` ones, with a logged warning
and a dropped count: there is no loop to run them on. From a thread other than the one running the
event loop, events for listeners already bound to that loop are handed over thread-safely.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from livetrader.core.signal import TickResult
from livetrader.logs import get_logger
from livetrader.redaction import redact

__all__ = [
    "DoneEvent",
    "ErrorEvent",
    "PerformanceEvent",
    "RiskEvent",
    "TickResult",
    "listen_done",
    "listen_error",
    "listen_performance",
    "listen_risk",
    "listen_signal",
    "listen_signal_backtest",
    "listen_signal_live",
]

log = get_logger(__name__)

TOPICS: Final[tuple[str, ...]] = (
    "signal",
    "signal_live",
    "signal_backtest",
    "error",
    "performance",
    "done",
    "risk",
)
"""Every topic the bus knows; listening to any other name is an error."""

DEFAULT_MAX_QUEUE: Final = 10_000
"""Events a listener's queue holds before the oldest is dropped."""


Listener = Callable[[Any], Any]
"""A listener: ``fn(payload)``, a plain function or one returning an awaitable (``async def``)."""


@dataclass(slots=True, frozen=True)
class ErrorEvent:
    """Something failed: ``kind`` says what (``"strategy"``, ``"source"``, ``"crash"``, ``"listener"``…).

    ``at`` is ms UTC; the pair fields are empty strings when the error concerns no pair.
    """

    symbol: str
    strategy: str
    exchange: str
    at: int
    message: str
    kind: str


@dataclass(slots=True, frozen=True)
class PerformanceEvent:
    """The timing of one tick: ``duration_ms`` it took, started at ``at``; ``previous_at`` the tick before."""

    symbol: str
    strategy: str
    exchange: str
    at: int
    duration_ms: float
    previous_at: int | None


@dataclass(slots=True, frozen=True)
class DoneEvent:
    """A pair's loop ended at ``at`` (ms UTC), for ``reason`` (e.g. ``"stopped"``, ``"finished"``)."""

    symbol: str
    strategy: str
    exchange: str
    at: int
    reason: str


@dataclass(slots=True, frozen=True)
class RiskEvent:
    """Risk ``profile`` rejected signal ``signal_id`` of a pair at ``at`` (ms UTC), for ``reason``."""

    symbol: str
    strategy: str
    exchange: str
    at: int
    profile: str
    reason: str
    signal_id: str | None


def _now_ms() -> int:
    return int(time.time() * 1000)


def _is_async(fn: Listener) -> bool:
    """True when ``fn`` is an ``async`` function (or a callable object with an ``async __call__``)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


def _name_of(fn: Listener) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__


def _field(payload: Any, name: str) -> str:
    """The pair field ``name`` of a payload (dataclass or record dict), ``""`` when it has none."""
    value = payload.get(name) if isinstance(payload, Mapping) else getattr(payload, name, None)
    return "" if value is None else str(value)


class _Subscription:
    """One listener on one topic: its bounded queue, its delivery task, its counters."""

    __slots__ = (
        "bus",
        "topic",
        "fn",
        "name",
        "is_async",
        "queue",
        "active",
        "busy",
        "dropped",
        "delivered",
        "failures",
        "loop",
        "task",
        "generation",
        "waiter",
        "idle_waiters",
    )

    def __init__(self, bus: EventBus, topic: str, fn: Listener, max_queue: int) -> None:
        self.bus = bus
        self.topic = topic
        self.fn = fn
        self.name = _name_of(fn)
        self.is_async = _is_async(fn)
        # deque(maxlen) drops the oldest item by itself on append; we count before appending.
        self.queue: deque[Any] = deque(maxlen=max_queue)
        self.active = True
        self.busy = False
        self.dropped = 0
        self.delivered = 0
        self.failures = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[None] | None = None
        # A task of an abandoned loop could resume if that loop ever runs again; the generation
        # makes it exit instead of competing with the current task for the same queue.
        self.generation = 0
        self.waiter: asyncio.Future[None] | None = None
        self.idle_waiters: list[asyncio.Future[None]] = []

    # -- emitting side -------------------------------------------------------------------------

    def push(self, payload: Any, loop: asyncio.AbstractEventLoop | None) -> None:
        """Hand ``payload`` over from ``emit``, running on ``loop`` (None: no loop in this thread)."""
        bound = self.loop
        bound_elsewhere = bound is not None and bound is not loop and bound.is_running() and not bound.is_closed()
        if bound_elsewhere:
            # Our task lives on a loop running in another thread: only call_soon_threadsafe may touch it.
            assert bound is not None
            bound.call_soon_threadsafe(self.offer, payload)
            return
        if loop is None:
            self.deliver_now(payload)
            return
        if bound is not loop:
            self.bind(loop)
        self.offer(payload)

    def offer(self, payload: Any) -> None:
        """Queue ``payload`` (dropping the oldest when full) and wake the delivery task."""
        if not self.active:
            return
        if len(self.queue) == self.queue.maxlen:
            self.count_drop("its queue is full; the oldest event was dropped")
        self.queue.append(payload)
        self.ensure_task()
        self.wake()

    def offer_many(self, payloads: list[Any]) -> None:
        """:meth:`offer` each of ``payloads``, in order, waking the delivery task once."""
        if not self.active:
            return
        queue = self.queue
        overflow = len(queue) + len(payloads) - (queue.maxlen or 0)
        if overflow > 0:
            self.count_drop("its queue is full; the oldest events were dropped", overflow)
        queue.extend(payloads)
        self.ensure_task()
        self.wake()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach delivery to ``loop`` (the first loop seen, or a new one after the old one ended)."""
        self.loop = loop
        self.task = None
        self.waiter = None
        self.idle_waiters = []  # futures of a finished loop can never be awaited again
        self.generation += 1

    def ensure_task(self) -> None:
        """Start the delivery task on the bound loop unless one is running."""
        if self.loop is None or not self.active:
            return
        if self.task is None or self.task.done():
            self.generation += 1
            self.task = self.loop.create_task(
                self.run(self.generation), name=f"livetrader-listener:{self.topic}:{self.name}"
            )

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def count_drop(self, why: str, count: int = 1) -> None:
        before = self.dropped
        self.dropped += count
        self.bus._dropped_total += count
        # Warn at the 1st drop and whenever the count reaches another power of ten (10, 100…):
        # a stalled listener must not flood the log either.
        if before == 0 or len(str(self.dropped)) > len(str(before)):
            log.warning(f"event listener {self.name} on {self.topic!r}: {why}", dropped_so_far=self.dropped)

    # -- synchronous delivery (no event loop) ---------------------------------------------------

    def deliver_now(self, payload: Any) -> None:
        """Deliver without an event loop: plain functions now, ``async`` ones dropped (nothing could run them)."""
        if not self.active:
            return
        if self.is_async:
            self.count_drop("no running event loop to run an async listener; the event was dropped")
            return
        # Events left queued by a finished loop are older: keep the order by delivering them first.
        while self.queue:
            self.call_sync(self.queue.popleft())
        self.call_sync(payload)

    def call_sync(self, payload: Any) -> None:
        try:
            result = self.fn(payload)
        except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 - raised by the listener itself, not by a stop
            self.failures += 1
            self.bus._listener_failed(self, payload, exc)
            return
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()  # never awaited: close it so Python does not warn about it later
            self.count_drop("returned an awaitable but no event loop runs; the event was dropped")
            return
        self.delivered += 1

    # -- delivery task ----------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        return not self.queue and not self.busy

    def settle_idle(self) -> None:
        waiters, self.idle_waiters = self.idle_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def run(self, generation: int) -> None:
        """Deliver queued events one at a time, in order, until unsubscribed or superseded."""
        loop = asyncio.get_running_loop()
        try:
            while self.active and self.generation == generation:
                if not self.queue:
                    self.settle_idle()
                    fut: asyncio.Future[None] = loop.create_future()
                    self.waiter = fut
                    try:
                        await fut
                    finally:
                        if self.waiter is fut:
                            self.waiter = None
                    continue
                payload = self.queue.popleft()
                self.busy = True
                try:
                    pending = self.call(payload)
                    if pending is not None:
                        await self.settle(payload, pending)
                finally:
                    self.busy = False
        finally:
            if self.generation == generation:
                self.settle_idle()

    def call(self, payload: Any) -> Awaitable[Any] | None:
        """Call the listener; return what it handed back to await (an ``async`` one's coroutine), if anything.

        Plain functions, the common and hot case, cost no coroutine per event.
        """
        try:
            result = self.fn(payload)
        except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 - raised by the listener itself, not by a stop
            self.failures += 1
            self.bus._listener_failed(self, payload, exc)
            return None
        if result is not None and inspect.isawaitable(result):
            return result
        self.delivered += 1
        return None

    async def settle(self, payload: Any, result: Awaitable[Any]) -> None:
        """Await what a listener returned; its failure is the listener's, our cancellation is ours."""
        try:
            await result
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we are being stopped (unsubscribe/close): not the listener's failure
            # The listener itself was cancelled from inside (e.g. it awaited a cancelled future):
            # a failure like any other, and this delivery task must survive it.
            self.failures += 1
            self.bus._listener_failed(self, payload, asyncio.CancelledError("listener was cancelled"))
        except Exception as exc:  # noqa: BLE001 - reported; the listener keeps receiving
            self.failures += 1
            self.bus._listener_failed(self, payload, exc)
        else:
            self.delivered += 1

    async def wait_idle(self, loop: asyncio.AbstractEventLoop) -> None:
        """Return once every queued event has been delivered (on ``loop``)."""
        if self.idle or not self.active:
            return
        if self.loop is not loop:
            bound = self.loop
            if bound is not None and bound.is_running() and not bound.is_closed():
                return  # delivered by another thread's loop: not ours to wait for
            self.bind(loop)  # events left by a finished loop: deliver them on this one
        self.ensure_task()
        fut: asyncio.Future[None] = loop.create_future()
        self.idle_waiters.append(fut)
        self.wake()
        await fut

    def stop(self, *, interrupt: bool) -> asyncio.Task[None] | None:
        """Stop delivery; with ``interrupt`` cancel an in-flight call too. Returns a task to await, if any."""
        self.generation += 1
        self.wake()
        self.settle_idle()
        task = self.task
        self.task = None
        if task is None or task.done():
            return None
        if not interrupt and self.busy:
            return None  # let the in-flight call finish; the stale generation makes the task exit after it
        loop = self.loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is running:
            task.cancel()
            return task
        if loop is not None and loop.is_running() and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)
        return None


class EventBus:
    """Topics → listeners, each with its own bounded queue and delivery task (see the module doc).

    ``max_queue`` is the default capacity of a listener's queue; when it is full the oldest
    event is dropped and counted.
    """

    def __init__(self, *, max_queue: int = DEFAULT_MAX_QUEUE) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.max_queue = max_queue
        self._subs: dict[str, list[_Subscription]] = {topic: [] for topic in TOPICS}
        self._dropped_total = 0
        # While a sweep runs: the events emitted on the loop's thread, per topic, and that thread.
        self._held: dict[str, list[Any]] | None = None
        self._held_thread: int | None = None

    def listen(self, topic: str, fn: Listener, *, max_queue: int | None = None) -> Callable[[], None]:
        """Call ``fn(payload)`` for every event on ``topic``; returns a function that unsubscribes.

        ``fn`` may be a plain or an ``async`` function. Unsubscribing is idempotent; it discards
        the listener's undelivered events and lets an in-flight call finish.
        Raises ``ValueError`` for an unknown topic (a typo must not silently listen to nothing).
        """
        if topic not in self._subs:
            raise ValueError(f"unknown topic {topic!r}; expected one of {', '.join(TOPICS)}")
        if not callable(fn):
            raise TypeError("listener must be callable")
        capacity = self.max_queue if max_queue is None else max_queue
        if capacity < 1:
            raise ValueError("max_queue must be at least 1")
        if self._held and threading.get_ident() == self._held_thread:
            # Events held so far were emitted before this listener existed: they are not its own.
            held, self._held = self._held, {}
            self._deliver(held)
        sub = _Subscription(self, topic, fn, capacity)
        self._subs[topic].append(sub)

        def unsubscribe() -> None:
            if not sub.active:
                return
            sub.active = False
            sub.queue.clear()
            try:
                self._subs[topic].remove(sub)
            except ValueError:
                pass
            sub.stop(interrupt=False)

        return unsubscribe

    def has_listeners(self, topic: str) -> bool:
        """True when something listens to ``topic``: lets a hot path skip building an event nobody reads."""
        return bool(self._subs.get(topic))

    def emit(self, topic: str, payload: Any) -> None:
        """Queue ``payload`` for every listener of ``topic``; never blocks, never raises.

        An unknown topic is logged and ignored (emitting is on the hot path of every tick, so
        it must not raise). Without a running event loop, see the module doc.
        """
        try:
            subs = self._subs.get(topic)
            if subs is None:
                log.warning("emit on an unknown topic ignored", topic=topic)
                return
            if not subs:
                return
            held = self._held
            if held is not None and threading.get_ident() == self._held_thread:
                held.setdefault(topic, []).append(payload)
                return
            try:
                loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            for sub in tuple(subs):  # a listener may unsubscribe while we iterate (synchronous mode)
                try:
                    sub.push(payload, loop)
                except Exception:  # e.g. a foreign loop closed between the check and the hand-over
                    log.warning("could not queue an event for a listener", listener=sub.name, topic=topic,
                                exc_info=True)
        except Exception:
            log.warning("emit failed", topic=topic, exc_info=True)

    def pause(self) -> None:
        """Hold the events emitted on this loop's thread until :meth:`resume` (a sweep of the pairs runs).

        Every pair of a minute emits its tick result; queueing each for its listeners and
        letting their delivery tasks run between the pairs' ticks lengthens the sweep. Held,
        they are queued together when the sweep ends, in order, each listener's delivery task
        woken once: a listener receives the events of a sweep right after it instead of between
        the pairs' ticks. The bus is a member of the sweep's pause registry (``livetrader.sweep``):
        a sweep that outlasts its limit (a hung exchange) releases them anyway. Called on the
        event loop; events emitted from other threads are not held.
        """
        if self._held is not None:
            return
        self._held = {}
        self._held_thread = threading.get_ident()

    def resume(self) -> None:
        """Queue the held events for their listeners and stop holding (see :meth:`pause`)."""
        held, self._held = self._held, None
        self._deliver(held)

    def _deliver(self, held: dict[str, list[Any]] | None) -> None:
        if not held:
            return
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        for topic, payloads in held.items():
            for sub in tuple(self._subs.get(topic, ())):
                try:
                    if loop is not None and sub.loop is loop:
                        sub.offer_many(payloads)  # the usual case: one wake for the whole sweep
                    else:
                        for payload in payloads:
                            sub.push(payload, loop)
                except Exception:
                    log.warning("could not queue held events for a listener", listener=sub.name, topic=topic,
                                exc_info=True)

    def _listener_failed(self, sub: _Subscription, payload: Any, exc: BaseException) -> None:
        """Log a listener's exception and report it to the ``error`` listeners (unless it was one)."""
        message = redact(f"listener {sub.name} on {sub.topic!r} failed: {type(exc).__name__}: {exc}")
        log.warning(message, exc_info=exc)
        if sub.topic == "error":
            return  # reporting an error listener's failure to error listeners could loop forever
        event = ErrorEvent(
            symbol=_field(payload, "symbol"),
            strategy=_field(payload, "strategy"),
            exchange=_field(payload, "exchange"),
            at=_now_ms(),
            message=message,
            kind="listener",
        )
        self.emit("error", event)

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until every listener on this event loop has received every queued event.

        Returns True when all queues are delivered, False when ``timeout`` seconds passed first
        (used on shutdown, so a stuck listener cannot hold the process forever).
        """
        loop = asyncio.get_running_loop()
        self.resume()  # events held for a sweep are queued first
        waits = [sub.wait_idle(loop) for subs in self._subs.values() for sub in subs if not sub.idle]
        if not waits:
            return True
        try:
            await asyncio.wait_for(asyncio.gather(*waits), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self, timeout: float | None = 1.0) -> None:
        """Deliver what can be within ``timeout`` seconds, then stop every delivery task.

        Undelivered events are discarded and counted as dropped. Listeners stay subscribed: a
        later ``emit`` on a running loop starts delivery afresh (use :meth:`clear` to remove them).
        """
        if timeout is None or timeout > 0:
            await self.drain(timeout)
        tasks: list[asyncio.Task[None]] = []
        for subs in self._subs.values():
            for sub in subs:
                if sub.queue:
                    sub.count_drop("the bus was closed before delivery", len(sub.queue))
                    sub.queue.clear()
                task = sub.stop(interrupt=True)
                if task is not None:
                    tasks.append(task)
        if tasks:
            # Await the cancellations so no task is left pending when the loop closes.
            await asyncio.gather(*tasks, return_exceptions=True)

    def clear(self) -> None:
        """Unsubscribe every listener of every topic (their undelivered events are discarded)."""
        for subs in self._subs.values():
            for sub in list(subs):
                sub.active = False
                sub.queue.clear()
                sub.stop(interrupt=False)
            subs.clear()

    def listener_count(self, topic: str | None = None) -> int:
        """Listeners on ``topic``, or on every topic."""
        return sum(len(subs) for name, subs in self._subs.items() if topic in (None, name))

    def pending(self, topic: str | None = None) -> int:
        """Events queued and not yet delivered, on ``topic`` or on every topic."""
        return sum(len(sub.queue) for name, subs in self._subs.items() if topic in (None, name) for sub in subs)

    def dropped(self, topic: str | None = None) -> int:
        """Events dropped (full queue, no loop for an async listener, closed bus).

        Without ``topic``: the total since the bus was created, including listeners that have
        since unsubscribed; with ``topic``: the sum over its current listeners.
        """
        if topic is None:
            return self._dropped_total
        return sum(sub.dropped for sub in self._subs.get(topic, ()))


BUS: Final = EventBus()
"""The process-wide bus the live loops emit on and the ``listen_*`` functions subscribe to."""


def listen_signal(fn: Callable[[TickResult], Any]) -> Callable[[], None]:
    """Every tick result, live or backtest, on :data:`BUS`; returns the unsubscribe function."""
    return BUS.listen("signal", fn)


def listen_signal_live(fn: Callable[[TickResult], Any]) -> Callable[[], None]:
    """Every live tick result on :data:`BUS`; returns the unsubscribe function."""
    return BUS.listen("signal_live", fn)


def listen_signal_backtest(fn: Callable[[TickResult], Any]) -> Callable[[], None]:
    """Every backtest tick result on :data:`BUS`; returns the unsubscribe function."""
    return BUS.listen("signal_backtest", fn)


def listen_error(fn: Callable[[ErrorEvent], Any]) -> Callable[[], None]:
    """Every :class:`ErrorEvent` on :data:`BUS`; returns the unsubscribe function."""
    return BUS.listen("error", fn)


def listen_performance(fn: Callable[[PerformanceEvent], Any]) -> Callable[[], None]:
    """Every :class:`PerformanceEvent` (tick timing) on :data:`BUS`; returns the unsubscribe function."""
    return BUS.listen("performance", fn)


def listen_done(fn: Callable[[DoneEvent], Any]) -> Callable[[], None]:
    """Every :class:`DoneEvent` (a pair's loop ended) on :data:`BUS`; returns the unsubscribe function."""
    return BUS.listen("done", fn)


def listen_risk(fn: Callable[[RiskEvent], Any]) -> Callable[[], None]:
    """Every :class:`RiskEvent` (a rejected signal) on :data:`BUS`; returns the unsubscribe function."""
    return BUS.listen("risk", fn)
