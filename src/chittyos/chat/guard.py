"""The spend side of executions: the same rate limit, budgets and usage rows as chat calls.

``ExecutionService`` calls ``admit`` before anything is written and ``reserve`` inside its first
transaction. The ExecutionCompleted / ExecutionFailed subscribers (registered in ``app.py``) run
inside the transaction that ends the execution: one usage row per model call, then the settle of
the hold. Holds are kept by execution id in this process, which runs both ends of an execution;
an execution that held nothing (no budget applied when it started) is charged to none.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
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
from chittyos.llm import ChatMessage, Completion

__all__ = ["ExecutionSpendGuard"]


class ExecutionSpendGuard:
    def __init__(self, *, limiter: RateLimiter, budgets: BudgetService, recorder: UsageRecorder) -> None:
        self._limiter = limiter
        self._budgets = budgets
        self._recorder = recorder
        self._holds: dict[uuid.UUID, Hold] = {}

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
        hold = await self._budgets.reserve_in(
            session,
            user_id=user_id,
            model=model,
            provider=provider,
            prompt_tokens=estimate_prompt_tokens([ChatMessage(role="user", content=prompt)]),
            max_tokens=max_tokens,
            calls=calls,
            execution_id=execution_id,
        )
        if hold is not None:
            self._holds[execution_id] = hold
            # tx 1 may still roll back (then no execution exists to settle the hold)
            event.listen(session.sync_session, "after_rollback", self._forget(execution_id), once=True)

    async def on_execution_completed(self, event: ExecutionCompleted, session: AsyncSession) -> None:
        await self._record(
            session, event.execution_id, event.user_id, event.calls, "completed", event.completed_at
        )

    async def on_execution_failed(self, event: ExecutionFailed, session: AsyncSession) -> None:
        await self._record(session, event.execution_id, event.user_id, event.calls, "failed", event.failed_at)

    async def _record(
        self,
        session: AsyncSession,
        execution_id: str,
        user_id: str,
        calls: tuple[Completion, ...],
        status: Literal["completed", "failed"],
        at: datetime,
    ) -> None:
        key = uuid.UUID(execution_id)
        # The row is in the session already when the execution completed (no SELECT then).
        row = await session.get(SecureExecution, key)
        requested = (row.model if row is not None else None) or (calls[-1].model if calls else "")
        cost = await self._recorder.record_execution(
            session,
            execution_id=key,
            user_id=user_id,
            requested_model=requested,
            calls=calls,
            status=status,
            at=at,
        )
        hold = self._holds.get(key)
        if hold is not None:
            await self._budgets.settle(session, user_id=user_id, model=requested, cost_usd=cost, hold=hold)
            # A later subscriber may still fail and roll tx 2 back; the execution is then failed
            # and published again, so the hold is forgotten only once its settle is committed.
            event.listen(session.sync_session, "after_commit", self._forget(key), once=True)

    def _forget(self, execution_id: uuid.UUID) -> Callable[[Any], None]:
        def forget(_session: Any) -> None:
            self._holds.pop(execution_id, None)

        return forget
