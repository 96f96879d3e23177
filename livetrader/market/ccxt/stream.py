"""Closed 1-minute candles pushed by an exchange's WebSocket stream, shared by every pair on it.

Polling an exchange over REST costs one rate-limited request per symbol and minute: on
Binance ~20 ms apart, so the thousandth symbol is decided ~20 s after the candle's close.
Binance's kline stream pushes each symbol's closed candle within milliseconds of the close,
with no request weight. ``CandleStream`` holds one set of connections per exchange (up to
``STREAMS_PER_CONNECTION`` symbols each, combined streams: ``/stream?streams=btcusdt@kline_1m/...``)
and hands every *closed* candle (the kline's ``x`` flag; the forming candle's updates are only
a heartbeat) to the exchange's ``CandleFeed.push``, which validates it exactly as a fetched
candle (``validate_candles`` and the spike check) and holds it; then it wakes that symbol's
pairs (``on_closed``, the metronome's ``fire_key``).

Gaps are never silent and never decided on: a candle that is not the next minute of what the
feed holds is not held; the pair's next tick finds the minute missing and backfills it over
REST (``CandleFeed.fetch``) before deciding. A disconnect, or a stream silent for
``stream_stall_seconds``, is logged once, counted, and reconnected with exponential backoff;
while it is down the engine does not wait for it (``up`` is False) and its pairs poll as
before. Duplicates and replays are dropped; a candle that runs ahead of a missing one waits
(``_AHEAD_KEPT``) for the missing one to come, else the REST backfill covers it.

Why not ``ccxt.pro``: its ``binance.handle_ohlcv`` (ccxt 4.5) parses ``k`` into a plain OHLCV
row and drops ``x``, so a closed candle cannot be told from the forming one except by waiting
for the next minute's first update (a delay, and none at all for a quiet symbol); and its
reconnect is passive (the next ``watch_*`` call reconnects) with no gap detection, which this
module would have to add anyway. The client here is aiohttp's, which ccxt already depends on:
no new dependency. Exchanges other than Binance's (``binance``, ``binanceus``) are polled.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from livetrader.core.price import MINUTE_MS, Candle, CandleError
from livetrader.logs import get_logger

log = get_logger(__name__)

#: Streams per connection: Binance takes up to 1024, and the URL of 200 stays well under any
#: server's request-line limit.
STREAMS_PER_CONNECTION = 200
#: Each exchange's public kline stream root, by ccxt id (live network, then test network).
STREAM_ROOTS = {"binance": "wss://stream.binance.com:9443", "binanceus": "wss://stream.binance.us:9443"}
TEST_STREAM_ROOTS = {"binance": "wss://stream.testnet.binance.vision"}
#: How long (of the engine's clock) after a boundary a pair waits for its symbol's candle before
#: its tick fetches it over REST instead.
STREAM_GRACE_MS = 2_000
#: ... but never less real time than this: on a fast simulated clock 2 s of it are a few ms, less
#: than a thousand candles take to arrive (and never more than half a minute of the clock).
STREAM_GRACE_MIN_SECONDS = 0.5
#: How far in the future of this machine's clock a candle's close may be and still count as
#: closed (clock skew); a "closed" candle further ahead is refused as malformed.
_CLOSE_SKEW_MS = 1_000
_BACKOFF_FIRST_SECONDS = 0.2
_BACKOFF_MAX_SECONDS = 30.0
_AHEAD_KEPT = 5  # candles kept per symbol while an earlier one is missing
#: A connection up this long before it ended starts the reconnect backoff afresh; a shorter one
#: (an exchange that accepts and closes at once) goes on backing off.
_HEALTHY_SECONDS = 60.0
_COUNTERS = ("candles", "duplicates", "out_of_sequence", "forming", "malformed", "rejected", "disconnects",
             "stalls", "connect_failures")


def stream_root(settings: Any) -> str | None:
    """The stream root of a ccxt exchange's settings (``CcxtSettings``), None when its candles are polled:
    ``candles = "poll"``, an exchange without a kline stream livetrader speaks, or a REST server
    moved (``urls.api_base``) with no ``urls.stream_base`` beside it."""
    if settings.candles != "stream":
        return None
    if settings.stream_base is not None:
        return str(settings.stream_base)
    if settings.api_base is not None:
        return None
    roots = TEST_STREAM_ROOTS if settings.test_network else STREAM_ROOTS
    return roots.get(settings.ccxt_id)


def grace_seconds(real_seconds: Callable[[float], float]) -> float:
    """Real seconds after a boundary that a pair waits for its streamed candle, given its clock's
    ``real_seconds`` (ms of the clock -> real seconds): ``STREAM_GRACE_MS``, at least
    ``STREAM_GRACE_MIN_SECONDS``, at most half a minute of the clock."""
    return min(max(real_seconds(STREAM_GRACE_MS), STREAM_GRACE_MIN_SECONDS), real_seconds(MINUTE_MS / 2))


class _Stalled(Exception):
    """The connection sent nothing for ``stall_seconds``."""


class CandleStream:
    """The kline stream of one exchange: connections, closed candles into the feed, state and counters.

    ``ids`` maps the exchange's symbol ids (``BTCUSDT``) to the unified symbols the feed and
    pairs use; ``push(symbol, candle)`` is ``CandleFeed.push``; ``on_closed(symbol, boundary)``
    is called when a symbol's candle closing at ``boundary`` was held (or showed a gap the tick
    must backfill); ``clock`` is the engine's (ms). ``start()`` in the running loop, ``close()`` to end.
    """

    def __init__(self, name: str, root: str, ids: dict[str, str], push: Callable[[str, Candle], str],
                 on_closed: Callable[[str, int], object], clock: Callable[[], int],
                 stall_seconds: float = 30.0, backoff_first: float = _BACKOFF_FIRST_SECONDS,
                 backoff_max: float = _BACKOFF_MAX_SECONDS) -> None:
        self.name = name
        self.root = root.rstrip("/")
        self.ids = ids
        self.push = push
        self.on_closed = on_closed
        self.clock = clock
        self.stall_seconds = stall_seconds
        self.backoff_first = backoff_first
        self.backoff_max = backoff_max
        streams = [f"{market_id.lower()}@kline_1m" for market_id in sorted(ids)]
        self.chunks = [streams[i:i + STREAMS_PER_CONNECTION] for i in range(0, len(streams), STREAMS_PER_CONNECTION)]
        self._connected = [False] * len(self.chunks)
        self._ever_up = False
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._ahead: dict[str, dict[int, Candle]] = {}
        self._logged_minute: dict[str, int] = {}  # kind of trouble -> the minute it was last logged
        #: What happened, counted since the start (shown in status).
        self.counts = dict.fromkeys(_COUNTERS, 0)
        #: The engine-clock time of the last closed candle held, and of the last frame of any kind (ms).
        self.last_candle_at: int | None = None
        self.last_frame_at: int | None = None
        #: ``connecting`` (before the first connect), ``up`` (every connection open), ``down`` or ``closed``.
        self.state = "connecting"
        #: How many candles the feed has fetched over REST (priming, backfills, polling while down), if known.
        self.rest_candles: Callable[[], int] | None = None

    @property
    def up(self) -> bool:
        """True while every connection is open: pairs wait for its candles rather than poll."""
        return self.state == "up"

    def start(self) -> None:
        """Open the connections (in the running loop); returns at once."""
        self._tasks = [asyncio.create_task(self._run(index), name=f"{self.name} candle stream {index}")
                       for index in range(len(self.chunks))]

    async def close(self) -> None:
        """Close every connection and stop reconnecting."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        self.state = "closed"

    def status(self) -> dict[str, Any]:
        """State and counters, for the status file."""
        return {"state": self.state, "connections": len(self.chunks), "connected": sum(self._connected),
                "symbols": len(self.ids), "last_candle_at": self.last_candle_at, **self.counts,
                "rest_candles": self.rest_candles() if self.rest_candles is not None else None}

    # --- connections ---------------------------------------------------------------------------

    async def _run(self, index: int) -> None:
        """Keep connection ``index`` open: connect, read, and on any end reconnect with backoff."""
        import aiohttp

        url = f"{self.root}/stream?streams={'/'.join(self.chunks[index])}"
        delay = self.backoff_first
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self._closing:
                reason = "closed by the exchange"
                opened = time.monotonic()
                try:
                    async with session.ws_connect(url, autoping=True, max_msg_size=16 * 1024 * 1024) as ws:
                        await self._read(ws, index)
                except _Stalled:
                    self.counts["stalls"] += 1
                    reason = f"silent for {self.stall_seconds:g} s (stalled)"
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    if not self._connected[index]:
                        self.counts["connect_failures"] += 1
                    reason = f"{type(exc).__name__}: {exc}"[:200]
                except Exception as exc:  # noqa: BLE001 - never the silent end of the stream: said, then reconnected
                    reason = f"{type(exc).__name__}: {exc}"[:200]
                    log.error("candle stream: unexpected error; reconnecting", exchange=self.name, error=reason)
                if self._closing:
                    return
                if time.monotonic() - opened >= _HEALTHY_SECONDS:
                    delay = self.backoff_first  # it was up a good while: this outage starts the backoff afresh
                self._set_connected(index, False, reason)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_max)

    async def _read(self, ws: Any, index: int) -> None:
        """Handle the frames of connection ``index`` until it closes (or stalls: ``_Stalled``).

        The connection counts as up from its first frame: one that opens and stays silent (a
        stalled server) is not, so its reconnects are counted but not logged as a flapping stream.
        """
        import aiohttp

        while True:
            try:
                # aiohttp's own timeout: ``asyncio.wait_for`` would make a task per frame.
                message = await ws.receive(timeout=self.stall_seconds)
            except TimeoutError:
                raise _Stalled from None
            if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                if not self._connected[index]:
                    self._set_connected(index, True)
                self.receive(message.data)
            elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                                  aiohttp.WSMsgType.ERROR):
                return

    def _set_connected(self, index: int, connected: bool, reason: str = "") -> None:
        """Record a connection opening or ending; log only when the exchange's state changes."""
        was = self._connected[index]
        self._connected[index] = connected
        if connected:
            if all(self._connected) and self.state != "up":
                log.info("candle stream up", exchange=self.name, symbols=len(self.ids), connections=len(self.chunks),
                         again=self._ever_up)
                self.state = "up"
                self._ever_up = True
            return
        if was:
            self.counts["disconnects"] += 1
        if self.state != "down":
            # One line per outage (the retries are counted, not logged): pairs poll meanwhile.
            log.warning("candle stream down; polling candles over REST until it is back", exchange=self.name,
                        reason=reason)
            self.state = "down"

    # --- frames --------------------------------------------------------------------------------

    def receive(self, frame: str | bytes) -> str:
        """Handle one frame (a kline event, bare or in a combined-stream envelope); returns what became
        of it: ``held``, ``duplicate``, ``ahead``, ``unheld``, ``forming``, ``rejected`` or ``malformed``."""
        now = self.clock()
        self.last_frame_at = now
        parsed = _parse(frame)
        if isinstance(parsed, str):
            return self._trouble("malformed", now, parsed)
        market_id, candle, closed = parsed
        if not closed:
            self.counts["forming"] += 1
            return "forming"
        symbol = self.ids.get(market_id)
        if symbol is None:
            return self._trouble("malformed", now, f"a symbol not subscribed: {market_id[:40]!r}")
        if candle.timestamp + MINUTE_MS > now + _CLOSE_SKEW_MS:
            return self._trouble("malformed", now, f"{symbol} candle of {candle.timestamp} marked closed before "
                                                   "its minute ended")
        outcome = self._hold(symbol, candle, now)
        if outcome == "ahead":
            ahead = self._ahead.setdefault(symbol, {})
            ahead[candle.timestamp] = candle
            if len(ahead) > _AHEAD_KEPT:
                del ahead[min(ahead)]
            self._trouble("out_of_sequence", now, f"{symbol}: a minute before {candle.timestamp} is missing; "
                                                  "backfilled over REST when a pair needs it")
            self.on_closed(symbol, candle.timestamp + MINUTE_MS)  # its tick backfills the gap, now
        return outcome

    def _hold(self, symbol: str, candle: Candle, now: int) -> str:
        """Push ``candle`` (and any kept ones that now follow it) into the feed."""
        try:
            outcome = self.push(symbol, candle)
        except CandleError as exc:
            return self._trouble("rejected", now, f"{symbol}: {exc}")
        if outcome == "duplicate":
            self.counts["duplicates"] += 1
        if outcome != "held":
            return outcome
        self.counts["candles"] += 1
        self.last_candle_at = now
        last = candle.timestamp
        ahead = self._ahead.get(symbol)
        while ahead:
            following = ahead.pop(last + MINUTE_MS, None)
            if following is None:
                for stale in [t for t in ahead if t <= last]:
                    del ahead[stale]
                break
            try:
                if self.push(symbol, following) != "held":
                    break
            except CandleError as exc:
                self._trouble("rejected", now, f"{symbol}: {exc}")
                break
            self.counts["candles"] += 1
            last = following.timestamp
        self.on_closed(symbol, last + MINUTE_MS)
        return "held"

    def _trouble(self, kind: str, now: int, detail: str) -> str:
        """Count a problem; log the first of its kind each minute (a reconnect may bring a thousand)."""
        self.counts[kind] += 1
        minute = now - now % MINUTE_MS
        if self._logged_minute.get(kind) != minute:
            self._logged_minute[kind] = minute
            log.warning(f"candle stream: {kind.replace('_', ' ')}", exchange=self.name, detail=detail[:200],
                        count=self.counts[kind])
        return kind


