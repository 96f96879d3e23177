"""A Binance-compatible kline stream (WebSocket) on 127.0.0.1, for tests and benchmarks of candle streaming.

It speaks Binance's combined streams: a client connects to ``/stream?streams=btcusdt@kline_1m/...``
and receives ``{"stream": "btcusdt@kline_1m", "data": {"e": "kline", "E": ms, "s": "BTCUSDT",
"k": {"t", "T", "s", "i", "o", "c", "h", "l", "v", "x", ...}}}``: for every subscribed symbol the
closed candle of each minute (``x: true``) right after that minute ends by the server's clock,
and updates of the forming candle (``x: false``) every ``forming_every`` seconds, as Binance sends
them (they are the stream's heartbeat). Like Binance, it replays nothing: a connection gets
the candles that close after it opened.

Candles are those of ``SimSource`` (pass the REST server's: ``StreamServer(sim=rest.sim)``), so
the stream and ``exchange_server.ExchangeServer`` agree candle for candle, and the clock is
injectable (a callable returning ms), e.g. the daemon's simulated one.

Faults (thread-safe, ``server.<fault>(...)``), each applied to the next closed candles sent:

- ``disconnect()``: close every connection now (the client reconnects);
- ``stall(until_ms)``: send nothing at all, connections kept open, until the server's clock
  reaches ``until_ms`` (the client must notice the silence); candles closing meanwhile are never sent;
- ``duplicate(times)``: send each of the next ``times`` closed candles twice;
- ``out_of_order(times)``: hold back the next ``times`` minutes' candles and send each after the
  following minute's;
- ``skip(times)``: never send the next ``times`` minutes' closed candles (a gap, as after a reconnect);
- ``forming(times)``: send ``times`` forming candles of a wild price (x false): never to be decided on;
- ``early_close(times)``: send the forming candle marked closed before its minute ends;
- ``malformed(times)``: send ``times`` frames that are not kline events (not JSON, fields missing,
  numbers that are not numbers).

``server.sent`` counts the closed candles sent; ``server.connections`` the connections accepted.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection, serve

from livetrader.core.price import MINUTE_MS, Candle
from livetrader.market.sim import DEFAULT_SYMBOLS, SimSource

Clock = Callable[[], int]


def wall_clock() -> int:
    """The machine's clock in ms."""
    return int(time.time() * 1000)


def kline_frame(symbol: str, candle: Candle, closed: bool, event_ms: int) -> bytes:
    """A combined-stream kline event of ``symbol`` (Binance's id), numbers as strings as Binance sends them."""
    k = {"t": candle.timestamp, "T": candle.timestamp + MINUTE_MS - 1, "s": symbol, "i": "1m", "f": 1, "L": 2,
         "o": repr(candle.open), "c": repr(candle.close), "h": repr(candle.high), "l": repr(candle.low),
         "v": repr(candle.volume), "n": 100, "x": closed, "q": repr(candle.volume * candle.close),
         "V": "0", "Q": "0", "B": "0"}
    return orjson.dumps({"stream": f"{symbol.lower()}@kline_1m",
                         "data": {"e": "kline", "E": event_ms, "s": symbol, "k": k}})


MALFORMED_FRAMES = (
    b"not json at all",
    b'{"stream": "btcusdt@kline_1m", "data": {"e": "kline"}}',
    b'{"stream": "btcusdt@kline_1m", "data": {"e": "kline", "s": "BTCUSDT", "k": {"t": 0, "s": "BTCUSDT", '
    b'"i": "1m", "o": "abc", "h": "1", "l": "1", "c": "1", "v": "1", "x": true}}}',
    b"[1, 2, 3]",
)


