"""``logging/setLevel`` for handshake-era clients, and a level-aware way to log to the client.

The 2026-07-28 protocol revision makes log delivery a per-request opt-in that the SDK filters
itself; older clients (Claude Desktop among them) set one level per connection, which the
application must honour. The level is kept per connection, weakly, so it dies with it.
"""

from __future__ import annotations

import weakref
from typing import Any, Final

from mcp_types import EmptyResult, LoggingLevel, SetLevelRequestParams

LEVELS: Final[tuple[LoggingLevel, ...]] = (
    "debug", "info", "notice", "warning", "error", "critical", "alert", "emergency",
)
DEFAULT_LEVEL: LoggingLevel = "info"

_levels: weakref.WeakKeyDictionary[Any, LoggingLevel] = weakref.WeakKeyDictionary()


def _connection(session: Any) -> Any:
    return getattr(session, "_connection", session)


async def handle_set_level(ctx: Any, params: SetLevelRequestParams) -> EmptyResult:
    _levels[_connection(ctx.session)] = params.level
    return EmptyResult()


async def log_to_client(ctx: Any, level: LoggingLevel, message: str) -> None:
    """Send ``notifications/message`` when the connection's level lets it through."""
    session = ctx.request_context.session
    threshold = _levels.get(_connection(session), DEFAULT_LEVEL)
    if LEVELS.index(level) < LEVELS.index(threshold):
        return
    await ctx.log(level, message, logger_name="chittyos")
