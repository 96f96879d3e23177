"""Shared test set-up: no daemon outlives the test that started it, even when the test fails;
and only a test marked ``e2e`` may start a process, so ``pytest -m "not e2e"`` runs every
test that starts none."""

import subprocess

import pytest
from daemon import kill_leftovers


@pytest.fixture(autouse=True)
def _no_leftover_daemons():
    yield
    kill_leftovers()


@pytest.fixture
def logs():
    """What livetrader logs during the test (``livetrader.logs``), one structlog event dict per line.

    ``str(logs)`` is the text to search, as ``caplog.text`` is for the standard ``logging``.
    """
    from structlog.testing import capture_logs

    with capture_logs() as captured:
        yield captured


@pytest.fixture(autouse=True)
def _processes_only_in_e2e_tests(request, monkeypatch):
    """Fail, loudly, a test that starts a process (``daemon.start``/``run``, any ``subprocess``)
    without ``@pytest.mark.e2e``: unmarked, it would slow down the fast set, ``-m "not e2e"``."""
    if request.node.get_closest_marker("e2e") is not None:
        return
    name = request.node.nodeid

    def refuse(self, args, *rest, **kwargs):
        # pytest.fail raises an OutcomeException, which a test's `except Exception` cannot swallow.
        pytest.fail(f"{name} starts a process ({args!r}) but is not marked e2e: add @pytest.mark.e2e "
                    "(or `pytestmark = pytest.mark.e2e` for a module of such tests)", pytrace=False)

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)
