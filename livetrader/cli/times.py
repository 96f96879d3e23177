"""Times as the command line reads them: ISO-8601 in, integer ms UTC inside (printing: ``livetrader.core.format``)."""

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


def default_range(now: datetime | None = None, days: int = 7) -> tuple[int, int]:
    """The last ``days`` whole days before today 00:00 UTC."""
    now = now or datetime.now(UTC)
    end = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return int((end - timedelta(days=days)).timestamp() * 1000), int(end.timestamp() * 1000)
