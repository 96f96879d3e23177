"""The test suite's own rules: only ``e2e`` tests start processes (conftest.py enforces it, so
``pytest -m "not e2e"`` is every test that starts none), and tests import nothing from ``bench/``
(the benchmarks measure the package; the tests must not depend on them)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from daemon import run, start

TESTS = Path(__file__).resolve().parent


def test_an_unmarked_test_cannot_run_the_daemon(tmp_path):
    with pytest.raises(pytest.fail.Exception, match="not marked e2e: add @pytest.mark.e2e"):
        run(tmp_path, "--help")
    with pytest.raises(pytest.fail.Exception, match="not marked e2e"):
        start(tmp_path, "run", "BTCUSDT", "--strategy", "always-long")


def test_an_unmarked_test_cannot_start_any_process():
    with pytest.raises(pytest.fail.Exception, match="test_an_unmarked_test_cannot_start_any_process starts a process"):
        subprocess.run([sys.executable, "-c", "pass"], check=True)


def test_an_unmarked_test_cannot_swallow_the_refusal():
    try:
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    except Exception:  # noqa: BLE001 - the point: a broad except in a test must not hide the refusal
        pytest.fail("the refusal was an Exception, which a test's except clause can swallow")
    except pytest.fail.Exception:
        pass


@pytest.mark.e2e
def test_a_marked_test_can_start_a_process():
    assert subprocess.run([sys.executable, "-c", "pass"], check=True).returncode == 0


def _imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_no_test_imports_from_bench():
    offenders = sorted(
        str(path.relative_to(TESTS))
        for path in TESTS.rglob("*.py")
        if any(m == "bench" or m.startswith("bench.") for m in _imported_modules(path))
    )
    assert offenders == []
