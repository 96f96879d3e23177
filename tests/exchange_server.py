"""A small Binance-compatible REST server on 127.0.0.1, for tests of the ccxt path without the internet.

It speaks the public endpoints ccxt's ``binance`` uses for markets, candles and tickers::

    GET /api/v3/ping              {}
    GET /api/v3/time              {"serverTime": ms}
    GET /api/v3/exchangeInfo      symbols with PRICE_FILTER, LOT_SIZE and NOTIONAL filters
    GET /api/v3/klines            1-minute candles from ``SimSource`` (deterministic per symbol and minute)
    GET /api/v3/ticker/24hr       one symbol (``?symbol=``) or all

and the signed spot-trading ones (``X-MBX-APIKEY`` header, ``timestamp`` and ``signature`` params
required: -2014 / -1102 / -1022 otherwise; the signature itself is not checked; parameters are read
from the query string and from a urlencoded body alike)::

    POST   /api/v3/order          MARKET (quantity or quoteOrderQty), LIMIT, LIMIT_MAKER, STOP_LOSS(_LIMIT),
                                  TAKE_PROFIT(_LIMIT); newOrderRespType ACK / RESULT / FULL (fills)
    GET    /api/v3/order          by orderId or origClientOrderId (the latest order with that id)
    DELETE /api/v3/order          cancel an open order (-2011 otherwise)
    GET    /api/v3/openOrders     with or without symbol
    GET    /api/v3/allOrders      symbol; orderId, startTime, endTime, limit
    GET    /api/v3/myTrades       symbol; orderId, startTime/endTime (24 h at most), fromId, limit
    GET    /api/v3/account        balances free/locked, commission rates
    GET    /sapi/v1/capital/config/getall   the currencies  } ccxt asks for these with an API key,
    GET    /sapi/v1/margin/allPairs, /sapi/v1/margin/isolated/allPairs  [] } outside sandbox mode

Orders go to ``server.account`` (``exchange_account.Account``): balances, orders and trades, and a
matching engine over the same candles: a market order fills at the close of the last closed
minute times (1 +/- slippage), resting orders fill when a candle closed since they were placed
crosses them (checked on every request); fees in the asset received; Binance's filters, balance
checks and client-id rule (a duplicate only among *open* orders).

Candles are those of ``livetrader.exchanges.sim.SimSource`` with the server's seed, so a test can
compute the expected candles itself. Only minutes that have closed by the server's clock are
served (``include_forming=True`` also serves the candle still forming, as the real Binance does).
The clock is injectable (a callable returning ms), so a test can run the server on a simulated
clock or skew it against the machine; the ``Date`` header follows it too.

Faults are injected through ``server.faults`` (thread-safe), for the next N matching requests
(path substring, optional method) or until a time of the server's clock, each counting its hits:

- any request: HTTP errors (``status``: 429/418 with ``Retry-After``, 503 as HTML, or any status and
  body), ``down`` (every request until a time), ``hang`` (held, then 504), ``malformed`` JSON;
- klines: damaged candle batches (missing candles, high below low, a zero price, a 1000x spike);
- orders (``POST /api/v3/order`` unless told otherwise): ``order_status`` (a 5xx before placing:
  not placed; ``placed=True``: placed), ``order_hang`` (placed, the answer held N seconds),
  ``accept_then_drop`` (placed, the connection closed without an answer), ``api_error`` (any Binance
  error, placed or not), ``insufficient`` (-2010), ``filter_failure`` (-1013), ``unknown_status``
  (-1006 / -1007 "execution status unknown", placed or not), ``partial_fill`` (a market order fills
  a fraction and EXPIRES; a limit order stays PARTIALLY_FILLED), ``order_not_found`` (a just-placed
  order answers -2013 for N seconds of server clock or N queries).

``server.requests`` logs every request (method, path, query, body params, API key) for assertions;
``server.order_requests(client_id)`` picks the order placements that carried a client id.

Usage::

    with ExchangeServer(clock=lambda: now_ms, balances={"USDT": 10_000}) as server:
        config = {"urls": {"api_base": server.url}, ...}
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from exchange_account import Account, ApiError

from livetrader.core.price import MINUTE_MS, Candle
from livetrader.market.sim import DEFAULT_SYMBOLS, SimSource

Clock = Callable[[], int]

#: Kinds of fault that replace the whole answer (``placed=True``: after the request was carried out).
REQUEST_FAULTS = frozenset({"status", "hang", "malformed", "accept_then_drop", "api_error"})
#: Kinds of fault that change how the next order is placed (``POST /api/v3/order`` only), not the answer.
PLACEMENT_FAULTS = frozenset({"partial", "order_not_found"})
#: Kinds of fault that damage a klines batch (other endpoints are not affected by them).
CANDLE_FAULTS = frozenset({"drop", "high_below_low", "zero_price", "spike"})

#: Endpoints that need the API key header and a signature, as on Binance.
SIGNED_PATHS = ("/api/v3/order", "/api/v3/openOrders", "/api/v3/allOrders", "/api/v3/myTrades", "/api/v3/account",
                "/sapi/")
ORDER_PATH = "/api/v3/order"

_KLINES_DEFAULT_LIMIT = 500
_KLINES_MAX_LIMIT = 1000


def wall_clock() -> int:
    """The machine's time in ms: the default server clock."""
    return int(time.time() * 1000)


