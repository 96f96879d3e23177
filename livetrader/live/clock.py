"""Where the engine gets the time from: the wall clock, or a simulated clock N times faster.

The simulated clock is a pure function of the wall clock: ``sim = origin_sim + (wall -
origin_wall) * speed``. Persisting its three numbers lets a restarted daemon continue the
same simulated timeline, with the downtime elapsed in simulated time as well.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path


class Clock:
    """The wall clock: UTC milliseconds, and real sleeping."""

    speed: float = 1.0
    #: False for the wall clock: its times are those of the log lines' stamps.
    simulated = False

    def now_ms(self) -> int:
        """Current time in integer ms UTC."""
        return int(time.time() * 1000)

    async def sleep_until(self, when_ms: int) -> None:
        """Sleep until ``now_ms() >= when_ms`` (returns at once when already past)."""
        while True:
            remaining = when_ms - self.now_ms()
            if remaining <= 0:
                return
            await asyncio.sleep(remaining / 1000 / self.speed)

    def real_seconds(self, simulated_ms: float) -> float:
        """How many real seconds ``simulated_ms`` of this clock's time take."""
        return simulated_ms / 1000 / self.speed


@dataclass(slots=True)
class SimClock(Clock):
    """A clock running ``speed`` times faster than the wall clock from ``origin_sim`` on."""

    simulated = True
    origin_wall: int
    origin_sim: int
    speed: float = 1.0

    def now_ms(self) -> int:
        """Simulated time in integer ms UTC."""
        return self.origin_sim + int((time.time() * 1000 - self.origin_wall) * self.speed)

    def to_dict(self) -> dict[str, float]:
        """The numbers that define the timeline, for persisting it."""
        return {"origin_wall": self.origin_wall, "origin_sim": self.origin_sim, "speed": self.speed}


class ManualClock(Clock):
    """A clock that moves only when its owner sets ``now`` (tests, benchmarks): it never wakes a
    loop by itself; whoever drives it fires each minute boundary (``Metronome.fire``)."""

    speed = 1.0
    simulated = True

    def __init__(self, now_ms: int) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        """The time its owner set."""
        return self.now

    def real_seconds(self, simulated_ms: float) -> float:
        """Never by itself: only a fired boundary ends a wait."""
        return float("inf") if simulated_ms > 0 else 0.0


def saved_clock(data_dir: Path) -> SimClock | None:
    """The simulated timeline saved in ``data_dir`` by a run with ``--speed``, if any."""
    from livetrader.store.atomic import read_json
    from livetrader.store.layout import CLOCK_FILE

    try:
        data = read_json(Path(data_dir) / CLOCK_FILE)
        if not isinstance(data, dict):
            return None  # damaged, as below
        return SimClock(int(data["origin_wall"]), int(data["origin_sim"]), float(data["speed"]))
    except FileNotFoundError:
        return None
    except Exception:  # noqa: BLE001 - a damaged clock file only loses the simulated timeline: a new one starts
        return None


#: The flag that lets a run continue a data directory written on the other clock.
SWITCH_CLOCK_FLAG = "--switch-clock"


def check_timeline(data_dir: Path, simulated: bool, switch: bool = False) -> None:
    """Refuse to run on a data directory written on the other clock, unless ``switch``.

    A ``--speed`` demo leaves ``state/clock.json`` (its simulated timeline, usually far ahead
    of the wall clock); a real run leaves journals and no such file. A real-time run on a
    demo's directory would close the demo's positions at times before they opened and take
    its signal ids again; a simulated run on a real run's directory would trade simulated
    minutes into a real journal. Reads only: raises ``TimelineMismatch`` with nothing changed.
    """
    from livetrader.errors import TimelineMismatch
    from livetrader.store.journal import JOURNAL_DIR, JOURNAL_SUFFIX
    from livetrader.store.layout import CLOCK_FILE, PAIRS_DIR

    if switch:
        return
    data_dir = Path(data_dir)
    demo = (data_dir / CLOCK_FILE).exists()
    if not simulated and demo:
        saved = saved_clock(data_dir)
        when = ""
        if saved is not None:
            ahead = (saved.now_ms() - int(time.time() * 1000)) / 3_600_000
            where = f"{ahead:.1f} hours ahead of" if ahead >= 0 else f"{-ahead:.1f} hours behind"
            when = f" (its simulated clock, at {saved.speed:g}x, is now {where} the real one)"
        raise TimelineMismatch(
            f"data directory {data_dir} holds a simulated run (--speed or a --candles replay){when}; a real-time run "
            "there would stamp its trades among the simulated ones and close their positions at times before they "
            f"opened. Use another --data-dir, or move or delete {data_dir}, or pass {SWITCH_CLOCK_FLAG} to continue "
            "this directory on the real clock. Nothing was changed.")
    if simulated and not demo:
        try:
            journals = [p for p in (data_dir / JOURNAL_DIR).glob(f"*{JOURNAL_SUFFIX}") if p.stat().st_size > 0]
            snapshots = any((data_dir / PAIRS_DIR).glob("*.json"))
        except OSError:  # an unreadable directory: the start reports it next, naming the file
            return
        if journals or snapshots:
            raise TimelineMismatch(
                f"data directory {data_dir} holds a real-time run ({len(journals)} pair journal(s)); a simulated run "
                "(--speed or a --candles replay) there would trade simulated minutes into its real journal. Use "
                "another --data-dir (without one, simulated runs use ./dump-demo), or move or delete "
                f"{data_dir}, or pass {SWITCH_CLOCK_FLAG} to continue this directory on a simulated clock. "
                "Nothing was changed.")
