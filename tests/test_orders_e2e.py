"""Real orders in sandbox mode: the real daemon, ccxt, and a Binance-speaking exchange on 127.0.0.1
with a matching engine (tests/exchange_server.py). docs/behaviour.md §12."""

from __future__ import annotations

import json
import time
from collections import Counter
from decimal import Decimal

import orjson
import pytest
from daemon import events, run, start, stop, wait_for, wait_running, workdir
from exchange_server import ExchangeServer
from exchange_setup import exchange_config, follow_daemon_clock

from livetrader.core.orders import orders_of

pytestmark = pytest.mark.e2e

API_KEY = "lt-sandbox-KEY-91c2d7"
SECRET = "lt-sandbox-SECRET-4be08f"
KEYS = {"LIVETRADER_BINANCE_API_KEY": API_KEY, "LIVETRADER_BINANCE_SECRET": SECRET}
#: Simulated minutes per real one: a position closes (30 minutes at most) within 1.5 s.
SPEED = "1200"


def config(cwd, server, mode="sandbox", **extra):
    return exchange_config(cwd, server, mode=mode, **extra)


@pytest.fixture
def server(tmp_path):
    with ExchangeServer(clock=follow_daemon_clock(tmp_path), balances={"USDT": 10_000}) as srv:
        yield srv


def journals(cwd):
    """Every pair's journal records. Read while a daemon may be appending: a last line without
    its newline is still being written, and left for the next read."""
    out = {}
    for path in sorted((cwd / "dump-demo" / "journal").glob("*.jsonl")):
        data = path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        out[path.name] = [orjson.loads(line) for line in complete.splitlines() if line.strip()]
    return out


def check_agreement(cwd, server, symbol="BTCUSDT", base="BTC", settled=True):
    """The journal and the exchange agree: every order the exchange holds is journaled under its
    client id; at most one entry filled per signal; and once settled (a daemon ran after the last
    kill): every filled entry is an open position or closed by a filled exit, and the base held
    equals the journal's open amounts plus dust."""
    records = [r for recs in journals(cwd).values() for r in recs if r["symbol"].replace("/", "") == symbol]
    journaled = {o.client_id: o for o in orders_of(records)}
    exchange_orders = [o for o in server.account.orders if o.symbol == symbol]
    for order in exchange_orders:
        assert order.client_id in journaled, f"order {order.client_id} on the exchange is not in the journal"
    filled_entries: dict[str, int] = {}
    for order in exchange_orders:
        mine = journaled[order.client_id]
        if mine.leg == "entry" and order.executed > 0:
            filled_entries[mine.signal_id] = filled_entries.get(mine.signal_id, 0) + 1
    assert all(n == 1 for n in filled_entries.values()), f"a signal bought twice: {filled_entries}"
    closes = Counter(r["signal_id"] for r in records if r["event"] == "closed")
    assert all(n == 1 for n in closes.values()), f"a position closed twice: {closes}"
    if not settled:
        return records
    opened = {r["signal_id"]: r for r in records if r["event"] == "opened"}
    closed = {r["signal_id"]: r for r in records if r["event"] == "closed"}
    assert set(filled_entries) <= set(opened) | {o.signal_id for o in journaled.values() if o.status != "filled"}
    held = sum(Decimal(str(r["amount"])) for sid, r in opened.items() if sid not in closed)
    # A protective stop may have filled after the daemon's last check of it (the next start closes
    # that position `stop_loss`): its coins are sold already.
    stopped = sum((o.executed for o in exchange_orders if o.client_id in journaled
                   and journaled[o.client_id].leg == "stop" and journaled[o.client_id].signal_id not in closed),
                  Decimal(0))
    held -= stopped
    dust = sum(Decimal(str(r.get("dust", 0))) for r in closed.values())
    total = server.account.total(base)
    assert abs(total - held - dust) < Decimal("1e-8"), (total, held, dust)
    return records


