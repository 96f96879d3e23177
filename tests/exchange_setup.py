"""How the end-to-end tests point the daemon at the local exchange (``exchange_server.py``)."""

from __future__ import annotations

import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

from livetrader.live.clock import saved_clock


def exchange_config(cwd: Path, server: Any, **settings: Any) -> str:
    """Write ``exchange.toml`` in ``cwd``: an ``[exchanges.binance]`` section on ``server``, spot
    only, quick retries, candles polled, plus ``settings`` (strings are quoted; ``stream_base``: the
    candle stream's URL, with ``candles="stream"``); return its name for ``--config``."""
    stream = settings.pop("stream_base", None)
    urls = f'api_base = "{server.url}"' + (f', stream_base = "{stream}"' if stream else "")
    lines = ["[exchanges.binance]", 'ccxt_id = "binance"', f"urls = {{ {urls} }}",
             'options = { defaultType = "spot", fetchMarkets = { types = ["spot"] }, fetchCurrencies = false, '
             'fetchMargins = false, adjustForTimeDifference = false }',
             "retry_base_seconds = 0.01", "retry_max_seconds = 0.05"]
    # Candles by REST unless a test streams them (``candles="stream"`` with ``urls`` naming a stream_base).
    settings = {"timeout_ms": 2000, "max_retries": 1, "candles": "poll", **settings}
    lines += [f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v}" for k, v in settings.items()]
    (cwd / "exchange.toml").write_text("\n".join(lines) + "\n")
    return "exchange.toml"


def follow_daemon_clock(cwd: Path) -> Any:
    """A server clock on the daemon's simulated timeline, read from its data directory."""
    def now() -> int:
        clock = saved_clock(cwd / "dump-demo")
        return clock.now_ms() if clock else int(time.time() * 1000)
    return now


class CutConnections:
    """The exchange's port while the network is down: every connection is cut as it arrives.

    Counting them lets a test bring the exchange back only once the daemon has really met
    the outage (a slow start on a busy machine must not make the outage pass unseen).
    """

    def __init__(self, port: int) -> None:
        self.attempts = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.attempts += 1
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # a reset
            conn.close()

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept(); a bare close() would not free the port
        self.sock.close()
