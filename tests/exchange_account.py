"""The trading side of the test exchange: one spot account and a matching engine over the sim candles.

``Account`` holds balances (free and locked per asset), orders and trades, all behind one lock
(the HTTP server answers on many threads). It answers in Binance's JSON shapes; ``ApiError`` is a
Binance error answer (HTTP status, code, message) that the server sends as is.

Prices: the "current price" of a symbol is the close of the last minute closed by the server's
clock. A MARKET order fills at once at that price times (1 +/- slippage), rounded to the tick;
LIMIT and STOP orders rest (their funds locked) and are matched against every candle that closed
since they were placed, each time the server sees a request (``match``). The fee (``fee_rate`` of
what is received) is charged in the asset received, as Binance does without BNB: a buy pays in the
base asset, a sell in the quote asset. Amounts are ``Decimal``: quantities on the 0.00001 lot step,
prices on the tick, quote amounts and commissions to 8 decimals, so balances add up exactly.

Binance rules kept: LOT_SIZE (min and step), PRICE_FILTER (tick), NOTIONAL (min 5) -> -1013
"Filter failure: ..."; free balance short -> -2010 "Account has insufficient balance ..."; a client
id must match ``^[a-zA-Z0-9-_]{1,36}$`` (-1100) and must not be that of an *open* order (-2010
"Duplicate order sent."; a filled or cancelled order's id is accepted again, as a new order); a
stop that would trigger at once -> -2010 "Stop price would trigger immediately."; a MARKET order
that cannot fill completely (the ``partial`` fault) ends EXPIRED with executedQty < origQty.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from livetrader.core.price import MINUTE_MS
from livetrader.market.sim import SimSource

QUOTES = ("USDT", "USDC", "BTC", "ETH", "EUR")
LOT_STEP = Decimal("0.00001")
LOT_MIN = Decimal("0.00001")
LOT_MAX = Decimal("9000000")
MIN_NOTIONAL = Decimal("5")
EIGHT = Decimal("0.00000001")
CLIENT_ID = re.compile(r"^[a-zA-Z0-9-_]{1,36}$")
OPEN_STATUSES = frozenset({"NEW", "PARTIALLY_FILLED"})
ORDER_TYPES = frozenset({"MARKET", "LIMIT", "LIMIT_MAKER", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT",
                         "TAKE_PROFIT_LIMIT"})
#: How many minutes of candles one matching pass reads at most (a clock jumped far ahead).
_MAX_MATCH_MINUTES = 10_000
_DAY_MS = 24 * 60 * MINUTE_MS


class ApiError(Exception):
    """A Binance-style error answer: HTTP ``status`` with ``{"code": code, "msg": msg}``."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status = status
        self.code = code
        self.body = json.dumps({"code": code, "msg": msg})


def split_symbol(symbol: str) -> tuple[str, str]:
    """``BTCUSDT`` -> ``("BTC", "USDT")``."""
    quote = next(q for q in QUOTES if symbol.endswith(q))
    return symbol[: -len(quote)], quote


def tick_size(price: float) -> Decimal:
    """A tick about a millionth of the price, between 1e-8 and 0.01 (the server's PRICE_FILTER)."""
    exponent = min(-2, max(-8, math.floor(math.log10(price)) - 6))
    return Decimal(1).scaleb(exponent)


def fmt(value: Decimal) -> str:
    """Binance writes amounts with 8 decimals."""
    return f"{value:.8f}"


@dataclass(slots=True)
class Trade:
    """One fill of one order."""

    id: int
    order_id: int
    symbol: str
    side: str
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    commission: Decimal
    commission_asset: str
    time: int
    is_maker: bool

    def as_fill(self) -> dict[str, Any]:
        """The entry in a FULL order answer's ``fills``."""
        return {"price": fmt(self.price), "qty": fmt(self.qty), "commission": fmt(self.commission),
                "commissionAsset": self.commission_asset, "tradeId": self.id}

    def as_binance(self) -> dict[str, Any]:
        """The ``myTrades`` entry."""
        return {"symbol": self.symbol, "id": self.id, "orderId": self.order_id, "orderListId": -1,
                "price": fmt(self.price), "qty": fmt(self.qty), "quoteQty": fmt(self.quote_qty),
                "commission": fmt(self.commission), "commissionAsset": self.commission_asset,
                "time": self.time, "isBuyer": self.side == "BUY", "isMaker": self.is_maker, "isBestMatch": True}


