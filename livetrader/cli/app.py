"""The ``livetrader`` command. Thin: it parses, calls the modules that do the work, and prints.

Heavy imports happen inside the commands so that ``livetrader --help`` answers at once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

from livetrader.cli.times import parse_time
from livetrader.errors import LivetraderError


class _Readable:
    """Help pages as a user reads them: a flag shows no value (typer prints ``<bool>``, as if
    ``--json true`` were wanted), and an argument shows its metavar (``SYMBOL...``), not the
    parameter's name in braces (``{symbols}...``)."""

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""  # --help included: it is made here, after the declarations
        return params

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        readable: dict[str, str] = {}
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument) and param.metavar:
                for piece in param.get_usage_pieces(ctx):
                    readable[piece] = param.metavar if param.required else f"[{param.metavar}]"
        pieces: list[str] = super().collect_usage_pieces(ctx)  # type: ignore[misc]
        return [readable.get(piece, piece) for piece in pieces]


class ReadableCommand(_Readable, TyperCommand):
    """A command whose help page reads as described in ``_Readable``."""


class ReadableGroup(_Readable, TyperGroup):
    """A group of commands whose help page reads as described in ``_Readable``."""


app = typer.Typer(
    name="livetrader",
    cls=ReadableGroup,
    help="Run trading strategies live, crash-safe: one supervised loop per (symbol, strategy) pair.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help pages: rich's renderer would cost `livetrader --help` 0.15 s of imports.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every subcommand
)
strategies_app = typer.Typer(
    cls=ReadableGroup, help="List or check the strategies in the strategies folder.", invoke_without_command=True,
    rich_markup_mode=None,
)
app.add_typer(strategies_app, name="strategies")
positions_app = typer.Typer(
    cls=ReadableGroup, rich_markup_mode=None, no_args_is_help=True,
    help="Settle a position the account no longer holds as the journal says (a `degraded` pair).",
)
app.add_typer(positions_app, name="positions")


def _print_version(value: bool) -> None:
    if value:
        from livetrader import __version__

        typer.echo(f"livetrader {__version__}")
        raise typer.Exit()


