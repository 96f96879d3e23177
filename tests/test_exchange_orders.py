"""The test exchange trades: orders through a real ccxt binance instance, built as the daemon builds it.

The ccxt instance comes from ``CcxtSource._new_exchange`` (API key and secret, sandbox mode on,
every URL re-rooted at the in-thread server), so these tests also pin what the daemon's order
path will meet: the requests ccxt makes, the answers it parses, the exception class of each fault.
"""

import asyncio
from decimal import ROUND_HALF_UP, Decimal

import ccxt.async_support as ccxt
import pytest
from exchange_account import tick_size
from exchange_server import ORDER_PATH, ExchangeServer

from livetrader.core.price import MINUTE_MS
from livetrader.market.ccxt.settings import Credentials
from livetrader.market.ccxt.source import CcxtSource

NOW = 1_704_110_430_000  # 2024-01-01T12:00:30Z: 30 s into a minute, far from a boundary
MINUTE = NOW - NOW % MINUTE_MS
SYMBOL = "BTC/USDT"
API_KEY = "test-key-1234"
SECRET = "test-secret-5678"


class Clock:
    """The server's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(clock):
    with ExchangeServer(clock=clock, balances={"USDT": 10_000}) as s:
        yield s


def new_exchange(server: ExchangeServer, sandbox: bool = True, credentials: bool = True, timeout_ms: int = 2000):
    """A ccxt binance instance configured as the daemon configures it (``CcxtSource._new_exchange``)."""
    table = {"options": {"defaultType": "spot"}, "urls": {"api_base": server.url}, "rate_limit_ms": 1,
             "timeout_ms": timeout_ms, "sandbox": sandbox}
    creds = Credentials(API_KEY, SECRET) if credentials else None
    return CcxtSource("binance", table, creds)._new_exchange(register=False)


def trade(server: ExchangeServer, work, **kwargs):
    """Run ``work(exchange)`` with a loaded exchange, closing it after."""

    async def main():
        exchange = new_exchange(server, **kwargs)
        try:
            await exchange.load_markets()
            return await work(exchange)
        finally:
            await exchange.close()

    return asyncio.run(main())


def last_close(server: ExchangeServer, now: int = NOW) -> Decimal:
    opening = now - now % MINUTE_MS - MINUTE_MS
    return Decimal(repr(server.candles("BTCUSDT", opening, opening + MINUTE_MS)[0].close))


def on_tick(value: Decimal) -> Decimal:
    return value.quantize(tick_size(50_000.0 if value > 1000 else float(value)), rounding=ROUND_HALF_UP)


# --- the set-up the daemon uses ----------------------------------------------------------------


def test_sandbox_mode_and_rebase_point_every_url_at_the_server(server):
    exchange = new_exchange(server)
    assert exchange.isSandboxModeEnabled
    urls = exchange.urls["api"]
    assert urls["public"] == f"{server.url}/api/v3" and urls["private"] == f"{server.url}/api/v3"
    assert all(u.startswith(server.url) for u in urls.values() if isinstance(u, str))

    async def balance(ex):
        return await ex.fetch_balance()

    assert trade(server, balance)["USDT"]["free"] == 10_000
    # Sandbox mode: ccxt loads no currencies (testnet has no sapi); markets from exchangeInfo only.
    assert [r.path for r in server.requests] == ["/api/v3/exchangeInfo", "/api/v3/account"]
    account = server.requests[-1]
    assert account.api_key == API_KEY and "signature" in account.params and "timestamp" in account.params


def test_outside_sandbox_ccxt_loads_currencies_from_sapi_and_they_are_served(server):
    async def markets(ex):
        return ex.currencies

    currencies = trade(server, markets, sandbox=False)
    assert "BTC" in currencies and "USDT" in currencies
    getall = [r for r in server.requests if r.path == "/sapi/v1/capital/config/getall"]
    assert len(getall) == 1 and getall[0].api_key == API_KEY


@pytest.mark.parametrize(("headers", "query", "error", "code"), [
    ({}, "timestamp=1&signature=abc", ccxt.AuthenticationError, "-2014"),
    ({"X-MBX-APIKEY": API_KEY}, "signature=abc", ccxt.BadRequest, "-1102"),
    ({"X-MBX-APIKEY": API_KEY}, "timestamp=1", ccxt.AuthenticationError, "-1022"),
], ids=["no_key", "no_timestamp", "no_signature"])
def test_signed_endpoints_refuse_an_unsigned_request(server, headers, query, error, code):
    async def raw(ex):
        return await ex.fetch(f"{server.url}/api/v3/account?{query}", "GET", headers)

    with pytest.raises(error, match=code):
        trade(server, raw)


# --- market orders --------------------------------------------------------------------------------


def test_market_buy_then_sell_fills_at_the_last_close_with_slippage_and_fees_in_the_asset_received(server, clock):
    buy_price = on_tick(last_close(server) * Decimal("1.0005"))

    async def buy(ex):
        return await ex.create_order(SYMBOL, "market", "buy", 0.01, None, {"clientOrderId": "buy-1"})

    order = trade(server, buy)
    assert order["status"] == "closed" and order["filled"] == 0.01 and order["clientOrderId"] == "buy-1"
    assert Decimal(str(order["average"])) == buy_price
    assert order["fee"] == {"currency": "BTC", "cost": 0.00001}
    assert len(order["trades"]) == 1 and order["trades"][0]["fee"]["currency"] == "BTC"
    cost = Decimal("0.01") * buy_price
    assert server.account.free("USDT") == Decimal(10_000) - cost
    assert server.account.free("BTC") == Decimal("0.00999")

    clock.now += 5 * MINUTE_MS
    sell_price = on_tick(last_close(server, clock.now) * Decimal("0.9995"))

    async def sell(ex):
        placed = await ex.create_order(SYMBOL, "market", "sell", 0.00999, None, {"clientOrderId": "sell-1"})
        return placed, await ex.fetch_balance(), await ex.fetch_my_trades(SYMBOL)

    order, balance, trades = trade(server, sell)
    assert order["status"] == "closed" and Decimal(str(order["average"])) == sell_price
    proceeds = (Decimal("0.00999") * sell_price).quantize(Decimal("0.00000001"), rounding=ROUND_HALF_UP)
    fee = (proceeds * Decimal("0.001")).quantize(Decimal("0.00000001"), rounding=ROUND_HALF_UP)
    assert order["fee"]["currency"] == "USDT" and Decimal(str(order["fee"]["cost"])) == fee
    assert server.account.free("BTC") == 0
    assert server.account.free("USDT") == Decimal(10_000) - cost + proceeds - fee
    assert balance["USDT"]["free"] == float(server.account.free("USDT")) and balance["BTC"]["total"] == 0
    assert [t["side"] for t in trades] == ["buy", "sell"]
    assert [t["fee"]["currency"] for t in trades] == ["BTC", "USDT"]


def test_market_buy_by_cost_spends_about_that_much(server):
    async def buy(ex):
        return await ex.create_order(SYMBOL, "market", "buy", None, None, {"cost": 100})

    order = trade(server, buy)
    assert order["status"] == "closed" and 99 < order["cost"] <= 100
    assert server.order_requests()[0].params["quoteOrderQty"] == "100"


def test_the_fee_rate_and_slippage_are_the_servers(clock):
    with ExchangeServer(clock=clock, balances={"USDT": 1000}, fee_rate=0.002, slippage=0) as server:
        async def buy(ex):
            return await ex.create_order(SYMBOL, "market", "buy", 0.001)

        order = trade(server, buy)
        assert Decimal(str(order["average"])) == on_tick(last_close(server))
        assert order["fee"]["cost"] == pytest.approx(0.000002)


# --- resting orders --------------------------------------------------------------------------------


def first_crossing(server: ExchangeServer, below: bool, minutes: int = 60) -> tuple[Decimal, int]:
    """A price some later candle reaches (below the last close or above it) and the minute it does."""
    current = last_close(server)
    candles = server.candles("BTCUSDT", MINUTE, MINUTE + minutes * MINUTE_MS)
    for c in candles[2:]:
        reach = Decimal(repr(c.low)) if below else Decimal(repr(c.high))
        if (below and reach < current * Decimal("0.999")) or (not below and reach > current * Decimal("1.001")):
            price = on_tick(reach * (Decimal("1.0000001") if below else Decimal("0.9999999")))
            first = next(x.timestamp for x in candles
                         if (below and Decimal(repr(x.low)) <= price) or (not below and Decimal(repr(x.high)) >= price))
            return price, first
    raise AssertionError("the sim never moved 0.1% in an hour")


def test_a_limit_buy_rests_with_its_funds_locked_and_fills_when_a_closed_candle_crosses_it(server, clock):
    price, minute = first_crossing(server, below=True)

    async def place(ex):
        order = await ex.create_order(SYMBOL, "limit", "buy", 0.01, float(price), {"clientOrderId": "lim-1"})
        return order, await ex.fetch_open_orders(SYMBOL), await ex.fetch_balance()

    order, open_orders, balance = trade(server, place)
    assert order["status"] == "open" and order["filled"] == 0
    assert [o["clientOrderId"] for o in open_orders] == ["lim-1"]
    locked = Decimal("0.01") * price
    assert server.account.locked("USDT") == locked and balance["USDT"]["used"] == float(locked)

    clock.now = minute + MINUTE_MS - 1  # the crossing candle has not closed yet
    fetch = lambda ex: ex.fetch_order(None, SYMBOL, {"clientOrderId": "lim-1"})  # noqa: E731 - a one-line callback
    assert trade(server, fetch)["status"] == "open"

    clock.now = minute + MINUTE_MS  # now it has
    filled = trade(server, fetch)
    assert filled["status"] == "closed" and filled["filled"] == 0.01 and Decimal(str(filled["average"])) == price
    assert server.account.locked("USDT") == 0
    assert server.account.free("USDT") == Decimal(10_000) - locked
    assert server.account.free("BTC") == Decimal("0.00999")
    assert server.account.trades[-1].time == minute + MINUTE_MS - 1 and server.account.trades[-1].is_maker


def test_a_limit_order_across_the_price_fills_at_once_and_a_cancel_unlocks(server):
    async def work(ex):
        crossing = await ex.create_order(SYMBOL, "limit", "buy", 0.01, float(last_close(server)) * 1.01)
        resting = await ex.create_order(SYMBOL, "limit", "buy", 0.01, float(last_close(server)) * 0.9)
        cancelled = await ex.cancel_order(resting["id"], SYMBOL)
        with pytest.raises(ccxt.OrderNotFound):
            await ex.cancel_order(resting["id"], SYMBOL)
        return crossing, cancelled

    crossing, cancelled = trade(server, work)
    assert crossing["status"] == "closed" and crossing["average"] <= float(last_close(server)) * 1.01
    assert cancelled["status"] == "canceled"
    assert server.account.locked("USDT") == 0 and server.account.open_orders() == []


def test_a_stop_loss_rests_untriggered_then_sells_at_market_when_a_candle_crosses_it(server, clock):
    server.account.set_balance("BTC", "0.02")
    stop, minute = first_crossing(server, below=True)

    async def place(ex):
        with pytest.raises(ccxt.InvalidOrder, match="trigger immediately"):
            above = float(last_close(server)) * 1.01
            await ex.create_order(SYMBOL, "market", "sell", 0.01, None, {"stopLossPrice": above})
        return await ex.create_order(SYMBOL, "market", "sell", 0.01, None, {"stopLossPrice": float(stop),
                                                                             "clientOrderId": "stop-1"})

    trade(server, place)
    assert server.order_requests("stop-1")[0].params["type"] == "STOP_LOSS"
    assert server.account.locked("BTC") == Decimal("0.01")
    clock.now = minute + MINUTE_MS
    order = trade(server, lambda ex: ex.fetch_order(None, SYMBOL, {"clientOrderId": "stop-1"}))
    assert order["status"] == "closed" and order["triggerPrice"] == float(stop)
    assert order["average"] <= float(stop)
    assert server.account.free("BTC") == Decimal("0.01") and server.account.locked("BTC") == 0


def test_a_take_profit_limit_is_sent_as_binance_wants_it(server):
    server.account.set_balance("BTC", "0.02")
    target = on_tick(last_close(server) * Decimal("1.05"))

    async def place(ex):
        return await ex.create_order(SYMBOL, "limit", "sell", 0.01, float(target), {"takeProfitPrice": float(target)})

    order = trade(server, place)
    params = server.order_requests()[0].params
    assert params["type"] == "TAKE_PROFIT_LIMIT" and Decimal(params["stopPrice"]) == target
    assert order["status"] == "open"
    assert server.account.orders[0].working is False


# --- Binance's client id rule -------------------------------------------------------------------------


def test_a_client_id_in_use_by_an_open_order_is_refused_and_accepted_again_once_it_filled(server, clock):
    price, minute = first_crossing(server, below=True)

    async def first(ex):
        await ex.create_order(SYMBOL, "limit", "buy", 0.01, float(price), {"clientOrderId": "same-id"})
        with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
            await ex.create_order(SYMBOL, "market", "buy", 0.001, None, {"clientOrderId": "same-id"})

    trade(server, first)
    assert len(server.account.orders_with_client_id("same-id")) == 1
    clock.now = minute + MINUTE_MS  # the limit order filled

    async def again(ex):
        placed = await ex.create_order(SYMBOL, "market", "buy", 0.001, None, {"clientOrderId": "same-id"})
        return placed, await ex.fetch_order(None, SYMBOL, {"clientOrderId": "same-id"})

    placed, latest = trade(server, again)
    assert placed["status"] == "closed" and latest["id"] == placed["id"] and latest["amount"] == 0.001
    assert [o.status for o in server.account.orders_with_client_id("same-id")] == ["FILLED", "FILLED"]
    assert len(server.order_requests("same-id")) == 3


def test_a_malformed_client_id_is_refused(server):
    async def place(ex):
        return await ex.create_order(SYMBOL, "market", "buy", 0.001, None, {"clientOrderId": "bad id!"})

    with pytest.raises(ccxt.BadRequest, match="-1100"):
        trade(server, place)
    assert server.account.orders == []


# --- refusals the account makes itself ------------------------------------------------------------------


@pytest.mark.parametrize(("amount", "error", "message"), [
    (1.0, ccxt.InsufficientFunds, "insufficient balance"),  # 1 BTC: far above 10,000 USDT
    (0.00005, ccxt.BadRequest, "NOTIONAL"),  # about 3 USDT, below the 5 USDT minimum
])
def test_the_account_refuses_what_it_cannot_fill(server, amount, error, message):
    with pytest.raises(error, match=message):
        trade(server, lambda ex: ex.create_order(SYMBOL, "market", "buy", amount))
    assert server.account.orders == [] and server.account.free("USDT") == 10_000


def test_an_amount_off_the_lot_step_is_a_lot_size_failure(server):
    async def place(ex):
        # Past ccxt's own rounding, as a raw request would.
        return await ex.privatePostOrder({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                                          "quantity": "0.000123"})

    with pytest.raises(ccxt.InvalidOrder, match="LOT_SIZE"):
        trade(server, place)


# --- faults ---------------------------------------------------------------------------------------------


def placing(client_id: str = "cid-1", amount: float = 0.001):
    return lambda ex: ex.create_order(SYMBOL, "market", "buy", amount, None, {"clientOrderId": client_id})


@pytest.mark.parametrize(("inject", "error", "placed"), [
    (lambda f: f.accept_then_drop(), ccxt.NetworkError, True),
    (lambda f: f.order_status(503), ccxt.ExchangeNotAvailable, False),
    (lambda f: f.order_status(502, placed=True), ccxt.ExchangeNotAvailable, True),
    (lambda f: f.insufficient(), ccxt.InsufficientFunds, False),
    (lambda f: f.filter_failure("NOTIONAL"), ccxt.BadRequest, False),
    (lambda f: f.unknown_status(placed=True), ccxt.OperationFailed, True),
    (lambda f: f.unknown_status(placed=False, code=-1007), ccxt.RequestTimeout, False),
    (lambda f: f.status(429, retry_after=7, path=ORDER_PATH), ccxt.DDoSProtection, False),
    (lambda f: f.status(418, path=ORDER_PATH), ccxt.DDoSProtection, False),
], ids=["accept_then_drop", "5xx_before", "5xx_after", "insufficient", "filter", "unknown_placed",
        "timeout_not_placed", "429", "418"])
def test_each_order_fault_reaches_ccxt_as_its_exception_with_the_order_placed_or_not(server, inject, error, placed):
    fault = inject(server.faults)
    with pytest.raises(error):
        trade(server, placing())
    assert fault.hits == 1
    assert len(server.account.orders_with_client_id("cid-1")) == (1 if placed else 0)
    if placed:
        # The order exists and answers to its client id, as the daemon's recovery will ask.
        order = trade(server, lambda ex: ex.fetch_order(None, SYMBOL, {"clientOrderId": "cid-1"}))
        assert order["status"] == "closed" and order["filled"] == 0.001
    assert len(server.order_requests("cid-1")) == 1


def test_5xx_and_unknown_status_are_not_network_errors_alike():
    # What the daemon's classification must know: -1006 is an OperationFailed but not a NetworkError.
    assert not issubclass(ccxt.OperationFailed, ccxt.NetworkError)
    assert issubclass(ccxt.RequestTimeout, ccxt.NetworkError)


def test_a_rate_limit_answer_carries_retry_after(server):
    server.faults.status(429, retry_after=7, path=ORDER_PATH)

    async def work(ex):
        with pytest.raises(ccxt.DDoSProtection):
            await placing()(ex)
        return dict(ex.last_response_headers)

    headers = {k.lower(): v for k, v in trade(server, work).items()}
    assert headers["retry-after"] == "7"


def test_a_hang_after_placing_times_the_client_out_and_the_order_exists(server):
    server.faults.order_hang(1.0)
    with pytest.raises(ccxt.RequestTimeout):
        trade(server, placing(), timeout_ms=300)
    assert [o.status for o in server.account.orders_with_client_id("cid-1")] == ["FILLED"]


def test_a_hang_before_placing_places_nothing(server):
    server.faults.order_hang(1.0, placed=False)
    with pytest.raises(ccxt.RequestTimeout):
        trade(server, placing(), timeout_ms=300)
    assert server.account.orders == []


def test_a_just_placed_order_is_not_found_for_some_queries_then_found(server):
    server.faults.order_not_found(queries=2)

    async def work(ex):
        await placing()(ex)
        misses = 0
        for _ in range(5):
            try:
                return misses, await ex.fetch_order(None, SYMBOL, {"clientOrderId": "cid-1"})
            except ccxt.OrderNotFound:
                misses += 1
        raise AssertionError("never found")

    misses, order = trade(server, work)
    assert misses == 2 and order["status"] == "closed"


def test_a_just_placed_order_is_not_found_for_some_seconds_of_server_clock_but_its_trades_show(server, clock):
    server.faults.order_not_found(seconds=30)
    trade(server, placing())
    fetch = lambda ex: ex.fetch_order(None, SYMBOL, {"clientOrderId": "cid-1"})  # noqa: E731 - a one-line callback
    with pytest.raises(ccxt.OrderNotFound):
        trade(server, fetch)
    assert len(trade(server, lambda ex: ex.fetch_my_trades(SYMBOL))) == 1
    clock.now += 29_999
    with pytest.raises(ccxt.OrderNotFound):
        trade(server, fetch)
    clock.now += 1
    assert trade(server, fetch)["status"] == "closed"


def test_a_partial_fill_expires_a_market_order_with_the_rest_unfilled(server):
    server.faults.partial_fill(0.4)
    order = trade(server, placing(amount=0.01))
    assert order["status"] == "expired" and order["filled"] == 0.004 and order["remaining"] == pytest.approx(0.006)
    assert server.account.locked("USDT") == 0
    assert server.account.free("BTC") == Decimal("0.004") * Decimal("0.999")
    spent = Decimal(10_000) - server.account.free("USDT")
    assert spent == server.account.trades[0].quote_qty


def test_a_partially_filled_limit_order_stays_open_and_fills_later(server, clock):
    server.faults.partial_fill(0.5)
    above = float(last_close(server)) * 1.01  # crosses at once: half fills now

    async def place(ex):
        return await ex.create_order(SYMBOL, "limit", "buy", 0.01, above, {"clientOrderId": "part-1"})

    order = trade(server, place)
    assert order["status"] == "open" and order["filled"] == 0.005
    assert server.account.orders[0].status == "PARTIALLY_FILLED"
    clock.now += 2 * MINUTE_MS  # the next closed candle is below the limit: the rest fills
    order = trade(server, lambda ex: ex.fetch_order(None, SYMBOL, {"clientOrderId": "part-1"}))
    assert order["status"] == "closed" and order["filled"] == 0.01 and len(server.account.trades) == 2


def test_order_requests_are_logged_with_their_body_params(server):
    server.faults.accept_then_drop()
    with pytest.raises(ccxt.NetworkError):
        trade(server, placing("retry-me"))
    trade(server, placing("retry-me"))  # a blind resend: Binance takes it, the account bought twice
    sent = server.order_requests("retry-me")
    assert len(sent) == 2 and all(r.body["newClientOrderId"] == "retry-me" and r.query == {} for r in sent)
    assert len(server.account.orders_with_client_id("retry-me")) == 2


def test_my_trades_and_all_orders_filter_as_binance_does(server, clock):
    for i in range(3):
        trade(server, placing(f"t-{i}"))
        clock.now += MINUTE_MS

    async def work(ex):
        first_id = int((await ex.fetch_my_trades(SYMBOL))[0]["id"])
        from_second = await ex.fetch_my_trades(SYMBOL, params={"fromId": first_id + 1})
        limited = await ex.fetch_my_trades(SYMBOL, limit=1)
        windowed = await ex.fetch_my_trades(SYMBOL, since=NOW + MINUTE_MS)
        with pytest.raises(ccxt.BadRequest):
            await ex.privateGetMyTrades({"symbol": "BTCUSDT", "startTime": NOW, "endTime": NOW + 25 * 60 * MINUTE_MS})
        with pytest.raises(ccxt.BadRequest):
            await ex.privateGetMyTrades({})
        return from_second, limited, windowed, await ex.fetch_orders(SYMBOL)

    from_second, limited, windowed, orders = trade(server, work)
    assert [t["order"] for t in from_second] == [str(o.order_id) for o in server.account.orders[1:]]
    assert len(limited) == 1 and limited[0]["order"] == str(server.account.orders[-1].order_id)
    assert len(windowed) == 2
    assert [o["clientOrderId"] for o in orders] == ["t-0", "t-1", "t-2"]


def test_a_placement_fault_waits_for_an_order_that_is_placed(server):
    server.faults.order_status(503)  # answered without placing: the partial fill is not used up by it
    partial = server.faults.partial_fill(0.5)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        trade(server, placing("first"))
    assert partial.hits == 0
    order = trade(server, placing("second", amount=0.01))
    assert partial.hits == 1 and order["status"] == "expired" and order["filled"] == 0.005
