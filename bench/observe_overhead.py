"""Benchmark: what watching a daemon costs the live sweep (metrics served and scraped, a notification channel on).

The same process layout as ``bench/live_scale.py`` (its ``_drive``: ``Engine.run`` with a loop per
pair on a manual clock, persistence on, daemon-style logging, the status file every second), run
twice in one process, one after the other on fresh data directories: once plain, once with what
``[metrics]`` and ``[notify.*]`` add (``service.observers.Observers``): the metrics snapshot read
between sweeps every second, the ``/metrics`` endpoint on 127.0.0.1 scraped every second by a
separate process (a scraper in this process would compete for the GIL, which Prometheus does
not), ``/health`` judged on the same watchdog gate as the daemon's, and a webhook channel taking
every kind of message whose endpoint accepts connections and never answers (the worst notifier:
every request waits for its timeout, the queue overflows). Plain and observed runs alternate (two
rounds), so the drift of a shared machine falls on both. Reported: the sweep medians and p99s of
both, pooled, and their ratio (target <= 1.10).
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Result, median, percentile
from bench.harness import ORIGIN_MS, build_engine, daemon_logging, layout
from bench.live_scale import _drive

TARGET_RATIO = 1.10

SCRAPER = """
import sys, time, urllib.request
url = sys.argv[1]
while True:
    try:
        urllib.request.urlopen(url, timeout=10).read()
    except Exception:
        pass
    time.sleep(1.0)
"""


def _observers(engine, webhook_port: int):  # type: ignore[no-untyped-def]
    """Metrics on a free loopback port and one webhook channel to a port that never answers."""
    from livetrader.config import MetricsConfig, NotifyConfig
    from livetrader.service.metrics import Metrics, MetricsServer
    from livetrader.service.notify import Notifications
    from livetrader.service.notify.senders import build_channel
    from livetrader.service.observers import Observers

    metrics = Metrics()
    server = MetricsServer.bind(MetricsConfig(listen="127.0.0.1:0"), metrics)
    channel = build_channel(NotifyConfig(name="bench", type="webhook", url=f"http://127.0.0.1:{webhook_port}/hook",
                                         timeout_seconds=10.0), {})
    return Observers(metrics, server, Notifications([channel]))


async def _drive_observed(engine, clock, warmup: int, minutes: int, observers) -> dict:  # type: ignore[no-untyped-def]
    from livetrader.service.systemd import PairProgress, WatchdogGate

    def progress() -> dict[str, PairProgress]:  # as service.daemon builds it
        deadline = engine.watchdog_deadline()
        return {f"{p.symbol}/{p.strategy_name}": PairProgress(p.progress_at, deadline)
                for p in engine.pairs if p.state != "parked" and not p.stopping.is_set()}

    observers.attach(engine, WatchdogGate(progress, time.monotonic()).check)
    observers.ready("bench")
    # Let the scraper process finish starting and the first scrape and refresh pass: a daemon runs for
    # months, and a quick run's few timed minutes would otherwise overlap that start-up alone.
    await asyncio.sleep(1.5)
    try:
        return await _drive(engine, clock, warmup, minutes)
    finally:
        observers.stopping()


def measure(pairs: int, warmup: int, minutes: int, observed: bool) -> dict:
    """One run of ``pairs`` pairs, plain or observed: the sweep times and what the observers counted."""
    with tempfile.TemporaryDirectory(prefix="livetrader-bench-observe-") as tmp:
        data_dir = Path(tmp) / "data"
        with daemon_logging(Path(tmp) / "daemon.log"):
            engine, clock = build_engine(data_dir, layout(pairs), ORIGIN_MS, warmup + minutes + 1)
            extra: dict = {}
            try:
                if not observed:
                    run = asyncio.run(_drive(engine, clock, warmup, minutes))
                else:
                    hanging = socket.socket()  # listens, never accepts: every request hangs until its timeout
                    hanging.bind(("127.0.0.1", 0))
                    hanging.listen(1024)
                    observers = _observers(engine, hanging.getsockname()[1])
                    assert observers.server is not None and observers.notifications is not None
                    port = observers.server.address[1]
                    scraper = subprocess.Popen([sys.executable, "-c", SCRAPER, f"http://127.0.0.1:{port}/metrics"])
                    try:
                        run = asyncio.run(_drive_observed(engine, clock, warmup, minutes, observers))
                    finally:
                        scraper.kill()
                        scraper.wait()
                        channel = observers.notifications.channels[0]
                        observers.notifications.close(0.1)  # its request hangs for 10 s: do not wait for it
                        extra = {"notifications_dropped": channel.dropped, "notification_failures": channel.failures}
                        observers.server.close()
                        hanging.close()
            finally:
                asyncio.run(engine.close())
    times = run["times"]
    return {"sweep_median_seconds": median(times), "sweep_p99_seconds": percentile(times, 99),
            "sweep_seconds_per_minute": times, "transitions_per_minute_median": median(run["transitions"]), **extra}


def run(sizes: tuple[int, ...] = (10_000,), warmup: int = 5, minutes: int = 15, rounds: int = 2) -> Result:
    """Plain and observed runs of each size, alternated ``rounds`` times in this one process; the ratio of
    the medians of their pooled sweep times (alternating spreads the drift of a shared machine over both)."""
    out = Result("observe", "Live sweep with metrics + a hanging notification channel, against without (same run)")
    for n in sizes:
        runs: dict[str, list[dict]] = {"plain": [], "observed": []}
        for _ in range(rounds):
            for variant in runs:
                runs[variant].append(measure(n, warmup, minutes, observed=variant == "observed"))
        pooled = {variant: [t for r in results for t in r["sweep_seconds_per_minute"]]
                  for variant, results in runs.items()}
        plain, observed = median(pooled["plain"]), median(pooled["observed"])
        ratio = observed / plain
        out.details[str(n)] = {"runs": runs, "ratio": ratio,
                               "run_medians": {v: [r["sweep_median_seconds"] for r in rs] for v, rs in runs.items()}}
        target = TARGET_RATIO if n >= 10_000 else None
        out.add(f"{n:,} pairs: sweep median, plain", plain, "s")
        out.add(f"{n:,} pairs: sweep median, observed", observed, "s")
        out.add(f"{n:,} pairs: sweep p99, plain", percentile(pooled["plain"], 99), "s")
        out.add(f"{n:,} pairs: sweep p99, observed", percentile(pooled["observed"], 99), "s")
        out.add(f"{n:,} pairs: observed / plain (median)", ratio, "x", target)
    out.notes.append(f"{rounds} rounds of a plain then an observed run, each {warmup} warm-up and {minutes} timed "
                     "minutes on a fresh data directory, sweep times pooled per variant; the webhook endpoint never "
                     "answers (timeout 10 s), /metrics is scraped every second by another process")
    return out
