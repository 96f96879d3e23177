"""Notification channels against real local HTTP servers: what is sent, retries, drops, secrets, config."""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest
from notify_receiver import serve

from livetrader import redaction
from livetrader.config import NotifyConfig, parse_config
from livetrader.errors import ConfigError
from livetrader.events import ErrorEvent
from livetrader.service.notify import Notifications
from livetrader.service.notify.channel import retry_after_of
from livetrader.service.notify.format import Message
from livetrader.service.notify.senders import SIGNATURE_HEADER, build_channel

TOKEN = "987654:AAFakeBotTokenForTests_x1"
HMAC_KEY = "whsec-very-secret-key"


@pytest.fixture(autouse=True)
def _forget_secrets():
    yield
    redaction.clear()


def telegram_config(url: str, **extra) -> NotifyConfig:
    return NotifyConfig(name="phone", type="telegram", api_url=url, chat_ids=("11", "22"), retry_seconds=0.02,
                        **extra)


def webhook_config(url: str, **extra) -> NotifyConfig:
    return NotifyConfig(name="ops", type="webhook", url=url + "/hook", retry_seconds=0.02, **extra)


def wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_telegram_sends_each_message_to_each_chat_through_the_bot_api_and_never_shows_the_token():
    receiver = serve()
    try:
        channel = build_channel(telegram_config(receiver.url), {"LIVETRADER_NOTIFY_PHONE_TOKEN": TOKEN})
        channel.start()
        channel.offer(Message("closed", f"Closed long BTCUSDT: +1.00% (token would be {TOKEN})"))
        assert wait_until(lambda: len(receiver.accepted()) == 2)
        channel.close(2.0)
    finally:
        receiver.close()
    paths = {r.path for r in receiver.accepted()}
    assert paths == {f"/bot{TOKEN}/sendMessage"}
    bodies = [r.json() for r in receiver.accepted()]
    assert sorted(b["chat_id"] for b in bodies) == ["11", "22"]
    assert all(TOKEN not in r.body.decode() for r in receiver.received)
    assert all("***" in b["text"] for b in bodies)
    assert TOKEN in redaction.secrets()  # registered: every log line and status file scrubs it too
    assert channel.sent == 2 and channel.dropped == 0


def test_429_and_5xx_are_retried_honouring_retry_after_and_timeouts_are_retried():
    receiver = serve(script=[(429, {"Retry-After": "0.3"}, 0), (503, {}, 0), (200, {}, 1.0), (200, {}, 0)])
    try:
        config = replace(webhook_config(receiver.url), timeout_seconds=0.2)
        channel = build_channel(config, {})
        channel.start()
        channel.offer(Message("opened", "Opened long ETHUSDT"))
        assert wait_until(lambda: channel.sent == 1)
        channel.close(1.0)
    finally:
        receiver.close()
    attempts = receiver.received
    assert [r.status for r in attempts] == [429, 503, 200, 200]  # the third answered after the client's timeout
    assert attempts[1].at - attempts[0].at >= 0.29, "Retry-After: 0.3 was not honoured"
    assert channel.failures == 3 and channel.dropped == 0 and channel.sent == 1


def test_a_refused_message_is_not_retried_and_a_failing_channel_is_reported_once(logs):
    receiver = serve(default=(400, {}, 0))
    try:
        channel = build_channel(webhook_config(receiver.url), {})
        channel.start()
        for n in range(5):
            channel.offer(Message("errors", f"error {n}"))
        assert wait_until(lambda: channel.dropped == 5)
        receiver.default = (200, {}, 0)
        channel.offer(Message("errors", "fine again"))
        assert wait_until(lambda: channel.sent == 1)
        channel.close(1.0)
    finally:
        receiver.close()
    assert len(receiver.received) == 6  # one attempt each: a 400 cannot be fixed by retrying
    failing = [e for e in logs if "is failing" in e["event"]]
    assert len(failing) == 1, failing
    assert any("delivers again" in e["event"] for e in logs)


def test_a_hanging_endpoint_never_blocks_offer_and_overflow_drops_the_oldest_counted():
    receiver = serve(default=(200, {}, 30.0))
    try:
        config = replace(webhook_config(receiver.url), queue=3, timeout_seconds=5.0)
        channel = build_channel(config, {})
        channel.start()
        began = time.perf_counter()
        for n in range(50):
            channel.offer(Message("opened", f"message {n}"))
        offered_in = time.perf_counter() - began
        assert wait_until(lambda: len(receiver.received) == 1)
        left = [item.body for item in channel.queue]
        channel.close(0.2)
    finally:
        receiver.close()
    assert offered_in < 0.05, f"offering 50 messages took {offered_in:.3f} s"
    assert channel.dropped >= 47 - 1  # the one in flight aside, 3 stay queued, the rest dropped
    assert [b"message 47" in b or b"message 48" in b or b"message 49" in b for b in left] == [True] * len(left)


