"""``livetrader walk``: strategies x symbols x parameter grids, in parallel, ranked, written as a report."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from livetrader import redaction
from livetrader.backtest.walk import (
    RANKS,
    Walker,
    WalkPayload,
    WalkRun,
    candle_columns,
    check_params,
    default_workers,
    holdout_split,
    parse_param_option,
    rank_value,
    ranked,
    strategy_grid,
    strategy_sources,
)
from livetrader.cli.backtest import BacktestRequest, candles_frozen, load_range, rules_for
from livetrader.config import Config
from livetrader.core.format import format_minute
from livetrader.core.stats import STAT_KINDS, format_stat
from livetrader.errors import UsageError
from livetrader.live.engine import settings_of
from livetrader.strategy.base import load_strategies, params_of


@dataclass(slots=True, frozen=True)
class WalkRequest:
    """What the user asked for on the command line."""

    symbols: tuple[str, ...]
    strategies: tuple[str, ...]
    params: tuple[str, ...]
    start: int | None
    end: int | None
    exchange: str
    candles: Path | None
    holdout: str | None
    rank: str
    top: int
    workers: int | None
    cluster: str | None
    out: Path | None
    as_json: bool
    strict: bool


def run(request: WalkRequest, config: Config, strategies_dir: Path) -> dict[str, Any]:
    """Run the walk, write its report (markdown + JSON), print the ranking; return the JSON document."""
    with candles_frozen():  # load_range freezes the candles it loads
        return _run(request, config, strategies_dir)


def _run(request: WalkRequest, config: Config, strategies_dir: Path) -> dict[str, Any]:
    options = _checked_options(request)
    registry = load_strategies(strategies_dir)
    classes = {name: registry.get(name) for name in dict.fromkeys(request.strategies)}
    for cls in classes.values():
        if cls.risk:
            config.risk_profile(cls.risk)  # a clear error before anything runs
    declared = {name: params_of(cls) for name, cls in classes.items()}
    check_params(options, declared)
    grids = {name: strategy_grid(name, declared[name], options) for name in classes}

    # Each symbol's candles are loaded once, here; its range is what `backtest` would use for it.
    columns, ranges = {}, {}
    for symbol in dict.fromkeys(request.symbols):
        one = BacktestRequest(symbol=symbol, strategy="", start=request.start, end=request.end,
                              exchange=request.exchange, candles=request.candles, strict=request.strict,
                              as_json=False, report=None)
        resolved, first, last, candles, _ = load_range(one, config)
        columns[resolved] = candle_columns(candles)
        ranges[resolved] = (first, last, holdout_split(first, last, request.holdout))
    symbols = list(ranges)
    start, end = min(r[0] for r in ranges.values()), max(r[1] for r in ranges.values())
    split = holdout_split(start, end, request.holdout)
    runs: list[WalkRun] = []
    for strategy in classes:
        for symbol in symbols:
            first, last, cut = ranges[symbol]
            for params in grids[strategy]:
                runs.append(WalkRun(len(runs), strategy, symbol, params, first, last if cut is None else cut))
    payload = WalkPayload(columns, str(strategies_dir), None, settings_of(config).rules, config.risk_tables(),
                          {name: rules_for(cls, config) for name, cls in classes.items()}, request.exchange,
                          request.strict)
    if request.cluster is not None:
        payload.strategy_files = strategy_sources(strategies_dir)  # the cluster's machines may not have the folder
    workers = request.workers or default_workers()

    began = time.perf_counter()
    with _Progress(len(runs), enabled=not request.as_json and sys.stderr.isatty()) as progress, \
            Walker(payload, workers=min(workers, len(runs)), cluster=request.cluster) as walker:
        rows = walker.run(runs, progress)
        best = ranked(rows, request.rank)[: request.top]
        holdout_rows: list[dict[str, Any]] = []
        if split is not None:
            again = [replace(runs[row["run"]], index=len(runs) + i, start=runs[row["run"]].end,
                             end=ranges[row["symbol"]][1], phase="holdout")
                     for i, row in enumerate(best) if not row.get("error")]
            progress.add(len(again))
            holdout_rows = walker.run(again, progress)
    elapsed = time.perf_counter() - began

    by_main = {len(runs) + i: row["run"] for i, row in enumerate(best)}
    for row in holdout_rows:
        row["main_run"] = by_main[row["run"]]
    document = {
        "walk": {"strategies": list(classes), "symbols": symbols, "params": options, "from": start, "to": end,
                 "holdout_from": split, "rank": request.rank, "top": request.top, "runs": len(runs),
                 "failed": sum(1 for r in rows if r.get("error")), "workers": workers if request.cluster is None
                 else None, "cluster": request.cluster, "seconds": round(elapsed, 3)},
        "best": [row["run"] for row in best],
        "runs": rows,
        "holdout": holdout_rows,
    }
    document = redaction.redact_value(document)
    out = request.out or Path(f"walk_{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}")
    if out.suffix in (".md", ".json"):
        out = out.with_suffix("")  # --out walk.md names the pair, not walk.md.md
    md_path, json_path = out.with_name(out.name + ".md"), out.with_name(out.name + ".json")
    from livetrader.store.atomic import write_atomic

    md_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(json_path, orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    write_atomic(md_path, markdown(document).encode())
    if request.as_json:
        sys.stdout.buffer.write(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        _print(document, md_path, json_path)
    return document


def _checked_options(request: WalkRequest) -> dict[str, str]:
    """The ``--param`` grids by name, once the options that need no strategy are checked."""
    if request.rank not in RANKS:
        raise UsageError(f"--rank {request.rank!r}: use one of {', '.join(RANKS)}")
    if request.top < 1:
        raise UsageError("--top must be at least 1")
    if request.workers is not None and request.workers < 1:
        raise UsageError("--workers must be at least 1 (1 runs everything in this process)")
    options: dict[str, str] = {}
    for text in request.params:
        name, spec = parse_param_option(text)
        if name in options:
            raise UsageError(f"--param {name} is given twice: give its values once, e.g. {name}=5,10,20")
        options[name] = spec
    return options


# -- the report ----------------------------------------------------------------------------------

#: The columns of a run's row: (title, how to read it from the row).
_COLUMNS = ("Run", "Strategy", "Symbol", "Parameters", "Trades", "Win rate", "PnL %", "PnL (quote)", "Sharpe",
            "Max drawdown", "Buy & hold")


def _params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items()) or "defaults"


def _cells(row: dict[str, Any]) -> list[str]:
    head = [str(row["run"]), row["strategy"], row["symbol"], _params_text(row["params"])]
    if row.get("error"):
        return [*head, f"failed: {row['error']}", *([""] * (len(_COLUMNS) - 5))]
    stats, summary = row["stats"], row["summary"]
    pnl_cost = row.get("pnl_cost")
    return [*head, str(stats["total_closed"]), format_stat(stats["win_rate"], "percent"),
            format_stat(stats["total_pnl"], "pnl"), "N/A" if pnl_cost is None else f"{pnl_cost:+,.2f}",
            format_stat(stats["sharpe"], "ratio"), format_stat(stats["max_drawdown"], "points"),
            format_stat(summary["buy_and_hold"], "pnl")]


def _table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in _cells(row)) + " |")
    return lines


def _rank_text(row: dict[str, Any] | None, rank: str) -> str:
    if row is None:
        return "-"
    if row.get("error"):
        return f"failed: {row['error']}"
    key = RANKS[rank][0]
    kind = STAT_KINDS.get(key, "pnl")
    return format_stat(rank_value(row, rank), kind) if key != "pnl_cost" else \
        ("N/A" if rank_value(row, rank) is None else f"{rank_value(row, rank):+,.2f}")


def markdown(document: dict[str, Any]) -> str:
    """The walk's comparison report: the setting, the best runs (beside their hold-out), every run."""
    walk = document["walk"]
    rows = {row["run"]: row for row in document["runs"]}
    lines = [f"# Walk: {', '.join(walk['strategies'])} on {', '.join(walk['symbols'])}", "",
             f"Range {format_minute(walk['from'])} .. {format_minute(walk['to'])}; {walk['runs']} runs "
             f"({walk['failed']} failed), ranked by {walk['rank']}; {walk['seconds']} s on "
             + (f"the Dask cluster {walk['cluster']}." if walk["cluster"] else f"{walk['workers']} local worker(s)."),
             ""]
    if walk["params"]:
        lines += ["Grid: " + ", ".join(f"`{k}={v}`" for k, v in walk["params"].items()) + ".", ""]
    if walk["holdout_from"] is not None:
        lines += [f"Hold-out: the grid ran on {format_minute(walk['from'])} .. {format_minute(walk['holdout_from'])}; "
                  f"the best {len(document['best'])} ran again, unchanged, on {format_minute(walk['holdout_from'])} "
                  f".. {format_minute(walk['to'])}. A run much worse there was tuned to the past.", ""]
    lines += ["## Best runs", ""]
    if walk["holdout_from"] is not None:
        held = {row["main_run"]: row for row in document["holdout"]}
        lines += [f"| Rank | Run | Strategy | Symbol | Parameters | {walk['rank']} | {walk['rank']} (hold-out) | "
                  "Trades | Trades (hold-out) | PnL % | PnL % (hold-out) |", "|" + "---|" * 11]
        for place, run in enumerate(document["best"], 1):
            row, other = rows[run], held.get(run)
            lines.append(
                f"| {place} | {run} | {row['strategy']} | {row['symbol']} | {_params_text(row['params'])} | "
                f"{_rank_text(row, walk['rank'])} | {_rank_text(other, walk['rank'])} | "
                f"{_stat(row, 'total_closed', 'count')} | {_stat(other, 'total_closed', 'count')} | "
                f"{_stat(row, 'total_pnl', 'pnl')} | {_stat(other, 'total_pnl', 'pnl')} |")
    else:
        lines += _table([rows[run] for run in document["best"]])
    lines += ["", "## Every run", ""]
    lines += _table(list(rows.values()))
    lines += ["", "Every figure follows `livetrader backtest` (N/A: too few trades or too little history). "
              "The JSON beside this file holds each run's full statistics and trade summary.", ""]
    return redaction.redact("\n".join(lines))


