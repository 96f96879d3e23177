"""``python -m bench``: run the benchmarks, print a table (or, with ``--json``, one JSON document).

    python -m bench                 # everything, full size (a few minutes)
    python -m bench --quick         # everything, small, and check the numbers are sane (for CI)
    python -m bench --only backtest --only cli
    python -m bench --json > results.json
    python -m bench --save results.json   # the table, and the JSON document in a file

Progress goes to stderr, so ``--json`` output on stdout stays one clean document.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from bench.common import Result, machine

#: name -> (what it measures, full-size arguments, quick arguments)
PLAN: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "backtest": ("backtest throughput, reference workload", {"days": 365, "repeats": 5}, {"days": 30, "repeats": 2}),
    "live": ("live scale through the real tick path", {"sizes": (1_000, 10_000), "warmup": 20, "minutes": 60},
             {"sizes": (100, 500), "warmup": 3, "minutes": 5}),
    "safety": ("cost of crash safety per transition", {"count": 500}, {"count": 40}),
    "restart": ("restart to all pairs restored", {"pairs": 10_000}, {"pairs": 300}),
    "cli": ("CLI start", {"runs": 10}, {"runs": 3}),
    "orders": ("order path cost; 100 pairs opening at once; kill -9 torture with orders",
               {"count": 300, "pairs": 100, "kills": 100}, {"count": 40, "pairs": 20, "kills": 3}),
    "candles": ("a year of candles loaded from the store, JSON and CSV; the backtest command end to end",
                {"days": 365, "repeats": 3, "runs": 5}, {"days": 3, "repeats": 1, "runs": 1}),
    "observe": ("live sweep with metrics and a notification channel, against without",
                {"sizes": (10_000,), "warmup": 5, "minutes": 15, "rounds": 2},
                {"sizes": (200,), "warmup": 3, "minutes": 5, "rounds": 1}),
    "walk": ("walk: process pool and Dask LocalCluster against one worker", {"runs": 100, "days": 365, "repeats": 2},
             {"runs": 6, "days": 3, "repeats": 1}),
    "stream": ("decision lag, candles by WebSocket vs REST, 1,000 symbols",
               {"symbols": 1_000, "stream_minutes": 10, "stream_speed": 4.0, "rest_minutes": 2, "rest_speed": 1.0},
               {"symbols": 20, "stream_minutes": 1, "stream_speed": 30.0, "rest_minutes": 1, "rest_speed": 30.0,
                "warmup": 2}),
}


def runner(name: str) -> Callable[..., Result]:
    """The ``run`` function of benchmark ``name`` (imported on demand: each pulls in different code)."""
    if name == "backtest":
        from bench.backtest_speed import run
    elif name == "live":
        from bench.live_scale import run
    elif name == "safety":
        from bench.crash_safety import run
    elif name == "restart":
        from bench.restart import run
    elif name == "orders":
        from bench.orders import run
    elif name == "candles":
        from bench.candle_load import run
    elif name == "observe":
        from bench.observe_overhead import run
    elif name == "walk":
        from bench.walk_speed import run
    elif name == "stream":
        from bench.stream_lag import run
    else:
        from bench.cli_start import run
    return run


def run_all(names: list[str], quick: bool, say: Callable[[str], None] = lambda _: None) -> list[Result]:
    """Run the named benchmarks in order; ``say`` reports progress."""
    results = []
    for name in names:
        what, full, small = PLAN[name]
        say(f"running {name}: {what} ...")
        began = time.perf_counter()
        result = runner(name)(**(small if quick else full))
        result.details["wall_seconds"] = time.perf_counter() - began
        say(f"  done in {result.details['wall_seconds']:.1f} s")
        results.append(result)
    return results


def sanity_problems(results: list[Result]) -> list[str]:
    """What is not sane in the results: every figure positive and finite, trades only in trade mode."""
    problems = []
    for result in results:
        for row in result.rows:
            if not row.is_sane:
                problems.append(f"{result.name}: {row.metric} = {row.value!r}")
        if result.name == "live":
            for size, figures in result.details.items():
                if isinstance(figures, dict) and figures.get("fetches_outside_preloaded_candles"):
                    problems.append(f"live: {size} pairs fetched candles outside the preloaded range")
        if result.name == "backtest":
            if not result.details["trade"]["trades"] > 0:
                problems.append("backtest: trade mode made no trade")
            if result.details["idle"]["trades"] != 0:
                problems.append("backtest: idle mode traded")
    return problems


def document(results: list[Result], quick: bool) -> dict[str, Any]:
    """The JSON document: the machine, the mode, every benchmark with its rows and details."""
    return {"machine": machine(), "quick": quick, "benchmarks": {r.name: r.as_dict() for r in results}}


def _number(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) >= 0.001 else f"{value:.2e}"


def table(results: list[Result], quick: bool) -> str:
    """The readable table (markdown, so the README can carry it as is)."""
    m = machine()
    lines = [
        f"Machine: {m.get('cpu', m['machine'])}, {m['cpu_count']} CPUs, {m.get('memory_gb', '?')} GB, "
        f"{m['implementation']} {m['python']}, {m['platform']}" + (" (quick mode: small sizes)" if quick else ""),
        "",
        "| benchmark | metric | value | unit | target | met |",
        "|---|---|---:|---|---:|:---:|",
    ]
    for result in results:
        for row in result.rows:
            target = "" if row.target is None else ("<= " if row.better == "max" else ">= ") + _number(row.target)
            met = {None: "", True: "yes", False: "**no**"}[row.met]
            lines.append(f"| {result.name} | {row.metric} | {_number(row.value)} | {row.unit} | {target} | {met} |")
    lines.append("")
    for result in results:
        for note in result.notes:
            lines.append(f"- {result.name}: {note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, then check the numbers are sane")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.add_argument("--save", metavar="PATH", help="also write the JSON document to PATH")
    parser.add_argument("--only", action="append", choices=list(PLAN), metavar="NAME",
                        help=f"run only this benchmark (repeatable): {', '.join(PLAN)}")
    args = parser.parse_args(argv)
    names = [n for n in PLAN if not args.only or n in args.only]
    results = run_all(names, args.quick, say=lambda text: print(text, file=sys.stderr, flush=True))
    text = orjson.dumps(document(results, args.quick), option=orjson.OPT_INDENT_2).decode() + "\n"
    if args.save:
        with open(args.save, "w", encoding="utf-8") as f:
            f.write(text)
    if args.json:
        sys.stdout.write(text)
    else:
        print(table(results, args.quick))
    problems = sanity_problems(results) if args.quick else []
    for problem in problems:
        print(f"not sane: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
