"""The exchange side of orders: one small interface (``Broker``) and its ccxt implementation.

A broker only talks to the exchange and says what it heard, normalised into ``Answer``; it
never decides and never retries an order request (a retried request is a second order on an
exchange whose client ids are not idempotency keys). What counts as a definitive rejection
and what leaves the outcome unknown is decided here, once, from ccxt's exception classes
(see the README, "Orders", and docs/behaviour.md §12):

- rejected (never placed): insufficient funds, a filter or invalid order, bad request or
  symbol, credentials refused, an operation the exchange refuses;
- unknown (may have been placed): every network error, timeout, 5xx, rate limit, a malformed
  answer, "execution status unknown", and anything not known to be a rejection. A
  "duplicate order" refusal means an open order with this client id exists: unknown too,
  so that it is asked for rather than taken for a failure.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from livetrader.core.orders import Answer, MarketRules
from livetrader.logs import get_logger
from livetrader.redaction import redact

log = get_logger(__name__)

#: How long a fetched free balance is used before it is fetched again ...
BALANCE_MAX_AGE_SECONDS = 300.0
#: ... and, once a fill moved it (the cached figure adjusted by the fill meanwhile), the least
#: time between two fetches: a hundred pairs filling in one minute cause one fetch, not a hundred.
BALANCE_REFRESH_SECONDS = 10.0


class Broker(Protocol):
    """What the order path needs from an exchange."""

    async def rules(self, symbol: str) -> MarketRules:
        """The market's amount step and minimums."""

    async def free(self, asset: str, fresh: bool = False) -> float | None:
        """The free balance of ``asset`` (cached; ``fresh`` fetches it), None when it cannot be had."""

    async def place(self, symbol: str, side: str, amount: float, client_id: str) -> Answer:
        """Send one market order under ``client_id``; never raises for what the exchange says."""

    async def query(self, symbol: str, client_id: str) -> Answer:
        """Ask for the order ``client_id``: its state, or ``not_found``, or ``unknown`` (no answer)."""

    async def trades_since(self, symbol: str, since_ms: int) -> list[dict[str, Any]] | None:
        """The account's trades on ``symbol`` since ``since_ms`` (ccxt's unified shape), None when
        they cannot be had."""

    async def totals(self) -> dict[str, float] | None:
        """What the account holds of each asset, free and locked (a resting stop locks its coins),
        fetched now; None when it cannot be had."""

    async def open_client_ids(self, symbol: str, minute: int) -> set[str] | None:
        """The client ids of the account's open orders on ``symbol`` as of ``minute`` (one request
        per symbol and minute, shared by every pair asking), None when they cannot be had."""

    async def stop_type(self, symbol: str, wanted: str) -> str | None:
        """``stop_market`` or ``stop_limit``: the protective stop the market takes (``wanted``:
        ``auto``, ``market`` or ``limit``), None when it takes none."""

    async def place_stop(self, symbol: str, type_: str, amount: float, stop_price: float,
                         limit_price: float | None, client_id: str) -> Answer:
        """Place a sell stop under ``client_id``; never raises for what the exchange says."""

    async def cancel(self, symbol: str, client_id: str) -> Answer:
        """Cancel the order ``client_id``, then say what it is: ``cancelled`` (with what it filled
        before), ``filled`` (too late to cancel), ``not_found``, or ``unknown`` (no answer)."""


#: Exchanges whose ccxt driver ignores the unified ``clientOrderId`` param: the key it reads instead.
CLIENT_ID_PARAM = {"coinbase": "client_order_id", "coinbaseadvanced": "client_order_id"}
#: Extra params an order query needs per exchange (bybit's ``fetch_order`` only sees its last
#: 500 orders unless told the caller accepts that).
QUERY_PARAMS: dict[str, dict[str, Any]] = {"bybit": {"acknowledged": True}}


def _is_rejection(exc: BaseException, ccxt: Any) -> bool:
    """True when ``exc`` says for certain that the order was not placed."""
    if isinstance(exc, ccxt.DuplicateOrderId) or "duplicate order" in str(exc).lower():
        return False  # an open order holds this client id: it exists
    definitive = (ccxt.InsufficientFunds, ccxt.InvalidOrder, ccxt.BadRequest, ccxt.AuthenticationError,
                  ccxt.OperationRejected, ccxt.NotSupported, ccxt.ArgumentsRequired)
    return isinstance(exc, definitive)