@dataclass(slots=True)
class Fault:
    """One injected fault: what to do, to which requests, how many times, until when.

    ``times`` None means every matching request until ``until_ms`` (server clock) passes;
    ``path`` is a substring of the request path (None: every request), ``method`` the HTTP method
    (None: any). ``minutes`` are the opening times of the candles a candle fault damages (None: the
    middle candle of the batch). ``placed`` True: the request is carried out (the order placed or
    cancelled) before the fault replaces its answer. ``retry_after`` is the ``Retry-After`` header
    of a 429/418; ``code``/``msg`` the Binance error of an ``api_error``; ``fraction`` the share a
    ``partial`` fill fills; ``seconds``/``queries`` how long an ``order_not_found`` lasts;
    ``order_type`` (e.g. ``STOP_LOSS``) limits a fault to the requests carrying that ``type``, and
    ``symbol`` (e.g. ``ETHUSDT``) to those carrying that ``symbol``.
    """

    kind: str
    times: int | None = 1
    path: str | None = None
    until_ms: int | None = None
    status: int = 503
    body: str | None = None
    seconds: float = 0.0
    minutes: tuple[int, ...] | None = None
    method: str | None = None
    placed: bool = False
    retry_after: int | None = None
    code: int = 0
    msg: str = ""
    fraction: float = 0.5
    queries: int = 0
    order_type: str | None = None
    symbol: str | None = None
    hits: int = 0

    def matches(self, path: str, now_ms: int, method: str = "GET", params: dict[str, str] | None = None) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.order_type is not None and (params or {}).get("type") != self.order_type:
            return False
        if self.symbol is not None and (params or {}).get("symbol") != self.symbol:
            return False
        if self.until_ms is not None and now_ms >= self.until_ms:
            return False
        if self.path is not None and self.path not in path:
            return False
        if self.method is not None and self.method != method:
            return False
        if self.kind in PLACEMENT_FAULTS and not (method == "POST" and path == ORDER_PATH):
            return False
        return not (self.kind in CANDLE_FAULTS and "klines" not in path)


