"""A real daemon on ``sim`` with metrics and two notification channels, against local servers standing
in for Telegram and a webhook: what they receive, retries, secrets, /metrics against the journal,
/health flipping while the event loop is held past the watchdog deadline and back."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from daemon import run, start, stop, wait_for, workdir
from notify_receiver import serve
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.e2e

TOKEN = "555111:AAE2eFakeTelegramToken_zz"
HMAC_KEY = "e2e-hmac-key-never-shown"

# Blocks the event loop once, a fixed real time after its first ask: every pair is then late.
LATE_BLOCKER = '''
import os, time
from livetrader import Strategy

class LateBlocker(Strategy):
    name = "late-blocker"
    interval = "1m"
    first = None
    done = False

    async def get_signal(self, ctx):
        now = time.monotonic()
        LateBlocker.first = LateBlocker.first or now
        if not LateBlocker.done and now - LateBlocker.first > float(os.environ["BLOCK_AFTER"]):
            LateBlocker.done = True
            time.sleep(float(os.environ["BLOCK_SECONDS"]))  # noqa: ASYNC251 - the point
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def journal_count(data_dir: Path, event: str) -> int:
    count = 0
    for path in (data_dir / "journal").glob("*.jsonl"):
        for line in path.read_text().splitlines():
            if line.startswith("{") and f'"event":"{event}"' in line:
                count += 1
    return count


def scrape(url: str) -> dict[str, dict[tuple, float]]:
    code, text = get(url + "/metrics")
    assert code == 200, text
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_a_daemon_notifies_and_is_scraped_and_its_health_follows_the_watchdog(tmp_path):
    cwd = workdir(tmp_path)
    (cwd / "strategies" / "late_blocker.py").write_text(LATE_BLOCKER)
    # Telegram answers 429 (Retry-After 0.2 s), then 500, then works: the first message arrives late, not lost.
    telegram = serve(script=[(429, {"Retry-After": "0.2"}, 0), (500, {}, 0)])
    hook = serve()
    stuck = serve(default=(200, {}, 60.0))  # accepts every request and never answers in time
    port = free_port()
    (cwd / "obs.toml").write_text(f"""
[engine]
strategy_timeout_seconds = 1
watchdog_grace_seconds = 0.5

[metrics]
listen = "127.0.0.1:{port}"

[notify.phone]
type = "telegram"
api_url = "{telegram.url}"
chat_ids = ["1001"]
events = ["closed", "daily", "lifecycle"]
retry_seconds = 0.05

[notify.ops]
type = "webhook"
url = "{hook.url}/hook"
sign = true
retry_seconds = 0.05