class StreamServer:
    """A Binance kline stream on 127.0.0.1 (a free port), served by its own thread and event loop.

    ``clock`` is the server's time in ms; ``sim`` the candles (default: a ``SimSource`` of
    ``seed`` and ``symbols``); ``step`` how often (real seconds) it looks for closed minutes;
    ``forming_every`` how often it sends the forming candles. Use as a context manager;
    ``url`` is ``ws://127.0.0.1:PORT``, the ``urls.stream_base`` to configure.
    """

    def __init__(self, clock: Clock = wall_clock, sim: SimSource | None = None, seed: int = 42,
                 symbols: dict[str, float] | None = None, step: float = 0.005, forming_every: float = 0.25) -> None:
        self.clock = clock
        self.sim = sim or SimSource(seed=seed, symbols=symbols if symbols is not None else dict(DEFAULT_SYMBOLS))
        self.step = step
        self.forming_every = forming_every
        self._lock = threading.Lock()
        self._faults: dict[str, int] = {}
        self._stall_until = 0
        self._disconnect = 0  # bumped to close every connection
        self.sent = 0
        self.connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._port = 0
        self._ready = threading.Event()
        self._candles: dict[tuple[str, int], Candle] = {}  # made once: thousands of symbols each minute

    def preload(self, start_ms: int, end_ms: int) -> None:
        """Make every symbol's candles of ``[start_ms, end_ms)`` now (benchmarks: not while serving)."""
        for symbol in self.sim.symbols:
            for candle in self.sim.fetch_sync(symbol, start_ms, end_ms):
                self._candles[(symbol, candle.timestamp)] = candle

    def _candle(self, symbol: str, minute: int) -> Candle:
        candle = self._candles.get((symbol, minute))
        if candle is None:
            candle = self._candles[(symbol, minute)] = self.sim.fetch_sync(symbol, minute, minute + MINUTE_MS)[0]
        return candle

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> StreamServer:
        """Serve on a daemon thread; returns once the port is bound."""
        self._thread = threading.Thread(target=self._serve_thread, name="stream-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the stream server did not start")
        return self

    def stop(self) -> None:
        """Close every connection and the port."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> StreamServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:PORT``."""
        return f"ws://127.0.0.1:{self._port}"

    # --- faults ------------------------------------------------------------------------------

    def _add(self, kind: str, times: int) -> None:
        with self._lock:
            self._faults[kind] = self._faults.get(kind, 0) + times

    def _take(self, kind: str) -> bool:
        with self._lock:
            left = self._faults.get(kind, 0)
            if left <= 0:
                return False
            self._faults[kind] = left - 1
            return True

    def pending(self, kind: str) -> int:
        """How many of a fault are still to happen."""
        with self._lock:
            return self._faults.get(kind, 0)

    def disconnect(self) -> None:
        """Close every open connection now."""
        with self._lock:
            self._disconnect += 1

    def stall(self, until_ms: int) -> None:
        """Send nothing, connections kept open, until the server's clock reaches ``until_ms``."""
        with self._lock:
            self._stall_until = until_ms

    def duplicate(self, times: int = 1) -> None:
        """Send each of the next ``times`` closed candles twice."""
        self._add("duplicate", times)

    def out_of_order(self, times: int = 1) -> None:
        """Send the next ``times`` minutes' candles after the following minute's."""
        self._add("out_of_order", times)

    def skip(self, times: int = 1) -> None:
        """Never send the next ``times`` minutes' closed candles."""
        self._add("skip", times)

    def forming(self, times: int = 1) -> None:
        """Send ``times`` forming candles of a wild price (x false)."""
        self._add("forming", times)

    def early_close(self, times: int = 1) -> None:
        """Send the forming candle marked closed before its minute ended, ``times`` times."""
        self._add("early_close", times)

    def malformed(self, times: int = 1) -> None:
        """Send ``times`` frames that are not kline events."""
        self._add("malformed", times)

    # --- serving -----------------------------------------------------------------------------

    def _serve_thread(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(self._connection, "127.0.0.1", 0, compression=None, max_size=2**20,
                         ping_interval=None) as server:
            self._port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    def _symbols_of(self, path: str) -> list[str] | None:
        query = parse_qs(urlsplit(path).query)
        streams = query.get("streams", [""])[0].split("/")
        symbols = []
        for stream in streams:
            name, _, kind = stream.partition("@")
            if kind != "kline_1m" or name.upper() not in self.sim.symbols:
                return None
            symbols.append(name.upper())
        return symbols

    async def _connection(self, ws: ServerConnection) -> None:
        symbols = self._symbols_of(ws.request.path if ws.request is not None else "")
        if not symbols:
            await ws.close(1008, "unknown stream")
            return
        with self._lock:
            self.connections += 1
            disconnects = self._disconnect
        now = self.clock()
        last_closed = now - now % MINUTE_MS - MINUTE_MS  # the last minute closed before the connection: not sent
        held_back: list[bytes] = []
        next_forming = 0.0
        try:
            while True:
                with self._lock:
                    if self._disconnect != disconnects:
                        await ws.close(1001, "going away")
                        return
                    stalled = self.clock() < self._stall_until
                now = self.clock()
                current = now - now % MINUTE_MS
                if stalled:
                    last_closed = current - MINUTE_MS  # what closes during a stall is never sent
                    await asyncio.sleep(self.step)
                    continue
                frames: list[bytes] = []
                while last_closed + MINUTE_MS < current:
                    last_closed += MINUTE_MS
                    frames.extend(self._minute(symbols, last_closed, now, held_back))
                if time.monotonic() >= next_forming:
                    next_forming = time.monotonic() + self.forming_every
                    frames.extend(self._forming(symbols, current, now))
                while self._take("malformed"):
                    frames.append(MALFORMED_FRAMES[self.pending("malformed") % len(MALFORMED_FRAMES)])
                for frame in frames:
                    await ws.send(frame.decode())
                await asyncio.sleep(self.step)
        except Exception:  # noqa: BLE001 - the client went away: this connection ends
            return

    def _minute(self, symbols: list[str], minute: int, now: int, held_back: list[bytes]) -> list[bytes]:
        """The closed-candle frames of ``minute`` for every symbol, faults applied."""
        if self._take("skip"):
            return []
        frames = []
        for symbol in symbols:
            candle = self._candle(symbol, minute)
            frame = kline_frame(symbol, candle, True, now)
            frames.append(frame)
            if self._take("duplicate"):
                frames.append(frame)
        with self._lock:
            self.sent += len(symbols)
        if held_back:  # the previous minute's, held back: after this one
            frames, held_back[:] = frames + held_back, []
        elif self._take("out_of_order"):
            held_back[:] = frames
            return []
        return frames

    def _forming(self, symbols: list[str], current: int, now: int) -> list[bytes]:
        """The forming candles (x false), or a forming one marked closed (``early_close``)."""
        frames = []
        for symbol in symbols:
            candle = self._candle(symbol, current)
            if self._take("forming"):
                candle = Candle(candle.timestamp, candle.open * 10, candle.high * 10, candle.low * 10,
                                candle.close * 10, candle.volume)
            # Marked closed well before its minute ends (20 s at least): no clock skew excuses it.
            early = now - current < 40_000 and self._take("early_close")
            frames.append(kline_frame(symbol, candle, early, now))
        return frames


def stream_symbols(count: int) -> dict[str, float]:
    """``count`` synthetic symbols (``S0000USDT``...) with base prices, for scale tests and benchmarks."""
    return {f"S{i:04d}USDT": 1.0 + (i % 97) for i in range(count)}



def main(argv: list[str]) -> None:
    """``python tests/stream_server.py SYMBOLS ORIGIN_WALL ORIGIN_SIM SPEED FIRST END``: a stream of
    ``stream_symbols(SYMBOLS)`` on the simulated clock ``SimClock(ORIGIN_WALL, ORIGIN_SIM, SPEED)``, its
    candles of ``[FIRST, END)`` made first; prints its URL, serves until stdin closes. For benchmarks:
    in a process of its own, its work is not counted as the client's."""
    import sys

    from livetrader.live.clock import SimClock

    count, origin_wall, origin_sim, speed, first, end = argv
    clock = SimClock(int(origin_wall), int(origin_sim), float(speed))
    server = StreamServer(clock=clock.now_ms, symbols=stream_symbols(int(count)), forming_every=5.0)
    server.preload(int(first), int(end))
    with server:
        print(server.url, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
