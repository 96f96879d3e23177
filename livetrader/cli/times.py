"""Times as the command line reads and prints them: ISO-8601 in, integer ms UTC inside."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from livetrader.errors import UsageError


def parse_time(text: str, option: str) -> int:
    """ISO-8601 date or date-time (naive = UTC) to integer ms UTC."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{option} {text!r} is not an ISO-8601 date such as 2024-01-01 or 2024-01-01T12:30Z") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)


def iso(ms: int | None) -> str:
    """Integer ms UTC as ``YYYY-mm-ddTHH:MMZ``."""
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%MZ")


def default_range(now: datetime | None = None, days: int = 7) -> tuple[int, int]:
    """The last ``days`` whole days before today 00:00 UTC."""
    now = now or datetime.now(UTC)
    end = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return int((end - timedelta(days=days)).timestamp() * 1000), int(end.timestamp() * 1000)