@dataclass(slots=True)
class Order:
    """One order as the exchange holds it."""

    order_id: int
    client_id: str
    symbol: str
    side: str  # BUY / SELL
    type: str  # MARKET, LIMIT, STOP_LOSS, ...
    qty: Decimal
    price: Decimal  # 0 for market orders
    stop_price: Decimal  # 0 unless a stop type
    time_in_force: str | None
    time: int
    update_time: int
    status: str = "NEW"
    executed: Decimal = Decimal(0)
    cum_quote: Decimal = Decimal(0)
    working: bool = True  # False for a stop not triggered yet
    working_time: int = -1
    locked_asset: str = ""
    locked: Decimal = Decimal(0)  # what is still locked for this order
    quote_order_qty: Decimal = Decimal(0)
    fill_fraction: Decimal | None = None  # the ``partial`` fault: the share of the order that can fill
    matched_until: int = 0  # candles opening before this were matched against the order
    hidden_until_ms: int | None = None  # the ``order_not_found`` fault: queries answer -2013 until then
    hidden_queries: int = 0  # ... or for this many more queries
    trades: list[Trade] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        """NEW or PARTIALLY_FILLED."""
        return self.status in OPEN_STATUSES

    def hidden(self, now_ms: int) -> bool:
        """Whether queries still say "does not exist" (the transient -2013 fault)."""
        return (self.hidden_until_ms is not None and now_ms < self.hidden_until_ms) or self.hidden_queries > 0

    def as_binance(self) -> dict[str, Any]:
        """The ``GET /api/v3/order`` shape."""
        return {
            "symbol": self.symbol, "orderId": self.order_id, "orderListId": -1, "clientOrderId": self.client_id,
            "price": fmt(self.price), "origQty": fmt(self.qty), "executedQty": fmt(self.executed),
            "cummulativeQuoteQty": fmt(self.cum_quote), "status": self.status,
            "timeInForce": self.time_in_force or "GTC", "type": self.type, "side": self.side,
            "stopPrice": fmt(self.stop_price), "icebergQty": fmt(Decimal(0)), "time": self.time,
            "updateTime": self.update_time, "isWorking": self.working, "workingTime": self.working_time,
            "origQuoteOrderQty": fmt(self.quote_order_qty), "selfTradePreventionMode": "EXPIRE_MAKER",
        }

    def as_placed(self, resp_type: str, transact_time: int) -> dict[str, Any]:
        """The ``POST /api/v3/order`` answer for ``newOrderRespType`` ACK, RESULT or FULL."""
        ack = {"symbol": self.symbol, "orderId": self.order_id, "orderListId": -1, "clientOrderId": self.client_id,
               "transactTime": transact_time}
        if resp_type == "ACK":
            return ack
        result = {**ack, "price": fmt(self.price), "origQty": fmt(self.qty), "executedQty": fmt(self.executed),
                  "origQuoteOrderQty": fmt(self.quote_order_qty), "cummulativeQuoteQty": fmt(self.cum_quote),
                  "status": self.status, "timeInForce": self.time_in_force or "GTC", "type": self.type,
                  "side": self.side, "workingTime": self.working_time, "selfTradePreventionMode": "EXPIRE_MAKER"}
        if self.stop_price:
            result["stopPrice"] = fmt(self.stop_price)
        if resp_type == "FULL":
            result["fills"] = [t.as_fill() for t in self.trades]
        return result


def _decimal(params: dict[str, str], name: str, required: bool = False) -> Decimal | None:
    if name not in params or params[name] == "":
        if required:
            raise ApiError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
        return None
    try:
        value = Decimal(params[name])
    except InvalidOperation:
        raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is "
                                   "'^([0-9]{1,20})(\\.[0-9]{1,20})?$'.") from None
    if not value.is_finite() or value < 0:
        raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'.")
    return value


def _on_step(value: Decimal, step: Decimal) -> bool:
    return (value / step) == (value / step).to_integral_value()


