"""Delivery of notifications: a bounded queue per channel and one thread doing the HTTP.

Why a thread: delivery blocks on the network (a slow Telegram, a webhook that never answers),
and nothing of it may touch the event loop. ``offer`` only appends to a deque under a lock;
the channel's own thread sends, one request at a time, each with a timeout.

* Retries: a 429, a 5xx, a timeout or a refused connection is tried again, waiting what the
  server's ``Retry-After`` says (or Telegram's ``parameters.retry_after``), else a doubling
  backoff from ``retry_seconds``, at most ``retry_max_seconds``, up to ``retries`` attempts.
  Any other answer (400, 401, 404) is final for that message: retrying cannot fix it.
* Drops: when the queue is full the oldest message is dropped; a message whose attempts ran out
  is dropped too; both are counted (``dropped``) and shown in the metrics.
* A channel that keeps failing is logged once when it starts failing and once when it delivers
  again, never once per message.
* Secrets: every body is redacted (``livetrader.redaction``) before it leaves, and so is every
  log line about a failure (a request URL holds the bot token).
"""

from __future__ import annotations

import email.utils
import json
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from livetrader.config import NotifyConfig
from livetrader.logs import get_logger
from livetrader.redaction import redact
from livetrader.service.notify.format import Message

log = get_logger(__name__)


@dataclass(slots=True, frozen=True)
class Request:
    """One HTTP POST a channel sends: ``what`` names it in logs (no secret in it)."""

    url: str
    body: bytes
    headers: dict[str, str]
    what: str


class RetryLater(Exception):
    """The server asked to try again (429, 5xx) or did not answer; ``retry_after`` seconds if it said."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class Refused(Exception):
    """The server refused the message for good (4xx other than 429): retrying cannot help."""


#: Turns a message into the requests that deliver it (one per Telegram chat, one per webhook).
Prepare = Callable[[Message], list[Request]]


def retry_after_of(headers: Any, body: bytes) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or an HTTP date), or Telegram's ``retry_after``."""
    value = headers.get("Retry-After") if headers is not None else None
    if value:
        value = value.strip()
        if value.replace(".", "", 1).isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            return max(0.0, when.timestamp() - time.time())
    try:
        answer = json.loads(body or b"{}")
        seconds = answer.get("parameters", {}).get("retry_after") if isinstance(answer, dict) else None
    except (ValueError, AttributeError):
        return None
    return float(seconds) if isinstance(seconds, int | float) and not isinstance(seconds, bool) else None


