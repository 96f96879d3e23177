"""Shared test set-up: no daemon outlives the test that started it, even when the test fails."""

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