class Faults:
    """The faults waiting to be served, shared with the request threads (all methods lock).

    Each ``add`` returns the ``Fault``; its ``hits`` counts the requests it answered. A fault
    with a count is used up after that many matching requests; a fault with ``until_ms`` ends
    when the server clock reaches it. The first matching request fault wins; every matching
    candle fault is applied to a klines batch.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, kind: str, times: int | None = 1, **options: Any) -> Fault:
        """Queue a fault of ``kind`` (see ``REQUEST_FAULTS`` and ``CANDLE_FAULTS``)."""
        if kind not in REQUEST_FAULTS | CANDLE_FAULTS | PLACEMENT_FAULTS:
            raise ValueError(f"unknown fault kind {kind!r}")
        if times is None and options.get("until_ms") is None:
            raise ValueError("a fault needs a count (times) or an end (until_ms)")
        if "minutes" in options and options["minutes"] is not None:
            options["minutes"] = tuple(options["minutes"])
        fault = Fault(kind, times, **options)
        with self._lock:
            self._faults.append(fault)
        return fault

    # Shorthands for the common faults.

    def status(self, code: int, times: int | None = 1, body: str | None = None, **options: Any) -> Fault:
        """Answer ``code`` (429, 418, 503, ...) with ``body`` (default: a Binance-style error).

        A 429 or 418 carries ``Retry-After`` (``retry_after`` seconds, default 1). With
        ``placed=True`` the request is carried out first (a 5xx after the order was placed).
        """
        return self.add("status", times, status=code, body=body, **options)

    def down(self, until_ms: int, code: int = 503, **options: Any) -> Fault:
        """Answer ``code`` to every request until the server clock reaches ``until_ms``."""
        return self.add("status", None, status=code, until_ms=until_ms, **options)

    def hang(self, seconds: float, times: int | None = 1, **options: Any) -> Fault:
        """Hold the request ``seconds`` before answering (a client timeout when longer than its own)."""
        return self.add("hang", times, seconds=seconds, **options)

    # Order faults: by default they hit the next ``POST /api/v3/order`` (an order placement).

    def order_status(self, code: int = 503, placed: bool = False, times: int | None = 1, **options: Any) -> Fault:
        """Answer the next order placement with HTTP ``code``: before placing it or (``placed``) after."""
        return self.status(code, times, **_order_defaults(options), placed=placed)

    def order_hang(self, seconds: float, placed: bool = True, times: int | None = 1, **options: Any) -> Fault:
        """Hold the next placement's answer ``seconds``; ``placed`` (default): the order is placed, then the
        real answer follows the hold; not placed: a 504 follows it."""
        return self.hang(seconds, times, **_order_defaults(options), placed=placed)

    def accept_then_drop(self, times: int | None = 1, **options: Any) -> Fault:
        """Carry out the next placement, then close the connection without an answer (the order exists)."""
        return self.add("accept_then_drop", times, **_order_defaults(options), placed=True)

    def api_error(self, code: int, msg: str, status: int = 400, placed: bool = False, times: int | None = 1,
                  **options: Any) -> Fault:
        """Answer the next placement with the Binance error ``{code, msg}`` (HTTP ``status``)."""
        return self.add("api_error", times, code=code, msg=msg, status=status, **_order_defaults(options),
                        placed=placed)

    def insufficient(self, times: int | None = 1, **options: Any) -> Fault:
        """-2010 "Account has insufficient balance for requested action." (not placed)."""
        return self.api_error(-2010, "Account has insufficient balance for requested action.", 400, False, times,
                              **options)

    def filter_failure(self, name: str = "NOTIONAL", times: int | None = 1, **options: Any) -> Fault:
        """-1013 "Filter failure: NAME" (LOT_SIZE, NOTIONAL, PRICE_FILTER; not placed)."""
        return self.api_error(-1013, f"Filter failure: {name}", 400, False, times, **options)

    def unknown_status(self, placed: bool, code: int = -1006, times: int | None = 1, **options: Any) -> Fault:
        """Binance's "execution status unknown": -1006 (HTTP 500) or -1007 timeout (HTTP 408), with the
        order placed or not."""
        if code == -1007:
            msg, status = ("Timeout waiting for response from backend server. Send status unknown; "
                           "execution status unknown."), 408
        else:
            msg, status = "An unexpected response was received from the message bus. Execution status unknown.", 500
        return self.api_error(code, msg, status, placed, times, **options)

    def partial_fill(self, fraction: float = 0.5, times: int | None = 1, **options: Any) -> Fault:
        """The next placed order's first fill takes only ``fraction`` of it: a market order then ends
        EXPIRED with executedQty < origQty (Binance's answer to a book too thin); a limit order stays
        PARTIALLY_FILLED until a later candle fills the rest."""
        return self.add("partial", times, fraction=fraction, **_order_defaults(options))

    def order_not_found(self, seconds: float = 0.0, queries: int = 0, times: int | None = 1,
                        **options: Any) -> Fault:
        """The next placed order is unknown to queries (-2013; -2011 to a cancel; left out of openOrders
        and allOrders) for ``seconds`` of the server clock and for ``queries`` queries; myTrades shows
        its fills."""
        if seconds <= 0 and queries <= 0:
            raise ValueError("order_not_found needs seconds or queries")
        return self.add("order_not_found", times, seconds=seconds, queries=queries, **_order_defaults(options))

    def malformed(self, times: int | None = 1, **options: Any) -> Fault:
        """Answer 200 with a truncated, unparseable JSON body."""
        return self.add("malformed", times, **options)

    def drop(self, minutes: Iterable[int] | None = None, times: int | None = 1, **options: Any) -> Fault:
        """Leave out the candles opening at ``minutes`` (default: the middle one) from a klines batch."""
        return self.add("drop", times, minutes=minutes, **options)

    def bad_candle(self, kind: str, minutes: Iterable[int] | None = None, times: int | None = 1,
                   **options: Any) -> Fault:
        """Damage candles: ``high_below_low``, ``zero_price`` or ``spike`` (prices times 1000)."""
        return self.add(kind, times, minutes=minutes, **options)

    def clear(self) -> None:
        """Forget every fault."""
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[Fault]:
        """The faults not used up yet (copies are not made: read-only use)."""
        with self._lock:
            return list(self._faults)

    def take(self, path: str, now_ms: int, method: str = "GET",
             params: dict[str, str] | None = None) -> tuple[Fault | None, list[Fault]]:
        """The request fault and the candle and placement faults that apply to one request, counted as used.

        A request fault that answers instead of the request (``placed`` False) leaves the others unused.
        """
        with self._lock:
            request: Fault | None = None
            candles: list[Fault] = []
            for fault in self._faults:
                if not fault.matches(path, now_ms, method, params):
                    continue
                if fault.kind in REQUEST_FAULTS:
                    if request is None:
                        request = fault
                else:
                    candles.append(fault)
            if request is not None:
                request.hits += 1
                if not request.placed:
                    # The request is answered without being carried out: the other faults wait for the next.
                    candles = []
            for fault in candles:
                fault.hits += 1
            # Drop the used-up ones so pending() shows what is left.
            self._faults = [f for f in self._faults if f.times is None or f.hits < f.times]
            return request, candles


def _order_defaults(options: dict[str, Any]) -> dict[str, Any]:
    """An order fault hits ``POST /api/v3/order`` unless told otherwise."""
    options.setdefault("path", ORDER_PATH)
    options.setdefault("method", "POST")
    return options


@dataclass(frozen=True, slots=True)
class Request:
    """One logged request: ``query`` from the URL, ``body`` from a urlencoded POST body."""

    method: str
    path: str
    query: dict[str, str]
    at_ms: int  # on the server's clock
    received: float  # time.monotonic() on arrival, to measure the spacing of requests
    body: dict[str, str] = field(default_factory=dict)
    api_key: str | None = None  # the X-MBX-APIKEY header

    @property
    def params(self) -> dict[str, str]:
        """Query and body parameters together (Binance reads both)."""
        return {**self.query, **self.body}


@dataclass(slots=True)
class _State:
    clock: Clock
    sim: SimSource
    faults: Faults
    include_forming: bool
    stopping: threading.Event
    account: Account
    log: list[Request] = field(default_factory=list)
    log_lock: threading.Lock = field(default_factory=threading.Lock)


def _tick_size(price: float) -> str:
    """A tick about a millionth of the price, between 1e-8 and 0.01, as Binance writes it."""
    exponent = min(-2, max(-8, math.floor(math.log10(price)) - 6))
    return f"{10.0 ** exponent:.8f}"


def _symbol_info(symbol: str, base_price: float) -> dict[str, Any]:
    """One ``exchangeInfo`` symbol, with every field ccxt's parser reads."""
    quote = next(q for q in ("USDT", "USDC", "BTC", "ETH", "EUR") if symbol.endswith(q))
    base = symbol[: -len(quote)]
    return {
        "symbol": symbol,
        "status": "TRADING",
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT",
                       "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": _tick_size(base_price), "maxPrice": "1000000.00000000",
             "tickSize": _tick_size(base_price)},
            {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000000.00000000",
             "stepSize": "0.00001000"},
            {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
             "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def _num(value: float) -> str:
    """Binance sends numbers as strings; repr keeps every digit so tests can compare exactly."""
    return repr(float(value))


def _kline(c: Candle) -> list[Any]:
    return [c.timestamp, _num(c.open), _num(c.high), _num(c.low), _num(c.close), _num(c.volume),
            c.timestamp + MINUTE_MS - 1, _num(c.volume * c.close), 100, _num(c.volume / 2),
            _num(c.volume * c.close / 2), "0"]


_ApiError = ApiError  # the name the candle code uses


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as ccxt's aiohttp session expects of a real exchange
    # Headers and body go out in two writes: with Nagle's algorithm on, the second waits for the
    # client's delayed ACK, about +44 ms per request. (A handler attribute, not the server's.)
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # `format`: the stdlib's signature
        """Quiet: tests read ``server.requests`` instead."""

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The ``Date`` header on the server's (injectable) clock."""
        return formatdate(self.server.state.clock() / 1000, usegmt=True)

    def do_GET(self) -> None:  # the stdlib's name
        self._handle("GET")

    def do_POST(self) -> None:  # the stdlib's name
        self._handle("POST")

    def do_DELETE(self) -> None:  # the stdlib's name
        self._handle("DELETE")

    def do_PUT(self) -> None:  # the stdlib's name
        self._handle("PUT")

    def _handle(self, method: str) -> None:
        state = self.server.state
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        body = dict(parse_qsl(raw, keep_blank_values=True)) if raw else {}
        now = state.clock()
        with state.log_lock:
            state.log.append(Request(method, parts.path, query, now, time.monotonic(), body,
                                     self.headers.get("X-MBX-APIKEY")))
        fault, faults = state.faults.take(parts.path, now, method, {**query, **body})
        candle_faults = [f for f in faults if f.kind in CANDLE_FAULTS]
        placement = [f for f in faults if f.kind in PLACEMENT_FAULTS]
        if fault is not None and not fault.placed:
            self._fault(fault)
            return
        try:
            # Resting orders first: a candle that closed since the last request may have filled one.
            state.account.match(now)
            payload = self._route(method, parts.path, {**query, **body}, now, candle_faults, placement)
            status, answer = 200, json.dumps(payload, separators=(",", ":"))
        except ApiError as exc:
            status, answer = exc.status, exc.body
        if fault is None:
            self._send(status, answer)
        elif fault.kind == "accept_then_drop":
            self.close_connection = True  # done, and the client never hears of it
        elif fault.kind == "hang":
            if state.stopping.wait(fault.seconds):
                self.close_connection = True
                return
            self._send(status, answer)
        else:
            self._fault(fault)

    def _route(self, method: str, path: str, query: dict[str, str], now: int, candle_faults: list[Fault],
               placement: list[Fault]) -> Any:
        state = self.server.state
        if path.startswith(SIGNED_PATHS):
            self._check_signed(query)
            return self._route_signed(method, path, query, now, placement)
        if method != "GET":
            raise ApiError(405, -1000, f"{method} {path} is not served")
        if path == "/api/v3/ping":
            return {}
        if path == "/api/v3/time":
            return {"serverTime": now}
        if path == "/api/v3/exchangeInfo":
            return {
                "timezone": "UTC",
                "serverTime": now,
                "rateLimits": [
                    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
                ],
                "exchangeFilters": [],
                "symbols": [_symbol_info(s, p) for s, p in state.sim.symbols.items()],
            }
        if path == "/api/v3/klines":
            return self._klines(query, now, candle_faults)
        if path == "/api/v3/ticker/24hr":
            if "symbol" in query:
                return self._ticker(self._symbol(query), now)
            return [self._ticker(s, now) for s in state.sim.symbols]
        raise _ApiError(404, -1000, f"unknown endpoint {path}")

    def _check_signed(self, params: dict[str, str]) -> None:
        """A signed endpoint needs the key header, a timestamp and a signature (any signature will do)."""
        if not self.headers.get("X-MBX-APIKEY"):
            raise ApiError(401, -2014, "API-key format invalid.")
        if not params.get("timestamp"):
            raise ApiError(400, -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.")
        if not params.get("signature"):
            raise ApiError(400, -1022, "Signature for this request is not valid.")

    def _route_signed(self, method: str, path: str, params: dict[str, str], now: int,
                      placement: list[Fault]) -> Any:
        account = self.server.state.account
        route = (method, path)
        if route == ("POST", ORDER_PATH):
            fraction = next((f.fraction for f in placement if f.kind == "partial"), None)
            hide = next((f for f in placement if f.kind == "order_not_found"), None)
            return account.place(
                params, now, fill_fraction=fraction,
                hidden_until_ms=now + int(hide.seconds * 1000) if hide is not None and hide.seconds > 0 else None,
                hidden_queries=hide.queries if hide is not None else 0,
            )
        if route == ("GET", ORDER_PATH):
            return account.query(params, now)
        if route == ("DELETE", ORDER_PATH):
            return account.cancel(params, now)
        if route == ("GET", "/api/v3/openOrders"):
            return account.open_orders_json(params, now)
        if route == ("GET", "/api/v3/allOrders"):
            return account.all_orders_json(params, now)
        if route == ("GET", "/api/v3/myTrades"):
            return account.my_trades_json(params)
        if route == ("GET", "/api/v3/account"):
            return account.account_json(now)
        if route == ("GET", "/sapi/v1/capital/config/getall"):
            return [_coin(asset) for asset in account.account_json(now)["balances"]]
        if route in (("GET", "/sapi/v1/margin/allPairs"), ("GET", "/sapi/v1/margin/isolated/allPairs")):
            return []  # ccxt asks with an API key outside sandbox mode (options.fetchMargins); no margin here
        raise ApiError(404, -1000, f"unknown endpoint {method} {path}")

    def _symbol(self, query: dict[str, str]) -> str:
        symbol = query.get("symbol", "")
        if symbol not in self.server.state.sim.symbols:
            raise _ApiError(400, -1121, "Invalid symbol.")
        return symbol

    def _int(self, query: dict[str, str], name: str) -> int | None:
        if name not in query:
            return None
        try:
            return int(query[name])
        except ValueError:
            raise _ApiError(400, -1100, f"Illegal characters found in parameter '{name}'.") from None

    def _klines(self, query: dict[str, str], now: int, candle_faults: list[Fault]) -> list[list[Any]]:
        state = self.server.state
        symbol = self._symbol(query)
        if query.get("interval") != "1m":
            raise _ApiError(400, -1120, "Invalid interval.")
        limit = self._int(query, "limit") or _KLINES_DEFAULT_LIMIT
        if not 0 < limit <= _KLINES_MAX_LIMIT:
            raise _ApiError(400, -1130, "Data sent for parameter 'limit' is not valid.")
        start = self._int(query, "startTime")
        end = self._int(query, "endTime")
        current = now - now % MINUTE_MS
        # The last opening time served: the last closed minute, or the forming one when asked.
        last = current if state.include_forming else current - MINUTE_MS
        if end is not None:
            last = min(last, end - end % MINUTE_MS)
        if start is not None:
            first = -(-start // MINUTE_MS) * MINUTE_MS
            last = min(last, first + (limit - 1) * MINUTE_MS)
        else:
            first = last - (limit - 1) * MINUTE_MS
        if last < first:
            return []
        candles = state.sim.fetch_sync(symbol, first, last + MINUTE_MS)
        for fault in candle_faults:
            candles = _damage(candles, fault)
        return [_kline(c) for c in candles]

    def _ticker(self, symbol: str, now: int) -> dict[str, Any]:
        current = now - now % MINUTE_MS
        day = self.server.state.sim.fetch_sync(symbol, current - 1440 * MINUTE_MS, current)
        first, last = day[0], day[-1]
        volume = sum(c.volume for c in day)
        return {
            "symbol": symbol,
            "priceChange": _num(last.close - first.open),
            "priceChangePercent": f"{(last.close - first.open) / first.open * 100:.3f}",
            "weightedAvgPrice": _num(sum(c.close * c.volume for c in day) / volume),
            "prevClosePrice": _num(first.open),
            "lastPrice": _num(last.close),
            "lastQty": "0.01000000",
            "bidPrice": _num(last.close),
            "bidQty": "1.00000000",
            "askPrice": _num(last.close),
            "askQty": "1.00000000",
            "openPrice": _num(first.open),
            "highPrice": _num(max(c.high for c in day)),
            "lowPrice": _num(min(c.low for c in day)),
            "volume": _num(volume),
            "quoteVolume": _num(sum(c.volume * c.close for c in day)),
            "openTime": first.timestamp,
            "closeTime": current - 1,
            "firstId": 1,
            "lastId": 1440,
            "count": 1440,
        }

    def _fault(self, fault: Fault) -> None:
        if fault.kind == "status":
            if fault.body is not None:
                self._send(fault.status, fault.body)
            elif fault.status in (418, 429):
                self._send(fault.status, json.dumps({"code": -1003, "msg": "Too many requests (injected fault)."}),
                           retry_after=fault.retry_after if fault.retry_after is not None else 1)
            else:
                # What a load balancer in front of an exchange answers: HTML, not the API's JSON.
                self._send(fault.status, f"<html><body><h1>{fault.status} injected fault</h1></body></html>",
                           "text/html")
        elif fault.kind == "api_error":
            self._send(fault.status, json.dumps({"code": fault.code, "msg": fault.msg}))
        elif fault.kind == "accept_then_drop":
            self.close_connection = True
        elif fault.kind == "malformed":
            self._send(200, '[[1700000000000,"42000.0","42100.0"')
        elif fault.kind == "hang":
            # Interruptible, so shutting the server down does not wait for a hanging request.
            if self.server.state.stopping.wait(fault.seconds):
                self.close_connection = True
                return
            self._send(504, "<html><body><h1>504 Gateway Time-out</h1></body></html>", "text/html")

    def _send(self, status: int, body: str, content_type: str = "application/json;charset=UTF-8",
              retry_after: int | None = None) -> None:
        data = body.encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            if retry_after is not None:
                self.send_header("Retry-After", str(retry_after))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (its timeout fired during a hang): nothing to tell it.
            self.close_connection = True


def _coin(balance: dict[str, Any]) -> dict[str, Any]:
    """One ``/sapi/v1/capital/config/getall`` entry (what ccxt's currency parser reads)."""
    asset = balance["asset"]
    return {"coin": asset, "name": asset, "free": balance["free"], "locked": balance["locked"], "freeze": "0",
            "withdrawing": "0", "ipoing": "0", "ipoable": "0", "storage": "0", "isLegalMoney": False,
            "trading": True, "depositAllEnable": True, "withdrawAllEnable": True,
            "networkList": [{"network": asset, "coin": asset, "name": asset, "isDefault": True,
                             "depositEnable": True, "withdrawEnable": True, "withdrawFee": "0",
                             "withdrawMin": "0", "withdrawMax": "9999999999", "withdrawIntegerMultiple": "0.00000001",
                             "minConfirm": 1, "unLockConfirm": 0, "busy": False}]}


def _damage(candles: list[Candle], fault: Fault) -> list[Candle]:
    """The batch with ``fault`` applied to its chosen candles (default: the middle one)."""
    if not candles:
        return candles
    chosen = set(fault.minutes) if fault.minutes is not None else {candles[len(candles) // 2].timestamp}
    out = []
    for c in candles:
        if c.timestamp not in chosen:
            out.append(c)
        elif fault.kind == "drop":
            continue
        elif fault.kind == "high_below_low":
            out.append(c._replace(high=c.low * 0.99))
        elif fault.kind == "zero_price":
            out.append(c._replace(low=0.0))
        elif fault.kind == "spike":
            out.append(c._replace(open=c.open * 1000, high=c.high * 1000, low=c.low * 1000, close=c.close * 1000))
    return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hanging request must never keep the test process alive
    state: _State

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Connections the client dropped are expected (timeouts); anything else is printed."""
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class ExchangeServer:
    """A Binance-compatible REST server on 127.0.0.1 (a free port), run on a background thread.

    ``clock`` returns the server's time in ms (default: the machine's); ``seed`` and ``symbols``
    are those of the ``SimSource`` that makes the candles (default: ``DEFAULT_SYMBOLS``);
    ``port`` 0 picks a free one. ``balances`` are the account's free amounts at start
    (``{"USDT": 10_000}``); ``fee_rate`` and ``slippage`` those of the matching engine
    (``server.account``, see ``exchange_account.Account``).
    Use as a context manager; ``url`` is ``http://127.0.0.1:PORT``.
    """

    def __init__(self, clock: Clock = wall_clock, seed: int = 42, symbols: dict[str, float] | None = None,
                 include_forming: bool = False, port: int = 0, balances: dict[str, float] | None = None,
                 fee_rate: float = 0.001, slippage: float = 0.0005) -> None:
        self.requested_port = port  # 0: any free port; a fixed one brings a "down" exchange back
        self.sim = SimSource(seed=seed, symbols=symbols if symbols is not None else dict(DEFAULT_SYMBOLS))
        self.faults = Faults()
        # The account reads the clock through the state, so ``server.clock = ...`` moves it too.
        self.account = Account(self.sim, lambda: self._state.clock(), balances, fee_rate, slippage)
        self._state = _State(clock, self.sim, self.faults, include_forming, threading.Event(), self.account)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> ExchangeServer:
        """Bind a free port and serve on a daemon thread."""
        httpd = _Server(("127.0.0.1", self.requested_port), _Handler)
        httpd.state = self._state
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="exchange-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port; hanging requests are released at once."""
        self._state.stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> ExchangeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what tests read and change -----------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port."""
        assert self._httpd is not None, "the server is not started"
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the ``api_base`` to give the ccxt source."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def clock(self) -> Clock:
        """The server's clock."""
        return self._state.clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        self._state.clock = clock

    @property
    def include_forming(self) -> bool:
        """Whether klines include the candle still forming (as the real Binance does)."""
        return self._state.include_forming

    @include_forming.setter
    def include_forming(self, value: bool) -> None:
        self._state.include_forming = value

    @property
    def requests(self) -> list[Request]:
        """Every request so far, oldest first (a copy)."""
        with self._state.log_lock:
            return list(self._state.log)

    def count(self, path: str) -> int:
        """How many requests had ``path`` in their path."""
        return sum(1 for r in self.requests if path in r.path)

    def order_requests(self, client_id: str | None = None, method: str = "POST") -> list[Request]:
        """The ``/api/v3/order`` requests of ``method`` (default: placements), those carrying
        ``client_id`` (as ``newClientOrderId`` or ``origClientOrderId``) when given."""
        return [r for r in self.requests if r.path == ORDER_PATH and r.method == method
                and (client_id is None or client_id in (r.params.get("newClientOrderId"),
                                                        r.params.get("origClientOrderId")))]

    def clear_log(self) -> None:
        """Forget the logged requests."""
        with self._state.log_lock:
            self._state.log.clear()

    def candles(self, symbol: str, start_ms: int, end_ms: int) -> list[Candle]:
        """The undamaged candles the server serves for ``symbol`` opening in ``[start_ms, end_ms)``."""
        return self.sim.fetch_sync(symbol, start_ms, end_ms)
