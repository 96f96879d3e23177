"""The metrics endpoint in-process: binding rules, /metrics in Prometheus' text format, /health
following the watchdog's own condition."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from livetrader.config import MetricsConfig
from livetrader.errors import ConfigError, MetricsPortError
from livetrader.events import ErrorEvent, EventBus
from livetrader.service.metrics import Metrics, MetricsServer, parse_listen
from livetrader.service.systemd import PairProgress, WatchdogGate


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def served():
    servers = []

    def serve(metrics: Metrics, listen: str = "127.0.0.1:0", **options) -> str:
        server = MetricsServer.bind(MetricsConfig(listen=listen, **options), metrics)
        server.start()
        servers.append(server)
        host, port = server.address
        return f"http://127.0.0.1:{port}"

    yield serve
    for server in servers:
        server.close()


def families(text: str) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_health_follows_the_watchdog_condition_and_names_the_late_pair(served):
    now = time.monotonic()
    progress = {"BTCUSDT/dip": PairProgress(now, 5.0), "ETHUSDT/dip": PairProgress(now, 5.0)}
    gate = WatchdogGate(lambda: progress, now)
    metrics = Metrics()
    metrics.health = gate.check
    url = served(metrics)
    assert get(url + "/health")[0] == 503  # not ready yet: still catching up
    metrics.ready = True
    assert get(url + "/health") == (200, "ok\n")
    progress["ETHUSDT/dip"] = PairProgress(time.monotonic() - 6.0, 5.0)  # its last tick is past its deadline
    code, text = get(url + "/health")
    assert code == 503 and "ETHUSDT/dip" in text and "BTCUSDT" not in text
    metrics.refresh()  # the daemon refreshes about once a second, between sweeps
    scraped = families(get(url + "/metrics")[1])
    assert scraped["livetrader_healthy"][0].value == 0
    progress["ETHUSDT/dip"] = PairProgress(time.monotonic(), 5.0)  # it ticked again
    assert get(url + "/health") == (200, "ok\n")
    metrics.refresh()
    assert families(get(url + "/metrics")[1])["livetrader_healthy"][0].value == 1
    assert get(url + "/nothing")[0] == 404


def test_metrics_parse_and_count_errors_and_transitions_from_the_bus(served):
    import asyncio

    from livetrader.core.signal import TickResult

    metrics = Metrics()
    bus = EventBus()
    metrics.listen(bus)
    bus.emit("error", ErrorEvent("BTCUSDT", "dip", "sim", 0, "no price", "source"))
    bus.emit("error", ErrorEvent("BTCUSDT", "dip", "sim", 0, "no price", "source"))
    bus.emit("signal_live", TickResult("opened", "BTCUSDT", "dip", "sim", 0, 1.0))
    bus.emit("signal_live", TickResult("active", "BTCUSDT", "dip", "sim", 0, 1.0))  # not a transition
    asyncio.run(asyncio.sleep(0))
    scraped = families(get(served(metrics) + "/metrics")[1])
    errors = {s.labels["kind"]: s.value for s in scraped["livetrader_tick_errors"] if s.name.endswith("_total")}
    assert errors == {"source": 2.0}
    moves = {s.labels["kind"]: s.value for s in scraped["livetrader_transitions"] if s.name.endswith("_total")}
    assert moves == {"opened": 1.0}
    for name in ("process_start_time_seconds", "livetrader_ready", "livetrader_event_bus_dropped_events",
                 "livetrader_decision_lag_seconds", "livetrader_sweep_duration_seconds",
                 "livetrader_commit_log_flush_seconds", "livetrader_unknown_orders",
                 "livetrader_reconciliation_discrepancies", "livetrader_notifications_dropped"):
        assert name in scraped, name


def test_a_non_loopback_address_needs_allow_remote_and_is_warned_about(served, logs):
    with pytest.raises(ConfigError, match="allow_remote = true"):
        MetricsServer.bind(MetricsConfig(listen="0.0.0.0:0"), Metrics())
    url = served(Metrics(), "0.0.0.0:0", allow_remote=True)
    assert get(url + "/metrics")[0] == 200
    assert any("beyond this machine" in e["event"] for e in logs)


def test_an_occupied_port_is_a_clear_error():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        with pytest.raises(MetricsPortError, match=f"127.0.0.1:{port}: the port is in use"):
            MetricsServer.bind(MetricsConfig(listen=f"127.0.0.1:{port}"), Metrics())
    finally:
        taken.close()


@pytest.mark.parametrize("listen", ["9464", "localhost", "127.0.0.1:99999", ":9464"])
def test_listen_must_be_host_and_port(listen):
    with pytest.raises(ConfigError, match="HOST:PORT"):
        parse_listen(listen)


def test_ipv6_loopback_is_loopback():
    assert parse_listen("[::1]:9464") == ("::1", 9464)


def test_the_shipped_alerts_name_only_metrics_the_daemon_exposes(served):
    import re
    from pathlib import Path

    deploy = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
    metrics = Metrics()
    metrics.channels = lambda: {"phone": (1, 0, 0)}  # a daemon with a channel, after an error:
    metrics.tick_errors.labels("source").inc()  # families without samples are not written at all
    text = get(served(metrics) + "/metrics")[1]
    exposed = set(re.findall(r"^# TYPE (\S+) ", text, re.M))  # the classic text format names counters *_total
    alerts = (deploy / "alerts.yml").read_text()
    named = set(re.findall(r"\b(livetrader_[a-z_]+)", alerts))
    assert named and named <= exposed, named - exposed
    for alert in ("LivetraderDown", "LivetraderPairLate", "LivetraderUnknownOrders",
                  "LivetraderReconciliationDiscrepancy"):
        assert f"alert: {alert}\n" in alerts
    assert "rule_files:\n  - alerts.yml" in (deploy / "prometheus.yml").read_text()
