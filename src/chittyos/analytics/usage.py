"""Usage and cost over time: ``chitty_usage_analytics``.

Calls, tokens and cost come from ``usage_daily``, the per user, UTC day and model sums of
``usage_analytics`` (one row per model call: chat tools and every execution tier) kept in the
transaction of each call, so a year of one user is at most 366 rows per model whatever the number
of calls. Sessions and messages come from ``chat_sessions`` and ``chat_messages``. Periods are UTC
calendar days, ISO weeks (starting Monday) or months; the range is ``[start_date, end_date]`` in
whole UTC days. A week or month bucket is named by its first day even when the range starts
inside it.

Costs that are not known (``cost_usd`` NULL: unknown model, no usage reported) are left out of
the sums and counted in ``unpriced_calls``, so an incomplete total never passes for a complete one.

Calls that were sent and failed are counted too (``calls`` and ``failed_calls``): one the provider
refused with an error status adds no tokens and $0 (``not_billed``); one with no known answer
adds its upper-bound estimate (``estimated``), the amount its budget was charged.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chittyos.chat import BudgetService, BudgetView
from chittyos.db.models import ChatSession, ChatSessionMessage, UsageDaily, Usd, to_money, utcnow
from chittyos.db.uow import UnitOfWork
from chittyos.errors import InvalidInput

__all__ = ["Granularity", "ModelUsage", "PeriodUsage", "TokenTotals", "UsageAnalytics", "UsageReport"]

Granularity = Literal["day", "week", "month"]
GRANULARITIES: tuple[Granularity, ...] = ("day", "week", "month")
DEFAULT_RANGE_DAYS = 30
MAX_RANGE_DAYS = 3700


@dataclass(frozen=True)
class TokenTotals:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    """Part of prompt_tokens served from the provider's prompt cache."""
    total_tokens: int


@dataclass(frozen=True)
class ModelUsage:
    model: str
    """The model that answered, as the provider named it."""
    calls: int
    """Every call sent upstream, failed ones included."""
    failed_calls: int
    """Calls that got no usable answer (part of ``calls``)."""
    unpriced_calls: int
    """Calls whose cost is not known; not in cost_usd."""
    tokens: TokenTotals
    cost_usd: Usd | None
    """USD of the calls whose cost is known; None when none of them is."""


@dataclass(frozen=True)
class PeriodUsage:
    period_start: date
    """First UTC day of the day, ISO week (Monday) or month."""
    calls: int
    failed_calls: int
    unpriced_calls: int
    tokens: TokenTotals
    cost_usd: Usd | None
    """USD of the calls whose cost is known; None when none of them is."""
    models: list[ModelUsage]


@dataclass(frozen=True)
class UsageReport:
    user_id: str | None
    """None: every user."""
    start_date: date
    end_date: date
    """Inclusive."""
    granularity: Granularity
    total_sessions: int
    """Chat sessions created in the range."""
    total_messages: int
    """Chat messages added in the range."""
    total_calls: int
    """Every model call sent upstream (chat tools and executions), failed ones included."""
    failed_calls: int
    """Calls that got no usable answer (part of ``total_calls``)."""
    unpriced_calls: int
    total_tokens: TokenTotals
    total_cost: Usd | None
    """USD over the calls whose cost is known; None when there were calls and none is known."""
    breakdown: list[PeriodUsage]
    """Periods that had calls, oldest first."""
    by_model: list[ModelUsage]
    budgets: list[BudgetView]
    """The user's budgets as they stand now (empty without a user_id)."""