def _stat(row: dict[str, Any] | None, key: str, kind: str) -> str:
    if row is None or row.get("error"):
        return "-"
    return format_stat(row["stats"][key], kind)


#: Columns the terminal table leaves out first when it is narrow (the report keeps them all).
_DROP_ORDER = ("Buy & hold", "Max drawdown", "PnL (quote)", "Win rate", "Run", "Trades")


def _print(document: dict[str, Any], md_path: Path, json_path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    walk = document["walk"]
    rows = {row["run"]: row for row in document["runs"]}
    columns = list(_COLUMNS)
    cells = [_cells(rows[run]) for run in document["best"]]
    if walk["holdout_from"] is not None:  # the over-fitting check belongs beside the figure ranked by
        held = {row["main_run"]: row for row in document["holdout"]}
        columns.append(f"{walk['rank']} (hold-out)")
        cells = [[*c, _rank_text(held.get(run), walk["rank"])] for c, run in zip(cells, document["best"], strict=True)]
    one_each = [title for title, key in (("Strategy", "strategies"), ("Symbol", "symbols")) if len(walk[key]) == 1]
    console = Console()

    def width(keep: list[str]) -> int:  # a column's widest cell, its padding and its border
        return 1 + sum(3 + max(len(title), *(len(row[columns.index(title)]) for row in cells)) for title in keep)

    keep = [title for title in columns if title not in one_each or width(columns) <= console.width]
    for title in _DROP_ORDER:
        if width(keep) <= console.width or not cells:
            break
        keep.remove(title)
    table = Table(title=f"Walk: best {len(document['best'])} of {walk['runs']} runs by {walk['rank']}")
    for title in keep:
        table.add_column(title, justify="left" if title in ("Strategy", "Symbol", "Parameters") else "right")
    for row in cells:
        table.add_row(*(row[columns.index(title)] for title in keep))
    console.print(table)
    if len(keep) < len(columns):
        console.print("Every column, and every run: the report.")
    if walk["failed"]:
        console.print(f"{walk['failed']} run(s) failed: their rows in the report say why.")
    console.print(f"{walk['runs']} runs in {walk['seconds']} s. Report: {md_path} (JSON: {json_path})")


class _Progress:
    """A rich progress bar over finished runs, shown only on a terminal; callable with each row."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("walk"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                console=Console(stderr=True), transient=True)
            self.bar.__enter__()
            self.task = self.bar.add_task("", total=self.total)
        return self

    def add(self, more: int) -> None:
        """More runs to wait for (the hold-out's)."""
        self.total += more
        if self.bar is not None:
            self.bar.update(self.task, total=self.total)

    def __call__(self, row: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
