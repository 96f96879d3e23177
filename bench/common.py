"""What every benchmark shares: result rows, statistics, resident memory and the machine."""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class Row:
    """One measured figure, with its target when the issue sets one.

    ``met`` is None when there is no target; ``better`` says which way the target points
    (``"max"``: the value must stay at or under ``target``; ``"min"``: at or above it).
    ``sane`` is what a sane measurement looks like: ``"positive"``, ``"nonnegative"`` (a count
    or a time that may well be nothing) or ``"finite"`` (a difference, which may be negative).
    """

    metric: str
    value: float
    unit: str
    target: float | None = None
    better: str = "max"
    sane: str = "positive"

    @property
    def is_sane(self) -> bool:
        if not (isinstance(self.value, (int, float)) and math.isfinite(self.value)):
            return False
        if self.sane == "positive":
            return self.value > 0
        return self.value >= 0 if self.sane == "nonnegative" else True

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.value <= self.target if self.better == "max" else self.value >= self.target

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["met"] = self.met
        return out


@dataclass(slots=True)
class Result:
    """What one benchmark reports: rows for the table, details for the JSON, notes for people."""

    name: str
    title: str
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, metric: str, value: float, unit: str, target: float | None = None, better: str = "max",
            sane: str = "positive") -> Row:
        row = Row(metric, value, unit, target, better, sane)
        self.rows.append(row)
        return row

    def as_dict(self) -> dict[str, Any]:
        return {"title": self.title, "rows": [r.as_dict() for r in self.rows], "details": self.details,
                "notes": self.notes}


def median(values: list[float]) -> float:
    """The median (NaN for no values)."""
    return statistics.median(values) if values else math.nan


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100), nearest-rank, so p99 is a value that was measured."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def rss_bytes() -> int:
    """Resident memory of this process, from ``/proc/self/status`` (VmRSS); 0 where unavailable."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def machine() -> dict[str, Any]:
    """The machine the numbers were measured on."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            info["memory_gb"] = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return info