def test_sandbox_places_real_orders_with_deterministic_ids_and_the_journal_agrees(tmp_path, server):
    cwd = workdir(tmp_path)
    cfg = config(cwd, server)
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", "--exchange", "binance", "--config", cfg,
                 "--speed", SPEED, **KEYS)
    assert wait_for(lambda: any(r["event"] == "closed" for recs in journals(cwd).values() for r in recs)
                    if (cwd / "dump-demo" / "journal").exists() else False, 60)
    code, out, err = stop(proc)
    assert code == 0, err
    records = check_agreement(cwd, server)
    kinds = [r["event"] for r in records]
    assert "order_intent" in kinds and "order_update" in kinds
    # Write-ahead: each intent precedes its answer, and an opened follows a filled entry.
    first_intent = kinds.index("order_intent")
    assert kinds[first_intent + 1] == "order_update" and kinds[first_intent + 2] == "opened"
    opened = next(r for r in records if r["event"] == "opened")
    entry = server.account.orders_with_client_id(records[first_intent]["client_id"])[0]
    assert opened["mode"] == "sandbox"
    assert opened["price_open"] == pytest.approx(float(entry.cum_quote / entry.executed))
    assert opened["amount"] == pytest.approx(float(entry.executed) * (1 - 0.001))  # the base fee is not ours to sell
    closed = next(r for r in records if r["event"] == "closed")
    assert closed["pnl_cost"] is not None and closed["amount_sold"] > 0
    # Every placement carried a client id the journal knows (ccxt never made up one).
    posts = server.order_requests()
    assert posts and all(p.params.get("newClientOrderId", "").startswith("lt") for p in posts)
    assert "sandbox mode" in out + err
    assert API_KEY not in out + err and SECRET not in out + err
    listed = run(cwd, "orders", "--data-dir", "dump-demo", "--json")
    assert listed.returncode == 0, listed.stderr
    doc = json.loads(listed.stdout)
    assert {o["client_id"] for o in doc["orders"]} == {o.client_id for o in server.account.orders}
    assert all(o["mode"] == "sandbox" for o in doc["orders"])
    # The reports list the orders with their fills and fees, and the PnL in quote currency.
    live_report = next((cwd / "dump-demo" / "reports" / "live").glob("*.md")).read_text()
    built = run(cwd, "report", "--data-dir", "dump-demo", "--out", "out")
    assert built.returncode == 0, built.stderr
    for text in (live_report, next((cwd / "out").glob("*.md")).read_text()):
        assert "## Orders" in text and records[first_intent]["client_id"] in text
        assert "in quote currency" in text


def test_paper_mode_places_no_order(tmp_path, server):
    cwd = workdir(tmp_path)
    cfg = config(cwd, server, mode="paper")
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", "--exchange", "binance", "--config", cfg,
                 "--speed", SPEED, **KEYS)
    assert wait_for(lambda: any(r["event"] == "closed" for recs in journals(cwd).values() for r in recs)
                    if (cwd / "dump-demo" / "journal").exists() else False, 60)
    code, out, err = stop(proc)
    assert code == 0, err
    assert not [r for r in server.requests if "/order" in r.path or "myTrades" in r.path or "account" in r.path]
    assert all("mode" not in r and r["event"] not in ("order_intent", "order_update")
               for recs in journals(cwd).values() for r in recs)
    assert any(e["event"] == "closed" for e in events(out))


def placements(server):
    """client id -> how many order placements carried it."""
    counts: dict[str, int] = {}
    for request in server.order_requests():
        cid = request.params.get("newClientOrderId")
        counts[cid] = counts.get(cid, 0) + 1
    return counts


def closed_count(cwd):
    if not (cwd / "dump-demo" / "journal").exists():
        return 0
    return sum(1 for recs in journals(cwd).values() for r in recs if r["event"] == "closed")


def run_until_closed(cwd, server, n=2, setup=None, **extra):
    cfg = config(cwd, server, unknown_order_minutes=3, **extra)
    if setup:
        setup(server)
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", "--exchange", "binance", "--config", cfg,
                 "--speed", SPEED, **KEYS)
    reached = wait_for(lambda: closed_count(cwd) >= n, 60)
    code, out, err = stop(proc)
    assert code == 0, err
    assert reached, out[-3000:] + err[-3000:]
    return out, err