def _parse(frame: str | bytes) -> tuple[str, Candle, bool] | str:
    """``(symbol id, candle, closed)`` of a kline event, or why it is not one."""
    try:
        doc = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return f"not JSON: {str(frame)[:60]!r}"
    data = doc.get("data", doc) if isinstance(doc, dict) else None
    kline = data.get("k") if isinstance(data, dict) else None
    if not isinstance(kline, dict):
        if isinstance(doc, dict) and "result" in doc and "id" in doc:
            return "an answer to a request, not a kline"
        return f"not a kline event: {str(frame)[:60]!r}"
    try:
        market_id, opened, closed, interval = kline["s"], kline["t"], kline["x"], kline["i"]
        values = [float(kline[k]) for k in ("o", "h", "l", "c", "v")]
    except (KeyError, TypeError, ValueError):
        return f"a kline with a missing or non-numeric field: {str(frame)[:80]!r}"
    if (not isinstance(market_id, str) or isinstance(opened, bool) or not isinstance(opened, int)
            or not isinstance(closed, bool) or interval != "1m" or opened % MINUTE_MS):
        return f"a kline that is not a 1-minute candle: {str(frame)[:80]!r}"
    return market_id, Candle(opened, *values), closed


def can_stream(feed: Any) -> bool:
    """True when the candles of ``feed`` (a ``CandleFeed``) are to come by stream: a ccxt exchange
    with a stream (``stream_root``) whose settings do not ask to poll."""
    from livetrader.market.ccxt.source import CcxtSource

    source = getattr(feed, "source", None)
    return isinstance(source, CcxtSource) and stream_root(source.settings) is not None


