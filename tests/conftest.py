"""Shared test set-up: no daemon outlives the test that started it, even when the test fails."""

import pytest
from daemon import kill_leftovers


@pytest.fixture(autouse=True)
def _no_leftover_daemons():
    yield
    kill_leftovers()