# (fault, the first entry's fate): "opened" when the order was placed (the lost answer is found by
# asking for the order by its client id), "rejected" when it was not.
ENTRY_FAULTS = {
    "accept_then_drop": (lambda s: s.faults.accept_then_drop(), "opened"),
    "5xx_after_placing": (lambda s: s.faults.order_status(503, placed=True), "opened"),
    "5xx_before_placing": (lambda s: s.faults.order_status(503, placed=False), "never placed"),
    "hang_after_placing": (lambda s: s.faults.order_hang(3.0, placed=True), "opened"),
    "status_unknown_placed": (lambda s: s.faults.unknown_status(placed=True), "opened"),
    "status_unknown_not_placed": (lambda s: s.faults.unknown_status(placed=False, code=-1007), "never placed"),
    "rate_limited_429": (lambda s: s.faults.order_status(429, placed=False), "never placed"),
    "insufficient_balance": (lambda s: s.faults.insufficient(), "rejected"),
    "filter_failure": (lambda s: s.faults.filter_failure("LOT_SIZE"), "rejected"),
    "not_found_for_a_while": (lambda s: (s.faults.order_not_found(queries=3), s.faults.accept_then_drop()),
                              "opened"),
    "partial_fill": (lambda s: s.faults.partial_fill(0.5), "opened"),
}


@pytest.mark.parametrize("fault", sorted(ENTRY_FAULTS))
def test_every_entry_fault_ends_with_the_journal_and_the_exchange_agreeing(tmp_path, server, fault):
    setup, fate = ENTRY_FAULTS[fault]
    cwd = workdir(tmp_path)
    out, err = run_until_closed(cwd, server, setup=setup)
    records = check_agreement(cwd, server)
    counts = placements(server)
    assert counts and all(n == 1 for n in counts.values()), f"an order was resent: {counts}"
    first = next(r for r in records if r["event"] == "order_intent")
    story = [r for r in records if r.get("signal_id") == first["signal_id"]]
    events_of_first = [r["event"] for r in story]
    if fate == "opened":
        assert "opened" in events_of_first, events_of_first
        opened = next(r for r in story if r["event"] == "opened")
        placed = server.account.orders_with_client_id(first["client_id"])
        assert len(placed) == 1 and opened["amount"] == pytest.approx(float(placed[0].executed) * 0.999)
        if fault == "partial_fill":
            assert placed[0].executed < placed[0].qty and placed[0].status == "EXPIRED"
    else:
        cancelled = next(r for r in story if r["event"] == "cancelled")
        assert cancelled["reason"].startswith("rejected:"), cancelled
        assert "opened" not in events_of_first
        assert not server.account.orders_with_client_id(first["client_id"])  # never placed
        if fate == "never placed":
            updates = [r for r in story if r["event"] == "order_update"]
            assert updates[0]["status"] == "unknown" and updates[-1]["status"] == "not_placed"
        errors = [e for e in events(out) if e["event"] == "tick failed" and e.get("kind") == "order"]
        assert errors, "a refused entry is said loudly"


EXPIRING_LONG = '''
from livetrader import Signal, Strategy


class ExpiringLong(Strategy):
    name = "expiring-long"

    async def get_signal(self, ctx):  # far levels: its exit is the engine's (expiry), never its stop's
        return Signal("long", take_profit=ctx.price * 1.1, stop_loss=ctx.price * 0.9, minutes=3)
'''


def test_a_refused_exit_is_sent_again_as_a_new_attempt_and_closes_once(tmp_path, server):
    cwd = workdir(tmp_path)
    (cwd / "strategies" / "expiring_long.py").write_text(EXPIRING_LONG)
    cfg = config(cwd, server, unknown_order_minutes=3)
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "expiring-long", "--exchange", "binance", "--config", cfg,
                 "--speed", SPEED, **KEYS)
    assert wait_for(lambda: (cwd / "dump-demo" / "journal").exists()
                    and any(r["event"] == "opened" for recs in journals(cwd).values() for r in recs), 60)
    server.faults.insufficient(order_type="MARKET")  # the next market order is the first exit (not its stop)
    reached = wait_for(lambda: closed_count(cwd) >= 1, 60)
    code, out, err = stop(proc)
    assert code == 0 and reached, err
    records = check_agreement(cwd, server)
    closed = next(r for r in records if r["event"] == "closed")
    exits = [r for r in records if r["event"] == "order_intent" and r["leg"] == "exit"
             and r["signal_id"] == closed["signal_id"]]
    assert [r["attempt"] for r in exits] == [1, 2]
    assert len({r["client_id"] for r in exits}) == 2
    assert sum(1 for r in records if r["event"] == "closed" and r["signal_id"] == closed["signal_id"]) == 1