def _failed(exc: Exception, ccxt: Any) -> Answer:
    """What a placement that raised ``exc`` says: ``rejected`` only when certain, else ``unknown``."""
    reason = redact(f"{type(exc).__name__}: {exc}")[:300]
    if isinstance(exc, ccxt.BaseError) and _is_rejection(exc, ccxt):
        return Answer("rejected", reason=reason)
    return Answer("unknown", reason=reason)


def answer_of(order: dict[str, Any], base: str, quote: str) -> Answer:
    """An ``Answer`` from a ccxt unified order."""
    status = order.get("status")
    filled = float(order.get("filled") or 0.0)
    amount = float(order.get("amount") or 0.0)
    if status == "closed":
        state = "filled" if amount <= 0 or filled >= amount * (1 - 1e-9) else "expired"
    elif status == "open":
        state = "open"
    elif status == "canceled":
        state = "cancelled"
    elif status in ("expired", "rejected"):
        state = "expired" if filled > 0 or status == "expired" else "rejected"
    else:
        state = "unknown"
    cost = order.get("cost")
    average = order.get("average")
    trade_list = [t for t in order.get("trades") or () if t.get("amount") and t.get("price")]
    traded = sum(float(t["amount"]) for t in trade_list)
    if not cost and average is None and filled and abs(traded - filled) <= filled * 1e-9:
        # The order gave no price (some exchanges' answers do not): its trades say what it cost,
        # once they are all listed (a trade history behind the order would price a part as the whole).
        cost = sum(float(t.get("cost") or float(t["amount"]) * float(t["price"])) for t in trade_list)
    if average is None and filled and cost:
        average = float(cost) / filled
    if not cost and filled and average:
        cost = filled * float(average)
    fee_base = fee_quote = fee_other = 0.0
    fees = order.get("fees") or ([order["fee"]] if order.get("fee") else [])
    for fee in fees:
        if not fee or fee.get("cost") is None:
            continue
        value = float(fee["cost"])
        if fee.get("currency") == base:
            fee_base += value
        elif fee.get("currency") == quote:
            fee_quote += value
        else:
            fee_other += value
    trades = tuple(str(t.get("id")) for t in order.get("trades") or () if t.get("id") is not None)
    updated = order.get("lastTradeTimestamp") or order.get("lastUpdateTimestamp")
    return Answer(state, filled, None if average is None else float(average), float(cost or 0.0), fee_base,
                  fee_quote, fee_other, None if order.get("id") is None else str(order["id"]), None, trades,
                  None if updated is None else int(updated))


