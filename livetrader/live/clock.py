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

    origin_wall: int
    origin_sim: int
    speed: float = 1.0

    def now_ms(self) -> int:
        """Simulated time in integer ms UTC."""
        return self.origin_sim + int((time.time() * 1000 - self.origin_wall) * self.speed)

    def to_dict(self) -> dict[str, float]:
        """The numbers that define the timeline, for persisting it."""
        return {"origin_wall": self.origin_wall, "origin_sim": self.origin_sim, "speed": self.speed}


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