class UsageAnalytics:
    def __init__(
        self, *, uow: UnitOfWork, budgets: BudgetService, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._uow = uow
        self._budgets = budgets
        self._clock = clock

    async def report(
        self,
        *,
        user_id: str | None = None,
        start_date: str | date | None = None,
        end_date: str | date | None = None,
        granularity: str = "day",
    ) -> UsageReport:
        """Totals and a breakdown per period and per model.

        ``end_date`` defaults to today (UTC), ``start_date`` to 29 days before it. Raises
        ``InvalidInput`` naming the field for a bad date, an end before the start, a range over
        3700 days or an unknown granularity.
        """
        if user_id is not None and (
            not isinstance(user_id, str) or not user_id.strip() or len(user_id) > 255
        ):
            raise InvalidInput("user_id", "must be a non-empty string of at most 255 characters", user_id)
        if granularity not in GRANULARITIES:
            raise InvalidInput("granularity", f"must be one of {', '.join(GRANULARITIES)}", granularity)
        end = (
            _parse_date("end_date", end_date)
            if end_date is not None
            else self._clock().astimezone(UTC).date()
        )
        start = (
            _parse_date("start_date", start_date)
            if start_date is not None
            else end - timedelta(days=DEFAULT_RANGE_DAYS - 1)
        )
        if end < start:
            raise InvalidInput(
                "end_date", f"must not be before start_date ({start.isoformat()})", end.isoformat()
            )
        if (end - start).days + 1 > MAX_RANGE_DAYS:
            raise InvalidInput(
                "end_date", f"the range must span at most {MAX_RANGE_DAYS} days", end.isoformat()
            )
        since = datetime.combine(start, time(), tzinfo=UTC)
        until = datetime.combine(end + timedelta(days=1), time(), tzinfo=UTC)

        async with self._uow.read() as session:
            rows = await self._calls(session, user_id, start, end, granularity)  # type: ignore[arg-type]
            sessions, messages = await self._conversations(session, user_id, since, until)
            budgets = await self._budgets.views(session, user_id) if user_id is not None else []

        periods: dict[date, list[ModelUsage]] = defaultdict(list)
        models: dict[str, list[ModelUsage]] = defaultdict(list)
        for period, usage in rows:
            periods[period].append(usage)
            models[usage.model].append(usage)
        breakdown = [
            PeriodUsage(period_start=p, models=sorted(us, key=lambda u: u.model), **_sum_fields(us))
            for p, us in sorted(periods.items())
        ]
        by_model = [ModelUsage(model=m, **_sum_fields(us)) for m, us in sorted(models.items())]
        totals = _sum_fields([u for _, u in rows])
        return UsageReport(
            user_id=user_id,
            start_date=start,
            end_date=end,
            granularity=granularity,  # type: ignore[arg-type]
            total_sessions=sessions,
            total_messages=messages,
            total_calls=totals["calls"],
            failed_calls=totals["failed_calls"],
            unpriced_calls=totals["unpriced_calls"],
            total_tokens=totals["tokens"],
            total_cost=totals["cost_usd"],
            breakdown=breakdown,
            by_model=by_model,
            budgets=budgets,
        )

    async def _calls(
        self, session: AsyncSession, user_id: str | None, start: date, end: date, granularity: Granularity
    ) -> list[tuple[date, ModelUsage]]:
        """Usage per period and model; days are summed in SQL, periods formed here."""
        d = UsageDaily
        query = (
            select(
                d.day,
                d.model,
                func.sum(d.calls),
                func.sum(d.failed_calls),
                func.sum(d.unpriced_calls),
                func.sum(d.prompt_tokens),
                func.sum(d.completion_tokens),
                func.sum(d.cached_tokens),
                func.sum(d.cost_usd),
            )
            .where(d.day >= start, d.day <= end)
            .group_by(d.day, d.model)
        )
        if user_id is not None:
            query = query.where(d.user_id == user_id)
        periods: dict[tuple[date, str], list[int]] = {}
        costs: dict[tuple[date, str], Decimal] = defaultdict(Decimal)
        for day, model, *counts, cost in await session.execute(query):
            key = (_period_start(day, granularity), model)
            sums = periods.setdefault(key, [0] * 6)
            for i, value in enumerate(counts):
                sums[i] += int(value)
            costs[key] += cost
        return [
            (
                period,
                ModelUsage(
                    model=model,
                    calls=calls,
                    failed_calls=failed,
                    unpriced_calls=unpriced,
                    tokens=TokenTotals(prompt, completion, cached, prompt + completion),
                    cost_usd=None if unpriced == calls else to_money(costs[(period, model)]),
                ),
            )
            for (period, model), (calls, failed, unpriced, prompt, completion, cached) in periods.items()
        ]

    async def _conversations(
        self, session: AsyncSession, user_id: str | None, since: datetime, until: datetime
    ) -> tuple[int, int]:
        sessions = (
            select(func.count())
            .select_from(ChatSession)
            .where(ChatSession.created_at >= since, ChatSession.created_at < until)
        )
        messages = (
            select(func.count())
            .select_from(ChatSessionMessage)
            .where(ChatSessionMessage.created_at >= since, ChatSessionMessage.created_at < until)
        )
        if user_id is not None:
            sessions = sessions.where(ChatSession.user_id == user_id)
            messages = messages.join(ChatSession, ChatSession.id == ChatSessionMessage.session_id).where(
                ChatSession.user_id == user_id
            )
        return (await session.scalar(sessions) or 0), (await session.scalar(messages) or 0)


def _period_start(day: date, granularity: Granularity) -> date:
    """The first day of the UTC day, ISO week (Monday) or month that holds ``day``."""
    if granularity == "week":
        return day - timedelta(days=day.weekday())
    if granularity == "month":
        return day.replace(day=1)
    return day


def _sum_fields(usages: list[ModelUsage]) -> dict[str, Any]:
    prompt = sum(u.tokens.prompt_tokens for u in usages)
    completion = sum(u.tokens.completion_tokens for u in usages)
    return {
        "calls": sum(u.calls for u in usages),
        "failed_calls": sum(u.failed_calls for u in usages),
        "unpriced_calls": sum(u.unpriced_calls for u in usages),
        "tokens": TokenTotals(
            prompt, completion, sum(u.tokens.cached_tokens for u in usages), prompt + completion
        ),
        "cost_usd": _known_cost(usages),
    }


def _known_cost(usages: list[ModelUsage]) -> Decimal | None:
    """USD of the calls whose cost is known; None when there were calls and none is known
    (never a silent 0)."""
    known = [u.cost_usd for u in usages if u.cost_usd is not None]
    return None if usages and not known else to_money(sum(known, Decimal(0)))


def _parse_date(field: str, value: str | date) -> date:
    """An ISO date (2025-01-31); an ISO datetime with a zone is taken as its UTC day."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).date() if value.tzinfo else value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            return moment.astimezone(UTC).date() if moment.tzinfo else moment.date()
    raise InvalidInput(field, "must be an ISO date such as 2025-01-31", value)