class Account:
    """One spot account: balances, orders, trades and the matching engine (every method locks).

    ``balances`` maps assets to their free amount at start. ``fee_rate`` is charged on what each
    fill gives (in that asset); ``slippage`` moves a market fill away from the current price.
    """

    def __init__(self, sim: SimSource, clock: Callable[[], int],
                 balances: dict[str, float | str | Decimal] | None = None,
                 fee_rate: float = 0.001, slippage: float = 0.0005) -> None:
        self.sim = sim
        self._clock = clock
        self.fee_rate = Decimal(str(fee_rate))
        self.slippage = Decimal(str(slippage))
        self._lock = threading.RLock()
        self._free: dict[str, Decimal] = {}
        self._locked: dict[str, Decimal] = {}
        for asset, amount in (balances or {}).items():
            self._free[asset] = Decimal(str(amount))
        self._orders: list[Order] = []
        self._trades: list[Trade] = []
        self._next_order_id = 1001
        self._next_trade_id = 5001

    # --- what tests read and change ------------------------------------------------------------

    def free(self, asset: str) -> Decimal:
        """The free amount of ``asset``."""
        with self._lock:
            return self._free.get(asset, Decimal(0))

    def locked(self, asset: str) -> Decimal:
        """The amount of ``asset`` locked by open orders."""
        with self._lock:
            return self._locked.get(asset, Decimal(0))

    def total(self, asset: str) -> Decimal:
        """Free plus locked."""
        with self._lock:
            return self.free(asset) + self.locked(asset)

    @property
    def balances(self) -> dict[str, tuple[Decimal, Decimal]]:
        """Every asset with a balance: ``{asset: (free, locked)}`` (a copy)."""
        with self._lock:
            assets = sorted(set(self._free) | set(self._locked))
            return {a: (self.free(a), self.locked(a)) for a in assets}

    def set_balance(self, asset: str, free: float | str | Decimal) -> None:
        """Set the free amount of ``asset`` (a deposit or withdrawal by hand)."""
        with self._lock:
            self._free[asset] = Decimal(str(free))

    @property
    def orders(self) -> list[Order]:
        """Every order ever placed, oldest first (the objects themselves: read, do not change)."""
        with self._lock:
            return list(self._orders)

    @property
    def trades(self) -> list[Trade]:
        """Every fill, oldest first."""
        with self._lock:
            return list(self._trades)

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        """The open orders (of ``symbol``, or all)."""
        with self._lock:
            return [o for o in self._orders if o.is_open and (symbol is None or o.symbol == symbol)]

    def orders_with_client_id(self, client_id: str) -> list[Order]:
        """Every order placed with ``client_id``, oldest first (more than one: it was reused)."""
        with self._lock:
            return [o for o in self._orders if o.client_id == client_id]

    def order(self, order_id: int) -> Order | None:
        """The order with the exchange's ``order_id``."""
        with self._lock:
            return next((o for o in self._orders if o.order_id == order_id), None)

    def price(self, symbol: str, now_ms: int | None = None) -> Decimal:
        """The current price: the close of the last closed minute by the server's clock (or ``now_ms``)."""
        now = self._clock() if now_ms is None else now_ms
        last_open = now - now % MINUTE_MS - MINUTE_MS
        candle = self.sim.fetch_sync(symbol, last_open, last_open + MINUTE_MS)[0]
        return Decimal(repr(candle.close))

    # --- the API ------------------------------------------------------------------------------

    def place(self, params: dict[str, str], now: int, fill_fraction: float | None = None,
              hidden_until_ms: int | None = None, hidden_queries: int = 0) -> dict[str, Any]:
        """``POST /api/v3/order``: validate, place, fill what fills at once; the answer's JSON."""
        with self._lock:
            self.match(now)
            order = self._new_order(params, now)
            order.fill_fraction = None if fill_fraction is None else Decimal(str(fill_fraction))
            self._lock_funds(order, now)
            order.hidden_until_ms = hidden_until_ms
            order.hidden_queries = hidden_queries
            self._orders.append(order)
            self._next_order_id += 1
            self._fill_at_once(order, now)
            default_resp = "FULL" if order.type in ("MARKET", "LIMIT") else "ACK"
            resp_type = params.get("newOrderRespType", default_resp).upper()
            if resp_type not in ("ACK", "RESULT", "FULL"):
                raise ApiError(400, -1100, "Illegal characters found in parameter 'newOrderRespType'.")
            return order.as_placed(resp_type, now)

    def query(self, params: dict[str, str], now: int) -> dict[str, Any]:
        """``GET /api/v3/order``: by ``orderId`` or (the latest with) ``origClientOrderId``."""
        with self._lock:
            order = self._find(params, now, -2013, "Order does not exist.")
            return order.as_binance()

    def cancel(self, params: dict[str, str], now: int) -> dict[str, Any]:
        """``DELETE /api/v3/order``: cancel an open order, unlock what it still held."""
        with self._lock:
            order = self._find(params, now, -2011, "Unknown order sent.")
            if not order.is_open:
                raise ApiError(400, -2011, "Unknown order sent.")
            self._unlock(order)
            order.status = "CANCELED"
            order.update_time = now
            answer = order.as_binance()
            for key in ("stopPrice", "icebergQty", "time", "updateTime", "isWorking", "workingTime"):
                answer.pop(key, None)
            answer["origClientOrderId"] = order.client_id
            answer["clientOrderId"] = params.get("newClientOrderId") or _random_id()
            answer["transactTime"] = now
            return answer

    def open_orders_json(self, params: dict[str, str], now: int) -> list[dict[str, Any]]:
        """``GET /api/v3/openOrders`` (``symbol`` optional)."""
        with self._lock:
            symbol = params.get("symbol")
            if symbol is not None:
                self._check_symbol(symbol)
            return [o.as_binance() for o in self.open_orders(symbol) if not o.hidden(now)]

    def all_orders_json(self, params: dict[str, str], now: int) -> list[dict[str, Any]]:
        """``GET /api/v3/allOrders``: ``symbol`` required; ``orderId`` (from), ``startTime``/``endTime``, ``limit``."""
        with self._lock:
            symbol = self._required_symbol(params)
            limit = _limit(params)
            orders = [o for o in self._orders if o.symbol == symbol and not o.hidden(now)]
            from_id, start, end = _int(params, "orderId"), _int(params, "startTime"), _int(params, "endTime")
            if start is not None and end is not None and end - start > _DAY_MS:
                raise ApiError(400, -1127, "More than 24 hours between startTime and endTime.")
            if from_id is not None:
                return [o.as_binance() for o in orders if o.order_id >= from_id][:limit]
            if start is not None:
                orders = [o for o in orders if o.time >= start]
            if end is not None:
                orders = [o for o in orders if o.time <= end]
            return [o.as_binance() for o in (orders[:limit] if start is not None else orders[-limit:])]

    def my_trades_json(self, params: dict[str, str]) -> list[dict[str, Any]]:
        """``GET /api/v3/myTrades``: ``symbol`` required; ``orderId``, ``startTime``/``endTime`` (24 h at most),
        ``fromId``, ``limit`` (500, at most 1000)."""
        with self._lock:
            symbol = self._required_symbol(params)
            limit = _limit(params)
            trades = [t for t in self._trades if t.symbol == symbol]
            order_id, from_id = _int(params, "orderId"), _int(params, "fromId")
            start, end = _int(params, "startTime"), _int(params, "endTime")
            if order_id is not None:
                trades = [t for t in trades if t.order_id == order_id]
            if from_id is not None:
                if start is not None or end is not None:
                    raise ApiError(400, -1128, "Combination of optional parameters invalid.")
                return [t.as_binance() for t in trades if t.id >= from_id][:limit]
            if start is not None and end is not None and end - start > _DAY_MS:
                raise ApiError(400, -1127, "More than 24 hours between startTime and endTime.")
            if start is not None and end is None:
                end = start + _DAY_MS
            if end is not None and start is None:
                start = end - _DAY_MS
            if start is not None and end is not None:
                trades = [t for t in trades if start <= t.time <= end]
                return [t.as_binance() for t in trades[:limit]]
            return [t.as_binance() for t in trades[-limit:]]

    def account_json(self, now: int) -> dict[str, Any]:
        """``GET /api/v3/account`` (every asset of every symbol, zero balances included)."""
        with self._lock:
            assets = set(self._free) | set(self._locked)
            for symbol in self.sim.symbols:
                assets.update(split_symbol(symbol))
            rate = fmt(self.fee_rate)
            return {
                "makerCommission": int(self.fee_rate * 10_000), "takerCommission": int(self.fee_rate * 10_000),
                "buyerCommission": 0, "sellerCommission": 0,
                "commissionRates": {"maker": rate, "taker": rate, "buyer": fmt(Decimal(0)), "seller": fmt(Decimal(0))},
                "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
                "requireSelfTradePrevention": False, "preventSor": False, "updateTime": now, "accountType": "SPOT",
                "balances": [{"asset": a, "free": fmt(self.free(a)), "locked": fmt(self.locked(a))}
                             for a in sorted(assets)],
                "permissions": ["SPOT"], "uid": 354937868,
            }

    def trigger(self, client_id: str, now: int | None = None) -> None:
        """The market went through the open stop ``client_id`` (a test's hand on the market): it
        fills now, at its stop (a stop-limit at its limit), as a taker."""
        now = self._clock() if now is None else now
        with self._lock:
            order = next(o for o in reversed(self._orders) if o.client_id == client_id and o.is_open)
            order.working, order.working_time = True, now
            self._fill(order, order.price if order.price else order.stop_price, now, maker=False)
            if order.type in ("STOP_LOSS", "TAKE_PROFIT"):
                self._close_market(order, now)

    # --- matching ------------------------------------------------------------------------------

    def match(self, now: int | None = None) -> None:
        """Fill the resting orders that the candles closed since the last pass cross."""
        now = self._clock() if now is None else now
        with self._lock:
            closed_end = now - now % MINUTE_MS  # candles opening before this have closed
            for symbol in {o.symbol for o in self._orders if o.is_open}:
                resting = [o for o in self._orders if o.is_open and o.symbol == symbol and o.matched_until < closed_end]
                if not resting:
                    continue
                start = max(min(o.matched_until for o in resting), closed_end - _MAX_MATCH_MINUTES * MINUTE_MS)
                for candle in self.sim.fetch_sync(symbol, start, closed_end):
                    for order in resting:
                        if order.is_open and candle.timestamp >= order.matched_until:
                            self._match_candle(order, candle)
                for order in resting:
                    order.matched_until = max(order.matched_until, closed_end)

    def _match_candle(self, order: Order, candle: Any) -> None:
        low, high = Decimal(repr(candle.low)), Decimal(repr(candle.high))
        at = candle.timestamp + MINUTE_MS - 1
        buy = order.side == "BUY"
        if not order.working:
            stop = order.stop_price
            loss = order.type.startswith("STOP_LOSS")
            # A sell stop-loss (or a buy take-profit) triggers on the way down; the others on the way up.
            down = (loss and not buy) or (not loss and buy)
            if not ((down and low <= stop) or (not down and high >= stop)):
                return
            order.working = True
            order.working_time = at
            if order.type in ("STOP_LOSS", "TAKE_PROFIT"):
                open_ = Decimal(repr(candle.open))
                # Gapped past the stop: the market fill is at the open, not at the stop.
                trigger = min(stop, open_) if down else max(stop, open_)
                self._fill(order, self._slipped(order, trigger), at, maker=False)
                self._close_market(order, at)
                return
        if (buy and low <= order.price) or (not buy and high >= order.price):
            self._fill(order, order.price, at, maker=True)

    # --- internals ------------------------------------------------------------------------------

    def _check_symbol(self, symbol: str) -> None:
        if symbol not in self.sim.symbols:
            raise ApiError(400, -1121, "Invalid symbol.")

    def _required_symbol(self, params: dict[str, str]) -> str:
        if not params.get("symbol"):
            raise ApiError(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        self._check_symbol(params["symbol"])
        return params["symbol"]

    def _find(self, params: dict[str, str], now: int, code: int, msg: str) -> Order:
        symbol = self._required_symbol(params)
        order_id = _int(params, "orderId")
        client_id = params.get("origClientOrderId")
        if order_id is None and not client_id:
            raise ApiError(400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        if order_id is not None:
            found = [o for o in self._orders if o.order_id == order_id and o.symbol == symbol]
        else:
            found = [o for o in self._orders if o.client_id == client_id and o.symbol == symbol]
        if not found:
            raise ApiError(400, code, msg)
        order = found[-1]  # the latest order with that client id
        if order.hidden(now):
            if order.hidden_queries > 0:
                order.hidden_queries -= 1
            raise ApiError(400, code, msg)
        return order

    def _new_order(self, params: dict[str, str], now: int) -> Order:
        symbol = self._required_symbol(params)
        side = params.get("side", "").upper()
        if side not in ("BUY", "SELL"):
            raise ApiError(400, -1102, "Mandatory parameter 'side' was not sent, was empty/null, or malformed.")
        type_ = params.get("type", "").upper()
        if type_ not in ORDER_TYPES:
            raise ApiError(400, -1116, "Invalid orderType.")
        client_id = params.get("newClientOrderId") or _random_id()
        if not CLIENT_ID.match(client_id):
            raise ApiError(400, -1100, "Illegal characters found in parameter 'newClientOrderId'; legal range is "
                                       "'^[a-zA-Z0-9-_]{1,36}$'.")
        qty = _decimal(params, "quantity")
        quote_qty = _decimal(params, "quoteOrderQty")
        price = _decimal(params, "price", required=type_ not in ("MARKET", "STOP_LOSS", "TAKE_PROFIT")) or Decimal(0)
        stop = _decimal(params, "stopPrice", required=type_.startswith(("STOP", "TAKE"))) or Decimal(0)
        tif = params.get("timeInForce")
        if type_ in ("LIMIT", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT") and tif is None:
            raise ApiError(400, -1102, "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed.")
        current = self.price(symbol, now)
        tick = tick_size(self.sim.symbols[symbol])
        if type_ == "MARKET" and qty is None and quote_qty is not None:
            # quoteOrderQty: as much as that spends (buy) or brings (sell) at the current price, on the lot step.
            fill_price = self._slipped_price(side, current, tick)
            qty = (quote_qty / fill_price).quantize(LOT_STEP, rounding=ROUND_DOWN)
        if qty is None:
            raise ApiError(400, -1102, "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.")
        if qty < LOT_MIN or qty > LOT_MAX or not _on_step(qty, LOT_STEP):
            raise ApiError(400, -1013, "Filter failure: LOT_SIZE")
        for value in (price, stop):
            if value and not _on_step(value, tick):
                raise ApiError(400, -1013, "Filter failure: PRICE_FILTER")
        notional_price = price if price else (stop if stop else current)
        if qty * notional_price < MIN_NOTIONAL:
            raise ApiError(400, -1013, "Filter failure: NOTIONAL")
        if any(o.is_open and o.client_id == client_id for o in self._orders):
            raise ApiError(400, -2010, "Duplicate order sent.")
        if type_ == "LIMIT_MAKER" and ((side == "BUY" and current <= price) or (side == "SELL" and current >= price)):
            raise ApiError(400, -2010, "Order would immediately match and take.")
        if stop:
            loss = type_.startswith("STOP_LOSS")
            down = (loss and side == "SELL") or (not loss and side == "BUY")
            if (down and current <= stop) or (not down and current >= stop):
                raise ApiError(400, -2010, "Stop price would trigger immediately.")
        return Order(order_id=self._next_order_id, client_id=client_id, symbol=symbol, side=side, type=type_,
                     qty=qty, price=price, stop_price=stop, time_in_force=tif if type_ != "MARKET" else "GTC",
                     time=now, update_time=now, working=not stop, working_time=-1 if stop else now,
                     quote_order_qty=quote_qty or Decimal(0), matched_until=now - now % MINUTE_MS)

    def _lock_funds(self, order: Order, now: int) -> None:
        base, quote = split_symbol(order.symbol)
        if order.side == "SELL":
            asset, need = base, order.qty
        else:
            reference = order.price or order.stop_price
            if not reference:  # a market buy: what it will cost at the slipped current price
                current = self.price(order.symbol, now)
                reference = self._slipped_price("BUY", current, tick_size(self.sim.symbols[order.symbol]))
            asset, need = quote, (order.qty * reference).quantize(EIGHT, rounding=ROUND_HALF_UP)
        if self.free(asset) < need:
            raise ApiError(400, -2010, "Account has insufficient balance for requested action.")
        self._free[asset] = self.free(asset) - need
        self._locked[asset] = self.locked(asset) + need
        order.locked_asset, order.locked = asset, need

    def _unlock(self, order: Order) -> None:
        if order.locked:
            asset = order.locked_asset
            self._locked[asset] = self.locked(asset) - order.locked
            self._free[asset] = self.free(asset) + order.locked
            order.locked = Decimal(0)

    def _fill_at_once(self, order: Order, now: int) -> None:
        """A market order fills now; a limit order that crosses the current price fills now as a taker."""
        if not order.working:
            return
        current = self.price(order.symbol, now)
        if order.type == "MARKET":
            self._fill(order, self._slipped(order, current), now, maker=False)
            self._close_market(order, now)
            return
        buy = order.side == "BUY"
        if (buy and current <= order.price) or (not buy and current >= order.price):
            self._fill(order, self._slipped(order, current), now, maker=False)

    def _slipped_price(self, side: str, price: Decimal, tick: Decimal) -> Decimal:
        factor = 1 + self.slippage if side == "BUY" else 1 - self.slippage
        return (price * factor).quantize(tick, rounding=ROUND_HALF_UP)

    def _slipped(self, order: Order, price: Decimal) -> Decimal:
        slipped = self._slipped_price(order.side, price, tick_size(self.sim.symbols[order.symbol]))
        if order.price:  # a limit never fills beyond its price
            slipped = min(slipped, order.price) if order.side == "BUY" else max(slipped, order.price)
        return slipped

    def _close_market(self, order: Order, now: int) -> None:
        """A market order does not rest: whatever did not fill expires."""
        if order.is_open:
            order.status = "EXPIRED"
            order.update_time = now
            self._unlock(order)

    def _fill(self, order: Order, price: Decimal, now: int, maker: bool) -> None:
        remaining = order.qty - order.executed
        qty = remaining
        if order.fill_fraction is not None:
            qty = (order.qty * order.fill_fraction).quantize(LOT_STEP, rounding=ROUND_DOWN)
            order.fill_fraction = None  # only the first fill is cut short
            qty = min(qty, remaining)
            if qty <= 0:
                return
        base, quote = split_symbol(order.symbol)
        quote_qty = (qty * price).quantize(EIGHT, rounding=ROUND_HALF_UP)
        if order.side == "BUY":
            spent_asset, spent, got_asset, got = quote, quote_qty, base, qty
        else:
            spent_asset, spent, got_asset, got = base, qty, quote, quote_qty
        commission = (got * self.fee_rate).quantize(EIGHT, rounding=ROUND_HALF_UP)
        # Pay from what this order locked; a market buy locked at the slipped price, so the lock covers it.
        from_lock = min(order.locked, spent)
        order.locked -= from_lock
        self._locked[spent_asset] = self.locked(spent_asset) - from_lock
        self._free[spent_asset] = self.free(spent_asset) - (spent - from_lock)
        self._free[got_asset] = self.free(got_asset) + got - commission
        trade = Trade(self._next_trade_id, order.order_id, order.symbol, order.side, price, qty, quote_qty,
                      commission, got_asset, now, maker)
        self._next_trade_id += 1
        self._trades.append(trade)
        order.trades.append(trade)
        order.executed += qty
        order.cum_quote += quote_qty
        order.update_time = now
        if order.executed >= order.qty:
            order.status = "FILLED"
            self._unlock(order)  # a buy locked at its limit and filled lower: the rest comes back
        else:
            order.status = "PARTIALLY_FILLED"


def _random_id() -> str:
    return "web_" + secrets.token_hex(12)


def _int(params: dict[str, str], name: str) -> int | None:
    if not params.get(name):
        return None
    try:
        return int(params[name])
    except ValueError:
        raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'.") from None


def _limit(params: dict[str, str]) -> int:
    limit = _int(params, "limit") or 500
    if not 0 < limit <= 1000:
        raise ApiError(400, -1130, "Data sent for parameter 'limit' is not valid.")
    return limit
