"""The control socket in-process (docs/behaviour.md §14): its mode, a stale one replaced, a data
directory deeper than a unix socket address holds, the one-line protocol and its refusals.
The daemon's side of it is tested end to end in tests/test_control_e2e.py."""

from __future__ import annotations

import asyncio
import socket
import stat

import pytest

from livetrader.live.commands import Commands, Request
from livetrader.service.control_socket import ControlServer, NoDaemon, ask, socket_path


def test_a_request_names_a_known_command_and_whom_it_is_for():
    assert Request.of({"command": "close", "signal_id": "abc"}) == Request("close", "abc")
    assert Request.of({"command": "pause", "symbol": "BTCUSDT", "strategy": "x"}) == \
        Request("pause", None, "BTCUSDT", "x")
    assert "unknown command 'sell'" in str(Request.of({"command": "sell", "signal_id": "abc"}))
    assert Request.of({"command": "close"}) == "name a signal id, or a symbol and its strategy"
    assert Request.of({"command": "pause", "signal_id": "abc"}) == "pause names a symbol and its strategy"
    assert Request.of({"command": "close", "signal_id": 3}) == "signal_id must be a non-empty string"
    assert Request.of([1]) == "a request is one JSON object"


async def _serving(data_dir, *requests):
    """Start the server on ``data_dir`` (a daemon running no pair), send ``requests`` from a
    thread as the command does, and return the answers."""
    server = ControlServer(data_dir, Commands(list, lambda: 0))
    await server.start()
    path = socket_path(data_dir)
    mode = stat.S_IMODE(path.stat().st_mode)
    try:
        answers = [await asyncio.to_thread(ask, data_dir, request, timeout=5) for request in requests]
    finally:
        await server.close()
    return mode, answers


def test_the_socket_is_private_replaces_a_stale_one_and_answers_one_line(tmp_path):
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(socket_path(tmp_path)))  # left by a killed daemon: nobody listens on it
    stale.close()
    mode, answers = asyncio.run(_serving(tmp_path, {"command": "close", "symbol": "BTCUSDT", "strategy": "x"},
                                         {"command": "explode"}))
    assert mode == 0o600
    assert answers[0] == {"ok": False, "code": 2, "message": "this daemon runs no pair BTCUSDT / x (it runs: none): "
                                                              "nothing changed"}
    assert answers[1]["code"] == 2 and "unknown command 'explode'" in answers[1]["message"]
    assert not socket_path(tmp_path).exists(), "removed at exit"
    with pytest.raises(NoDaemon, match="no daemon runs on .*: nothing changed"):
        ask(tmp_path, {"command": "close", "signal_id": "abc"})


def test_a_data_directory_deeper_than_a_socket_address_still_works(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    assert len(str(socket_path(deep))) > 108
    mode, answers = asyncio.run(_serving(deep, {"command": "cancel", "signal_id": "abc"}))
    assert mode == 0o600 and answers[0]["code"] == 2 and "no open position or scheduled signal with id 'abc'" \
        in answers[0]["message"]