def open_stream(name: str, feed: Any, symbols: Iterable[str], on_closed: Callable[[str, int], object],
                clock: Callable[[], int], *, quiet: bool = False) -> CandleStream | None:
    """The started candle stream of exchange ``name`` for ``symbols`` (unified), or None when its
    candles are polled: a source that is not a ccxt exchange (``sim``, ``files``), ``candles =
    "poll"``, or an exchange without a stream (``stream_root``), or one whose markets are not
    loaded yet (said once, unless ``quiet``: the engine tries again each minute). ``feed`` is its
    ``CandleFeed``."""
    from livetrader.market.ccxt.source import CcxtSource

    source = getattr(feed, "source", None)
    if not isinstance(source, CcxtSource):
        return None
    root = stream_root(source.settings)
    if root is None:
        if source.settings.candles == "stream" and not quiet:
            log.info("no candle stream for this exchange; candles are polled over REST", exchange=name,
                     ccxt_id=source.settings.ccxt_id)
        return None
    ids: dict[str, str] = {}
    polled: list[str] = []
    for symbol in symbols:
        market_id = source.market_id(symbol)
        if market_id is None:
            if not quiet:
                log.warning("candle stream: markets not loaded; candles are polled over REST until they are",
                            exchange=name)
            return None
        if not source.is_spot(symbol):
            # The stream roots are the spot ones, and a perpetual may share its spot market's id:
            # its candles would be the spot market's. Derivatives are polled.
            polled.append(symbol)
            continue
        ids[market_id] = symbol
    if polled and not quiet:
        log.info("candle stream: spot markets only; these are polled over REST", exchange=name, symbols=polled)
    if not ids:
        return None
    stream = CandleStream(name, root, ids, feed.push, on_closed, clock, source.settings.stream_stall_seconds)
    stream.rest_candles = lambda: int(feed.fetched)
    stream.start()
    return stream


def wall_ms() -> int:
    """The machine's clock in ms (the default of a stream built alone)."""
    return int(time.time() * 1000)