@app.callback()
def _top(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Run trading strategies live, crash-safe: one supervised loop per (symbol, strategy) pair."""

T = TypeVar("T")

# The one description of where the data directory is when --data-dir is not given (README "The data directory").
_DATA_DIR_DEFAULT = (
    "Default: $LIVETRADER_DATA_DIR, else data_dir in the config, else systemd's $STATE_DIRECTORY, else ./dump"
)

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="Config file (default: config/livetrader.toml).")]
StrategiesDirOpt = Annotated[
    Path | None, typer.Option("--strategies-dir", help="Folder of strategy modules (default: ./strategies).")
]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` (secrets redacted) to stderr and return the Exit to raise."""
    from livetrader.redaction import redact

    typer.echo(f"error: {redact(message)}", err=True)
    return typer.Exit(code)


def guarded(work: Callable[[], T]) -> T:
    """Run ``work``; a user-facing error becomes one message and its exit code, never a traceback."""
    try:
        return work()
    except LivetraderError as exc:
        raise fail(str(exc), exc.exit_code) from None
    except KeyboardInterrupt:
        raise fail("interrupted", 130) from None


def _settings(config: Path | None, strategies_dir: Path | None) -> tuple[Any, Path]:
    from livetrader.config import load_config
    from livetrader.market.sources import register_secrets

    cfg = load_config(config)
    register_secrets(cfg)  # before any strategy module is imported: nothing it prints may carry a secret
    return cfg, strategies_dir or cfg.strategies_dir


@strategies_app.callback()
def strategies_list(
    ctx: typer.Context, config: ConfigOpt = None, strategies_dir: StrategiesDirOpt = None
) -> None:
    """List the strategies that loaded, and any problem found while loading."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = (config, strategies_dir)
        return
    from livetrader.strategy.base import load_strategies

    def work() -> None:
        _, folder = _settings(config, strategies_dir)
        registry = load_strategies(folder)
        _print_strategies(registry)

    guarded(work)


@strategies_app.command("check", cls=ReadableCommand)
def strategies_check(ctx: typer.Context, config: ConfigOpt = None, strategies_dir: StrategiesDirOpt = None) -> None:
    """Exit non-zero when any strategy module failed to load."""
    from livetrader.strategy.base import load_strategies

    parent = ctx.obj or (None, None)

    def work() -> None:
        _, folder = _settings(config or parent[0], strategies_dir or parent[1])
        registry = load_strategies(folder)
        _print_strategies(registry)
        registry.raise_problems()
        typer.echo(f"ok: {len(registry)} strategies loaded from {folder}")

    guarded(work)


def _print_strategies(registry: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    from livetrader.redaction import redact

    table = Table(title=f"Strategies in {registry.directory}")
    for column in ("name", "interval", "risk", "file"):
        table.add_column(column)
    for info in registry:
        cls = info.cls
        table.add_row(cls.name, cls.interval, cls.risk or "-", f"{info.file}:{info.line}")
    console = Console() if sys.stdout.isatty() else Console(width=200)
    console.print(table)
    for problem in registry.problems:
        console.print(f"[red]problem[/red] {redact(str(problem))}", markup=True, highlight=False)


@app.command(cls=ReadableCommand)
def backtest(
    symbols: Annotated[
        list[str], typer.Argument(metavar="SYMBOL...", help="One or more symbols, e.g. BTCUSDT or BTC/USDT.",
                                  show_default=False)
    ],
    strategies: Annotated[
        list[str],
        typer.Option("--strategy", "-s", metavar="NAME", help="Strategy name (see `livetrader strategies`); repeat "
                     "for several: each (symbol, strategy) pair is backtested on its own."),
    ],
    start: Annotated[
        str | None, typer.Option("--from", help="First frame, ISO-8601 UTC (default: 7 days before --to).")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="End of the range, exclusive (default: today 00:00 UTC).")
    ] = None,
    exchange: Annotated[
        str, typer.Option("--exchange", "-e", help="Candle source: sim, files, or a ccxt exchange (binance, ...).")
    ] = "sim",
    candles: Annotated[
        Path | None, typer.Option("--candles", help="CSV or JSON candle file (--exchange files).")
    ] = None,
    strict: Annotated[bool, typer.Option("--strict", help=(
        "Refuse a candle file with missing minutes, and stop at the first strategy error (without "
        "it, errors are counted and that tick is idle, as live)."))] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document instead of tables.")] = False,
    report: Annotated[Path | None, typer.Option("--report", help="Also write the markdown report here.")] = None,
    store: Annotated[
        Path | None, typer.Option("--store", help="Candle store to read when it holds the range (default: "
                                  "candles/ in the data directory; see `livetrader download`).")
    ] = None,
    params: Annotated[list[str] | None, typer.Option("--param", "-p", metavar="NAME=VALUE", help=(
        "Set a parameter the strategy declares (e.g. fast=5); repeat for several. Grids: `livetrader walk`."))] = None,
    config: ConfigOpt = None,
    strategies_dir: StrategiesDirOpt = None,
) -> None:
    """Backtest strategies over historical or simulated candles, at full speed: one summary per pair."""
    from livetrader.cli.backtest import BacktestRequest, run_all

    def work() -> None:
        cfg, folder = _settings(config, strategies_dir)
        if candles is not None and exchange == "sim":
            chosen = "files"  # --candles says where the candles are; do not make the user repeat it
        else:
            chosen = exchange
        first = parse_time(start, "--from") if start else None
        last = parse_time(end, "--to") if end else None
        requests = [
            BacktestRequest(symbol=symbol, strategy=strategy, start=first, end=last, exchange=chosen,
                            candles=candles, strict=strict, as_json=as_json, report=report, store=store,
                            params=tuple(params or ()))
            for symbol in dict.fromkeys(symbols)  # a name given twice is backtested once
            for strategy in dict.fromkeys(strategies)
        ]
        run_all(requests, cfg, folder)

    guarded(work)


@app.command(cls=ReadableCommand)
def download(
    symbols: Annotated[
        list[str], typer.Argument(metavar="SYMBOL...", help="One or more symbols, e.g. BTC/USDT ETHUSDT.",
                                  show_default=False)
    ],
    exchange: Annotated[
        str, typer.Option("--exchange", "-e", help="A ccxt exchange (binance, ...) or a name from the config, or sim.",
                          show_default=False)
    ],
    start: Annotated[str, typer.Option("--from", help="First minute, ISO-8601 UTC.", show_default=False)],
    end: Annotated[
        str | None, typer.Option("--to", help="End of the range, exclusive (default: now; never past the last "
                                 "closed minute).")
    ] = None,
    store: Annotated[
        Path | None, typer.Option("--store", help="The candle store (default: candles/ in the data directory).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document at the end (each symbol's "
                                          "figures or its error) instead of a line per symbol.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Download 1-minute candles once into the local candle store: only missing minutes are fetched,
    gaps are recorded, a killed download resumes; `backtest` then reads them from the store."""
    from livetrader.cli.download import DownloadRequest, run_download

    def work() -> None:
        cfg, _ = _settings(config, None)
        request = DownloadRequest(symbols=symbols, exchange=exchange, start=parse_time(start, "--from"),
                                  end=parse_time(end, "--to") if end else None, store=store, as_json=as_json)
        run_download(request, cfg)

    guarded(work)


@app.command(cls=ReadableCommand)
def walk(
    symbols: Annotated[
        list[str], typer.Argument(metavar="SYMBOL...", help="One or more symbols, e.g. BTCUSDT or BTC/USDT.",
                                  show_default=False)
    ],
    strategies: Annotated[
        list[str], typer.Option("--strategy", "-s", metavar="NAME", help="Strategy name; repeat for several.")
    ],
    params: Annotated[list[str] | None, typer.Option("--param", "-p", metavar="NAME=VALUES", help=(
        "A grid over a declared parameter: START:STOP:STEP (stop included), a list 20,50,100, or one value; "
        "repeat for several (every combination runs)."))] = None,
    start: Annotated[str | None, typer.Option("--from", help="First frame, ISO-8601 UTC (as backtest).")] = None,
    end: Annotated[str | None, typer.Option("--to", help="End of the range, exclusive (as backtest).")] = None,
    exchange: Annotated[str, typer.Option("--exchange", "-e", help="Candle source (as backtest).")] = "sim",
    candles: Annotated[Path | None, typer.Option("--candles", help="CSV or JSON candle file.")] = None,
    holdout: Annotated[str | None, typer.Option("--holdout", metavar="SHARE", help=(
        "Keep the last SHARE of the range (e.g. 25%) out of the grid; the best runs are run again on it."))] = None,
    rank: Annotated[str, typer.Option("--rank", metavar="STAT", help=(
        "Rank by: sharpe, pnl, pnl_cost, sqn, profit_factor, win_rate, expectancy, max_drawdown (lowest first), "
        "trades, ..."))] = "sharpe",
    top: Annotated[int, typer.Option("--top", help="How many best runs to show (and re-run on the hold-out).")] = 5,
    workers: Annotated[int | None, typer.Option("--workers", help="Local processes (default: one per core).")] = None,
    cluster: Annotated[str | None, typer.Option("--cluster", metavar="tcp://HOST:PORT", help=(
        "Run on this Dask distributed scheduler instead (pip install 'livetrader[cluster]')."))] = None,
    out: Annotated[Path | None, typer.Option("--out", help=(
        "Report path without suffix: writes OUT.md and OUT.json (default: ./walk_<time>)."))] = None,
    strict: Annotated[bool, typer.Option("--strict", help="A strategy error fails its run (as backtest --strict).")
                      ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON document instead of the table.")] = False,
    config: ConfigOpt = None,
    strategies_dir: StrategiesDirOpt = None,
) -> None:
    """Backtest strategies x symbols x parameter grids in parallel, rank them, write a comparison report."""
    from livetrader.cli.walk import WalkRequest
    from livetrader.cli.walk import run as run_walk

    def work() -> None:
        cfg, folder = _settings(config, strategies_dir)
        chosen = "files" if candles is not None and exchange == "sim" else exchange
        request = WalkRequest(
            symbols=tuple(symbols), strategies=tuple(strategies), params=tuple(params or ()),
            start=parse_time(start, "--from") if start else None, end=parse_time(end, "--to") if end else None,
            exchange=chosen, candles=candles, holdout=holdout, rank=rank, top=top, workers=workers, cluster=cluster,
            out=out, as_json=as_json, strict=strict)
        run_walk(request, cfg, folder)

    guarded(work)


@app.command(cls=ReadableCommand)
def run(
    symbols: Annotated[
        list[str], typer.Argument(metavar="SYMBOL...", help="One or more symbols, e.g. BTCUSDT ETHUSDT.")
    ],
    strategy: Annotated[
        list[str],
        typer.Option("--strategy", "-s", metavar="NAME", help="Strategy name; repeat for several (one loop per pair)."),
    ],
    exchange: Annotated[
        str | None, typer.Option("--exchange", "-e", help="Candle source (default: from the config, sim).")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Where state, journal and reports live. " + _DATA_DIR_DEFAULT
                                  + " (./dump-demo for a --speed or --candles run).")
    ] = None,
    speed: Annotated[
        float | None, typer.Option("--speed", help="Run the sim/files clock N times faster than real time.")
    ] = None,
    candles: Annotated[Path | None, typer.Option("--candles", help="Candle file to replay (--exchange files).")] = None,
    switch_clock: Annotated[
        bool, typer.Option("--switch-clock", help="Run although the data directory was written on the other clock "
                           "(a --speed demo's or the real one); it follows this run's clock from then on.")
    ] = False,
    config: ConfigOpt = None,
    strategies_dir: StrategiesDirOpt = None,
) -> None:
    """Run strategies live: one supervised loop per (symbol, strategy) pair, until SIGINT/SIGTERM."""
    from livetrader.service.daemon import RunRequest, run_daemon

    def work() -> int:
        cfg, folder = _settings(config, strategies_dir)
        request = RunRequest(symbols, strategy, exchange, data_dir, speed, candles, switch_clock=switch_clock)
        return run_daemon(request, cfg, folder)

    code = guarded(work)
    raise typer.Exit(code)


DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="The data directory. " + _DATA_DIR_DEFAULT
                              + " (a demo's is ./dump-demo: pass --data-dir dump-demo).")
]
# `status` reads the directory itself: one it may not read is "status unknown" (exit 4, with who
# can read it), not the usage error (2) of typer's check.
StatusDataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", readable=False, help="The data directory. " + _DATA_DIR_DEFAULT
                              + " (a demo's is ./dump-demo: pass --data-dir dump-demo).")
]


