"""Benchmark: the cost of the order path, and a hundred pairs opening in one minute.

1. **Order path cost**: from the decision (an ``opened`` the state machine returned) to the
   order request leaving (the broker's ``place`` called), with the ``order_intent`` durable on
   disk, against the raw floor on the same disk: the same bytes appended and ``fdatasync``'ed.
   The broker here answers at once from memory (what is measured ends where the request
   leaves: the exchange's own time is not livetrader's); the executor, the client id, the
   sizing and the journal are the real ones.
2. **A hundred pairs opening in one minute** against the test exchange of the suite
   (``tests/exchange_server.py``: Binance's API over HTTP on 127.0.0.1, with a matching engine),
   through ccxt with its rate limiter on, in sandbox mode: every intent is durable and every
   order sent within the rate limit; reported: the time from the minute boundary to the last
   order acknowledged (its answer journaled), and the requests per second the exchange saw.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from bench.common import Result, median
from livetrader.core.machine import accept
from livetrader.core.orders import Answer, MarketRules
from livetrader.core.signal import Signal
from livetrader.execution.executor import Executor
from livetrader.store.state import FilePairStore

TARGET_RATIO = 1.5
KEY = ("BTC/USDT", "bench-hold", "local")
T0 = 1_704_067_200_000
ROOT = Path(__file__).resolve().parent.parent


class _InstantBroker:
    """Answers at once; notes when each order request would leave."""

    def __init__(self) -> None:
        self.left_at: list[float] = []
        self.rules_value = MarketRules("BTC", "USDT", amount_step=0.00001, min_amount=0.00001, min_cost=5.0)

    async def rules(self, symbol: str) -> MarketRules:
        return self.rules_value

    async def free(self, asset: str, fresh: bool = False) -> float | None:
        return 1e9

    async def place(self, symbol: str, side: str, amount: float, client_id: str) -> Answer:
        self.left_at.append(time.perf_counter())
        return Answer("filled", filled=amount, average=50_000.0, cost=amount * 50_000.0, fee_base=amount * 0.001,
                      order_id="1")

    async def query(self, symbol: str, client_id: str) -> Answer:
        return Answer("unknown")

    async def trades_since(self, symbol: str, since_ms: int) -> list[dict[str, Any]] | None:
        return []


def order_path(count: int) -> dict[str, float]:
    """Decision -> request leaving, intent durable; and the floor (same bytes, append + fdatasync)."""
    ours: list[float] = []
    floor: list[float] = []

    async def main(tmp: Path) -> None:
        store = FilePairStore(tmp / "store", KEY, 0)
        broker = _InstantBroker()
        executor = Executor(KEY, broker, mode="sandbox", cost=100.0, unknown_order_minutes=10,
                            write=store.write_ahead, report_error=lambda *a: None)
        (tmp / "floor").mkdir()
        fd = os.open(tmp / "floor" / "floor.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            for i in range(count):
                now = T0 + i * 60_000
                decided = accept(Signal("long", take_profit=51_000.0, stop_loss=49_000.0), *KEY,
                                 f"BTC/USDT-bench-hold-{i:06d}", now, 50_000.0)
                size = store.journal.path.stat().st_size if store.journal.path.exists() else 0
                t0 = time.perf_counter()
                result = await executor.carry_out(decided, scheduled=False)
                ours.append(broker.left_at[-1] - t0)
                executor.applied(result)
                # The floor writes exactly the intent line the journal got.
                line = store.journal.path.read_bytes()[size:].split(b"\n", 1)[0] + b"\n"
                assert orjson.loads(line)["event"] == "order_intent"
                t1 = time.perf_counter()
                os.write(fd, line)
                os.fdatasync(fd)
                floor.append(time.perf_counter() - t1)
                executor.position = None
        finally:
            os.close(fd)
            store.close()

    with tempfile.TemporaryDirectory(prefix="livetrader-bench-") as tmp:
        asyncio.run(main(Path(tmp)))
    return {"orders": count, "ours_median_seconds": median(ours), "floor_median_seconds": median(floor),
            "ratio_median": median(ours) / median(floor)}


def hundred_pairs(pairs: int) -> dict[str, float]:
    """``pairs`` pairs open in the same minute against the local exchange, through ccxt."""
    sys.path.insert(0, str(ROOT / "tests"))
    from exchange_server import ExchangeServer  # the suite's exchange; tests import nothing from bench

    from livetrader.config import Config
    from livetrader.events import EventBus
    from livetrader.live.clock import ManualClock
    from livetrader.live.engine import Engine
    from livetrader.strategy.base import load_strategies

    now = int(time.time() * 1000)
    now -= now % 60_000
    clock = ManualClock(now + 1_000)
    symbols = {f"S{i:03d}USDT": 10.0 + i for i in range(pairs)}
    os.environ["LIVETRADER_LOCAL_API_KEY"] = "bench-key-0000"
    os.environ["LIVETRADER_LOCAL_SECRET"] = "bench-secret-0000"
    registry = load_strategies(ROOT / "bench" / "strategies")
    with ExchangeServer(clock=clock.now_ms, symbols=symbols, balances={"USDT": 10_000_000}) as server, \
            tempfile.TemporaryDirectory(prefix="livetrader-bench-") as tmp:
        table = {"ccxt_id": "binance", "mode": "sandbox", "urls": {"api_base": server.url},
                 "options": {"defaultType": "spot", "fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False,
                             "fetchMargins": False, "adjustForTimeDifference": False}}
        config = replace(Config(), data_dir=Path(tmp), exchanges={**Config().exchanges, "local": table})
        engine = Engine(config, registry, clock=clock, bus=EventBus(), data_dir=Path(tmp))
        engine.open()
        for symbol in symbols:
            engine.add_pair(symbol, "bench-hold", "local")

        async def main() -> tuple[float, float]:
            source = engine.source("local")
            await source.prepare(list(symbols))  # markets loaded before the boundary, as a running daemon has them
            client = await source.client()
            await client.fetch_balance()  # the first balance fetch too
            boundary = clock.now_ms()
            began = time.perf_counter()
            await asyncio.gather(*(pair.tick(boundary) for pair in engine.pairs))
            took = time.perf_counter() - began
            await engine.close()
            return took, began

        took, _ = asyncio.run(main())
        opened = sum(1 for p in engine.pairs if p.row is not None and p.row.pending_at is not None)
        placed = server.order_requests()
        entries = [r for r in placed if r.params.get("type") == "MARKET"]
        stops = [r for r in placed if r.params.get("type", "").startswith("STOP")]
        spread = (placed[-1].received - placed[0].received) if len(placed) > 1 else 0.0
    return {"pairs": pairs, "opened": opened, "orders": len(entries), "stops": len(stops), "seconds_to_last_ack": took,
            "orders_per_second": len(placed) / spread if spread else float(len(placed))}


def kill_torture(kills: int, seed: int = 7) -> dict[str, float]:
    """SIGKILL the real daemon ``kills`` times at random instants while it trades in sandbox mode
    against the suite's exchange, with a random order fault before each run (a lost answer, a
    hang, a 5xx, "status unknown", a refusal, a transient "not found"); then a clean run. Counts
    the orders placed, the client ids sent more than once, the positions closed twice and the open
    positions left without a resting protective stop (all three must be 0)."""
    import random
    import shutil
    import signal
    import subprocess

    sys.path.insert(0, str(ROOT / "tests"))
    from exchange_server import ExchangeServer
    from exchange_setup import exchange_config, follow_daemon_clock

    rng = random.Random(seed)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVETRADER_")}
    env.update(LIVETRADER_BINANCE_API_KEY="bench-key-0001", LIVETRADER_BINANCE_SECRET="bench-secret-0001")
    with tempfile.TemporaryDirectory(prefix="livetrader-bench-kills-") as tmp:
        cwd = Path(tmp)
        (cwd / "strategies").mkdir()
        shutil.copy(ROOT / "tests" / "fixtures" / "strategies" / "always_long.py", cwd / "strategies")
        with ExchangeServer(clock=follow_daemon_clock(cwd), balances={"USDT": 1_000_000}) as server:
            cfg = exchange_config(cwd, server, mode="sandbox", unknown_order_minutes=3)
            faults = [server.faults.accept_then_drop, lambda: server.faults.order_hang(1.0, placed=True),
                      lambda: server.faults.order_status(503, placed=rng.random() < 0.5),
                      lambda: server.faults.unknown_status(placed=rng.random() < 0.5), server.faults.insufficient,
                      lambda: server.faults.order_not_found(queries=2)]
            argv = [sys.executable, "-m", "livetrader.cli.app", "run", "BTCUSDT", "ETHUSDT", "--strategy",
                    "always-long", "--exchange", "binance", "--config", cfg, "--speed", "600"]
            for _ in range(kills):
                server.faults.clear()
                rng.choice(faults)()
                proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(rng.uniform(1.0, 2.5))
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
            def books() -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], dict[str, int], set[str]]:
                """The journals' records, order intents by client id, closes per signal, and the
                open positions without a protective stop resting on the exchange."""
                records = [r for path in (cwd / "dump-demo" / "journal").glob("*.jsonl")
                           for r in map(orjson.loads, path.read_bytes()[:path.read_bytes().rfind(b"\n") + 1]
                                        .splitlines())]
                intents = {str(r["client_id"]): r for r in records if r.get("event") == "order_intent"}
                closes: dict[str, int] = {}
                for r in records:
                    if r.get("event") == "closed":
                        closes[r["signal_id"]] = closes.get(r["signal_id"], 0) + 1
                still_open = {r["signal_id"] for r in records if r.get("event") == "opened"} - set(closes)
                protected = {intents[o.client_id]["signal_id"] for o in server.account.orders
                             if o.is_open and o.client_id in intents and intents[o.client_id]["leg"] == "stop"}
                return records, intents, closes, still_open - protected

            server.faults.clear()
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # The clean run: at least 4 s, then until every open position has its stop resting
            # (an exit under way has withdrawn it on purpose; 20 s at most).
            time.sleep(4)
            deadline = time.monotonic() + 20
            while books()[3] and time.monotonic() < deadline:
                time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
            sent: dict[str, int] = {}
            for request in server.order_requests():
                cid = request.params.get("newClientOrderId", "")
                sent[cid] = sent.get(cid, 0) + 1
            records, intents, closes, unprotected = books()
            unknown_to_journal = sum(1 for o in server.account.orders if o.client_id not in intents)
            still_open = {r["signal_id"] for r in records if r.get("event") == "opened"} - set(closes)
    return {"kills": kills, "orders": len(sent), "resent": sum(1 for n in sent.values() if n > 1),
            "orders_not_in_journal": unknown_to_journal, "closed_twice": sum(1 for n in closes.values() if n > 1),
            "open_positions": len(still_open), "unprotected": len(unprotected)}


def run(count: int = 300, pairs: int = 100, kills: int = 100) -> Result:
    from bench.harness import daemon_logging

    out = Result("orders", "The order path: decision to request, intent durable; 100 pairs opening at once")
    with tempfile.TemporaryDirectory(prefix="livetrader-bench-log-") as logs, \
            daemon_logging(Path(logs) / "daemon.log"):  # as the daemon logs (JSON lines), not on our stdout
        path = order_path(count)
        crowd = hundred_pairs(pairs)
    torture = kill_torture(kills)
    out.details.update(path=path, crowd=crowd, torture=torture)
    out.add("decision -> request leaving, intent durable (median)", path["ours_median_seconds"] * 1000, "ms")
    out.add("floor: append + fdatasync of the intent (median)", path["floor_median_seconds"] * 1000, "ms")
    out.add("ratio order path / floor (median)", path["ratio_median"], "x", TARGET_RATIO)
    out.add(f"{pairs} pairs opening in one minute: boundary -> every entry filled and its stop resting",
            crowd["seconds_to_last_ack"], "s")
    out.add(f"{pairs} pairs: positions opened", crowd["opened"], "positions", pairs, better="min")
    out.add(f"{pairs} pairs: protective stops placed", crowd["stops"], "stops", pairs, better="min")
    out.add(f"{pairs} pairs: order requests per second (ccxt's rate limiter)", crowd["orders_per_second"], "req/s")
    out.add("kill -9 at random instants with random order faults: kills", torture["kills"], "kills")
    out.add("  orders placed meanwhile", torture["orders"], "orders", sane="nonnegative")
    out.add("  client ids sent more than once", torture["resent"], "orders", 0, sane="nonnegative")
    out.add("  exchange orders missing from the journal", torture["orders_not_in_journal"], "orders", 0,
            sane="nonnegative")
    out.add("  positions closed twice", torture["closed_twice"], "positions", 0, sane="nonnegative")
    out.add("  open positions without a protective stop resting once the clean run settled",
            torture["unprotected"], "positions", 0, sane="nonnegative")
    out.notes.append(f"{count} entries through the real executor and journal (no commit log: one flush per "
                     "intent, as the floor); the crowd runs in sandbox mode against tests/exchange_server.py "
                     "through ccxt with enableRateLimit (binance: 50 ms per request unit)")
    return out
