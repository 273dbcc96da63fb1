"""Budget windows in UTC: where the current one started and when it resets. Pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

__all__ = ["EPOCH", "Window", "window_end", "window_start"]

Window = Literal["day", "month", "total"]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""The start of the one window a ``total`` budget has."""


def window_start(window: str, at: datetime) -> datetime:
    """The start of the ``window`` that holds ``at`` (aware): UTC midnight, the 1st of the UTC
    month, or ``EPOCH`` for ``total``."""
    utc = at.astimezone(UTC)
    if window == "day":
        return utc.replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "month":
        return utc.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if window == "total":
        return EPOCH
    raise ValueError(f"unknown budget window {window!r}")


def window_end(window: str, at: datetime) -> datetime | None:
    """When the window that holds ``at`` resets (exclusive end); None for ``total``."""
    start = window_start(window, at)
    if window == "day":
        return start + timedelta(days=1)
    if window == "month":
        if start.month == 12:
            return start.replace(year=start.year + 1, month=1)
        return start.replace(month=start.month + 1)
    return None
