"""Usage rows: one ``usage_analytics`` row per model call the server made, with its cost.

Chat calls are recorded by the chat service; executions by the spend guard's subscribers
(``chat.guard``), inside the transaction that completes or fails the execution. Every row names
the price source and version used, so a later price change never rewrites what was recorded.
The same transaction adds each row to its ``usage_daily`` sum (one upsert per user, UTC day and
model, taken in key order so that concurrent writers never deadlock).

A call that was sent and failed (a ``FailedCall``) is a row too, with status ``failed``::

    rejected (an error status)   0 tokens, cost 0, cost_status not_billed; charges nothing
    unknown (no answer known)    the upper bound the budget held for (estimated prompt tokens +
                                 max_tokens), cost_status estimated; charged, as it may be billed
    MCP sampling, either way     no tokens, cost unknown (unknown_usage), as for a sampled answer;
                                 a rejected one charges nothing, an unknown one what was held

A call refused before it was sent is no row at all.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from chittyos.chat.costing import NOT_BILLED, CallCost, CallPricer
from chittyos.db.models import UsageDaily, UsageRecord, to_money
from chittyos.llm import SAMPLING_PROVIDER, Completion, FailedCall, TokenUsage

__all__ = ["RecordedCall", "UsageRecorder"]

_INSERT = insert(UsageRecord.__table__)  # built once: the Core statement, not the ORM bulk path
_D = UsageDaily.__table__
_SUMMED = (
    "calls",
    "failed_calls",
    "unpriced_calls",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost_usd",
)


def _upsert(dialect: Any) -> Any:
    statement = dialect.insert(_D)
    return statement.on_conflict_do_update(
        index_elements=[_D.c.user_id, _D.c.day, _D.c.model],
        set_={name: _D.c[name] + statement.excluded[name] for name in _SUMMED},
    )


_ADD_DAILY = {"postgresql": _upsert(postgresql), "sqlite": _upsert(sqlite)}


_NOTHING = to_money(0)
_NO_TOKENS = TokenUsage(prompt_tokens=0, completion_tokens=0)


@dataclass(frozen=True)
class RecordedCall:
    """One priced call, ready to insert: ``row`` is its usage_analytics row.

    ``charge_usd`` is what the call charges the user's budgets (USD): its cost, but 0 for a call
    the provider refused; None when not known (then the budget charges what it held).
    """

    usage_id: uuid.UUID
    cost: CallCost
    usage: TokenUsage | None
    row: dict[str, object]
    charge_usd: Decimal | None


class UsageRecorder:
    def __init__(self, *, pricer: CallPricer) -> None:
        self._pricer = pricer

    def price(
        self,
        *,
        user_id: str,
        source: Literal["chat", "execution"],
        requested_model: str,
        completion: Completion,
        status: Literal["completed", "failed"],
        at: datetime,
        usage: TokenUsage | None = None,
        estimated: bool = False,
        chat_session_id: uuid.UUID | None = None,
        execution_id: uuid.UUID | None = None,
    ) -> RecordedCall:
        """Price one call (no I/O: done before the recording transaction opens). ``usage``
        overrides ``completion.usage`` (an estimate, when ``estimated``)."""
        tokens = usage if usage is not None else completion.usage
        cost = self._pricer.cost(
            model=completion.model, provider=completion.provider, usage=tokens, at=at, estimated=estimated
        )
        return _recorded(
            user_id,
            source,
            requested_model,
            completion,
            tokens,
            cost,
            status,
            at,
            chat_session_id,
            execution_id,
        )

    def price_failed(
        self,
        *,
        user_id: str,
        source: Literal["chat", "execution"],
        requested_model: str,
        failed: FailedCall,
        bound: TokenUsage | None,
        at: datetime,
        chat_session_id: uuid.UUID | None = None,
        execution_id: uuid.UUID | None = None,
    ) -> RecordedCall:
        """Price a call that was sent and failed, by the rules of the module docstring (no I/O).

        ``bound`` is the upper bound of the call's tokens (estimated prompt tokens, max_tokens)
        that its budget hold was made for; None when not known (the cost is then unknown too).
        """
        completion = Completion(
            text="",
            model=failed.model,
            provider=failed.provider,
            usage=None,
            request_id=failed.request_id,
            finish_reason=None,
            latency_ms=failed.latency_ms,
        )
        refused = failed.delivery == "rejected"
        if failed.provider == SAMPLING_PROVIDER:  # the client's own model: no usage, the client pays
            tokens = None
            cost = self._pricer.cost(model=failed.model, provider=failed.provider, usage=None, at=at)
        elif refused:
            tokens, cost = _NO_TOKENS, NOT_BILLED
        else:
            tokens = bound
            cost = self._pricer.cost(
                model=failed.model, provider=failed.provider, usage=bound, at=at, estimated=True
            )
        recorded = _recorded(
            user_id,
            source,
            requested_model,
            completion,
            tokens,
            cost,
            "failed",
            at,
            chat_session_id,
            execution_id,
        )
        return replace(recorded, charge_usd=_NOTHING) if refused else recorded

    async def insert(self, session: AsyncSession, call: RecordedCall) -> None:
        """Insert the usage row of a priced call (and add it to its daily sum)."""
        await _insert_rows(session, [call.row])

    async def record_execution(
        self,
        session: AsyncSession,
        *,
        execution_id: uuid.UUID,
        user_id: str,
        requested_model: str,
        calls: tuple[Completion, ...],
        status: Literal["completed", "failed"],
        at: datetime,
        failed: tuple[FailedCall, ...] = (),
        bound: TokenUsage | None = None,
    ) -> Decimal | None:
        """One usage row per model call of an execution: each answered call in ``calls``, each
        call in ``failed`` that was sent and failed (``bound``: see ``price_failed``). Returns
        the sum of what they charge the budgets (USD), or None when one of them is not known."""
        common: dict[str, Any] = {
            "user_id": user_id,
            "source": "execution",
            "requested_model": requested_model,
            "at": at,
            "execution_id": execution_id,
        }
        recorded = [self.price(completion=call, status=status, **common) for call in calls]
        recorded += [self.price_failed(failed=call, bound=bound, **common) for call in failed]
        if recorded:
            await _insert_rows(session, [r.row for r in recorded])
        charges = [r.charge_usd for r in recorded]
        if any(c is None for c in charges):
            return None
        return sum((c for c in charges if c is not None), to_money(0))


async def _insert_rows(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert usage rows and add them to ``usage_daily``, in one transaction (the caller's)."""
    await session.execute(_INSERT, rows if len(rows) > 1 else rows[0])
    sums: dict[tuple[str, date, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["user_id"], row["created_at"].astimezone(UTC).date(), row["model"])
        day = sums.setdefault(
            key, {"user_id": key[0], "day": key[1], "model": key[2], **dict.fromkeys(_SUMMED, 0)}
        )
        day["calls"] += 1
        day["failed_calls"] += row["status"] == "failed"
        day["unpriced_calls"] += row["cost_usd"] is None
        day["prompt_tokens"] += row["prompt_tokens"] or 0
        day["completion_tokens"] += row["completion_tokens"] or 0
        day["cached_tokens"] += row["cached_tokens"] or 0
        day["cost_usd"] += row["cost_usd"] or 0
    ordered = [sums[key] for key in sorted(sums)]  # one lock order for every writer
    await session.execute(_ADD_DAILY[session.bind.dialect.name], ordered if len(ordered) > 1 else ordered[0])


def _recorded(
    user_id: str,
    source: str,
    requested_model: str,
    completion: Completion,
    usage: TokenUsage | None,
    cost: CallCost,
    status: str,
    at: datetime,
    chat_session_id: uuid.UUID | None,
    execution_id: uuid.UUID | None,
) -> RecordedCall:
    usage_id = uuid.uuid4()
    row = _row(
        usage_id,
        user_id,
        source,
        requested_model,
        completion,
        usage,
        cost,
        status,
        at,
        chat_session_id,
        execution_id,
    )
    return RecordedCall(usage_id=usage_id, cost=cost, usage=usage, row=row, charge_usd=cost.cost_usd)


def _row(
    usage_id: uuid.UUID,
    user_id: str,
    source: str,
    requested_model: str,
    completion: Completion,
    usage: TokenUsage | None,
    cost: CallCost,
    status: str,
    at: datetime,
    chat_session_id: uuid.UUID | None,
    execution_id: uuid.UUID | None,
) -> dict[str, object]:
    return {
        "id": usage_id,
        "user_id": user_id,
        "session_id": chat_session_id,
        "execution_id": execution_id,
        "source": source,
        "provider": completion.provider,
        "requested_model": requested_model,
        "model": completion.model,
        "prompt_tokens": None if usage is None else usage.prompt_tokens,
        "completion_tokens": None if usage is None else usage.completion_tokens,
        "cached_tokens": None if usage is None else usage.cached_tokens,
        "cost_usd": cost.cost_usd,
        "cost_status": cost.status,
        "price_source": cost.source,
        "price_version": cost.version,
        "status": status,
        "request_id": completion.request_id,
        "latency_ms": round(completion.latency_ms, 3),
        "created_at": at,
    }