[notify.stuck]
type = "webhook"
url = "{stuck.url}/hook"
queue = 5
timeout_seconds = 1
""")
    url = f"http://127.0.0.1:{port}"
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "quick-long", "--strategy", "late-blocker",
                 "--speed", "20000", "--data-dir", "dump", "--config", "obs.toml",
                 LIVETRADER_NOTIFY_PHONE_TOKEN=TOKEN, LIVETRADER_NOTIFY_OPS_SECRET=HMAC_KEY,
                 BLOCK_AFTER="3.0", BLOCK_SECONDS="2.5")
    healths: list[tuple[float, int, str]] = []
    watching = threading.Event()

    def watch_health() -> None:
        while not watching.is_set():
            code, text = get(url + "/health")
            healths.append((time.monotonic(), code, text))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch_health, daemon=True)
    try:
        assert wait_for(lambda: get(url + "/health")[0] == 200, 20), "never healthy"
        watcher.start()
        data_dir = cwd / "dump"
        # /metrics against the journal: the scrape's count lies between two readings of the journal.
        assert wait_for(lambda: journal_count(data_dir, "closed") >= 3, 10)
        before = journal_count(data_dir, "opened")
        scraped = scrape(url)
        after = journal_count(data_dir, "opened")
        opened = scraped["livetrader_transitions_total"][(("kind", "opened"),)]
        assert before - 2 <= opened <= after, (before, opened, after)
        group = (("exchange", "sim"), ("strategy", "quick-long"))
        # The engine's own counts are read about once a second, between sweeps.
        assert wait_for(lambda: scrape(url)["livetrader_ticks_total"].get(group, 0) > 0, 5)
        ticks = scrape(url)["livetrader_ticks_total"][group]
        assert scraped["livetrader_ready"][()] == 1
        # The loop is held 2.5 s from 3 s after the first ask; the deadline is ~1.5 s: /health fails, then recovers.
        assert wait_for(lambda: any(code == 503 for _, code, _ in healths), 10), "/health never failed"
        assert wait_for(lambda: healths[-1][1] == 200, 10), "/health never recovered"
        # A day of the engine's clock passes within ~4.3 s at this speed: the daily summary comes.
        assert wait_for(lambda: any("Daily summary" in t for t in telegram.texts()), 10)
        final = scrape(url)
        assert final["livetrader_ticks_total"][group] > ticks
        # The stuck channel overflowed, yet no sweep waited for it: only the one the blocker held took > 1 s.
        assert final["livetrader_notifications_dropped_total"][(("channel", "stuck"),)] > 0
        sweeps = final["livetrader_sweep_duration_seconds_count"][()]
        within_a_second = final["livetrader_sweep_duration_seconds_bucket"][(("le", "1.0"),)]
        assert sweeps > 100 and sweeps - within_a_second <= 1, (sweeps, within_a_second)
    finally:
        watching.set()
        stuck.release.set()  # it answers from now on: the stop need not give it its 5 s of grace
        code, out, err = stop(proc, signal.SIGINT, timeout=30)
        telegram.close()
        hook.close()
        stuck.close()
    assert code == 0, err
    late = [text for _, c, text in healths if c == 503]
    assert all("late" in text and "BTCUSDT/" in text for text in late), late[:3]
    codes = [c for _, c, _ in healths]
    first_late = codes.index(503)
    assert 200 in codes[:first_late] and 200 in codes[first_late:], codes  # healthy, late, healthy again
    # Telegram: retried after 429 and 500, then every message arrived, on the token's path.
    statuses = [r.status for r in telegram.received]
    assert statuses[:3] == [429, 500, 200]
    assert telegram.received[1].at - telegram.received[0].at >= 0.19
    texts = telegram.texts()
    assert texts[0] == "livetrader started: 2 pairs"
    assert any(t.startswith("Closed long BTCUSDT quick-long on sim:") and "USDT)" in t and "held" in t for t in texts)
    assert not any(t.startswith("Opened") for t in texts)  # not selected for this channel
    assert "livetrader stopping" in texts  # (a position closed by the last sweep may be told after it)
    # The webhook: every kind it selected (all), signed.
    kinds = {r.json()["event"] for r in hook.accepted()}
    assert {"opened", "closed", "started", "ready", "stopping", "daily"} <= kinds
    closed = next(r.json() for r in hook.accepted() if r.json()["event"] == "closed")
    assert closed["pnl_cost"] is not None and closed["duration_ms"] == 120_000
    # Nothing secret in any body, and in no log line.
    for r in telegram.received + hook.received:
        assert TOKEN not in r.body.decode() and HMAC_KEY not in r.body.decode()
    assert TOKEN not in out + err and HMAC_KEY not in out + err
    assert json.loads((cwd / "dump" / "status.json").read_text())["state"] == "stopped"


def test_an_occupied_metrics_port_refuses_the_start_with_one_message(tmp_path):
    cwd = workdir(tmp_path)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        (cwd / "m.toml").write_text(f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
        result = run(cwd, "run", "BTCUSDT", "--strategy", "quick-long", "--speed", "6000", "--data-dir", "dump",
                     "--config", "m.toml", timeout=30)
    finally:
        taken.close()
    assert result.returncode == 1, result.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}: the port is in use" in result.stderr
    assert "Traceback" not in result.stderr