def _start(cwd, cfg, **env):
    return start(cwd, "run", "BTCUSDT", "--strategy", "always-long", "--exchange", "binance", "--config", cfg,
                 "--speed", SPEED, **KEYS, **env)


@pytest.mark.parametrize("point", ["entry_intent_durable", "entry_answered", "entry_answer_durable",
                                   "exit_intent_durable", "exit_answered", "exit_answer_durable"])
def test_a_kill_at_each_step_of_an_order_is_resolved_on_restart_without_a_resend(tmp_path, server, point):
    """SIGKILL exactly between two steps of the order path; the restart asks the exchange for the
    order by its client id (before any strategy is asked), and never sends it again."""
    cwd = workdir(tmp_path)
    cfg = config(cwd, server, unknown_order_minutes=3)
    proc = _start(cwd, cfg, LIVETRADER_CRASH_AT=point)
    assert proc.wait(60) == -9
    before = journals(cwd)
    last = [r for recs in before.values() for r in recs][-1]
    assert last["event"] in ("order_intent", "order_update")  # the kill came inside the order path
    looked = run(cwd, "recover", "--dry-run", "--data-dir", "dump-demo")
    assert f"open order: {last['leg']} {last['client_id']}" in looked.stdout, looked.stdout + looked.stderr
    # Positions closed by their protective stops need no exit order: the killed run may have closed
    # some already. Wait for the killed order to be resolved, and for one more close after it.
    before = closed_count(cwd)

    def resolved():
        mine = [r for recs in journals(cwd).values() for r in recs if r.get("client_id") == last["client_id"]]
        return bool(mine) and mine[-1].get("status") in ("filled", "not_placed")

    proc = _start(cwd, cfg)
    reached = wait_running(cwd / "dump-demo", proc) and wait_for(
        lambda: resolved() and closed_count(cwd) >= before + 1, 60)
    code, out, err = stop(proc)
    assert code == 0 and reached, err[-2000:]
    records = check_agreement(cwd, server)
    counts = placements(server)
    assert all(n == 1 for n in counts.values()), f"an order was sent twice: {counts}"
    killed = [r for r in records if r.get("client_id") == last["client_id"]]
    assert killed[-1]["event"] == "order_update" and killed[-1]["status"] in ("filled", "not_placed"), [
        (r["event"], r.get("leg"), r.get("status"), r.get("client_id"), r.get("close_reason"), r["at"])
        for r in records]
    story = [r["event"] for r in records if r.get("signal_id") == last["signal_id"]]
    if point == "entry_intent_durable":  # killed before the request left: never placed, said so
        assert killed[-1]["status"] == "not_placed" and story[-1] == "cancelled", story
        assert not server.account.orders_with_client_id(last["client_id"])
    elif point.startswith("entry"):
        assert story.count("opened") == 1 and "cancelled" not in story, story  # placed before the kill
    else:
        assert story.count("closed") == 1, story


