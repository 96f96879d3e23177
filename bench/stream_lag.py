"""Benchmark: candles by WebSocket against candles by REST, 1,000 symbols on one Binance-speaking exchange.

The real engine (``Engine.run``: a supervised loop per pair, the metronome, persistence on, one
``bench-reference`` pair per symbol) trades against the suite's local servers on 127.0.0.1: the
REST exchange (``tests/exchange_server.py``, in this process) and its kline stream
(``tests/stream_server.py``, in a process of its own, as a real exchange's work is not ours),
both on the engine's simulated clock and serving the same candles. For every pair and minute
it takes the *decision lag*: from the candle's close (the minute boundary) to that pair's tick
done (``Pair.decision_lag_ms``), read when the minute's sweep completes.

- stream: ``candles = "stream"``; the pairs are woken as their symbol's closed candle arrives.
- REST: ``candles = "poll"`` with ccxt's default rate limit for Binance (50 ms), as today: every
  symbol's minute is one rate-limited ``klines`` request.

The clock runs ``speed`` times faster than real time (a whole run of real minutes would take
too long); lags are reported in real milliseconds (simulated lag / speed), so they are what a
real-time run would see for the same work. The first minutes (every pair's first tick fetches
its history over REST: the start, not the steady state) are not counted. CPU is the process's
CPU time per simulated minute (the REST server's thread included: it runs in this process);
memory is the resident size after the warm-up and at the end.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.common import Result, percentile, rss_bytes

ROOT = Path(__file__).resolve().parent.parent
TARGET_P99_SECONDS = 1.0
OPTIONS = {"defaultType": "spot", "fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False,
           "fetchMargins": False, "adjustForTimeDifference": False}


def measure(mode: str, symbols: int, minutes: int, speed: float, warmup: int) -> dict[str, Any]:
    """Run ``symbols`` pairs for ``warmup`` + ``minutes`` simulated minutes with candles by ``mode``."""
    sys.path.insert(0, str(ROOT / "tests"))
    from exchange_server import ExchangeServer  # the suite's servers; tests import nothing from bench
    from stream_server import stream_symbols

    from bench.harness import daemon_logging, registry
    from livetrader.config import Config
    from livetrader.core.price import MINUTE_MS
    from livetrader.events import EventBus
    from livetrader.live.clock import SimClock
    from livetrader.live.engine import Engine

    wall = int(time.time() * 1000)
    start = wall - wall % MINUTE_MS + 10 * MINUTE_MS  # a fresh minute, 20 s (simulated) before its end
    clock = SimClock(origin_wall=wall, origin_sim=start + 40_000, speed=speed)
    names = stream_symbols(symbols)
    stream = None
    if mode == "stream":  # in a process of its own, its candles made first: the exchange's work is not ours
        stream = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "stream_server.py"), str(symbols), str(wall), str(start + 40_000),
             str(speed), str(start), str(start + (warmup + minutes + 3) * MINUTE_MS)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert stream.stdout is not None
        stream_url = stream.stdout.readline().strip()
    with ExchangeServer(clock=clock.now_ms, symbols=names) as rest, \
            tempfile.TemporaryDirectory(prefix="livetrader-bench-") as tmp:
        urls = {"api_base": rest.url, **({"stream_base": stream_url} if stream is not None else {})}
        table: dict[str, Any] = {"ccxt_id": "binance", "urls": urls, "options": OPTIONS, "candles": mode}
        if mode == "stream":
            table["rate_limit_ms"] = 1  # only the start fetches over REST (history): not what is measured
        config = replace(Config(), data_dir=Path(tmp), exchanges={**Config().exchanges, "local": table})
        engine = Engine(config, registry(), clock=clock, bus=EventBus(), data_dir=Path(tmp))
        engine.open()
        for symbol in names:
            engine.add_pair(symbol, "bench-reference", "local")
        lags: list[float] = []
        figures: dict[str, Any] = {}

        async def main() -> None:
            runner = asyncio.create_task(engine.run())
            first = start + (warmup + 1) * MINUTE_MS  # the first minute counted
            await clock.sleep_until(first - MINUTE_MS // 2)  # the warm-up is over: measure from here
            cpu_started, rss_started = time.process_time(), rss_bytes()
            counted = 0
            for minute in range(first, first + minutes * MINUTE_MS, MINUTE_MS):
                # Half a minute after the boundary every pair has decided it (or missed it: not counted).
                await clock.sleep_until(minute + MINUTE_MS // 2)
                minute_lags = [p.decision_lag_ms for p in engine.pairs if p.last_minute == minute]
                lags.extend(lag / speed for lag in minute_lags if lag is not None)
                counted += 1
            # Per simulated minute: the CPU a real-time minute of the same work takes.
            figures["cpu_seconds_per_minute"] = (time.process_time() - cpu_started) / counted
            figures["rss_start_bytes"], figures["rss_end_bytes"] = rss_started, rss_bytes()
            if mode == "stream":
                figures["stream"] = engine.streams["local"].status()
            engine.stop()
            await runner
            await engine.close()

        with daemon_logging(Path(tmp) / "daemon.log"):  # logging as the daemon logs, into a file
            asyncio.run(main())
        figures["klines_requests"] = rest.count("/klines")
    if stream is not None:
        assert stream.stdin is not None
        stream.stdin.close()
        stream.wait(10)
    figures.update({"mode": mode, "symbols": symbols, "minutes": minutes, "speed": speed, "decisions": len(lags),
                    "p50_ms": percentile(lags, 50), "p99_ms": percentile(lags, 99), "max_ms": max(lags, default=0.0)})
    return figures


def run(symbols: int = 1_000, stream_minutes: int = 10, stream_speed: float = 4.0, rest_minutes: int = 2,
        rest_speed: float = 1.0, warmup: int = 2) -> Result:
    """Both paths, one after the other, in the same run."""
    result = Result("stream", f"decision lag, {symbols:,} symbols: WebSocket stream vs REST polling")
    streamed = measure("stream", symbols, stream_minutes, stream_speed, warmup)
    polled = measure("poll", symbols, rest_minutes, rest_speed, warmup)
    result.details = {"stream": streamed, "rest": polled}
    result.add("stream p99 close -> tick done", streamed["p99_ms"] / 1000, "s", TARGET_P99_SECONDS)
    result.add("stream p50 close -> tick done", streamed["p50_ms"] / 1000, "s")
    result.add("REST p99 close -> tick done", polled["p99_ms"] / 1000, "s")
    result.add("REST p99 / stream p99", polled["p99_ms"] / max(streamed["p99_ms"], 1e-9), "x", better="min")
    result.add("stream CPU per minute", streamed["cpu_seconds_per_minute"], "s")
    result.add("REST CPU per minute", polled["cpu_seconds_per_minute"], "s")
    growth = streamed["rss_end_bytes"] - streamed["rss_start_bytes"]
    result.add("stream memory growth over the run", growth / 1e6, "MB", sane="finite")
    result.notes.append(
        f"{symbols:,} symbols, one bench-reference pair each; stream {stream_minutes} min at {stream_speed:g}x, REST "
        f"{rest_minutes} min at {rest_speed:g}x (ccxt's Binance rate limit); lags in real seconds")
    return result


if __name__ == "__main__":
    import orjson

    print(orjson.dumps(run().as_dict(), option=orjson.OPT_INDENT_2).decode())