def _data_dir(data_dir: Path | None, config: Path | None) -> Path:
    from livetrader.config import load_config
    from livetrader.market.sources import register_secrets

    try:
        cfg = load_config(config)
    except LivetraderError:
        if data_dir is None:
            raise
        from livetrader.config import Config

        cfg = Config()  # the directory is given: a broken config must not stop a look at it
    register_secrets(cfg)  # what these commands print is redacted too
    return data_dir or cfg.data_dir


@app.command(cls=ReadableCommand)
def recover(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only report what would be done.")] = False,
    data_dir: DataDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Inspect the data directory without starting any loop, and repair what a crash left.

    Exit codes: 0 nothing to do; 10 repairs needed (--dry-run) or made; 20 damage that needs
    a person (the output says what); 1 a running daemon holds the directory; 2 usage error.
    """
    from livetrader.cli.recover import run as run_recover

    def work() -> int:
        return run_recover(_data_dir(data_dir, config), dry_run=dry_run, as_json=as_json)

    raise typer.Exit(guarded(work))


@app.command(cls=ReadableCommand)
def report(
    symbol: Annotated[str | None, typer.Argument(metavar="SYMBOL", help="Only this symbol.")] = None,
    strategy: Annotated[
        str | None, typer.Option("--strategy", "-s", metavar="NAME", help="Only this strategy.")
    ] = None,
    data_dir: DataDirOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write one markdown file per pair here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Statistics and trades as one JSON document.")] = False,
    summary: Annotated[bool, typer.Option("--summary", help=(
        "One line per pair and a portfolio line for all of them together (with --out: OUT/summary.md)."))] = False,
    config: ConfigOpt = None,
) -> None:
    """Build the reports from the journal, whether or not a daemon is running."""
    from livetrader.cli.report import run as run_report

    raise typer.Exit(guarded(lambda: run_report(_data_dir(data_dir, config), symbol, strategy, out, as_json,
                                                summary)))


@app.command(cls=ReadableCommand)
def orders(
    data_dir: DataDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the orders as one JSON document.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Every order of every pair, from the journals: client id, leg, state, filled, average, fees."""
    from livetrader.cli.orders import run as run_orders

    raise typer.Exit(guarded(lambda: run_orders(_data_dir(data_dir, config), as_json=as_json)))


@app.command(cls=ReadableCommand)
def status(
    data_dir: StatusDataDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
    config: ConfigOpt = None,
) -> None:
    """What the daemon of a data directory is doing: exit 0 when it runs, 3 when it does not, 4 when
    this user cannot read the directory (run it as the daemon's user)."""
    from livetrader.cli.status import run as run_status

    raise typer.Exit(guarded(lambda: run_status(_data_dir(data_dir, config), as_json=as_json)))


ProfileOpt = Annotated[
    str | None, typer.Option("--profile", metavar="NAME", help="Only the pairs of this risk profile "
                             "([risk.NAME] in the config); default: every pair.")
]
ReasonOpt = Annotated[str | None, typer.Option("--reason", metavar="TEXT", help="Why, for the journal and status.")]


@app.command(cls=ReadableCommand)
def halt(
    flatten: Annotated[bool, typer.Option("--flatten", help="Also close every open position at market.")] = False,
    profile: ProfileOpt = None,
    reason: ReasonOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Stop new entries on every pair (open positions are still managed) until `livetrader resume`;
    journaled, so it outlives a restart. Tells the running daemon, or waits for the next start."""
    from livetrader.cli.control import halt as run_halt

    raise typer.Exit(guarded(lambda: run_halt(_data_dir(data_dir, config), flatten=flatten, profile=profile,
                                               reason=reason)))


@app.command(cls=ReadableCommand)
def resume(
    symbol: Annotated[str | None, typer.Argument(metavar="SYMBOL", help="Resume this paused pair (with --strategy) "
                                                 "instead of lifting halts.")] = None,
    strategy: Annotated[str | None, typer.Option("--strategy", "-s", metavar="NAME",
                                                 help="The paused pair's strategy.")] = None,
    profile: ProfileOpt = None,
    reason: ReasonOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Trade again: lift the halts, or resume one pair paused by `livetrader pause`.

    Without SYMBOL: lift the halts (`livetrader halt`, a risk profile's max_daily_loss_percent),
    journaled. With SYMBOL --strategy NAME: resume that paused pair on the running daemon."""
    if symbol is None and strategy is None:
        from livetrader.cli.control import resume as run_resume

        raise typer.Exit(guarded(lambda: run_resume(_data_dir(data_dir, config), profile=profile, reason=reason)))
    if symbol is None or strategy is None or profile is not None:
        raise fail("resume a paused pair as `livetrader resume SYMBOL --strategy NAME` (no --profile); "
                   "`livetrader resume` alone lifts the halts", 2)
    raise typer.Exit(_operate(data_dir, config, "resume", symbol=symbol, strategy=strategy))


# --- operator commands on the running daemon, through its control socket (``service.control_socket``) ---

TargetArg = Annotated[str, typer.Argument(metavar="SIGNAL_ID", help="The signal id (livetrader status), or, with "
                                          "--strategy, the pair's SYMBOL.")]
PairSymbolArg = Annotated[str, typer.Argument(metavar="SYMBOL", help="The pair's symbol.")]
PairStrategyOpt = Annotated[str | None, typer.Option("--strategy", "-s", metavar="NAME",
                                                     help="The pair's strategy (then the argument is its SYMBOL).")]


def _operate(data_dir: Path | None, config: Path | None, command: str, *, signal_id: str | None = None,
             symbol: str | None = None, strategy: str | None = None) -> int:
    from livetrader.service.control_socket import carry_out

    request = {"command": command, "signal_id": signal_id, "symbol": symbol, "strategy": strategy}
    return guarded(lambda: carry_out(_data_dir(data_dir, config), request))


@app.command(cls=ReadableCommand)
def close(
    target: TargetArg,
    strategy: PairStrategyOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Close an open position now, at the current minute's price, on the running daemon: `closed`
    (reason closed) is journaled; in sandbox/live mode its stop is cancelled, then it is sold.
    Exit 2 when there is no such open position, 3 when no daemon runs (nothing changed)."""
    if strategy is None:
        raise typer.Exit(_operate(data_dir, config, "close", signal_id=target))
    raise typer.Exit(_operate(data_dir, config, "close", symbol=target, strategy=strategy))


@app.command(cls=ReadableCommand)
def cancel(
    target: TargetArg,
    strategy: PairStrategyOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Cancel a scheduled signal (not yet open) on the running daemon: `cancelled` (reason user) is
    journaled. Exit 2 when there is no such signal, 3 when no daemon runs (nothing changed)."""
    if strategy is None:
        raise typer.Exit(_operate(data_dir, config, "cancel", signal_id=target))
    raise typer.Exit(_operate(data_dir, config, "cancel", symbol=target, strategy=strategy))


@app.command(cls=ReadableCommand)
def pause(
    symbol: PairSymbolArg,
    strategy: Annotated[str, typer.Option("--strategy", "-s", metavar="NAME", help="The pair's strategy.")],
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Stop asking one pair's strategy on the running daemon (its open position is still managed)
    until `livetrader resume SYMBOL --strategy NAME`. Held in memory: a restart trades again."""
    raise typer.Exit(_operate(data_dir, config, "pause", symbol=symbol, strategy=strategy))


SignalIdArg = Annotated[str, typer.Argument(metavar="SIGNAL_ID", help="The open position's signal id (status, "
                                            "`livetrader recover --dry-run`).")]


@positions_app.command("forget", cls=ReadableCommand)
def positions_forget(
    signal_id: SignalIdArg,
    reason: ReasonOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Close a position without selling: its coins left the account outside livetrader. Its stop is
    cancelled; `closed` (reason closed, forgotten) is journaled, PnL estimated at the market price."""
    from livetrader.cli.control import settle

    raise typer.Exit(guarded(lambda: settle(_data_dir(data_dir, config), "forget", signal_id, reason=reason)))


@positions_app.command("adopt", cls=ReadableCommand)
def positions_adopt(
    signal_id: SignalIdArg,
    reason: ReasonOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Make what the account holds of the position's coins its amount (what other positions claim
    left aside): journaled, a new protective stop for it, the pair managed again."""
    from livetrader.cli.control import settle

    raise typer.Exit(guarded(lambda: settle(_data_dir(data_dir, config), "adopt", signal_id, reason=reason)))


def redacted_excepthook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
    """Print an unexpected traceback (a bug) as Python would, with every registered secret redacted."""
    import traceback

    from livetrader.redaction import redact

    sys.stderr.write(redact("".join(traceback.format_exception(kind, value, tb))))


def main() -> None:
    """Console entry point."""
    sys.excepthook = redacted_excepthook  # the last output path: a traceback nothing caught
    app(prog_name="livetrader")


if __name__ == "__main__":  # pragma: no cover
    main()  # exits itself (typer's standalone mode)
