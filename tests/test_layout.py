"""The package's shape: no import cycle (module-level or inside functions), and the floors point down."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "livetrader"

#: Floors, bottom to top (docs/behaviour.md and DESIGN): a module imports only from its floor or below.
FLOORS = [
    {"core"},
    {"errors", "config", "redaction", "logs", "sweep", "credentials"},
    {"store", "strategy", "events"},
    {"market", "execution", "backtest", "report"},
    {"live"},
    {"service"},
    {"cli"},
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every livetrader module and the livetrader modules it imports anywhere (functions included)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                submodules = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
                # `from livetrader import redaction` imports a submodule, not the package's own names.
                targets = submodules if submodules else [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            found.update(t for t in targets if t in modules and t != name)
        graph[name] = found
    return graph


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_import_cycle():
    graph = _imports()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_imports_point_down_the_floors_and_nothing_imports_the_cli():
    floor = {name: level for level, names in enumerate(FLOORS) for name in names}
    wrong = []
    for module, targets in _imports().items():
        mine = floor.get(_top(module))
        for target in targets:
            theirs = floor.get(_top(target))
            if mine is None or theirs is None:
                continue
            if theirs > mine:
                wrong.append(f"{module} imports {target} (a higher floor)")
    assert not wrong, "\n".join(sorted(wrong))


def _livetrader_imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {name for name in found if name == "livetrader" or name.startswith("livetrader.")}


def test_the_benchmarks_do_not_import_the_cli():
    # The daemon's constants live in service/; the CLI only parses, calls and prints.
    bench = PACKAGE.parent / "bench"
    wrong = [f"{path.relative_to(bench.parent)} imports {name}" for path in sorted(bench.rglob("*.py"))
             for name in sorted(_livetrader_imports_of(path)) if name.startswith("livetrader.cli.app")]
    assert not wrong, "\n".join(wrong)


def test_a_pair_is_given_its_event_window_and_store():
    # The pair knows the report window and the files only through the protocols it declares.
    imported = _imports()["livetrader.live.pair"]
    assert not [m for m in imported if _top(m) == "report"], imported