def test_random_kills_never_buy_twice_nor_lose_an_order(tmp_path, server):
    """SIGKILL at random instants, with random order faults meanwhile (lost answers, hangs, 5xx,
    refusals): after each restart the journal and the exchange agree, and no client id was
    ever sent twice. ``LIVETRADER_ORDER_TORTURE_KILLS`` sets how many (the suite: 12)."""
    import os
    import random
    import signal as signals

    kills_wanted = int(os.environ.get("LIVETRADER_ORDER_TORTURE_KILLS", "12"))
    rng = random.Random(os.environ.get("LIVETRADER_TORTURE_SEED", "7"))
    faults = [lambda: server.faults.accept_then_drop(), lambda: server.faults.order_hang(1.0, placed=True),
              lambda: server.faults.order_status(503, placed=rng.random() < 0.5),
              lambda: server.faults.unknown_status(placed=rng.random() < 0.5), lambda: server.faults.insufficient(),
              lambda: server.faults.order_not_found(queries=2)]
    cwd = workdir(tmp_path)
    cfg = config(cwd, server, unknown_order_minutes=3)
    args = ("run", "BTCUSDT", "ETHUSDT", "--strategy", "always-long", "--exchange", "binance", "--config", cfg,
            "--speed", SPEED)
    for _ in range(kills_wanted):
        server.faults.clear()
        rng.choice(faults)()
        proc = start(cwd, *args, **KEYS)
        time.sleep(rng.uniform(1.0, 2.5))
        proc.send_signal(signals.SIGKILL)
        proc.wait(30)
        if (cwd / "dump-demo" / "journal").exists():
            for symbol, base in (("BTCUSDT", "BTC"), ("ETHUSDT", "ETH")):
                check_agreement(cwd, server, symbol, base, settled=False)
        counts = placements(server)
        assert all(n == 1 for n in counts.values()), f"an order was sent twice: {counts}"
    server.faults.clear()
    before = closed_count(cwd)
    proc = start(cwd, *args, **KEYS)
    assert wait_running(cwd / "dump-demo", proc) and wait_for(lambda: closed_count(cwd) >= max(3, before + 1), 60)
    # A stop whose answer a kill or a fault lost is "not found" for unknown_order_minutes before it
    # is placed again: the position waits unprotected meanwhile (said if stopped then). Stopped once
    # every open position is protected again, as the daemon left to itself does.
    assert wait_for(lambda: all(unprotected(check_agreement(cwd, server, symbol, base, settled=False), server) is None
                                for symbol, base in (("BTCUSDT", "BTC"), ("ETHUSDT", "ETH"))), 60)
    code, _out, err = stop(proc)
    assert code == 0, err
    for symbol, base in (("BTCUSDT", "BTC"), ("ETHUSDT", "ETH")):
        records = check_agreement(cwd, server, symbol, base)
        assert_protected(records, server)
    counts = placements(server)
    assert counts and all(n == 1 for n in counts.values()), counts


def unprotected(records, server):
    """What breaks "every position the journal holds open has its protective stop on the exchange,
    for what the position holds, and no other stop rests" (None when nothing does). A stop that
    filled after the daemon's last check of it is the position's exit, which the next start closes
    ``stop_loss``: it protected the position."""
    opened = {r["signal_id"]: r for r in records if r["event"] == "opened"}
    closed = {r["signal_id"] for r in records if r["event"] == "closed"}
    stops = {o.client_id: o for o in orders_of(records) if o.leg == "stop"}
    resting = [o for o in server.account.orders if o.is_open and o.client_id in stops]
    for sid, rec in opened.items():
        if sid in closed:
            continue
        mine = [o for o in resting if stops[o.client_id].signal_id == sid]
        on_exchange = [o for o in server.account.orders if o.client_id in stops and stops[o.client_id].signal_id == sid]
        if not mine and any(o.status == "FILLED" for o in on_exchange):
            continue
        if len(mine) != 1:
            story = [{k: r.get(k) for k in ("event", "at", "client_id", "leg", "status", "filled", "reason")}
                     for r in records if r.get("signal_id") == sid]
            return (f"open position {sid} has {len(mine)} protective stops on the exchange: "
                    f"{[(o.client_id, o.type, o.status, str(o.executed)) for o in on_exchange]}; its journal: {story}")
        if float(mine[0].qty) != pytest.approx(rec["amount"], abs=1e-5):
            return f"the stop of {sid} is for {mine[0].qty}, the position holds {rec['amount']}"
    if any(stops[o.client_id].signal_id in closed for o in resting):
        return "a stop outlived its position"
    return None


def assert_protected(records, server):
    """``unprotected`` finds nothing: the daemon that last ran saw to every open position's stop."""
    problem = unprotected(records, server)
    assert problem is None, problem


SHORT_STRATEGY = '''
from livetrader import Signal, Strategy


class AlwaysShort(Strategy):
    name = "always-short"

    async def get_signal(self, ctx):
        return Signal("short", take_profit=ctx.price * 0.994, stop_loss=ctx.price * 1.006, minutes=30)
'''


def test_a_short_on_a_spot_market_is_refused_as_an_invalid_signal_and_places_nothing(tmp_path, server):
    cwd = workdir(tmp_path)
    (cwd / "strategies" / "always_short.py").write_text(SHORT_STRATEGY)
    cfg = config(cwd, server)
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "always-short", "--exchange", "binance", "--config", cfg,
                 "--speed", SPEED, **KEYS)
    assert wait_for(lambda: "".join(proc._chunks["out"]).count("margin or derivatives") >= 2, 30)
    code, out, err = stop(proc)
    assert code == 0, err
    refused = [e for e in events(out) if e["event"] == "tick failed" and e.get("kind") == "signal"]
    assert refused and "margin or derivatives market" in refused[0]["error"]
    assert not server.order_requests()
    assert not [r for recs in journals(cwd).values() for r in recs]


