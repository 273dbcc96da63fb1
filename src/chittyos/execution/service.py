"""ExecutionService: the spine of DESIGN.md.

::

    validate request, pick tier and provider          nothing written if any of this fails
    admit  the spend guard (chat/): per-user rate limit     RateLimited: nothing written
    tx 1   insert secure_executions row (pending), hold the budget's worst case in the same
           transaction                                BudgetExceeded: rolled back, nothing written
    slot   wait for one of CHITTY_MAX_CONCURRENT_EXECUTIONS slots; mark executing
    run    tier.run(...)                              no transaction held
    tx 2   row -> completed, publish ExecutionCompleted (subscribers write in this same tx)
           or, on any failure, row -> failed with the reason, publish ExecutionFailed (with the
           model call that was sent and failed, when the provider failed, so that its usage row
           is written in this same tx)
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

import anyio
import structlog
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from chittyos.db.models import SecureExecution, utcnow
from chittyos.db.uow import UnitOfWork
from chittyos.errors import ChittyError, NotFound
from chittyos.events import EventBus, ExecutionCompleted, ExecutionFailed
from chittyos.execution.models import (
    ExecutionFailedError,
    ExecutionRequest,
    ExecutionView,
    parse_execution_id,
    sha256_hex,
)
from chittyos.llm import Completion, FailedCall, failed_call
from chittyos.llm.selection import ProviderSelector
from chittyos.signing import Sealer
from chittyos.tiers import ProgressFn, TierContext, TierOutcome, TierRegistry, TierRequest, no_progress

__all__ = ["SEALED_COLUMNS", "SEALED_TABLE", "ExecutionService"]

log = structlog.get_logger("chittyos.execution")


class SpendGuard(Protocol):
    """Admission of an execution's model calls (implemented in ``chat/``, wired in ``app.py``).

    ``admit`` counts the request against the user's rate (raises ``RateLimited``). ``reserve``
    runs inside tx 1 and holds the worst case of ``calls`` model calls on the user's budgets
    (raises ``BudgetExceeded``); the ExecutionCompleted / ExecutionFailed subscriber settles it.
    """

    def admit(self, user_id: str) -> None: ...

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
    ) -> None: ...


class ExecutionService:
    def __init__(
        self,
        *,
        uow: UnitOfWork,
        tiers: TierRegistry,
        providers: ProviderSelector,
        bus: EventBus,
        sealer: Sealer,
        default_model: str,
        default_max_tokens: int,
        max_prompt_chars: int,
        max_concurrent: int,
        clock: Callable[[], datetime] = utcnow,
        spend_guard: SpendGuard | None = None,
    ) -> None:
        self._uow = uow
        self._guard = spend_guard
        self._tiers = tiers
        self._providers = providers
        self._bus = bus
        self._sealer = sealer
        self._default_model = default_model
        self._default_max_tokens = default_max_tokens
        self._max_prompt_chars = max_prompt_chars
        self._slots = anyio.Semaphore(max_concurrent)
        self._clock = clock

    async def execute(
        self,
        request: ExecutionRequest,
        *,
        client_session: Any | None = None,
        progress: ProgressFn = no_progress,
    ) -> ExecutionView:
        """Run one execution and return its view (status ``completed``).

        ``client_session`` is the MCP session of the caller, used for sampling when no
        OpenAI-compatible provider is configured.

        Raises ``InvalidInput`` / ``TierNotAvailable`` / ``ConfigurationError`` /
        ``RateLimited`` / ``BudgetExceeded`` before anything is written, and
        ``ExecutionFailedError`` (naming the execution id) when the recorded
        execution failed; its row then holds status ``failed`` and the reason.
        """
        request.validate(max_prompt_chars=self._max_prompt_chars)
        tier = self._tiers.get(request.security_level)
        provider = self._providers.select(client_session)
        model = request.model or self._default_model
        execution_id = uuid.uuid4()
        if self._guard is not None:
            self._guard.admit(request.user_id)

        # A free slot (the common case) lets the row start life as executing: one transaction
        # fewer on the hot path. Only an execution that has to queue is ever seen as pending.
        try:
            self._slots.acquire_nowait()
            held = True
        except anyio.WouldBlock:
            held = False
        now = self._clock()
        try:
            row = SecureExecution(
                id=execution_id,
                user_id=request.user_id,
                prompt=self._seal("prompt", execution_id, request.prompt),
                prompt_hash=sha256_hex(request.prompt),
                security_level=request.security_level,
                execution_method=tier.execution_method,
                case_id=request.case_id,
                label=request.label,
                model=model,
                status="executing" if held else "pending",
                created_at=now,
                started_at=now if held else None,
                chain_facts=[],
                metadata_={"create_evidence": request.create_evidence},
                # Every column set here, so the detached row never needs a reload (no lazy SELECT).
                **dict.fromkeys(_UNSET_ON_INSERT),
            )
            async with self._uow.begin() as session:
                session.add(row)
                if self._guard is not None:
                    await self._guard.reserve(
                        session,
                        execution_id=execution_id,
                        user_id=request.user_id,
                        model=model,
                        prompt=request.prompt,
                        max_tokens=request.max_tokens or self._default_max_tokens,
                        provider=provider.name,
                        # a tier that asks the model more than once (verified) may say how often
                        calls=getattr(tier, "max_model_calls", 1),
                    )
        except BaseException:
            if held:
                self._slots.release()
            raise

        calls: tuple[Completion, ...] = ()
        failed: tuple[FailedCall, ...] = ()
        try:
            try:
                if not held:
                    await self._slots.acquire()
                    held = True
                    async with self._uow.begin() as session:
                        row = await session.merge(row, load=False)
                        row.status, row.started_at = "executing", self._clock()
                outcome = await tier.run(
                    TierRequest(
                        execution_id=str(execution_id),
                        prompt=request.prompt,
                        user_id=request.user_id,
                        model=model,
                        max_tokens=request.max_tokens or self._default_max_tokens,
                    ),
                    TierContext(provider=provider, progress=progress),
                )
                calls = outcome.calls
            finally:
                if held:
                    self._slots.release()
            return await self._complete(row, request, outcome)
        except ExecutionFailedError:
            raise
        except ChittyError as exc:
            reason = str(exc)
            sent = failed_call(exc, model=model, provider=provider.name)
            failed = () if sent is None else (sent,)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._fail(execution_id, request, "cancelled by the client", calls)
            raise
        except Exception as exc:  # a bug, not a user error: keep the row honest, log the rest
            log.exception("execution crashed", execution_id=str(execution_id))
            reason = f"internal error ({type(exc).__name__}); see the server log"
        await self._fail(execution_id, request, reason, calls, failed)
        raise ExecutionFailedError(str(execution_id), reason)

    async def fail_abandoned(self, *, older_than_s: float) -> int:
        """Mark ``pending``/``executing`` rows created more than ``older_than_s`` seconds ago as
        failed: their process stopped (killed, crashed) before it could finish or fail them.
        Returns how many. Called at start-up; the age keeps live runs of other replicas safe."""
        cutoff = self._clock() - timedelta(seconds=older_than_s)
        async with self._uow.begin() as session:
            result = await session.execute(
                update(SecureExecution)
                .where(SecureExecution.status.in_(("pending", "executing")), SecureExecution.created_at < cutoff)
                .values(
                    status="failed",
                    completed_at=self._clock(),
                    error_message="abandoned: the server stopped before the execution finished",
                )
            )
        count = int(getattr(result, "rowcount", 0) or 0)
        if count:
            log.warning("marked abandoned executions failed", count=count, older_than_s=older_than_s)
        return count

    async def status(self, execution_id: str) -> ExecutionView:
        """The current view of one execution. Raises ``InvalidInput`` / ``NotFound``."""
        key = parse_execution_id(execution_id)
        async with self._uow.read() as session:
            row = await session.get(SecureExecution, key)
            if row is None:
                raise NotFound("execution", key)
            return self._view(row)

    # -- internals ------------------------------------------------------------------------

    def _seal(self, column: str, execution_id: uuid.UUID, text: str | None) -> str | None:
        if text is None:
            return None
        return self._sealer.seal(text, table=SEALED_TABLE, column=column, row_id=execution_id)

    def _view(self, row: SecureExecution) -> ExecutionView:
        def open_text(column: str, value: str | None) -> str | None:
            if value is None:
                return None
            return self._sealer.open(value, table=SEALED_TABLE, column=column, row_id=row.id).decode("utf-8")

        return ExecutionView.from_row(row, open_text=open_text)

    async def _complete(
        self, inserted: SecureExecution, request: ExecutionRequest, outcome: TierOutcome
    ) -> ExecutionView:
        execution_id = inserted.id
        now = self._clock()
        output_hash = sha256_hex(outcome.output)
        last = outcome.calls[-1] if outcome.calls else None
        try:
            async with self._uow.begin() as session:
                # The row as tx 1 left it (or as _set moved it to executing): attach it without a
                # SELECT. Subscribers that need it get it from the identity map with session.get.
                row = await session.merge(inserted, load=False)
                row.status = "completed"
                row.completed_at = now
                row.chatgpt_response = self._seal("chatgpt_response", execution_id, outcome.chatgpt_response)
                row.fortress_output = self._seal("fortress_output", execution_id, outcome.fortress_output)
                row.fortress_signature = outcome.fortress_signature
                row.verification_status = outcome.verification_status
                row.provider = last.provider if last else None
                row.provider_request_id = last.request_id if last else None
                row.usage = _sum_usage(outcome.calls)
                row.metadata_ = {
                    **(row.metadata_ or {}),
                    **outcome.metadata,
                    "output_hash": output_hash,
                    "answered_model": last.model if last else None,
                    "latency_ms": round(sum(c.latency_ms for c in outcome.calls), 3),
                }
                await self._bus.publish(
                    ExecutionCompleted(
                        execution_id=str(execution_id),
                        user_id=request.user_id,
                        security_level=request.security_level,
                        case_id=request.case_id,
                        label=request.label,
                        create_evidence=request.create_evidence,
                        prompt_hash=row.prompt_hash,
                        output=outcome.output,
                        output_hash=output_hash,
                        calls=outcome.calls,
                        fortress_signature=outcome.fortress_signature,
                        completed_at=now,
                    ),
                    session,
                )
                await session.flush()
                view = self._view(row)
        except ChittyError as exc:
            reason = f"recording the completion failed: {exc}"
        except Exception as exc:
            log.exception("recording the completion crashed", execution_id=str(execution_id))
            reason = f"recording the completion failed: internal error ({type(exc).__name__})"
        else:
            return view
        await self._fail(execution_id, request, reason, outcome.calls)
        raise ExecutionFailedError(str(execution_id), reason)

    async def _fail(
        self,
        execution_id: uuid.UUID,
        request: ExecutionRequest,
        reason: str,
        calls: tuple[Completion, ...],
        failed: tuple[FailedCall, ...] = (),
    ) -> None:
        """Mark the row failed and publish ExecutionFailed, in one transaction: the subscribers'
        rows (usage of ``calls`` and ``failed``) land with the failed status or not at all."""
        now = self._clock()
        # The provider that was asked last: a failed call comes after any answered one.
        last: Completion | FailedCall | None = failed[-1] if failed else calls[-1] if calls else None
        async with self._uow.begin() as session:
            await session.execute(
                update(SecureExecution)
                .where(SecureExecution.id == execution_id)
                .values(
                    status="failed",
                    completed_at=now,
                    error_message=reason,
                    provider=last.provider if last else None,
                    provider_request_id=last.request_id if last else None,
                    usage=_sum_usage(calls),
                )
            )
            await self._bus.publish(
                ExecutionFailed(
                    execution_id=str(execution_id),
                    user_id=request.user_id,
                    security_level=request.security_level,
                    reason=reason,
                    calls=calls,
                    failed_at=now,
                    failed_calls=failed,
                ),
                session,
            )
        log.info("execution failed", execution_id=str(execution_id), reason=reason)


SEALED_TABLE = "secure_executions"
SEALED_COLUMNS = ("prompt", "chatgpt_response", "fortress_output")
"""Stored as AES-256-GCM envelopes bound to (table, column, row id); hashes are over plaintext."""

_UNSET_ON_INSERT = (
    "completed_at",
    "chatgpt_response",
    "fortress_output",
    "fortress_signature",
    "verification_status",
    "error_message",
    "provider",
    "provider_request_id",
    "usage",
)


def _sum_usage(calls: tuple[Completion, ...]) -> dict[str, int] | None:
    reported = [c.usage for c in calls if c.usage is not None]
    if not reported:
        return None
    prompt = sum(u.prompt_tokens for u in reported)
    completion = sum(u.completion_tokens for u in reported)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cached_tokens": sum(u.cached_tokens for u in reported),
        "total_tokens": prompt + completion,
    }