class CcxtBroker:
    """Orders through the ccxt instance of a ``CcxtSource`` (one per exchange, shared with the
    candles, so one rate limiter sees every request). ``clean`` scrubs secrets from messages."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self._balances: dict[str, float] = {}  # asset -> free, as last fetched (adjusted by fills since)
        self._fetched_at: float | None = None  # monotonic time of the last fetch
        self._moved = False  # a fill adjusted the cached figures since that fetch
        self._balance_lock: asyncio.Lock | None = None
        #: symbol -> (minute, the open orders' client ids then, or the request in flight)
        self._open: dict[str, tuple[int, asyncio.Future[set[str] | None]]] = {}

    async def _client(self) -> Any:
        return await self.source.client()

    async def rules(self, symbol: str) -> MarketRules:
        """The market's amount step and minimums, from the loaded markets."""
        exchange = await self._client()
        market = exchange.market(symbol)
        limits = market.get("limits") or {}
        step = (market.get("precision") or {}).get("amount")
        import ccxt.async_support as ccxt

        if step is not None and exchange.precisionMode == ccxt.DECIMAL_PLACES:
            step = 10.0 ** -float(step)
        return MarketRules(
            base=market["base"], quote=market["quote"],
            amount_step=None if step is None else float(step),
            min_amount=_number((limits.get("amount") or {}).get("min")),
            min_cost=_number((limits.get("cost") or {}).get("min")),
        )

    async def free(self, asset: str, fresh: bool = False) -> float | None:
        """The free balance of ``asset``, fetched at most every ``BALANCE_MAX_AGE_SECONDS`` unless ``fresh``."""
        if self._balance_lock is None:
            self._balance_lock = asyncio.Lock()
        async with self._balance_lock:  # pairs asking at once share one fetch
            if not fresh and self._fetched_at is not None:
                age = time.monotonic() - self._fetched_at
                if age < (BALANCE_REFRESH_SECONDS if self._moved else BALANCE_MAX_AGE_SECONDS):
                    return self._balances.get(asset, 0.0)
            exchange = await self._client()
            try:
                balance = await exchange.fetch_balance()
            except Exception as exc:  # noqa: BLE001 - a balance that cannot be had is not checked, and said
                log.warning("balance not fetched", exchange=self.source.name,
                            error=redact(f"{type(exc).__name__}: {exc}"))
                return self._balances.get(asset) if self._fetched_at is not None else None
            self._balances = {name: float(value) for name, value in (balance.get("free") or {}).items()
                              if value is not None}
            self._fetched_at, self._moved = time.monotonic(), False
            return self._balances.get(asset, 0.0)

    def _moved_by(self, side: str, answer: Answer, base: str, quote: str) -> None:
        """Adjust the cached balances by a fill, until the next fetch says exactly."""
        if not answer.filled:
            return
        sign = 1.0 if side == "buy" else -1.0
        self._balances[base] = self._balances.get(base, 0.0) + sign * answer.filled - answer.fee_base
        self._balances[quote] = self._balances.get(quote, 0.0) - sign * answer.cost - answer.fee_quote
        self._moved = True

    async def place(self, symbol: str, side: str, amount: float, client_id: str) -> Answer:
        """Send one market order; an ``Answer`` whatever happens (``rejected`` only when certain)."""
        import ccxt.async_support as ccxt

        exchange = await self._client()
        market = exchange.market(symbol)
        try:
            text = exchange.amount_to_precision(symbol, amount)
            key = CLIENT_ID_PARAM.get(exchange.id, "clientOrderId")
            order = await exchange.create_order(symbol, "market", side, float(text), None, {key: client_id})
        except Exception as exc:  # noqa: BLE001 - every outcome becomes an Answer: rejected only when certain
            return _failed(exc, ccxt)
        answer = answer_of(order, market["base"], market["quote"])
        self._moved_by(side, answer, market["base"], market["quote"])
        return answer

    async def query(self, symbol: str, client_id: str) -> Answer:
        """Ask for the order by its client id."""
        import ccxt.async_support as ccxt

        exchange = await self._client()
        market = exchange.market(symbol)
        try:
            key = CLIENT_ID_PARAM.get(exchange.id, "clientOrderId")
            order = await exchange.fetch_order(None, symbol, {key: client_id, **QUERY_PARAMS.get(exchange.id, {})})
        except ccxt.OrderNotFound as exc:
            return Answer("not_found", reason=redact(f"{type(exc).__name__}: {exc}")[:300])
        except Exception as exc:  # noqa: BLE001 - no answer: asked again later
            return Answer("unknown", reason=redact(f"{type(exc).__name__}: {exc}")[:300])
        unpriced = order.get("average") is None and not order.get("cost")
        if order.get("filled") and (unpriced or not (order.get("fees") or order.get("fee"))) \
                and order.get("id") is not None:
            # An order query does not carry the fees (Binance's does not), nor always the price: its
            # trades do. Without the fees a base-asset fee would be counted as held, and the exit
            # would sell coins not there; without a price a fill would look like nothing bought.
            try:
                trades = await exchange.fetch_order_trades(order["id"], symbol)
            except Exception as exc:  # noqa: BLE001 - no fees known yet: the order is asked for again
                return Answer("unknown", reason=redact(f"fees of order {order['id']} not read: "
                                                       f"{type(exc).__name__}: {exc}")[:300])
            order = {**order, "fees": [t["fee"] for t in trades if t.get("fee")], "trades": trades}
        return answer_of(order, market["base"], market["quote"])

    async def trades_since(self, symbol: str, since_ms: int) -> list[dict[str, Any]] | None:
        """The account's trades on ``symbol`` since ``since_ms``, None when they cannot be had."""
        exchange = await self._client()
        try:
            return list(await exchange.fetch_my_trades(symbol, since_ms))
        except Exception as exc:  # noqa: BLE001 - None: the caller keeps the order unknown
            log.warning("trade history not fetched", exchange=self.source.name, symbol=symbol,
                        error=redact(f"{type(exc).__name__}: {exc}"))
            return None


    async def totals(self) -> dict[str, float] | None:
        """Every asset's total (free + locked), fetched now; the free figures are refreshed by the way."""
        exchange = await self._client()
        try:
            balance = await exchange.fetch_balance()
        except Exception as exc:  # noqa: BLE001 - None: the reconciliation says it could not check
            log.warning("balance not fetched", exchange=self.source.name, error=redact(f"{type(exc).__name__}: {exc}"))
            return None
        self._balances = {name: float(value) for name, value in (balance.get("free") or {}).items()
                          if value is not None}
        self._fetched_at, self._moved = time.monotonic(), False
        return {name: float(value) for name, value in (balance.get("total") or {}).items() if value is not None}

    async def open_client_ids(self, symbol: str, minute: int) -> set[str] | None:
        """One ``fetch_open_orders(symbol)`` per symbol and minute (Binance weighs it 6 with a
        symbol, 80 without: never the all-symbols one), shared by the pairs asking that minute."""
        cached = self._open.get(symbol)
        if cached is not None and cached[0] == minute:
            return await asyncio.shield(cached[1])
        future: asyncio.Future[set[str] | None] = asyncio.get_running_loop().create_future()
        self._open[symbol] = (minute, future)
        ids: set[str] | None = None
        try:
            exchange = await self._client()
            orders = await exchange.fetch_open_orders(symbol)
            ids = {str(o["clientOrderId"]) for o in orders if o.get("clientOrderId")}
        except Exception as exc:  # noqa: BLE001 - None: each stop is asked for by its own client id
            log.warning("open orders not fetched", exchange=self.source.name, symbol=symbol,
                        error=redact(f"{type(exc).__name__}: {exc}"))
        finally:
            future.set_result(ids)  # (None when cancelled: the others ask by client id)
        return ids

    async def stop_type(self, symbol: str, wanted: str) -> str | None:
        """The stop the market takes: from the market's own list of order types where the exchange
        gives one (Binance's ``orderTypes``), else from what the ccxt driver says it can create."""
        if wanted == "off":
            return None
        exchange = await self._client()
        market = exchange.market(symbol)
        types = (market.get("info") or {}).get("orderTypes")
        if isinstance(types, list):
            can_market, can_limit = "STOP_LOSS" in types, "STOP_LOSS_LIMIT" in types
        else:
            has = exchange.has
            can_market = bool(has.get("createStopMarketOrder") or has.get("createStopLossOrder"))
            can_limit = bool(has.get("createStopLimitOrder") or has.get("createStopLossOrder"))
        if wanted in ("auto", "market") and can_market:
            return "stop_market"
        if wanted in ("auto", "limit") and can_limit:
            return "stop_limit"
        return None

    async def place_stop(self, symbol: str, type_: str, amount: float, stop_price: float,
                         limit_price: float | None, client_id: str) -> Answer:
        """Send one sell stop (ccxt's ``stopLossPrice``); an ``Answer`` whatever happens. A stop the
        market has crossed already is ``rejected`` with ccxt's ``OrderImmediatelyFillable`` in its reason."""
        import ccxt.async_support as ccxt

        exchange = await self._client()
        market = exchange.market(symbol)
        try:
            amount_text = exchange.amount_to_precision(symbol, amount)
            stop_text = exchange.price_to_precision(symbol, stop_price)
            key = CLIENT_ID_PARAM.get(exchange.id, "clientOrderId")
            params = {key: client_id, "stopLossPrice": float(stop_text)}
            if type_ == "stop_limit":
                assert limit_price is not None
                limit = float(exchange.price_to_precision(symbol, limit_price))
                order = await exchange.create_order(symbol, "limit", "sell", float(amount_text), limit, params)
            else:
                order = await exchange.create_order(symbol, "market", "sell", float(amount_text), None, params)
        except Exception as exc:  # noqa: BLE001 - every outcome becomes an Answer: rejected only when certain
            return _failed(exc, ccxt)
        answer = answer_of(order, market["base"], market["quote"])
        if answer.status == "unknown" and answer.order_id is not None:
            answer = Answer("open", order_id=answer.order_id)  # a stop acknowledged without a status rests
        self._moved_by("sell", answer, market["base"], market["quote"])
        return answer

    async def cancel(self, symbol: str, client_id: str) -> Answer:
        """Cancel by client id, then ask for the order (its fills and fees are in the query's answer,
        not the cancel's): a stop that filled before the cancel reached it says ``filled``."""
        import ccxt.async_support as ccxt

        exchange = await self._client()
        try:
            key = CLIENT_ID_PARAM.get(exchange.id, "clientOrderId")
            await exchange.cancel_order(None, symbol, {key: client_id})
        except ccxt.OrderNotFound:
            pass  # not cancellable: filled already, cancelled already, or never placed; the query says which
        except Exception as exc:  # noqa: BLE001 - no answer: the cancel is sent again later
            return Answer("unknown", reason=redact(f"cancel: {type(exc).__name__}: {exc}")[:300])
        answer = await self.query(symbol, client_id)
        if answer.status == "cancelled" or answer.status == "filled":
            self._balances_stale()
        return answer

    def _balances_stale(self) -> None:
        """A cancel freed (or a stop's fill moved) funds the cached figures do not show: fetch soon."""
        self._moved = True


def _number(value: Any) -> float | None:
    return None if value is None else float(value)