def test_sandbox_is_refused_where_ccxt_knows_no_test_network_and_orders_need_keys(tmp_path):
    cwd = workdir(tmp_path)
    (cwd / "kraken.toml").write_text('[exchanges.kraken]\nccxt_id = "kraken"\nmode = "sandbox"\n')
    refused = run(cwd, "run", "BTCUSD", "--strategy", "always-long", "--exchange", "kraken", "--config",
                  "kraken.toml", LIVETRADER_KRAKEN_API_KEY="k-1234", LIVETRADER_KRAKEN_SECRET="s-5678")
    assert refused.returncode == 2 and "has no sandbox" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    (cwd / "live.toml").write_text('[exchanges.binance]\nccxt_id = "binance"\nmode = "live"\n')
    keyless = run(cwd, "run", "BTCUSDT", "--strategy", "always-long", "--exchange", "binance", "--config",
                  "live.toml")
    assert keyless.returncode == 2 and "needs API credentials" in keyless.stderr, keyless.stderr
    (cwd / "sim.toml").write_text('[exchanges.sim]\nmode = "live"\n')
    simulated = run(cwd, "run", "BTCUSDT", "--strategy", "always-long", "--config", "sim.toml", "--speed", SPEED)
    assert simulated.returncode == 2 and 'mode must be "paper"' in simulated.stderr, simulated.stderr
    assert not (cwd / "dump-demo" / "journal").exists()  # nothing written


def test_an_entry_above_the_free_balance_is_refused_before_any_order(tmp_path):
    with ExchangeServer(clock=follow_daemon_clock(tmp_path), balances={"USDT": 50}) as poor:
        cwd = workdir(tmp_path)
        cfg = config(cwd, poor)
        proc = start(cwd, "run", "BTCUSDT", "--strategy", "always-long", "--exchange", "binance", "--config", cfg,
                     "--speed", SPEED, **KEYS)
        assert wait_for(lambda: "".join(proc._chunks["out"]).count("above the free balance") >= 2, 30)
        code, out, err = stop(proc)
        assert code == 0, err
        assert not poor.order_requests()
        refusal = next(e for e in events(out) if e["event"] == "tick failed" and e.get("kind") == "order")
        assert "cost 100 USDT is above the free balance 50 USDT" in refusal["error"]


HOLD_LONG = '''
from livetrader import Signal, Strategy


class HoldLong(Strategy):
    name = "hold-long"

    async def get_signal(self, ctx):
        return Signal("long", take_profit=ctx.price * 1.5, stop_loss=ctx.price * 0.85, minutes=1440)
'''


def test_status_shows_the_mode_and_a_pair_never_continues_a_position_in_another_mode(tmp_path, server):
    cwd = workdir(tmp_path)
    (cwd / "strategies" / "hold_long.py").write_text(HOLD_LONG)  # still open when the daemon stops
    cfg = config(cwd, server)
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "hold-long", "--exchange", "binance", "--config", cfg,
                 "--speed", SPEED, **KEYS)
    assert wait_for(lambda: (cwd / "dump-demo" / "journal").exists()
                    and any(r["event"] == "opened" for recs in journals(cwd).values() for r in recs), 60)
    status = run(cwd, "status", "--data-dir", "dump-demo", "--json")
    pair = json.loads(status.stdout)["pairs"][0]
    assert pair["mode"] == "sandbox"
    assert pair["protection"]["type"] == "stop_market"
    code, _out, err = stop(proc)
    assert code == 0, err
    records = [r for recs in journals(cwd).values() for r in recs]
    holding = records[-1]["event"] in ("opened", "order_intent", "order_update") or not any(
        r["event"] == "closed" and r["signal_id"] == records[-1]["signal_id"] for r in records)
    assert holding
    paper = config(cwd, server, mode="paper")
    refused = run(cwd, "run", "BTCUSDT", "--strategy", "hold-long", "--exchange", "binance", "--config", paper,
                  "--speed", SPEED, **KEYS)
    assert refused.returncode != 0
    assert "made in sandbox mode, and this run is in paper mode" in refused.stdout + refused.stderr
    assert [r for recs in journals(cwd).values() for r in recs] == records  # nothing written