def post(request: Request, timeout: float) -> None:
    """Send one POST; RetryLater or Refused when it was not accepted."""
    req = urllib.request.Request(request.url, data=request.body, headers=request.headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as answer:
            answer.read()
    except urllib.error.HTTPError as exc:
        body = exc.read() if exc.fp is not None else b""
        if exc.code == 429 or exc.code >= 500:
            raise RetryLater(f"HTTP {exc.code}", retry_after_of(exc.headers, body)) from None
        raise Refused(f"HTTP {exc.code}: {body[:200].decode('utf-8', 'replace')}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RetryLater(f"no answer: {reason}") from None


class Channel:
    """One configured channel: its queue, its thread, its counters."""

    def __init__(self, config: NotifyConfig, prepare: Prepare, send: Callable[[Request, float], None] = post) -> None:
        self.config = config
        self.name = config.name
        self.events = frozenset(config.events)
        self.prepare = prepare
        self.send = send
        self.queue: deque[Request] = deque()
        self.capacity = config.queue
        self.sent = 0
        self.dropped = 0
        self.failures = 0
        self.failing = False
        self._cond = threading.Condition()
        self._closing = False
        self._deadline: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"livetrader-notify-{self.name}", daemon=True)
        self._busy = False

    def wants(self, kind: str) -> bool:
        """True when this channel was configured to send messages of ``kind``."""
        return kind in self.events

    def start(self) -> None:
        """Start the delivery thread."""
        self._thread.start()

    def offer(self, message: Message) -> None:
        """Queue ``message`` for delivery; never blocks (the oldest is dropped when the queue is full)."""
        if message.kind not in self.events:
            return
        try:
            requests = self.prepare(message)
        except Exception as exc:  # noqa: BLE001 - a message that cannot be built is dropped, said, and counted
            self._drop(1, f"the message could not be built: {exc}")
            return
        with self._cond:
            if self._closing and self._deadline is not None and time.monotonic() > self._deadline:
                return
            overflow = len(self.queue) + len(requests) - self.capacity
            for _ in range(max(0, overflow)):
                if self.queue:
                    self.queue.popleft()
            self.queue.extend(requests[-self.capacity:])
            self._cond.notify()
        if overflow > 0:
            self._drop(overflow, "its queue is full; the oldest messages were dropped")

    def _drop(self, count: int, why: str) -> None:
        before = self.dropped
        self.dropped += count
        # The first drop and each further power of ten: a dead endpoint must not flood the log.
        if before == 0 or len(str(self.dropped)) > len(str(before)):
            log.warning(f"notification channel {self.name}: {why}", dropped_so_far=self.dropped)

    def pending(self) -> int:
        """Requests queued or being sent."""
        return len(self.queue) + (1 if self._busy else 0)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self.queue and not self._closing:
                    self._cond.wait()
                past_deadline = self._deadline is not None and time.monotonic() > self._deadline
                if not self.queue or past_deadline:
                    return
                request = self.queue.popleft()
                self._busy = True
            try:
                self._deliver(request)
            except Exception:
                log.warning(f"notification channel {self.name}: delivery failed unexpectedly", exc_info=True)
            finally:
                self._busy = False

    def _deliver(self, request: Request) -> None:
        """Send ``request``, retrying as the module doc says; count what happens."""
        config = self.config
        wait = config.retry_seconds
        reason = ""
        for attempt in range(1, config.retries + 1):
            try:
                self.send(request, config.timeout_seconds)
            except RetryLater as exc:
                self.failures += 1
                reason = str(exc)
                if attempt == config.retries:
                    break
                pause = min(exc.retry_after if exc.retry_after is not None else wait, config.retry_max_seconds)
                wait = min(wait * 2, config.retry_max_seconds)
                if not self._sleep(pause):
                    break  # stopping, and the stop's grace is over
                continue
            except Refused as exc:
                self.failures += 1
                reason = str(exc)
                break
            self.sent += 1
            if self.failing:
                self.failing = False
                log.info(f"notification channel {self.name} delivers again")
            return
        self._drop(1, f"a message was not delivered: {redact(reason)}")
        if not self.failing:
            self.failing = True
            log.error(f"notification channel {self.name} is failing: {redact(reason)}; messages are dropped until it "
                      "delivers again (said once)", what=request.what)

    def _sleep(self, seconds: float) -> bool:
        """Wait ``seconds`` before a retry; False when a stop's deadline would pass first."""
        with self._cond:
            deadline = self._deadline
        if deadline is not None and time.monotonic() + seconds > deadline:
            return False
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            with self._cond:
                if self._closing and self._deadline is not None and time.monotonic() > self._deadline:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def close(self, timeout: float) -> None:
        """Deliver what is queued within ``timeout`` seconds, then stop; what is left is dropped and counted."""
        self.begin_close(time.monotonic() + timeout)
        self.finish_close()

    def begin_close(self, deadline: float) -> None:
        """Stop taking new messages after ``deadline`` (monotonic); deliver until then."""
        with self._cond:
            self._closing = True
            self._deadline = deadline
            self._cond.notify_all()

    def finish_close(self) -> None:
        """Wait for the thread (until the deadline, and a request in flight at most ``timeout_seconds`` past
        it), then count what was left undelivered."""
        deadline = self._deadline if self._deadline is not None else time.monotonic()
        if self._thread.is_alive():
            self._thread.join(max(0.0, deadline - time.monotonic()) + 0.5)
        with self._cond:
            left = len(self.queue)
            self.queue.clear()
        if left:
            self._drop(left, "the daemon stopped before they were delivered")
