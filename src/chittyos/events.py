"""In-process event bus and the events of the execution path.

Handlers run synchronously, in registration order, inside the transaction that completes an
execution (they receive its session). A handler that raises rolls the whole completion back:
an execution never exists without what its subscribers record (chain facts, evidence, usage).
Handlers are registered in ``app.py`` only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from chittyos.llm import Completion, FailedCall

__all__ = ["EventBus", "ExecutionCompleted", "ExecutionFailed", "Handler"]

E = TypeVar("E")
Handler = Callable[[Any, AsyncSession], Awaitable[None]]


@dataclass(frozen=True)
class ExecutionCompleted:
    """An execution finished with an output. Times are aware UTC."""

    execution_id: str
    user_id: str
    security_level: str
    case_id: str | None
    label: str | None
    create_evidence: bool
    prompt_hash: str
    output: str
    output_hash: str
    """Hex SHA-256 of the UTF-8 output."""
    calls: tuple[Completion, ...]
    """Every model call the tier made, for usage and cost."""
    fortress_signature: str | None
    completed_at: datetime


@dataclass(frozen=True)
class ExecutionFailed:
    """An execution failed (``reason``). Times are aware UTC."""

    execution_id: str
    user_id: str
    security_level: str
    reason: str
    calls: tuple[Completion, ...]
    """Model calls that answered before the failure (a completion whose recording failed)."""
    failed_at: datetime
    failed_calls: tuple[FailedCall, ...] = ()
    """Model calls that were sent and brought back no answer (the provider failed), for usage
    and cost: a call that never went out is not in it."""


class EventBus:
    def __init__(self) -> None:
        self._handlers: dict[type, list[Handler]] = defaultdict(list)

    def subscribe(self, event_type: type[E], handler: Callable[[E, AsyncSession], Awaitable[None]]) -> None:
        self._handlers[event_type].append(handler)

    async def publish(self, event: object, session: AsyncSession) -> None:
        """Run every handler of ``type(event)`` in order; the first exception propagates."""
        for handler in self._handlers.get(type(event), ()):
            await handler(event, session)