def test_a_stop_while_a_scheduled_signals_entry_is_unresolved_keeps_the_signal_for_the_next_start(tmp_path, server):
    """A stop cancels a waiting scheduled signal, but not one whose entry order is out: that
    order may have filled. The next start asks the exchange and opens the position."""
    cwd = workdir(tmp_path)
    cfg = config(cwd, server, unknown_order_minutes=1000)
    server.faults.accept_then_drop()  # the entry is placed, its answer lost ...
    server.faults.order_not_found(queries=10_000)  # ... and the exchange cannot find it for now
    args = ("run", "BTCUSDT", "--strategy", "near-dip", "--exchange", "binance", "--config", cfg, "--speed", SPEED)
    proc = start(cwd, *args, **KEYS)
    assert wait_for(lambda: (cwd / "dump-demo" / "journal").exists()
                    and any(r["event"] == "order_intent" for recs in journals(cwd).values() for r in recs), 60)
    time.sleep(0.5)  # a few ticks asking for it
    code, _out, err = stop(proc)
    assert code == 0, err
    records = [r for recs in journals(cwd).values() for r in recs]
    intent = next(r for r in records if r["event"] == "order_intent")
    story = [r["event"] for r in records if r["signal_id"] == intent["signal_id"]]
    assert story[0] == "scheduled" and "cancelled" not in story and "opened" not in story, story
    assert server.account.orders_with_client_id(intent["client_id"])  # it exists on the exchange
    server.faults.clear()
    for order in server.account.orders:
        order.hidden_queries, order.hidden_until_ms = 0, None  # the exchange finds it again
    proc = start(cwd, *args, **KEYS)
    assert wait_running(cwd / "dump-demo", proc)
    assert wait_for(lambda: any(r["event"] == "opened" and r["signal_id"] == intent["signal_id"]
                                for recs in journals(cwd).values() for r in recs), 30)
    code, _out, err = stop(proc)
    assert code == 0, err
    check_agreement(cwd, server)
    assert all(n == 1 for n in placements(server).values())


RISKY_STRATEGY = '''
from livetrader import Signal, Strategy


class RiskyLong(Strategy):
    name = "risky-long"
    risk = "conservative"  # at most 3 open positions at once (config/livetrader.toml)

    async def get_signal(self, ctx):
        return Signal("long", take_profit=ctx.price * 1.006, stop_loss=ctx.price * 0.994, minutes=30)
'''


def test_an_entry_counts_against_the_risk_limit_while_its_order_is_out(tmp_path, server):
    """Five pairs asked in the same minute, at most three positions: entries whose orders are
    still out count, so no fourth pair opens while the first three wait for their fills."""
    cwd = workdir(tmp_path)
    (cwd / "strategies" / "risky_long.py").write_text(RISKY_STRATEGY)
    cfg = config(cwd, server)
    symbols = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT"]
    server.faults.order_hang(0.5, placed=True, times=5)  # the first answers take a while
    proc = start(cwd, "run", *symbols, "--strategy", "risky-long", "--exchange", "binance", "--config", cfg,
                 "--speed", SPEED, **KEYS)
    assert wait_running(cwd / "dump-demo", proc) and wait_for(lambda: closed_count(cwd) >= 4, 60)
    code, _out, err = stop(proc)
    assert code == 0, err
    records = sorted((r for recs in journals(cwd).values() for r in recs if r["event"] in ("opened", "closed")),
                     key=lambda r: (r["at"], r["event"] == "opened"))  # a close and an open in one minute: close first
    open_now, most = 0, 0
    for r in records:
        open_now += 1 if r["event"] == "opened" else -1
        most = max(most, open_now)
    assert most <= 3, f"{most} positions open at once with max_positions 3"
    for symbol in symbols:
        check_agreement(cwd, server, symbol, symbol.removesuffix("USDT"))