def test_webhook_templates_and_hmac_signature():
    receiver = serve()
    try:
        channels = [build_channel(replace(webhook_config(receiver.url), name=t, template=t, sign=True),
                                  {f"LIVETRADER_NOTIFY_{t.upper()}_SECRET": HMAC_KEY})
                    for t in ("json", "discord", "slack")]
        for channel in channels:
            channel.start()
            channel.offer(Message("closed", "Closed long BTCUSDT", {"symbol": "BTCUSDT", "pnl_percentage": 1.5}))
        assert wait_until(lambda: len(receiver.accepted()) == 3)
        for channel in channels:
            channel.close(1.0)
    finally:
        receiver.close()
    shapes = {}
    for r in receiver.accepted():
        expected = "sha256=" + hmac.new(HMAC_KEY.encode(), r.body, hashlib.sha256).hexdigest()
        assert r.headers[SIGNATURE_HEADER] == expected
        assert HMAC_KEY not in r.body.decode()
        shapes[tuple(sorted(r.json()))] = r.json()
    assert {"content": "Closed long BTCUSDT"} in shapes.values()  # Discord
    assert {"text": "Closed long BTCUSDT"} in shapes.values()  # Slack
    ours = shapes[("event", "pnl_percentage", "symbol", "text")]
    assert ours["event"] == "closed" and ours["pnl_percentage"] == 1.5


def test_errors_are_summarised_not_sent_one_per_failing_tick():
    receiver = serve()
    clock = [100.0]
    try:
        channel = build_channel(replace(webhook_config(receiver.url), error_interval_seconds=60), {})
        hub = Notifications([channel], monotonic=lambda: clock[0])
        hub.start()
        for minute in range(30):
            hub.on_error(ErrorEvent("BTCUSDT", "dip", "sim", minute * 60_000, f"no price {minute}", "source"))
        clock[0] += 61
        hub.on_error(ErrorEvent("ETHUSDT", "dip", "sim", 31 * 60_000, "strategy raised", "strategy"))
        assert wait_until(lambda: len(receiver.accepted()) == 2)
        hub.close(1.0)
    finally:
        receiver.close()
    first, digest = (r.json() for r in receiver.accepted())
    assert first["count"] == 1 and "no price 0" in first["text"]
    assert digest["count"] == 30 and digest["by_kind"] == {"source": 29, "strategy": 1}
    assert "ETHUSDT/dip: strategy raised" in digest["text"]


