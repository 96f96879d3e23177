"""The ``Strategy`` base class users subclass, and the loader for the strategies folder.

A strategy is a class in a module of the strategies folder (``./strategies`` by default)::

    from livetrader import Strategy, Signal

    class MyStrategy(Strategy):
        name = "my-strategy"      # what --strategy selects
        interval = "5m"           # signal throttle: 1m 3m 5m 15m 30m 1h
        risk = None               # optional risk profile name (config [risk.<name>])

        async def get_signal(self, ctx):
            candles = await ctx.candles("1m", limit=30)   # closed candles only, oldest first
            if candles[-1].close > candles[0].close:
                return Signal(position="long", take_profit=ctx.price * 1.02,
                              stop_loss=ctx.price * 0.99, minutes=120)
            return None                                   # no trade this time

The loader (``load_strategies``) imports every ``*.py`` of the folder whose name does not
start with ``_`` and collects the ``Strategy`` subclasses each module defines. Files whose
name starts with ``_`` are never loaded as strategies but may be imported by them as helpers
(``from _indicators import sma``): the folder is on ``sys.path`` while its modules import.
Every problem is recorded with the file and line it comes from, so one broken file never
hides the others and ``livetrader strategies check`` can report them all at once.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import inspect
import itertools
import os
import re
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from livetrader.core.interval import SIGNAL_INTERVALS
from livetrader.errors import StrategyLoadError, UnknownStrategyError

if TYPE_CHECKING:
    from livetrader.core.signal import Signal, TickResult
    from livetrader.strategy.context import Context

#: The optional callbacks a strategy may define; each is called with the TickResult.
CALLBACKS: tuple[str, ...] = ("on_open", "on_close", "on_active", "on_idle", "on_schedule", "on_cancel")
#: The callback each tick action calls (live and backtest alike).
HOOKS: dict[str, str] = {"opened": "on_open", "closed": "on_close", "active": "on_active", "idle": "on_idle",
                         "scheduled": "on_schedule", "cancelled": "on_cancel"}

# Strategy names end up in file names, journal records and report titles: keep them plain.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_NON_WORD = re.compile(r"\W")

# Each load imports modules under fresh names, so reloading a folder (or loading two folders
# holding a file of the same name) never returns a stale module from sys.modules.
_module_counter = itertools.count(1)


class Strategy:
    """Base class of every strategy. Subclass it in a module of the strategies folder.

    Class attributes:

    - ``name``: what ``--strategy`` selects; required, unique across the folder, made of
      letters, digits, ``.``, ``_`` and ``-``.
    - ``interval``: the signal throttle (docs/behaviour.md §4), one of ``1m 3m 5m 15m 30m 1h``; the
      strategy is asked at most once per interval while its pair holds no signal.
    - ``risk``: the name of a risk profile (``[risk.<name>]`` in the config), or None.

    ``get_signal(self, ctx)`` is required. It may be ``async def`` (needed to
    ``await ctx.candles(...)``) or a plain ``def``; it returns a ``Signal`` or None.
    A plain ``def`` runs on the event loop, so keep it quick.

    Optional callbacks, each called with the ``TickResult`` of the tick, sync or async:
    ``on_open``, ``on_close``, ``on_active``, ``on_idle``, ``on_schedule``, ``on_cancel``.

    One instance is created per pair (symbol), so instance attributes set in ``__init__``
    (which must take no arguments) hold per-symbol state.

    Tunable parameters (``livetrader walk --param fast=5:30:5``): plain annotated class attributes
    with a default, ``fast: int = 10`` (``int``, ``float``, ``bool`` or ``str``); read them as
    ``self.fast``. A run overrides them on the instance before ``__init__`` (``params_of``,
    ``instantiate_with``); live and ``backtest`` use the defaults.

    State that must survive a restart or a hot reload: define both ``checkpoint(self) -> dict``
    (a dict JSON carries unchanged) and ``restore(self, state)``. The daemon calls ``checkpoint``
    after every tick and saves the state when it changed; ``restore`` gets it back when the
    pair starts, and in the new instance when a reload brings new code. A ``checkpoint`` that
    raises or returns something JSON cannot hold is the strategy's error: reported, the last
    good state kept.
    """

    name: ClassVar[str] = ""
    interval: ClassVar[str] = "1m"
    risk: ClassVar[str | None] = None
    #: Quote units one position costs when the exchange runs in ``sandbox``/``live`` mode
    #: (None: the engine's ``[engine] cost``); a paper run uses it for PnL in quote currency too.
    cost: ClassVar[float | None] = None

    #: True when ``get_signal`` is a coroutine function; computed once per class so the
    #: engine can call it without inspecting on every tick.
    signal_is_async: ClassVar[bool] = True
    #: The callbacks this class defines, mapped to whether each is a coroutine function.
    callbacks: ClassVar[dict[str, bool]] = {}
    #: ``async``/``sync`` when the class defines ``manage(self, ctx, position)`` (it steers its
    #: open positions once a minute: ``livetrader.core.manage``), else None.
    manage_kind: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.signal_is_async = inspect.iscoroutinefunction(getattr(cls, "get_signal", None))
        manage = getattr(cls, "manage", None)
        cls.manage_kind = None if not callable(manage) else (
            "async" if inspect.iscoroutinefunction(manage) else "sync")
        cls.callbacks = {
            hook: inspect.iscoroutinefunction(fn) for hook in CALLBACKS if callable(fn := getattr(cls, hook, None))
        }

    async def get_signal(self, ctx: Context) -> Signal | None:
        """Return a trade idea for ``ctx.symbol`` at ``ctx.now``, or None for no trade.

        ``ctx.price`` is the VWAP of the last five closed 1-minute candles;
        ``await ctx.candles("1m", limit=30)`` gives closed candles only, oldest first.
        """
        raise NotImplementedError(f"{type(self).__name__} must define get_signal(self, ctx)")


#: The strategy code running on the event loop's thread right now, as (strategy, symbol,
#: what: ``get_signal`` or a callback's name), or None. Set around every synchronous stretch
#: of strategy code (a plain call, each step of a coroutine), so that code blocking the loop
#: can be named by a thread watching it (``livetrader.service.stall``).
running: tuple[str, str, str] | None = None


def call_strategy(call: tuple[str, str, str], fn: Any, arg: Any) -> Any:
    """``fn(arg)``, with ``running`` saying ``call`` meanwhile."""
    global running
    before, running = running, call
    try:
        return fn(arg)
    finally:
        running = before


def signal_asker(strategy: Strategy, timeout: float | None = None, *,
                 traced: bool = True) -> Callable[[Context], Awaitable[Signal | None]]:
    """How to ask ``strategy`` for its signal, decided once for many asks: ``await asker(ctx)``.

    It is ``ask_signal`` with ``timeout``, except where nothing of it is needed: untraced (a
    backtest, where no stall watcher names the running strategy) and without a timeout, an
    async ``get_signal`` is itself the asker, so a backtest's ask costs no extra coroutine.
    """
    if not traced and timeout is None:
        get = strategy.get_signal
        if strategy.signal_is_async:
            return get

        async def ask_plain(ctx: Context) -> Signal | None:
            return get(ctx)  # type: ignore[return-value]

        return ask_plain

    async def ask(ctx: Context) -> Signal | None:
        return await ask_signal(strategy, ctx, timeout)

    return ask


async def ask_signal(strategy: Strategy, ctx: Context, timeout: float | None = None) -> Signal | None:
    """Call ``strategy.get_signal(ctx)``, awaiting it only when it is a coroutine function.

    With ``timeout``, an answer that takes longer raises ``TimeoutError`` (the strategy is
    cancelled at its await). Most strategies answer without ever waiting: their coroutine
    is run one step directly, and only one that suspends gets a timer, for what is left of
    ``timeout`` (an ``asyncio.timeout`` per ask cost more than many strategies' own work).
    Without ``timeout`` (a backtest, alone on its event loop) the coroutine is awaited as it
    is, ``running`` naming it until it answers, suspended or not.
    """
    global running
    call = (strategy.name, ctx.symbol if ctx is not None else "", "get_signal")
    if not strategy.signal_is_async:
        return call_strategy(call, strategy.get_signal, ctx)
    if timeout is None:
        # Awaited directly: no step of it is run by hand (a backtest asks every few minutes it
        # simulates, and the hand-run first step costs it a StopIteration per ask).
        before, running = running, call
        try:
            return await strategy.get_signal(ctx)
        finally:
            running = before
    started = time.monotonic()
    return await _stepped(call_strategy(call, strategy.get_signal, ctx), call, timeout, started)


async def _stepped(coro: Any, call: tuple[str, str, str], timeout: float | None, started: float) -> Any:
    """Run a strategy coroutine's first step by hand (most answer there, needing no timer), then,
    if it suspended, await the rest within what is left of ``timeout`` (None: no limit),
    ``running`` naming ``call`` during each step."""
    try:
        waiting_on = call_strategy(call, coro.send, None)
    except StopIteration as answered:
        return answered.value
    except BaseException:
        coro.close()
        raise
    if timeout is None:
        return await _Resumed(coro, waiting_on, call)
    import asyncio  # loaded already: we run in its loop (kept out of `livetrader --help`)

    try:
        async with asyncio.timeout(max(0.0, timeout - (time.monotonic() - started))):
            return await _Resumed(coro, waiting_on, call)
    finally:
        coro.close()


class _Resumed:
    """Await a coroutine that already ran its first step and is suspended on ``waiting_on``:
    what ``await`` does for a fresh one (PEP 380), continued from that point, with
    ``running`` saying ``call`` during each step."""

    __slots__ = ("call", "coro", "waiting_on")

    def __init__(self, coro: Any, waiting_on: Any, call: tuple[str, str, str]) -> None:
        self.coro = coro
        self.waiting_on = waiting_on
        self.call = call

    def __await__(self) -> Any:
        coro, value, call = self.coro, self.waiting_on, self.call
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - a cancellation (the timeout) goes to the strategy's await
                try:
                    value = call_strategy(call, coro.throw, exc)
                except StopIteration as answered:
                    return answered.value
            else:
                try:
                    value = call_strategy(call, coro.send, sent)
                except StopIteration as answered:
                    return answered.value


class _Adopted(Strategy):
    """A Strategy that runs a duck-typed object's ``get_signal`` and callbacks (see ``adopt``)."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj
        self.name = obj.name  # type: ignore[misc]
        self.interval = obj.interval  # type: ignore[misc]
        self.risk = getattr(obj, "risk", None)  # type: ignore[misc]
        self.get_signal = obj.get_signal  # type: ignore[method-assign]
        self.signal_is_async = inspect.iscoroutinefunction(obj.get_signal)  # type: ignore[misc]
        self.callbacks = {  # type: ignore[misc]
            hook: inspect.iscoroutinefunction(fn) for hook in CALLBACKS if callable(fn := getattr(obj, hook, None))
        }
        for hook in self.callbacks:
            setattr(self, hook, getattr(obj, hook))
        manage = getattr(obj, "manage", None)
        if callable(manage):
            self.manage = manage
            self.manage_kind = "async" if inspect.iscoroutinefunction(manage) else "sync"  # type: ignore[misc]


def adopt(strategy: Any) -> Strategy:
    """``strategy`` itself when it is a ``Strategy``; else a ``Strategy`` calling its ``get_signal``
    and callbacks, so that ``ask_signal`` and ``run_callback`` serve it too.

    A backtest accepts any object with ``name``, ``interval`` and ``get_signal`` (the benchmark's
    reference strategy, a port from another framework, a test's script); its calls then go
    through the same code as a loaded strategy's.
    """
    return strategy if isinstance(strategy, Strategy) else _Adopted(strategy)


async def ask_manage(strategy: Strategy, ctx: Context, held: Any, timeout: float | None = None) -> Any:
    """Call ``strategy.manage(ctx, held)`` (sync or async; ``running`` names it during each step)
    and return its answer. With ``timeout``, an answer that takes longer raises ``TimeoutError``."""
    call = (strategy.name, ctx.symbol, "manage")
    manage = strategy.manage  # type: ignore[attr-defined]
    started = time.monotonic()
    outcome = call_strategy(call, lambda c: manage(c, held), ctx)
    if strategy.manage_kind != "async":
        return outcome
    return await _stepped(outcome, call, timeout, started)


async def run_callback(strategy: Strategy, hook: str, result: TickResult) -> None:
    """Call the strategy's ``hook`` callback with ``result`` if it defines one (sync or async)."""
    is_async = strategy.callbacks.get(hook)
    if is_async is None:
        return
    call = (strategy.name, getattr(result, "symbol", ""), hook)
    outcome = call_strategy(call, getattr(strategy, hook), result)
    if not is_async:
        return
    try:
        waiting_on = call_strategy(call, outcome.send, None)
    except StopIteration:
        return
    except BaseException:
        outcome.close()
        raise
    try:
        await _Resumed(outcome, waiting_on, call)
    finally:
        outcome.close()


class StrategyInfo(NamedTuple):
    """A loaded strategy class and where it is defined."""

    cls: type[Strategy]
    file: Path
    line: int

    @property
    def name(self) -> str:
        """The strategy's ``name``."""
        return self.cls.name


class StrategyProblem(NamedTuple):
    """Something wrong in a strategy file; ``name`` is the strategy concerned, when known."""

    file: Path
    line: int
    message: str
    name: str | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass(slots=True)
class StrategyRegistry:
    """What ``load_strategies`` found: the strategies that loaded and every problem.

    ``strategies`` maps each name to its class and location; ``problems`` lists each
    failure with file and line. Strategies declared with a problem (bad interval,
    duplicate name) are kept out of ``strategies``, in ``rejected``, so ``get`` can
    explain why they cannot run. A problem disables only the class it names: the other
    classes of the same file load and run.
    """

    directory: Path
    strategies: dict[str, StrategyInfo] = field(default_factory=dict)
    problems: list[StrategyProblem] = field(default_factory=list)
    # Strategies whose declaration was rejected, so ``get`` can explain instead of "unknown".
    rejected: dict[str, StrategyInfo] = field(default_factory=dict)
    #: Each file imported, mapped to its ``code_version`` as imported (what a hot reload compares).
    versions: dict[Path, str] = field(default_factory=dict)

    def version_of(self, name: str) -> str | None:
        """The ``code_version`` of the file the strategy ``name`` was loaded from; None if unknown."""
        info = self.strategies.get(name)
        return self.versions.get(info.file) if info is not None else None

    @property
    def ok(self) -> bool:
        """True when every file loaded without a problem."""
        return not self.problems

    def names(self) -> list[str]:
        """The loaded strategy names, sorted."""
        return sorted(self.strategies)

    def __iter__(self) -> Iterator[StrategyInfo]:
        return iter(self.strategies[name] for name in self.names())

    def __len__(self) -> int:
        return len(self.strategies)

    def __contains__(self, name: object) -> bool:
        return name in self.strategies

    def get(self, name: str) -> type[Strategy]:
        """The strategy class called ``name``.

        Raises StrategyLoadError when the strategy has a problem (or its file failed to import), and
        UnknownStrategyError, with close matches, when no strategy has that name.
        """
        loaded = self.strategies.get(name)
        if loaded is not None:
            return loaded.cls  # a problem elsewhere in its file concerns another class, not this one
        if name in self.rejected:
            own = [p for p in self.problems if p.name == name]
            raise StrategyLoadError(_problem_text(f"strategy '{name}' cannot be used", own))
        # A file that failed to import may well hold the strategy: say so rather than "unknown".
        suspects = [p for p in self.problems if p.name is None and _mentions(p.file, name)]
        if suspects:
            raise StrategyLoadError(_problem_text(f"strategy '{name}' failed to load", suspects))
        raise UnknownStrategyError(self._unknown_message(name))

    def raise_problems(self) -> None:
        """Raise StrategyLoadError listing every problem as ``path:line: message``, if any."""
        if self.problems:
            count = len(self.problems)
            head = f"{count} problem{'s' if count > 1 else ''} loading strategies from {self.directory}"
            raise StrategyLoadError(_problem_text(head, self.problems))

    def _unknown_message(self, name: str) -> str:
        # Rejected names count too: "did you mean X?" then leads to X's actual problem.
        close = difflib.get_close_matches(name, sorted({*self.strategies, *self.rejected}), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else "."
        loaded = ", ".join(self.names()) or f"none from {self.directory}"
        text = f"unknown strategy '{name}'{hint} Loaded: {loaded}; see `livetrader strategies`"
        if self.problems:
            text += f" ({len(self.problems)} problem(s) while loading: run `livetrader strategies check`)"
        return text


def _problem_text(head: str, problems: list[StrategyProblem]) -> str:
    return head + ":\n" + "\n".join(f"  {p}" for p in problems)


def _mentions(file: Path, name: str) -> bool:
    """True when ``file`` holds ``name`` as a string literal (a cheap guess at its strategies)."""
    try:
        text = file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return f'"{name}"' in text or f"'{name}'" in text


def load_strategies(
    directory: Path,
    names: Iterable[str] | None = None,
    on_import: Callable[[Path], None] | None = None,
) -> StrategyRegistry:
    """Import the strategy modules of ``directory`` and collect their Strategy subclasses.

    Every module is imported, unless ``names`` is given and each of those names is declared
    as a plain ``name = "..."`` in a class of some module (a static scan, nothing runs): then
    only the modules declaring them are (all of them, so a duplicate name is still caught).
    A name the scan cannot find (a typo, a computed name, a file with a syntax error) makes
    it import everything, so the error says what it always said. ``on_import`` is called
    with each file just before it is imported (the daemon tells systemd it needs more time).

    Problems (import failures, invalid declarations, duplicate names) are recorded in the
    returned registry, never raised; call ``raise_problems()`` to fail on any of them.
    Raises StrategyLoadError only when the folder itself is missing or cannot be read.
    """
    directory = Path(directory)
    try:
        present = directory.is_dir()
        exists = present or directory.exists()
        files = sorted(p for p in directory.glob("*.py") if not p.name.startswith("_")) if present else []
    except PermissionError:
        # e.g. ./strategies from a working directory this user may not enter (sudo -u in root's home).
        raise StrategyLoadError(
            f"strategies folder {directory} cannot be read (permission denied); run as a user who can read it, "
            "or point --strategies-dir (or strategies_dir in the config) at a folder this user can read"
        ) from None
    if not present:
        what = "is not a folder" if exists else "does not exist"
        raise StrategyLoadError(
            f"strategies folder {directory} {what}; create it, or point --strategies-dir "
            "(or strategies_dir in the [livetrader] section of the config) at the folder "
            "holding your strategy files"
        )
    registry = StrategyRegistry(directory=directory)
    if names is not None:
        files = _files_declaring(files, set(names)) or files
    with _on_sys_path(directory):
        for file in files:
            if on_import is not None:
                on_import(file)
            registry.versions[file] = code_version(file)
            module = _import_file(file, registry)
            if module is not None:
                _collect(module, file, registry)
    return registry


def code_version(file: Path) -> str:
    """Which code ``file`` holds: a short hash of its source and its modification time (UTC),
    e.g. ``3f2a9c1d0b@2026-12-07T06:40:12Z``; ``unreadable`` when it cannot be read."""
    import hashlib
    from datetime import UTC, datetime

    try:
        source = file.read_bytes()
        mtime = file.stat().st_mtime
    except OSError:
        return "unreadable"
    stamp = datetime.fromtimestamp(mtime, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{hashlib.sha256(source).hexdigest()[:10]}@{stamp}"


def _files_declaring(files: list[Path], wanted: set[str]) -> list[Path] | None:
    """The files that declare every name of ``wanted`` (``name = "..."`` in a class body), read
    without importing anything; None when some name is declared in none of them."""
    found: set[str] = set()
    chosen = []
    for file in files:
        declared = _declared_names(file) & wanted
        if declared:
            found |= declared
            chosen.append(file)
    return chosen if found == wanted else None


def _declared_names(file: Path) -> set[str]:
    """The string literals assigned to ``name`` in the class bodies of ``file`` (none if unparsable)."""
    try:
        tree = ast.parse(file.read_bytes(), filename=str(file))
    except (OSError, SyntaxError, ValueError):
        return set()
    names = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        for stmt in node.body:
            if isinstance(stmt, ast.Assign):
                targets, value = stmt.targets, stmt.value
            elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
                targets, value = [stmt.target], stmt.value
            else:
                continue
            if (isinstance(value, ast.Constant) and isinstance(value.value, str)
                    and any(isinstance(t, ast.Name) and t.id == "name" for t in targets)):
                names.add(value.value)
    return names


class _on_sys_path:
    """Put a folder first on sys.path while its modules import, then restore the import state.

    Helper modules the strategies imported by plain name are dropped from sys.modules
    afterwards, so another folder with a helper of the same name gets its own.
    """

    def __init__(self, directory: Path) -> None:
        self.entry = str(directory.resolve())
        self.prefix = os.path.join(self.entry, "")
        self.before: set[str] = set()

    def __enter__(self) -> None:
        self.before = set(sys.modules)
        sys.path.insert(0, self.entry)

    def __exit__(self, *exc: object) -> None:
        try:
            sys.path.remove(self.entry)
        except ValueError:
            pass
        for key in set(sys.modules) - self.before:
            module_file = getattr(sys.modules[key], "__file__", None) or ""
            if module_file.startswith(self.prefix) and not key.startswith("_livetrader_strategy_"):
                del sys.modules[key]


def _import_file(file: Path, registry: StrategyRegistry) -> ModuleType | None:
    """Import ``file`` under a unique module name; record a problem and return None on failure."""
    module_name = f"_livetrader_strategy_{next(_module_counter)}_{_NON_WORD.sub('_', file.stem)}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        registry.problems.append(StrategyProblem(file, 1, "cannot be imported as a Python module"))
        return None
    module = importlib.util.module_from_spec(spec)
    # Registered before executing so dataclasses, pickling and typing can find the module.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - any failure to import a user's module is reported with its file and line
        del sys.modules[module_name]
        line, message = _import_failure(file, exc)
        registry.problems.append(StrategyProblem(file, line, message))
        return None
    return module


def _import_failure(file: Path, exc: BaseException) -> tuple[int, str]:
    """The line of ``file`` an import failure points at, and a one-line description."""
    if isinstance(exc, SyntaxError) and exc.filename and _same_file(exc.filename, file):
        return exc.lineno or 1, f"syntax error: {exc.msg}"
    line = _line_in_file(exc, file) or 1
    if isinstance(exc, SyntaxError):
        # The syntax error is in a helper module this file imports.
        return line, f"syntax error in {exc.filename}:{exc.lineno}: {exc.msg}"
    return line, f"failed to import: {type(exc).__name__}: {exc}"


def _line_in_file(exc: BaseException, file: Path) -> int | None:
    """The innermost traceback line that lies in ``file``, if any."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if _same_file(frame.filename, file):
            line = frame.lineno
    return line


def _same_file(filename: str, file: Path) -> bool:
    try:
        return Path(filename).resolve() == file.resolve()
    except OSError:
        return False


def _collect(module: ModuleType, file: Path, registry: StrategyRegistry) -> None:
    """Check and register every Strategy subclass ``module`` defines itself."""
    locations = _class_locations(file)
    seen: set[int] = set()
    for obj in list(vars(module).values()):
        if not _is_own_strategy(obj, module) or id(obj) in seen:
            continue
        seen.add(id(obj))
        where = locations.get(obj.__qualname__)
        line = where.line if where else _fallback_line(obj)
        info = StrategyInfo(obj, file, line)
        # Only a name the class declares itself counts: an inherited one belongs to the parent.
        own_name = obj.__dict__.get("name")
        own_name = own_name if isinstance(own_name, str) and own_name else None
        problems = [
            StrategyProblem(file, where.attrs.get(attr, line) if where else line, message, own_name)
            for attr, message in _declaration_problems(obj)
        ]
        if problems:
            registry.problems.extend(problems)
            if own_name:
                registry.rejected.setdefault(own_name, info)
            continue
        _register(info, registry)


def _is_own_strategy(obj: object, module: ModuleType) -> bool:
    return (
        isinstance(obj, type)
        and issubclass(obj, Strategy)
        and obj is not Strategy
        and obj.__module__ == module.__name__
    )


def _register(info: StrategyInfo, registry: StrategyRegistry) -> None:
    """Add ``info`` unless its name is taken; a duplicate makes the name unusable."""
    first = registry.strategies.pop(info.name, None) or registry.rejected.get(info.name)
    if first is None:
        registry.strategies[info.name] = info
        return
    # Neither class may run under a shared name: which one --strategy picks would be an accident.
    registry.rejected.setdefault(info.name, first)
    registry.problems.append(
        StrategyProblem(
            info.file,
            info.line,
            f"strategy name '{info.name}' is already used by {first.cls.__name__} at "
            f"{first.file}:{first.line}; give each strategy its own name",
            info.name,
        )
    )


def _declaration_problems(cls: type[Strategy]) -> list[tuple[str, str]]:
    """What is wrong with a strategy class's declaration, as (attribute, message) pairs."""
    label = cls.__name__
    problems: list[tuple[str, str]] = []
    name = cls.__dict__.get("name")
    if name is None:
        problems.append(("", f'{label} has no name; add e.g. name = "my-strategy" to the class'))
    elif not isinstance(name, str) or not _NAME_RE.match(name):
        problems.append(("name", f"{label}.name {name!r} must be a non-empty string of letters, digits, '.', '_', '-'"))
    if getattr(cls, "get_signal", None) is Strategy.get_signal:
        problems.append(("", f"{label} has no get_signal; define async def get_signal(self, ctx)"))
    elif not callable(cls.get_signal):
        problems.append(("get_signal", f"{label}.get_signal must be a method"))
    elif inspect.isasyncgenfunction(cls.get_signal) or inspect.isgeneratorfunction(cls.get_signal):
        problems.append(("get_signal", f"{label}.get_signal must return a Signal or None, not yield"))
    if not isinstance(cls.interval, str) or cls.interval not in SIGNAL_INTERVALS:
        problems.append(
            ("interval", f"{label}.interval {cls.interval!r} is invalid; use one of {' '.join(SIGNAL_INTERVALS)}")
        )
    if cls.risk is not None and (not isinstance(cls.risk, str) or not cls.risk):
        problems.append(("risk", f"{label}.risk {cls.risk!r} must be a risk profile name or None"))
    for hook in CALLBACKS:
        value = getattr(cls, hook, None)
        if value is not None and not callable(value):
            problems.append((hook, f"{label}.{hook} must be a method"))
    return problems


class _ClassLocation(NamedTuple):
    line: int
    attrs: dict[str, int]


def _class_locations(file: Path) -> dict[str, _ClassLocation]:
    """Map each class's qualified name in ``file`` to its line and its attributes' lines."""
    try:
        tree = ast.parse(file.read_bytes(), filename=str(file))
    except (OSError, SyntaxError, ValueError):
        return {}
    found: dict[str, _ClassLocation] = {}

    def visit(nodes: list[ast.stmt], prefix: str) -> None:
        for node in nodes:
            if isinstance(node, ast.ClassDef):
                qualname = prefix + node.name
                found[qualname] = _ClassLocation(node.lineno, _attribute_lines(node))
                visit(node.body, qualname + ".")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(node.body, f"{prefix}{node.name}.<locals>.")

    visit(tree.body, "")
    return found


def _attribute_lines(node: ast.ClassDef) -> dict[str, int]:
    """The line of each attribute assigned or method defined directly in a class body."""
    lines: dict[str, int] = {}
    for stmt in node.body:
        if isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                if isinstance(target, ast.Name):
                    lines[target.id] = stmt.lineno
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            lines[stmt.target.id] = stmt.lineno
        elif isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            lines[stmt.name] = stmt.lineno
    return lines


def _fallback_line(cls: type) -> int:
    """A class's line when the source cannot be parsed (e.g. a class built dynamically)."""
    try:
        return inspect.getsourcelines(cls)[1]
    except (OSError, TypeError):
        return 1


def _class_file(cls: type) -> tuple[Path, int]:
    """Where ``cls`` is defined, as well as can be told."""
    module = sys.modules.get(cls.__module__)
    filename = getattr(module, "__file__", None)
    if not filename:
        return Path(f"<{cls.__module__}>"), 1
    file = Path(filename)
    where = _class_locations(file).get(cls.__qualname__)
    return file, where.line if where else _fallback_line(cls)


def instantiate(cls: type[Strategy]) -> Strategy:
    """Create an instance of ``cls``; a constructor error becomes StrategyLoadError with file:line."""
    try:
        return cls()
    except (Exception, SystemExit) as exc:  # a sys.exit() in __init__ must not end the daemon as a success
        file, line = _class_file(cls)
        line = _line_in_file(exc, file) or line
        raise StrategyLoadError(
            f"{file}:{line}: strategy '{cls.name}' could not be created: {type(exc).__name__}: {exc}"
        ) from exc


# -- tunable parameters (``livetrader walk``) ----------------------------------------------------

#: The types a tunable parameter may have; ``--param`` values are read as these.
PARAM_TYPES: dict[str, type] = {"int": int, "float": float, "bool": bool, "str": str}
#: Class attributes every strategy has: never parameters.
_NOT_PARAMS = frozenset({"name", "interval", "risk", "cost", "signal_is_async", "callbacks", "manage_kind"})


class Param(NamedTuple):
    """One tunable parameter of a strategy: a plain annotated class attribute (``fast: int = 10``)."""

    name: str
    type: type
    default: Any


def params_of(cls: type) -> dict[str, Param]:
    """The tunable parameters of a strategy class, by name, in declaration order (parents first).

    A parameter is a class attribute with an annotation of ``int``, ``float``, ``bool`` or ``str``
    and a default value of that type, declared on the strategy class or a parent below ``Strategy``
    (``fast: int = 10``). ``ClassVar`` annotations, private names (``_x``) and the settings every
    strategy has (``name``, ``interval``, ``risk``, ``cost``) are not parameters. Works with and
    without ``from __future__ import annotations`` (string annotations).
    """
    found: dict[str, Param] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or klass is Strategy:
            continue
        for attr, annotation in vars(klass).get("__annotations__", {}).items():
            if attr.startswith("_") or attr in _NOT_PARAMS:
                continue
            kind = PARAM_TYPES.get(annotation if isinstance(annotation, str) else getattr(annotation, "__name__", ""))
            if kind is None or attr not in vars(klass):
                continue
            default = vars(klass)[attr]
            if isinstance(default, kind) and (kind is bool or not isinstance(default, bool)):
                found[attr] = Param(attr, kind, default)
    return found


def instantiate_with(cls: type[Strategy], params: dict[str, Any]) -> Strategy:
    """An instance of ``cls`` with ``params`` overriding its declared parameters' defaults.

    The values are set on the instance before ``__init__`` runs, so ``__init__`` sees them (and may
    refuse a combination by raising). Raises StrategyLoadError for a name ``cls`` does not declare
    or a value of the wrong type, and for a constructor error (with file:line, as ``instantiate``).
    """
    declared = params_of(cls)
    for key, value in params.items():
        param = declared.get(key)
        if param is None:
            known = ", ".join(declared) or "none"
            raise StrategyLoadError(f"strategy '{cls.name}' has no parameter {key!r} (its parameters: {known})")
        if not isinstance(value, param.type) or (param.type is not bool and isinstance(value, bool)):
            if not (param.type is float and isinstance(value, int) and not isinstance(value, bool)):
                raise StrategyLoadError(f"strategy '{cls.name}': parameter {key!r} is {param.type.__name__}, "
                                        f"not {value!r}")
    obj = cls.__new__(cls)
    for key, value in params.items():
        setattr(obj, key, float(value) if declared[key].type is float else value)
    try:
        obj.__init__()  # type: ignore[misc]
    except (Exception, SystemExit) as exc:  # a sys.exit() in __init__ is the strategy's failure
        file, line = _class_file(cls)
        line = _line_in_file(exc, file) or line
        raise StrategyLoadError(
            f"{file}:{line}: strategy '{cls.name}' could not be created with {params}: {type(exc).__name__}: {exc}"
        ) from exc
    return obj
