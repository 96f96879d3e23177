"""The public API, pinned: what a user imports (README "Python API", "Writing a strategy",
docs/behaviour.md §7 and §8), that every name resolves, and that ``import livetrader`` stays light.

Changing a list here is changing the API users code against: do it on purpose.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "livetrader"

PUBLIC = {
    "livetrader": ["Context", "Exit", "Held", "Levels", "Live", "Signal", "Strategy", "__version__"],
    "livetrader.events": [
        "DoneEvent",
        "ErrorEvent",
        "PerformanceEvent",
        "RiskEvent",
        "TickResult",
        "listen_done",
        "listen_error",
        "listen_performance",
        "listen_risk",
        "listen_signal",
        "listen_signal_backtest",
        "listen_signal_live",
    ],
    "livetrader.strategy.risk": ["OpenPosition", "RiskCandidate", "RiskCheck", "risk_check"],
}

#: What importing a public module must not load: the exchange client, the CLI and terminal
#: libraries, the engine. A strategy module and every CLI call pay for these imports.
HEAVY = ("ccxt", "rich", "typer", "livetrader.live.engine", "livetrader.cli.app")


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_all_is_exactly_the_public_api(module):
    assert importlib.import_module(module).__all__ == PUBLIC[module]


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_every_public_name_resolves(module):
    loaded = importlib.import_module(module)
    for name in PUBLIC[module]:
        assert getattr(loaded, name) is not None, f"{module}.{name}"


def test_the_documented_objects_are_the_ones_exported():
    import livetrader
    from livetrader.core.signal import Signal, TickResult
    from livetrader.events import TickResult as EventsTickResult
    from livetrader.live.api import Live
    from livetrader.strategy.base import Strategy
    from livetrader.strategy.context import Context

    assert (livetrader.Signal, livetrader.Strategy, livetrader.Context, livetrader.Live) == (
        Signal, Strategy, Context, Live)
    assert EventsTickResult is TickResult


def _module_file(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] != "livetrader":
        return None
    base = PACKAGE.joinpath(*parts[1:])
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _import_time_imports(name: str) -> set[str]:
    """Modules ``name`` imports when it is imported: module level and class bodies, not function
    bodies (the lazy imports) nor ``if TYPE_CHECKING:`` blocks."""
    path = _module_file(name)
    assert path is not None, name
    found: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names if _module_file(f"{node.module}.{a.name}"))
            elif isinstance(node, ast.If):
                if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, ast.ClassDef | ast.With):
                visit(node.body)

    visit(ast.parse(path.read_text(), str(path)).body)
    return found


def _closure(root: str) -> set[str]:
    """Every module importing ``root`` loads (its packages' ``__init__`` included), by reading the source."""
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run first
        if _module_file(name) is not None:
            todo.extend(_import_time_imports(name))
    return seen


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_importing_a_public_module_stays_light_by_its_source(module):
    assert _heavy(_closure(module)) == []


def test_the_lightness_check_sees_a_heavy_import():
    # The check above must be able to fail: the CLI's app imports typer at module level.
    assert "typer" in _heavy(_closure("livetrader.cli.app"))


@pytest.mark.e2e
def test_importing_the_public_modules_in_a_fresh_interpreter_loads_nothing_heavy():
    code = ("import json, sys; import livetrader, livetrader.events, livetrader.strategy.risk; "
            "print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert _heavy(set(json.loads(done.stdout))) == []
