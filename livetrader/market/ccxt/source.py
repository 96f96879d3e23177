"""Real exchanges through ccxt (async): closed 1-minute candles for any exchange ccxt supports.

Configured by an ``[exchanges.<name>]`` table (every key optional)::

    [exchanges.binance]
    ccxt_id = "binance"                 # default: the table's name
    options = { defaultType = "spot" }  # the ccxt constructor's ``options``; spot unless set (_default_to_spot)
    urls = { api_base = "http://127.0.0.1:8080" }  # every API URL re-rooted here (tests)
                                        # stream_base = "ws://127.0.0.1:8765": the candle stream's root
    candles = "stream"                  # closed candles pushed by the exchange's WebSocket stream where
                                        # livetrader speaks it (binance), else polled; "poll": REST only
    stream_stall_seconds = 30           # a stream silent this long is reconnected (REST meanwhile)
    timeout_ms = 10000                  # per HTTP request (ccxt's default: 10000)
    rate_limit_ms = 50                  # ccxt's rate limiter (default: the exchange's own)
    max_retries = 4                     # retries of a failed request, with exponential backoff
    retry_base_seconds = 0.5            # first backoff; doubles each retry ...
    retry_max_seconds = 8.0             # ... up to this
    page_limit = 1000                   # candles per request (default: what ccxt says the exchange allows)
    sandbox = false                     # candles from the exchange's test network, when ccxt knows one
    mode = "paper"                      # "paper" (no orders), "sandbox" (orders on the test network)
                                        # or "live" (real orders, real money): docs/behaviour.md §12
    unknown_order_minutes = 10          # how long an order must stay "not found" to be never placed
    protective_stop = "auto"            # the stop on the exchange for open positions: "auto", "market",
                                        # "limit" (stop-limit) or "off"
    stop_limit_gap_percent = 0.5        # a stop-limit's limit, this far below its stop
    stop_check_minutes = 1              # how often an open position's stop is asked for
    reconcile_minutes = 15              # how often the account's balances are checked against positions
    credentials_file = "/etc/livetrader/binance.toml"   # mode 600: apiKey, secret [, password]

A markets load that keeps failing with HTTP 404 (the server lacks an endpoint ccxt asks for)
raises ``ExchangeEndpointMissing`` naming the URL and the key to fix, instead of retrying forever.

Credentials never come from this table: from ``credentials_file`` when it is set, else from the
environment (``LIVETRADER_<NAME>_API_KEY``, ``LIVETRADER_<NAME>_SECRET``, optional
``LIVETRADER_<NAME>_PASSWORD``). Their values are replaced by ``***`` in every message this
module produces and in ccxt's own log records.

ccxt is imported lazily, inside functions: importing it costs about half a second and
``livetrader --help`` must answer at once.

One ccxt instance per source, and the engine shares one source per exchange by every pair, so
ccxt's rate limiter sees every request of the process. An async ccxt instance belongs to the
event loop it first ran in (its HTTP session and rate limiter do); a source used from a new loop
makes a new instance and hands it the markets already loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import difflib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from livetrader import redaction
from livetrader.core.format import format_time
from livetrader.core.price import MINUTE_MS, Candle, CandleError, validate_candles
from livetrader.errors import CandleSourceError, LivetraderError, UnknownSymbolError, UsageError
from livetrader.logs import get_logger
from livetrader.market.ccxt.settings import Credentials, env_prefix, parse_settings

log = get_logger(__name__)

#: Quote currencies tried, longest first, to guess ``BASE/QUOTE`` from ``BASEQUOTE`` before the
#: markets are loaded (only when the exchange cannot be reached at start).
_COMMON_QUOTES = tuple(sorted(
    ("USDT", "USDC", "FDUSD", "TUSD", "BUSD", "DAI", "USD", "EUR", "GBP", "JPY", "TRY", "BRL", "BTC", "ETH",
     "BNB"),
    key=len, reverse=True,
))
#: After the markets failed to load at start, how long ``resolve_symbol`` guesses instead of
#: blocking on another attempt (the candle fetches keep trying in the meantime).
_LOAD_RETRY_AFTER_SECONDS = 60.0
_MESSAGE_LIMIT = 300  # characters of an exchange's answer kept in an error message
_DEFAULT_PAGE_LIMIT = 1000
#: How far behind this machine the exchange's clock may be for a fetch to wait for the last
#: candle to close (once) instead of failing the tick.
_SKEW_WAIT_MS = 5_000

# The ``Date`` header of the last response in this task: the exchange's own clock (see fetch).
_RESPONSE_DATE: contextvars.ContextVar[int | None] = contextvars.ContextVar("livetrader_ccxt_date", default=None)


def _wall_ms() -> int:
    return int(time.time() * 1000)


# --- small helpers --------------------------------------------------------------------------


def _symbol_key(symbol: str) -> str:
    """``btc/usdt``, ``BTC-USDT``, ``BTCUSDT`` -> ``BTCUSDT``: how a typed symbol is looked up."""
    return re.sub(r"[/\-_\s]", "", symbol.upper())


def guess_symbol(symbol: str) -> str:
    """A unified ``BASE/QUOTE`` guess without the markets: ``btc/usdt`` or ``BTCUSDT`` -> ``BTC/USDT``.

    Used only while the exchange cannot be reached at start; the fetches resolve it properly
    once the markets load.
    """
    s = symbol.strip().upper()
    if "/" in s:
        return s
    for quote_code in _COMMON_QUOTES:
        if s.endswith(quote_code) and len(s) > len(quote_code):
            return f"{s[: -len(quote_code)]}/{quote_code}"
    return s


def _default_to_spot(exchange: Any, options: Mapping[str, Any]) -> None:
    """Spot markets unless the table's ``options`` say otherwise.

    ccxt's default for some exchanges is derivatives (bybit's ``defaultType`` is ``swap``), and
    binance, bybit, okx, ... load every market type at start (``options.fetchMarkets.types``),
    which asks futures endpoints that a spot-only testnet, proxy or local server lacks. Unless
    the table sets them: ``defaultType = "spot"`` where the exchange has that option, and, when
    the type is spot, ``fetchMarkets.types = ["spot"]`` where the exchange lists types to load.
    """
    if "defaultType" not in options and "defaultType" in exchange.options:
        exchange.options["defaultType"] = "spot"
    if exchange.options.get("defaultType", "spot") != "spot" or "fetchMarkets" in options:
        return
    fetch_markets = exchange.options.get("fetchMarkets")
    if isinstance(fetch_markets, dict) and "spot" in (fetch_markets.get("types") or ()):
        exchange.options["fetchMarkets"] = {**fetch_markets, "types": ["spot"]}


def _market_types(options: Mapping[str, Any]) -> Any:
    """``options.fetchMarkets.types`` as configured (the market types ccxt loads), or None."""
    fetch_markets = options.get("fetchMarkets")
    return fetch_markets.get("types") if isinstance(fetch_markets, Mapping) else None



def _date_ms(headers: Any) -> int | None:
    """The ``Date`` response header in ms, or None."""
    try:
        value = headers.get("Date") or headers.get("date")
        return int(parsedate_to_datetime(value).timestamp() * 1000) if value else None
    except (AttributeError, TypeError, ValueError, IndexError):
        return None


class _Malformed(ValueError):
    """The exchange answered something that is not the data asked for; worth retrying."""


class _NotFound(Exception):
    """The server answered HTTP 404: it has no such endpoint (``url``). Retried, then reported plainly."""

    def __init__(self, url: str, detail: str) -> None:
        super().__init__(f"{url} answered HTTP 404 ({detail})")
        self.url = url


class ExchangeEndpointMissing(LivetraderError):
    """Loading the markets kept failing with HTTP 404: the server lacks an endpoint ccxt asks for (exit 1).

    Retrying cannot fix a missing endpoint, so start-up stops with the URL and the key to change.
    """


class _Redactor(logging.Filter):
    """Replaces secrets in ccxt's own log records (its debug lines print request headers)."""

    def __init__(self, clean: Callable[[str], str]) -> None:
        super().__init__()
        self.clean = clean

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is logging's problem, not ours
            return True
        cleaned = self.clean(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def ccxt_exchange_ids() -> list[str]:
    """Every exchange id ccxt supports (imports ccxt: call only when a real exchange is wanted)."""
    import ccxt.async_support as ccxt

    return list(ccxt.exchanges)


# --- the source -----------------------------------------------------------------------------


class CcxtSource:
    """Closed 1-minute candles from a real exchange through async ccxt; implements ``CandleSource``.

    ``name`` is the ``[exchanges.<name>]`` table (and the name in messages), ``options`` that
    table, ``credentials`` from ``load_credentials`` (or None). ``clock`` returns the machine's
    time in ms (the ``clock`` attribute; replaceable, e.g. by a simulated clock in tests).
    Symbols are the ccxt unified ones (``BTC/USDT``); ``resolve_symbol`` accepts ``BTCUSDT``,
    ``BTC/USDT`` or ``btc/usdt``.

    Markets load once, lazily: ``await prepare(symbols)`` in async code; ``resolve_symbol``,
    which is synchronous, loads them itself when they are not loaded yet (see its docstring).
    """

    def __init__(
        self,
        name: str,
        options: Mapping[str, Any],
        credentials: Credentials | None = None,
        *,
        clock: Callable[[], int] | None = None,
        config_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.name = name
        self.settings = parse_settings(name, options, str(config_path) if config_path else "config")
        self._credentials = credentials
        if credentials is not None:
            redaction.register(credentials.secrets())  # usually registered already (sources.register_secrets)
        #: The machine's time in ms; the engine may point it at its own (simulated) clock.
        self.clock: Callable[[], int] = clock or _wall_ms
        self._exchange: Any = None  # the shared ccxt instance, bound to the loop it first ran in
        self._loop: asyncio.AbstractEventLoop | None = None  # that loop
        self._lock: asyncio.Lock | None = None  # guards the markets load on that loop
        self._markets_holder: Any = None  # an instance (maybe closed) whose markets are loaded
        self._lookup_table: dict[str, str] = {}  # _symbol_key -> unified symbol
        self._load_failed_at: float | None = None  # monotonic time the blocking load last failed
        self._load_attempts = 0  # markets loads finished on the running loop ...
        self._load_error: Exception | None = None  # ... and how the last one failed
        self._redactor = _Redactor(self._clean) if credentials is not None else None
        self._check_exchange()

    def __repr__(self) -> str:
        return f"CcxtSource({self.name!r}, ccxt_id={self.settings.ccxt_id!r})"

    # --- CandleSource ----------------------------------------------------------------------

    def resolve_symbol(self, symbol: str) -> str:
        """The unified symbol (``BTC/USDT``) of ``symbol``; UnknownSymbolError with close matches.

        When the markets are not loaded yet this blocks to load them: on a worker thread with
        its own event loop and a throwaway ccxt instance (one request), so it works with or
        without a running loop and never ties the shared instance to a short-lived loop; the
        shared instance gets the markets on first use. Async callers should ``await
        prepare(...)`` first, which does not block. If the exchange cannot be reached (after the
        retries), the daemon must still start and recover by itself: the normalized guess
        (``guess_symbol``) is returned, a warning logged, and the fetches resolve the symbol
        once the markets load. Errors that retrying cannot fix (credentials refused) raise.
        """
        if not symbol or not symbol.strip():
            raise UnknownSymbolError(f"empty symbol for exchange {self.name}")
        if not self._lookup_table and not self._recently_failed():
            try:
                self._load_markets_blocking()
            except CandleSourceError as exc:
                self._load_failed_at = time.monotonic()
                log.warning("markets not loaded; symbols are checked once the exchange answers",
                            exchange=self.name, error=str(exc))
        if self._lookup_table:
            return self._lookup(symbol)
        return guess_symbol(symbol)

    async def prepare(self, symbols: Iterable[str] = ()) -> list[str]:
        """Load the markets (once) on the running loop, then resolve ``symbols``; their unified names.

        Raises UnknownSymbolError naming every unknown symbol, CandleSourceError when the
        exchange cannot be reached after the retries.
        """
        await self._ready()
        resolved, unknown = [], []
        for symbol in symbols:
            try:
                resolved.append(self._lookup(symbol))
            except UnknownSymbolError as exc:
                unknown.append(str(exc))
        if unknown:
            raise UnknownSymbolError("; ".join(unknown))
        return resolved

    def market_id(self, symbol: str) -> str | None:
        """The exchange's own id of the unified ``symbol`` (``BTC/USDT`` -> ``BTCUSDT``), None before
        the markets are loaded or for a symbol not among them."""
        holder = self._markets_holder
        market = holder.markets.get(symbol) if holder is not None else None
        market_id = market.get("id") if isinstance(market, dict) else None
        return market_id if isinstance(market_id, str) else None

    def is_spot(self, symbol: str) -> bool:
        """True when the unified ``symbol`` is a spot market (False for derivatives, and before the
        markets are loaded). A perpetual may share its spot market's id (Binance's ``BTCUSDT``)."""
        holder = self._markets_holder
        market = holder.markets.get(symbol) if holder is not None else None
        return isinstance(market, dict) and market.get("spot") is True

    def bounds(self, symbol: str) -> tuple[int, int] | None:
        """None: a live exchange has no end."""
        return None

    async def fetch(self, symbol: str, start_ms: int, end_ms: int) -> list[Candle]:
        """Closed 1-minute candles opening in ``[start_ms, end_ms)``, complete and validated.

        Candles at or after the machine's current minute are still forming and are left out,
        so ``end_ms`` past the last closed minute gives fewer candles. The exchange's clock (the
        ``Date`` of its answers) must agree that the last one has closed: a few seconds behind,
        the fetch waits once; further behind, CandleSourceError says the clocks disagree. Long
        windows (downtime catch-up) are fetched in pages. A batch with a gap, a duplicate or an
        impossible candle raises CandleSourceError naming the exchange, the symbol and the
        problem: live candles are never filled in.
        """
        exchange = await self._ready()
        unified = self._lookup(symbol)
        now = self.clock()
        current = now - now % MINUTE_MS
        first = -(-start_ms // MINUTE_MS) * MINUTE_MS
        end = min(-(-end_ms // MINUTE_MS) * MINUTE_MS, current)  # minutes opening before end_ms
        if end <= first:
            return []
        candles, exchange_now = await self._fetch_range(exchange, unified, first, end)
        if exchange_now is not None and 0 < end - exchange_now <= _SKEW_WAIT_MS:
            # The exchange is a moment behind this machine and still forms the last candle asked
            # for: wait until it has closed it, once, rather than lose the tick.
            await asyncio.sleep((end - exchange_now) / 1000 + 0.25)
            candles, exchange_now = await self._fetch_range(exchange, unified, first, end)
        if exchange_now is not None and exchange_now < end:
            raise CandleSourceError(
                f"{self.name} {unified}: the exchange has not closed the candles up to {format_time(end)} yet: its "
                f"clock ({format_time(exchange_now)}) is {(now - exchange_now) / 1000:.0f} s behind this machine's; "
                "synchronise the clock (NTP)"
            )
        try:
            validate_candles(candles, first, end)
        except CandleError as exc:
            raise CandleSourceError(f"{self.name} {unified}: bad candles: {exc}") from None
        return candles

    async def fetch_page(self, symbol: str, since: int, end: int) -> list[Candle]:
        """One request: the closed candles the exchange has from ``since`` on, before ``end`` (at most a
        page), as it sent them: gaps are left for the caller to see (``livetrader download`` records
        them), which ``fetch`` refuses. Retried like every request; not validated here."""
        exchange = await self._ready()
        unified = self._lookup(symbol)
        now = self.clock()
        end = min(end, now - now % MINUTE_MS)  # the forming candle is not history yet
        if end <= since:
            return []
        want = min(self._page_limit(exchange), -(-(end - since) // MINUTE_MS))
        rows, _ = await self._call(f"fetching candles of {unified}", self._fetch_page, exchange, unified, since, want)
        return [c for c in rows if since <= c.timestamp < end]

    async def _fetch_range(self, exchange: Any, unified: str, first: int, end: int) -> tuple[list[Candle], int | None]:
        """Candles opening in ``[first, end)``, page by page; and the earliest ``Date`` the exchange sent."""
        page_limit = self._page_limit(exchange)
        candles: list[Candle] = []
        exchange_now: int | None = None
        since = first
        while since < end:
            want = min(page_limit, -(-(end - since) // MINUTE_MS))
            rows, date = await self._call(
                f"fetching candles of {unified}", self._fetch_page, exchange, unified, since, want)
            if date is not None:
                exchange_now = date if exchange_now is None else min(exchange_now, date)
            if not rows:
                break
            candles.extend(c for c in rows if first <= c.timestamp < end)
            if rows[-1].timestamp < since:
                break  # the exchange ignored ``since``: no progress to be made
            since = rows[-1].timestamp + MINUTE_MS
        return candles, exchange_now

    async def close(self) -> None:
        """Close the ccxt HTTP session (the source can be used again: a new one opens)."""
        exchange, loop = self._exchange, self._loop
        self._exchange = self._loop = self._lock = None
        if exchange is not None:
            if loop is asyncio.get_running_loop():
                await exchange.close()
            else:
                _abandon(exchange)
        if self._redactor is not None:
            logging.getLogger("ccxt").removeFilter(self._redactor)
            logging.getLogger("ccxt.base.exchange").removeFilter(self._redactor)

    # --- formatting ------------------------------------------------------------------------

    def format_price(self, symbol: str, value: float) -> str:
        """``value`` rounded to the market's price precision (``50123.46``), for reports.

        Without loaded markets, or for a value below the tick, a plain ``%.12g`` instead.
        """
        return self._to_precision("price_to_precision", symbol, value)

    def format_amount(self, symbol: str, value: float) -> str:
        """``value`` rounded to the market's amount precision, for reports."""
        return self._to_precision("amount_to_precision", symbol, value)

    def _to_precision(self, method: str, symbol: str, value: float) -> str:
        holder = self._markets_holder
        if holder is not None and self._lookup_table:
            try:
                return str(getattr(holder, method)(self._lookup(symbol), value))
            except Exception:  # noqa: BLE001 - formatting must never fail a report
                pass
        return f"{value:.12g}"

    # --- the ccxt instance -------------------------------------------------------------------

    def _check_exchange(self) -> None:
        """UsageError now (not at the first tick) for an unknown id or an exchange without candles."""
        import ccxt.async_support as ccxt

        ccxt_id = self.settings.ccxt_id
        if ccxt_id not in ccxt.exchanges:
            close = difflib.get_close_matches(ccxt_id, ccxt.exchanges, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UsageError(f"[exchanges.{self.name}] ccxt_id {ccxt_id!r} is not an exchange ccxt knows{hint}")
        exchange = self._new_exchange(register=False)
        if not exchange.has.get("fetchOHLCV"):
            raise UsageError(f"{self.name} ({ccxt_id}): ccxt cannot fetch candles from this exchange")
        if "1m" not in (exchange.timeframes or {"1m": "1m"}):
            raise UsageError(f"{self.name} ({ccxt_id}) has no 1-minute candles")
        if self.settings.mode != "paper" and self._credentials is None:
            prefix = env_prefix(self.name)
            raise UsageError(f"{self.name}: mode = \"{self.settings.mode}\" places orders and needs API credentials: "
                             f"set {prefix}API_KEY and {prefix}SECRET, or credentials_file = \"...\" in "
                             f"[exchanges.{self.name}]")
        if self.settings.mode != "paper" and not exchange.has.get("createOrder"):
            raise UsageError(f"{self.name} ({ccxt_id}): ccxt cannot place orders on this exchange; "
                             "use mode = \"paper\"")

    @property
    def mode(self) -> str:
        """``paper``, ``sandbox`` or ``live``: whether, and where, this exchange's pairs place orders."""
        return self.settings.mode

    @property
    def account(self) -> str:
        """Which account orders go to, safe to print: the API key's last four characters."""
        key = self._credentials.api_key if self._credentials is not None else ""
        return f"API key ...{key[-4:]}" if key else "no API key"

    async def client(self) -> Any:
        """The shared ccxt instance with its markets loaded: the one the order path uses too, so
        ccxt's rate limiter sees every request of the process."""
        return await self._ready()

    def _new_exchange(self, register: bool = True) -> Any:
        """A ccxt instance configured from the settings; not bound to a loop until its first request."""
        import ccxt.async_support as ccxt

        s = self.settings
        config: dict[str, Any] = {"enableRateLimit": True, "options": dict(s.options)}
        if s.timeout_ms is not None:
            config["timeout"] = s.timeout_ms
        if s.rate_limit_ms is not None:
            config["rateLimit"] = s.rate_limit_ms
        if self._credentials is not None:
            config.update(self._credentials.ccxt_config())
        try:
            exchange = getattr(ccxt, s.ccxt_id)(config)
            _default_to_spot(exchange, s.options)
            if s.test_network:
                if not exchange.urls.get("test"):
                    # ccxt raises TypeError (not NotSupported) for these: say it plainly instead.
                    raise UsageError(f"{self.name} ({s.ccxt_id}) has no sandbox (test network) in ccxt; "
                                     "use mode = \"paper\" to try strategies without orders")
                exchange.set_sandbox_mode(True)
        except ccxt.BaseError as exc:
            raise UsageError(f"{self.name}: ccxt refused the configuration: {self._clean(str(exc))}") from None
        if s.api_base is not None:
            exchange.urls["api"] = _rebase(exchange.urls.get("api"), s.api_base)
            if s.api_base.startswith("http://"):
                # ccxt waits 250 ms on close so TLS transports can shut down; plain HTTP has none.
                exchange.timeout_on_exit = 0
        _check_responses(exchange, ccxt.BadResponse, ccxt.BaseError)
        if register and self._redactor is not None:
            for name in ("ccxt", "ccxt.base.exchange"):
                logger = logging.getLogger(name)
                if self._redactor not in logger.filters:
                    logger.addFilter(self._redactor)
        return exchange

    def _client(self) -> Any:
        """The shared instance for the running loop (made on first use, or anew for a new loop)."""
        loop = asyncio.get_running_loop()
        exchange = self._exchange
        if exchange is not None and self._loop is not loop:
            _abandon(exchange)
            exchange = None
        if exchange is None:
            exchange = self._new_exchange()
            if self._markets_holder is not None:
                exchange.set_markets_from_exchange(self._markets_holder)
            self._exchange, self._loop, self._lock = exchange, loop, asyncio.Lock()
        return exchange

    async def _ready(self) -> Any:
        """The shared instance, with its markets loaded (once, under a lock, with retries)."""
        exchange = self._client()
        if exchange.markets:
            return exchange
        assert self._lock is not None
        seen = self._load_attempts
        async with self._lock:
            if exchange.markets:  # another pair loaded them while this one waited
                return exchange
            if self._load_attempts != seen and self._load_error is not None:
                # Another pair just tried, with every retry, and failed: share its answer rather
                # than queue one full retry sequence per pair behind the lock.
                raise type(self._load_error)(str(self._load_error))
            self._load_error = None
            try:
                await self._call("loading markets", self._load_markets, exchange)
            except (CandleSourceError, UsageError, ExchangeEndpointMissing) as exc:
                self._load_error = exc
                raise
            finally:
                self._load_attempts += 1
        return exchange

    async def _load_markets(self, exchange: Any) -> None:
        markets = await exchange.load_markets(reload=True)
        if not markets:
            raise _Malformed("the exchange listed no markets")
        self._set_markets(exchange)

    def _set_markets(self, exchange: Any) -> None:
        table: dict[str, str] = {}
        # Spot first: on exchanges where a spot market and a perpetual share an id (binance's
        # BTCUSDT), the plain spelling means spot.
        for market in sorted(exchange.markets.values(), key=lambda m: not m.get("spot")):
            symbol = market["symbol"]
            for spelling in (symbol, market.get("id")):
                if isinstance(spelling, str) and spelling:
                    table.setdefault(_symbol_key(spelling), symbol)
        self._markets_holder = exchange
        self._lookup_table = table
        self._load_failed_at = None

    def _load_markets_blocking(self) -> None:
        """Load the markets on a worker thread with its own loop and throwaway instance; wait."""
        outcome: list[BaseException | None] = []

        async def load() -> None:
            exchange = self._new_exchange()
            try:
                await self._call("loading markets", self._load_markets, exchange)
            finally:
                await exchange.close()

        def work() -> None:
            try:
                asyncio.run(load())
                outcome.append(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the calling thread below
                outcome.append(exc)

        thread = threading.Thread(target=work, name=f"livetrader-{self.name}-markets", daemon=True)
        thread.start()
        thread.join()
        error = outcome[0] if outcome else CandleSourceError(f"{self.name}: loading markets did not finish")
        if error is not None:
            raise error

    def _recently_failed(self) -> bool:
        return self._load_failed_at is not None and time.monotonic() - self._load_failed_at < _LOAD_RETRY_AFTER_SECONDS

    def _lookup(self, symbol: str) -> str:
        """The unified symbol of ``symbol`` among the loaded markets; UnknownSymbolError otherwise."""
        if not self._lookup_table:
            raise CandleSourceError(f"{self.name} unavailable: markets not loaded yet")
        holder = self._markets_holder
        s = symbol.strip()
        if holder is not None and s in holder.markets:
            return s
        found = self._lookup_table.get(_symbol_key(s))
        if found is not None:
            return found
        close = difflib.get_close_matches(_symbol_key(s), list(self._lookup_table), n=3, cutoff=0.6)
        suggestions = list(dict.fromkeys(self._lookup_table[c] for c in close))
        hint = f"did you mean {', '.join(suggestions)}? " if suggestions else ""
        raise UnknownSymbolError(
            f"{self.name} has no market {symbol!r}; {hint}({len(holder.markets) if holder else 0} markets "
            f"listed, written BTC/USDT or BTCUSDT)"
        )

    def _page_limit(self, exchange: Any) -> int:
        """Candles per request: the setting, else ccxt's knowledge of the exchange, else 1000."""
        if self.settings.page_limit is not None:
            return self.settings.page_limit
        try:
            limit = exchange.features["spot"]["fetchOHLCV"]["limit"]
        except (AttributeError, KeyError, TypeError):
            limit = None
        return limit if isinstance(limit, int) and limit > 0 else _DEFAULT_PAGE_LIMIT

    async def _fetch_page(self, exchange: Any, symbol: str, since: int, limit: int) -> tuple[list[Candle], int | None]:
        """One request: candles from ``since`` on (at most ``limit``), and the exchange's Date."""
        _RESPONSE_DATE.set(None)
        rows = await exchange.fetch_ohlcv(symbol, "1m", since=since, limit=limit)
        date = _RESPONSE_DATE.get()
        if not isinstance(rows, list):
            raise _Malformed(f"candles answer is a {type(rows).__name__}, not a list")
        candles = []
        for row in rows:
            if not isinstance(row, list | tuple) or len(row) < 6:
                raise _Malformed(f"candle row {str(row)[:60]!r} is not [time, open, high, low, close, volume]")
            timestamp, o, h, low, c, v = row[:6]
            if isinstance(timestamp, bool) or not isinstance(timestamp, int) or any(
                isinstance(x, bool) or not isinstance(x, int | float) for x in (o, h, low, c, v)
            ):
                raise _Malformed(f"candle row {str(row)[:80]!r} has a missing or non-numeric value")
            candles.append(Candle(timestamp, float(o), float(h), float(low), float(c), float(v)))
        candles.sort(key=lambda c: c.timestamp)
        return candles, date

    # --- retries and messages ----------------------------------------------------------------

    async def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``await fn(*args)``, retried with exponential backoff on what retrying can fix.

        Retried: network errors, timeouts, rate limiting (429/418), exchange unavailable (5xx),
        other ``OperationFailed`` answers, ccxt's catch-all ``ExchangeError`` and malformed
        answers. Not retried (raised at once, with what to do): bad symbol, refused credentials
        or permissions, insufficient funds, and every other specific ccxt error. Exceptions
        are raised outside the ``except`` blocks so no ccxt exception (whose text may hold a
        secret) rides along as ``__context__`` into a traceback.
        """
        import ccxt.async_support as ccxt

        attempts = self.settings.max_retries + 1
        delay = self.settings.retry_base_seconds
        last = ""
        for attempt in range(1, attempts + 1):
            fatal: Exception | None = None
            missing: _NotFound | None = None
            try:
                return await fn(*args)
            except _NotFound as exc:
                last, missing = self._clean(str(exc)), exc
            except ccxt.BaseError as exc:
                if isinstance(exc, ccxt.OperationFailed) or type(exc) is ccxt.ExchangeError:
                    last = self._describe(exc)
                else:
                    fatal = self._fatal(what, exc)
            except (_Malformed, TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
                # ccxt's parsers trip over answers that are not what they expect.
                last = f"malformed answer ({self._describe(exc)})"
            if fatal is not None:
                raise fatal
            if attempt < attempts:
                wait = min(delay, self.settings.retry_max_seconds)
                log.info("exchange request failed; retrying", exchange=self.name, what=what, attempt=attempt,
                         wait_seconds=wait, error=last)
                await asyncio.sleep(wait)
                delay *= 2
        if missing is not None and what == "loading markets":
            raise self._endpoint_missing(missing, attempts)
        raise CandleSourceError(f"{self.name} unavailable: {what} failed {attempts} time(s): {last}")

    def _endpoint_missing(self, missing: _NotFound, attempts: int) -> ExchangeEndpointMissing:
        """The plain account of a markets load that kept hitting an endpoint the server lacks."""
        s = self.settings
        where = f"[exchanges.{self.name}]"
        if s.api_base is None:
            fix = f"check ccxt_id ({s.ccxt_id!r}), sandbox and options in {where}"
        elif _market_types(s.options) not in (None, ["spot"]):
            fix = (f"the server at urls.api_base ({s.api_base}) does not serve it: load spot markets only "
                   f"(remove options.fetchMarkets from {where}: spot is the default, or set options.fetchMarkets "
                   f"= {{ types = [\"spot\"] }}), or point urls.api_base at a server that speaks "
                   f"{s.ccxt_id}'s whole API")
        else:
            fix = (f"the server at urls.api_base ({s.api_base}) does not serve it: point urls.api_base in "
                   f"{where} at a server that speaks {s.ccxt_id}'s API")
        return ExchangeEndpointMissing(
            f"{self.name}: loading markets failed {attempts} time(s): {self._clean(missing.url)} answered "
            f"HTTP 404 (no such endpoint); retrying will not help. Fix: {fix}"
        )

    def _fatal(self, what: str, exc: Exception) -> Exception:
        """The user-facing error for a ccxt error that retrying cannot fix."""
        import ccxt.async_support as ccxt

        text = self._describe(exc)
        prefix = env_prefix(self.name)
        if isinstance(exc, ccxt.BadSymbol):
            return UnknownSymbolError(f"{self.name} rejects the symbol while {what}: {text}; check the symbol")
        if isinstance(exc, ccxt.AuthenticationError):
            source = (f"credentials_file {self.settings.credentials_file}" if self.settings.credentials_file
                      else f"{prefix}API_KEY / {prefix}SECRET")
            return UsageError(f"{self.name} refused the credentials while {what}: {text}; check {source} "
                              "(key, secret, permissions, IP whitelist)")
        if isinstance(exc, ccxt.InsufficientFunds):
            return UsageError(f"{self.name}: insufficient funds while {what}: {text}")
        return CandleSourceError(f"{self.name} refused {what}: {text}; retrying will not help, check the "
                                 f"[exchanges.{self.name}] settings")

    def _describe(self, exc: BaseException) -> str:
        text = str(exc).strip()
        if len(text) > _MESSAGE_LIMIT:
            text = text[:_MESSAGE_LIMIT] + "..."
        return self._clean(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)

    def _clean(self, text: str) -> str:
        """``text`` with every registered secret (and its URL-encoded forms) replaced by ``***``."""
        return redaction.redact(text)


def _rebase(api: Any, base: str) -> Any:
    """Every http(s) URL in ``urls['api']`` (a string or nested tables) re-rooted at ``base``."""
    if isinstance(api, str):
        parts = urlsplit(api)
        if parts.scheme not in ("http", "https"):
            return api
        return base + parts.path + (f"?{parts.query}" if parts.query else "")
    if isinstance(api, dict):
        return {key: _rebase(value, base) for key, value in api.items()}
    return api


def _check_responses(exchange: Any, bad_response: type[Exception], base_error: type[Exception]) -> None:
    """Make a malformed answer an error, a 404 a ``_NotFound``, and note each answer's ``Date``.

    ccxt returns the raw text when a JSON body does not parse (a truncated answer, an HTML
    error page with status 200), and its parsers then make empty or garbled data of it
    silently. Wrapping the instance's ``fetch`` turns those into ``BadResponse`` (retried).
    """
    original = exchange.fetch
    original_hook = exchange.on_rest_response
    statuses: dict[str, int] = {}  # url -> HTTP status of its last answer (read right after it)

    def on_rest_response(code: Any, reason: Any, url: str, *rest: Any) -> Any:
        statuses[url] = code
        return original_hook(code, reason, url, *rest)

    exchange.on_rest_response = on_rest_response

    async def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        statuses.pop(url, None)
        try:
            response = await original(url, method, headers, body)
        except base_error as exc:
            if statuses.pop(url, None) == 404:
                raise _NotFound(url.split("?")[0], f"{type(exc).__name__}: {str(exc)[:120]}") from None
            raise
        _RESPONSE_DATE.set(_date_ms(exchange.last_response_headers))
        if isinstance(response, str) and response.lstrip()[:1] in ("{", "[", "<"):
            raise bad_response(f"{exchange.id} {method} {url}: malformed answer {response[:60]!r}")
        return response

    exchange.fetch = fetch


def _abandon(exchange: Any) -> None:
    """Drop an instance whose event loop is gone, without the warnings of an unclosed session."""
    with contextlib.suppress(Exception):
        if exchange.session is not None:
            exchange.session.detach()
    exchange.session = None
    exchange.tcp_connector = None
