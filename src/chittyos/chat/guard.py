"""The spend side of executions: the same rate limit, budgets and usage rows as chat calls.

``ExecutionService`` calls ``admit`` before anything is written and ``reserve`` inside its first
transaction. The ExecutionCompleted / ExecutionFailed subscribers (registered in ``app.py``) run
inside the transaction that ends the execution: one usage row per model call (the answered ones,
and on failure the call that was sent and failed, priced as ``chat.usage`` says), then the settle
of the hold. Holds, and the token bound of one call they were made for, are kept by execution id
in this process, which runs both ends of an execution; an execution that held nothing (no budget
applied when it started) is charged to none.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from chittyos.chat.budgets import BudgetService, Hold
from chittyos.chat.ratelimit import RateLimiter
from chittyos.chat.tokens import estimate_prompt_tokens
from chittyos.chat.usage import UsageRecorder
from chittyos.db.models import SecureExecution
from chittyos.events import ExecutionCompleted, ExecutionFailed
from chittyos.llm import ChatMessage, Completion, FailedCall, TokenUsage

__all__ = ["ExecutionSpendGuard"]


@dataclass(frozen=True)
class _Reserved:
    """What ``reserve`` set aside for one execution: the hold (None: no budget applied) and the
    most tokens one of its calls can be billed for (an estimate of a call that got no answer)."""

    hold: Hold | None
    bound: TokenUsage


class ExecutionSpendGuard:
    def __init__(self, *, limiter: RateLimiter, budgets: BudgetService, recorder: UsageRecorder) -> None:
        self._limiter = limiter
        self._budgets = budgets
        self._recorder = recorder
        self._reserved: dict[uuid.UUID, _Reserved] = {}

    def admit(self, user_id: str) -> None:
        """Raises ``RateLimited``."""
        self._limiter.admit(user_id)

    async def reserve(
        self,
        session: AsyncSession,
        *,
        execution_id: uuid.UUID,
        user_id: str,
        model: str,
        prompt: str,
        max_tokens: int,
        provider: str,
        calls: int,
    ) -> None:
        """Hold the worst case of ``calls`` calls on the user's budgets. Raises ``BudgetExceeded``."""
        bound = TokenUsage(
            prompt_tokens=estimate_prompt_tokens([ChatMessage(role="user", content=prompt)]),
            completion_tokens=max_tokens,
        )
        hold = await self._budgets.reserve_in(
            session,
            user_id=user_id,
            model=model,
            provider=provider,
            prompt_tokens=bound.prompt_tokens,
            max_tokens=bound.completion_tokens,
            calls=calls,
            execution_id=execution_id,
        )
        self._reserved[execution_id] = _Reserved(hold=hold, bound=bound)
        # tx 1 may still roll back (then no execution exists to settle the hold)
        event.listen(session.sync_session, "after_rollback", self._forget(execution_id), once=True)

    async def on_execution_completed(self, event: ExecutionCompleted, session: AsyncSession) -> None:
        await self._record(
            session, event.execution_id, event.user_id, event.calls, (), "completed", event.completed_at
        )

    async def on_execution_failed(self, event: ExecutionFailed, session: AsyncSession) -> None:
        await self._record(
            session,
            event.execution_id,
            event.user_id,
            event.calls,
            event.failed_calls,
            "failed",
            event.failed_at,
        )

    async def _record(
        self,
        session: AsyncSession,
        execution_id: str,
        user_id: str,
        calls: tuple[Completion, ...],
        failed: tuple[FailedCall, ...],
        status: Literal["completed", "failed"],
        at: datetime,
    ) -> None:
        key = uuid.UUID(execution_id)
        reserved = self._reserved.get(key)
        # The row is in the session already when the execution completed (no SELECT then).
        row = await session.get(SecureExecution, key)
        requested = (
            (row.model if row is not None else None)
            or (calls[-1].model if calls else None)
            or (failed[-1].model if failed else "")
        )
        charge = await self._recorder.record_execution(
            session,
            execution_id=key,
            user_id=user_id,
            requested_model=requested,
            calls=calls,
            failed=failed,
            bound=None if reserved is None else reserved.bound,
            status=status,
            at=at,
        )
        if reserved is not None and reserved.hold is not None:
            await self._budgets.settle(
                session, user_id=user_id, model=requested, cost_usd=charge, hold=reserved.hold
            )
        # A later subscriber may still fail and roll tx 2 back; the execution is then failed
        # and published again, so the reservation is forgotten only once its settle is committed.
        event.listen(session.sync_session, "after_commit", self._forget(key), once=True)

    def _forget(self, execution_id: uuid.UUID) -> Callable[[Any], None]:
        def forget(_session: Any) -> None:
            self._reserved.pop(execution_id, None)

        return forget