def test_the_readme_orders_section_works_as_written(tmp_path, server):
    """The README's sandbox section, run as written: its config table (pointed at the local
    exchange, the only thing added), its commands (with test keys and a strategy of the suite)."""
    import re

    from daemon import ROOT

    section = (ROOT / "README.md").read_text().split("## Orders: sandbox and live modes", 1)[1]
    table = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    commands = re.search(r"```bash\n(.*?)```", section, re.S).group(1).splitlines()
    assert 'mode = "sandbox"' in table and commands[0].startswith("export LIVETRADER_BINANCE_API_KEY=")
    cwd = workdir(tmp_path)
    local = exchange_config(cwd, server)  # the local exchange's urls and options ...
    extra = (cwd / local).read_text().split("\n", 2)[2]  # ... below the README's own lines
    (cwd / "readme.toml").write_text(table + extra)
    run_line = commands[1].split("#")[0].split()
    assert run_line[:3] == ["livetrader", "run", "BTCUSDT"] and "--exchange" in run_line
    args = [a if a != "my-first-strategy" else "always-long" for a in run_line[1:]]
    proc = start(cwd, *args, "--config", "readme.toml", "--speed", SPEED, **KEYS)
    assert wait_running(cwd / "dump-demo", proc) and wait_for(lambda: closed_count(cwd) >= 1, 60)
    code, out, err = stop(proc)
    assert code == 0, err
    listed = run(cwd, *commands[2].split("#")[0].split()[1:], "--data-dir", "dump-demo")
    assert listed.returncode == 0 and "entry #1" in listed.stdout and "filled" in listed.stdout, listed.stdout
    check_agreement(cwd, server)


def test_an_entry_still_out_at_a_restart_keeps_its_place_in_the_risk_profile(tmp_path, server):
    cwd = workdir(tmp_path)
    (cwd / "strategies" / "risky_long.py").write_text(RISKY_STRATEGY)
    cfg = config(cwd, server, unknown_order_minutes=1000)
    args = ("run", "BTCUSDT", "--strategy", "risky-long", "--exchange", "binance", "--config", cfg, "--speed", SPEED)
    proc = start(cwd, *args, LIVETRADER_CRASH_AT="entry_intent_durable", **KEYS)
    assert proc.wait(60) == -9  # killed with the intent durable, the order never sent
    intent = [r for recs in journals(cwd).values() for r in recs][-1]
    assert intent["event"] == "order_intent"
    proc = start(cwd, *args, **KEYS)
    risk_file = cwd / "dump-demo" / "state" / "risk" / "conservative.json"
    assert wait_running(cwd / "dump-demo", proc)
    assert wait_for(lambda: risk_file.exists()
                    and intent["signal_id"] in risk_file.read_text(), 20), "the entry in flight counts"
    code, _out, err = stop(proc)
    assert code == 0, err
    status = [r for recs in journals(cwd).values() for r in recs if r.get("client_id") == intent["client_id"]]
    assert status[-1]["event"] == "order_update" and status[-1]["status"] == "unknown"  # still asked for


def test_an_order_never_found_is_not_taken_as_never_placed_while_an_unknown_trade_could_be_it(tmp_path, server):
    """The exchange never finds the order by its client id, but the account's trade history has
    a buy by an order the journal does not know: the pair keeps waiting and says so, rather than
    cancel an entry that may have bought (and then buy again)."""
    cwd = workdir(tmp_path)
    cfg = config(cwd, server, unknown_order_minutes=1)
    server.faults.accept_then_drop()  # placed and filled, its answer lost ...
    server.faults.order_not_found(queries=100_000)  # ... and never found by its client id
    proc = _start(cwd, cfg)
    assert wait_for(lambda: "".join(proc._chunks["out"]).count("it may be this order") >= 2, 30)
    code, out, err = stop(proc)
    assert code == 0, err
    records = [r for recs in journals(cwd).values() for r in recs]
    intent = next(r for r in records if r["event"] == "order_intent")
    story = [r for r in records if r.get("signal_id") == intent["signal_id"]]
    assert all(r.get("status") != "not_placed" for r in story) and story[-1]["event"] == "order_update"
    assert not any(r["event"] in ("cancelled", "opened") for r in story), [r["event"] for r in story]
    assert sum(1 for r in records if r["event"] == "order_intent") == 1  # no second entry meanwhile
    assert len(server.account.orders) == 1 and server.account.orders[0].executed > 0