def test_retry_after_forms():
    assert retry_after_of({"Retry-After": "7"}, b"") == 7.0
    assert retry_after_of({}, b'{"ok":false,"parameters":{"retry_after":3}}') == 3.0  # Telegram's body
    assert 0 <= retry_after_of({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, b"") <= 0.0001
    assert retry_after_of({}, b"not json") is None


# --- configuration ------------------------------------------------------------------------------


def test_notify_and_metrics_sections_are_parsed_and_checked():
    config = parse_config({
        "metrics": {"listen": "127.0.0.1:9500"},
        "notify": {"phone": {"type": "telegram", "chat_ids": [123, "456"], "events": ["closed", "daily"]},
                   "ops": {"type": "webhook", "url": "https://example.invalid/x", "template": "slack"}},
    })
    assert config.metrics is not None and config.metrics.listen == "127.0.0.1:9500"
    assert config.notify["phone"].chat_ids == ("123", "456") and config.notify["phone"].events == ("closed", "daily")
    assert config.notify["ops"].template == "slack"
    assert parse_config({}).metrics is None  # off unless configured


@pytest.mark.parametrize(("table", "says"), [
    ({"type": "telegram", "chat_ids": ["1"], "token": "123:abc"}, "LIVETRADER_NOTIFY_PHONE_TOKEN"),
    ({"type": "webhook", "url": "https://x.invalid", "secret": "k"}, "LIVETRADER_NOTIFY_PHONE_SECRET"),
    ({"type": "telegram"}, "chat_ids is required"),
    ({"type": "pager", "chat_ids": ["1"]}, "notify.phone.type must be one of"),
    ({"type": "webhook", "url": "ftp://x"}, "http:// or https://"),
    ({"type": "webhook", "url": "https://x.invalid", "events": ["opend"]}, "notify.phone.events"),
    ({"type": "webhook", "url": "https://x.invalid", "retires": 3}, "unknown key notify.phone.retires"),
])
def test_bad_notify_tables_are_refused_with_a_clear_message(table, says):
    with pytest.raises(ConfigError, match=None) as caught:
        parse_config({"notify": {"phone": table}})
    assert says in str(caught.value)


def test_a_missing_token_refuses_the_start_and_a_credentials_file_must_be_private(tmp_path: Path):
    config = telegram_config("http://127.0.0.1:1")
    with pytest.raises(ConfigError, match="LIVETRADER_NOTIFY_PHONE_TOKEN"):
        build_channel(config, {})
    secret_file = tmp_path / "telegram.toml"
    secret_file.write_text(f'token = "{TOKEN}"\n')
    os.chmod(secret_file, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        build_channel(replace(config, credentials_file=secret_file), {})
    os.chmod(secret_file, 0o600)
    channel = build_channel(replace(config, credentials_file=secret_file), {})
    assert channel.prepare(Message("closed", "x"))[0].url.endswith(f"/bot{TOKEN}/sendMessage")
    assert TOKEN in redaction.secrets()


# --- what the engine shows between sweeps: parked, degraded, discrepancies, orders, stops, halts, the day ---


def test_observe_tells_each_change_of_a_real_engine_once(tmp_path: Path):
    import asyncio
    from types import SimpleNamespace

    from daemon import FIXTURE_STRATEGIES

    from livetrader.config import Config
    from livetrader.core.halt import Halt
    from livetrader.core.orders import Order
    from livetrader.events import EventBus
    from livetrader.live.clock import ManualClock
    from livetrader.live.engine import Engine
    from livetrader.strategy.base import load_strategies

    receiver = serve()
    origin = 1_704_067_200_000  # 2024-01-01T00:00Z
    clock = ManualClock(origin)
    engine = Engine(Config(), load_strategies(FIXTURE_STRATEGIES), clock=clock, bus=EventBus(),
                    data_dir=tmp_path / "data")
    engine.add_pair("BTCUSDT", "always-long")
    try:
        channel = build_channel(webhook_config(receiver.url), {})
        hub = Notifications([channel])
        hub.start()
        pair = engine.pairs[0]
        hub.observe(engine)  # the first look: nothing to tell about a healthy pair
        pair.unreconciled = "the account holds 0.5 BTC, the journal none"
        pair.state = "parked"
        entry = Order("cid-1", "entry", "buy", 0.5, 1, "sig-1", origin)
        stop = Order("cid-2", "stop", "sell", 0.5, 1, "sig-1", origin, status="open", stop_price=99.5)
        pair.executor = SimpleNamespace(order=replace(entry, order_id="x1"), stop=stop)
        engine.halts.in_force = {"all": Halt("all", origin, "operator", "maintenance", False)}
        hub.observe(engine)
        hub.observe(engine)  # nothing changed: nothing more is sent
        pair.executor = SimpleNamespace(order=replace(entry, order_id="x1", status="filled"),
                                        stop=replace(stop, status="filled"))
        engine.halts.in_force = {}
        clock.now = origin + 86_400_000  # the engine's UTC day turned
        hub.observe(engine)
        assert wait_until(lambda: len(receiver.accepted()) == 9)
        hub.close(1.0)
    finally:
        receiver.close()
        asyncio.run(engine.close())
    texts = receiver.texts()
    for expected in ("Parked: BTCUSDT always-long on sim", "Reconciliation discrepancy",
                     "Order outcome unknown", "Stop placed", "HALTED (all)", "Order resolved", "Stop filled",
                     "Halt lifted (all)", "Daily summary"):
        assert sum(expected in t for t in texts) == 1, (expected, texts)


def test_every_notify_and_metrics_key_is_documented_in_the_sample_config_and_the_readme():
    import re
    import tomllib

    from livetrader.config import _METRICS_KEYS, _NOTIFY_KEYS

    root = Path(__file__).resolve().parent.parent
    sample = (root / "config" / "livetrader.toml").read_text()
    readme = (root / "README.md").read_text()
    section = readme[readme.index("## Watching from outside"):readme.index("## Benchmarks")]
    for key in [*_NOTIFY_KEYS, *_METRICS_KEYS]:
        assert re.search(rf"^# {key} = ", sample, re.M), f"config/livetrader.toml does not show {key}"
        assert f"{key}" in section, f"the README's 'Watching from outside' does not mention {key}"
    # The sample, uncommented, is a valid config (with a webhook url, as the table needs one of its kind).
    tail = sample[sample.index("# [metrics]"):]
    uncommented = "\n".join(line[2:] for line in tail.splitlines() if re.match(r"# (\[|\w+ = )", line))
    config = parse_config(tomllib.loads(uncommented))
    assert config.metrics is not None and config.notify["phone"].type == "telegram"


def test_a_webhook_url_that_is_a_secret_comes_from_the_environment_and_is_never_shown():
    secret_url_part = "T000/B000/XXXXsecretpathXXXX"
    config = parse_config({"notify": {"slack": {"type": "webhook", "template": "slack"}}}).notify["slack"]
    with pytest.raises(ConfigError, match="LIVETRADER_NOTIFY_SLACK_URL"):
        build_channel(config, {})
    url = f"https://hooks.slack.invalid/services/{secret_url_part}"
    channel = build_channel(config, {"LIVETRADER_NOTIFY_SLACK_URL": url})
    assert channel.prepare(Message("closed", "x"))[0].url == url
    assert redaction.redact(f"POST {url} failed") == "POST *** failed"
