"""Reconciliation: does the account still hold what the journal says its positions hold?
(docs/behaviour.md §12, "Restart and reconciliation").

Run at start (after every unresolved order was asked for, before READY=1) and every
``reconcile_minutes``, per exchange account: one balance fetch, then for each base asset the
positions of every pair holding it, oldest first, must be covered by what the account holds
(``core.orders.uncovered``). A position the account no longer holds puts its pair in
``degraded``: it manages nothing and asks nothing, loudly, until a reconciliation finds the
amount held again (coins bought back or moved back). Coins held beyond livetrader's positions
are the owner's and are left alone.

A position whose protective stop filled holds nothing any more, rightly: its stop is asked for
first, and the pair's next tick closes it ``stop_loss`` instead of degrading it. A base asset
with an order of any of its pairs in flight, or a pair that moved (filled, opened, closed) while
the balance was fetched, is not judged this round: its amounts are moving.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from livetrader.core.orders import uncovered
from livetrader.errors import StoreError
from livetrader.live.pair import Pair
from livetrader.logs import get_logger
from livetrader.store.atomic import write_json_atomic
from livetrader.store.layout import RECONCILIATION_FILE

log = get_logger(__name__)


async def reconcile(pairs: Iterable[Pair], now: int, data_dir: Path | None = None) -> int:
    """Reconcile the positions of ``pairs`` (sandbox/live pairs of one or more accounts) with
    their accounts; mark and report the pairs whose positions are not held. Returns how many
    pairs are degraded by it after this round. With ``data_dir``, the degraded pairs are also
    written to its ``state/reconciliation.json`` (``livetrader recover`` shows them)."""
    chosen = [p for p in pairs if p.executor is not None]
    by_broker: dict[int, list[Pair]] = defaultdict(list)
    for pair in chosen:
        assert pair.executor is not None
        by_broker[id(pair.executor.broker)].append(pair)
    degraded = 0
    for group in by_broker.values():
        degraded += await _reconcile_account(group, now)
    if data_dir is not None:
        doc = {"at": now, "degraded": [
            {"symbol": p.symbol, "strategy": p.strategy_name, "exchange": p.exchange,
             "signal_id": p.row.id if p.row is not None else None, "why": p.unreconciled}
            for p in chosen if p.unreconciled]}
        try:
            write_json_atomic(Path(data_dir) / RECONCILIATION_FILE, doc)
        except (OSError, StoreError) as exc:
            log.warning("cannot write the reconciliation file", error=str(exc))
    return degraded


def _moment(pair: Pair) -> tuple[object, ...]:
    """What a pair holds and does, to tell whether it moved while the round awaited the exchange."""
    executor = pair.executor
    assert executor is not None
    return (executor.busy, pair.row.id if pair.row is not None else None, executor.position is not None,
            executor.held)


async def _reconcile_account(pairs: list[Pair], now: int) -> int:
    broker = pairs[0].executor.broker  # type: ignore[union-attr]
    holding = [p for p in pairs if p.executor is not None and (p.executor.position is not None or p.executor.busy)]
    if not holding:
        return 0
    # The balance is fetched while the pairs tick on: a pair whose entry or exit filled meanwhile
    # is judged against a balance from before its fill. Its base waits for the next round.
    before = {id(p): _moment(p) for p in pairs}
    totals = await broker.totals()
    if totals is None:
        log.warning("reconciliation skipped: the account's balance could not be read", exchange=pairs[0].exchange)
        return sum(1 for p in pairs if p.unreconciled)
    by_base: dict[str, list[Pair]] = defaultdict(list)
    steps: dict[str, float] = {}
    for pair in holding:
        rules = await broker.rules(pair.symbol)
        by_base[rules.base].append(pair)
        steps[rules.base] = max(steps.get(rules.base, 0.0), rules.amount_step or 0.0)
    moving: set[str] = set()
    for pair in pairs:
        if _moment(pair) != before[id(pair)]:
            moving.add((await broker.rules(pair.symbol)).base)
    for base, group in by_base.items():
        if base in moving or any(p.executor is not None and p.executor.busy for p in group):
            continue  # an order in flight, or filled during the fetch: the amounts are moving, judged next round
        group.sort(key=lambda p: (p.row.pending_at or 0) if p.row is not None else 0)
        owned = [(p.row.id, p.executor.held) for p in group
                 if p.row is not None and p.executor is not None]
        held = totals.get(base, 0.0)
        short = set(uncovered(held, owned, tolerance=steps[base]))
        needed = sum(amount for _sid, amount in owned)
        for pair in group:
            if pair.row is None or pair.executor is None or _moment(pair) != before[id(pair)]:
                continue  # it moved while an earlier pair's stop was asked for: next round
            if pair.row.id in short and not await _stop_explains(pair):
                if pair.row is None or _moment(pair) != before[id(pair)]:
                    continue  # it moved while its stop was asked for
                if not pair.unreconciled:
                    pair.unreconciled = (
                        f"the account holds {held:g} {base}, less than the {needed:g} {base} of livetrader's open "
                        f"positions on it; position {pair.row.id} ({pair.executor.held:g} {base}) is not held: the "
                        f"pair manages nothing and asks nothing until the account holds it again (checked every "
                        f"reconcile_minutes)")
                    pair.report_error(now, pair.unreconciled, "reconcile")
                    log.error("position not held by the account", symbol=pair.symbol, strategy=pair.strategy_name,
                              exchange=pair.exchange, signal_id=pair.row.id, held=held, needed=needed, asset=base)
            elif pair.unreconciled:
                log.warning("position held by the account again", symbol=pair.symbol, strategy=pair.strategy_name,
                            signal_id=pair.row.id, held=held, asset=base)
                pair.unreconciled = None
    return sum(1 for p in pairs if p.unreconciled)


async def _stop_explains(pair: Pair) -> bool:
    """True when the pair's protective stop filled (its coins went where they should): its next
    tick asks for the stop and closes the position ``stop_loss``."""
    executor = pair.executor
    assert executor is not None
    stop = executor.stop
    if stop is None:
        return False
    answer = await executor.broker.query(pair.symbol, stop.client_id)
    if answer.filled > 0 or answer.status == "unknown":
        executor.next_guard_at = 0  # asked for at the next tick
        return True
    return False
