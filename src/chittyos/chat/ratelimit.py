"""Per-user request rate limit: at most N model-calling requests in any 60 seconds.

A sliding log per user, in this process (one process serves every client: the stdio server,
or the one HTTP container). ``CHITTY_RATE_LIMIT_PER_MINUTE=0`` turns it off.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import datetime

from chittyos.db.models import utcnow
from chittyos.errors import RateLimited

__all__ = ["RateLimiter"]

_WINDOW_S = 60.0
_SWEEP_EVERY = 4096


class RateLimiter:
    """``admit(user_id)`` records a request or raises ``RateLimited`` saying when to retry."""

    def __init__(self, *, per_minute: int, clock: Callable[[], datetime] = utcnow) -> None:
        if per_minute < 0:
            raise ValueError("per_minute must be 0 (off) or more")
        self._limit = per_minute
        self._clock = clock
        self._seen: dict[str, deque[float]] = {}
        self._admitted = 0

    @property
    def per_minute(self) -> int:
        return self._limit

    def admit(self, user_id: str) -> None:
        """Count one request of ``user_id``. Raises ``RateLimited`` (and counts nothing) when the
        user already made ``per_minute`` requests in the last 60 s."""
        if self._limit == 0:
            return
        now = self._clock().timestamp()
        log = self._seen.setdefault(user_id, deque())
        while log and log[0] <= now - _WINDOW_S:
            log.popleft()
        if len(log) >= self._limit:
            retry_s = log[0] + _WINDOW_S - now
            raise RateLimited(
                f"user_id {user_id!r}: more than {self._limit} requests per minute "
                f"(CHITTY_RATE_LIMIT_PER_MINUTE); retry in {retry_s:.1f} s"
            )
        log.append(now)
        self._admitted += 1
        if self._admitted % _SWEEP_EVERY == 0:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        """Forget users with no request in the window, so the map does not grow forever."""
        for user in [u for u, log in self._seen.items() if not log or log[-1] <= now - _WINDOW_S]:
            del self._seen[user]
