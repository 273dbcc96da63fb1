"""Usage analytics: UTC day, ISO week and month buckets, per model, executions included."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import select
from structlog.testing import capture_logs

from chittyos.app import App
from chittyos.db.models import UsageDaily, UsageRecord
from chittyos.execution import ExecutionRequest
from tests.chat.conftest import Clock, ask, build_parts
from tests.openai_server import OpenAIServer, Reply

pytestmark = pytest.mark.anyio

# 2025-01-31 is a Friday; 2025-02-01 a Saturday (same ISO week as Jan 27); 2025-02-03 a Monday.
CALLS = [
    # (when, model, prompt, completion, cached)
    (datetime(2025, 1, 31, 0, 0, tzinfo=UTC), "gpt-4o", 1_000, 100, 0),
    # 00:30 on Feb 1 in UTC+1 is still Jan 31 in UTC: the UTC day edge
    (datetime(2025, 2, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))), "gpt-4o-mini", 2_000, 200, 1_000),
    (datetime(2025, 1, 31, 23, 59, 59, 999_999, tzinfo=UTC), "gpt-4o", 3_000, 300, 0),
    (datetime(2025, 2, 1, 0, 0, tzinfo=UTC), "gpt-4o", 4_000, 400, 2_000),
    (datetime(2025, 2, 3, 9, 0, tzinfo=UTC), "gpt-4o-mini", 5_000, 500, 0),
]


def price(model: str, prompt: int, completion: int, cached: int) -> Decimal:
    rates = {"gpt-4o": ("2.50", "1.25", "10"), "gpt-4o-mini": ("0.15", "0.075", "0.60")}[model]
    i, c, o = (Decimal(r) for r in rates)
    return ((prompt - cached) * i + cached * c + completion * o) / Decimal(1_000_000)


@pytest.fixture
async def recorded(app: App, openai_server: OpenAIServer) -> Clock:
    clock = Clock(CALLS[0][0])
    parts = build_parts(app, clock)
    session = await parts.sessions.create(user_id="uma", session_name="s", initial_system_prompt="Be exact.")
    for when, model, prompt, completion, cached in CALLS:
        clock.now = when
        openai_server.enqueue(Reply(usage=(prompt, completion, cached)))
        await parts.chat.complete(ask("q", model=model, session_id=session.session_id))
    clock.now = datetime(2025, 2, 3, 10, 0, tzinfo=UTC)
    with capture_logs():
        await parts.chat.complete(ask("q", model="llama-local-7b", user_id="uma"))  # cost unknown
        await parts.chat.complete(ask("q", model="gpt-4o", user_id="someone-else"))
    return clock


async def test_daily_buckets_follow_the_utc_day(app: App, recorded: Clock) -> None:
    report = await build_parts(app, recorded).analytics.report(
        user_id="uma", start_date="2025-01-01", end_date="2025-02-28", granularity="day"
    )
    days = {p.period_start: p for p in report.breakdown}
    assert list(days) == [date(2025, 1, 31), date(2025, 2, 1), date(2025, 2, 3)]
    assert days[date(2025, 1, 31)].calls == 3
    assert {m.model: m.calls for m in days[date(2025, 1, 31)].models} == {"gpt-4o": 2, "gpt-4o-mini": 1}
    assert days[date(2025, 2, 1)].calls == 1
    assert {m.model for m in days[date(2025, 2, 3)].models} == {"gpt-4o-mini", "llama-local-7b"}
    expected = [price(*c[1:]) for c in CALLS]
    assert days[date(2025, 1, 31)].cost_usd == expected[0] + expected[1] + expected[2]


async def test_weekly_and_monthly_buckets_across_the_month_boundary(app: App, recorded: Clock) -> None:
    analytics = build_parts(app, recorded).analytics
    weeks = await analytics.report(
        user_id="uma", start_date="2025-01-01", end_date="2025-02-28", granularity="week"
    )
    assert [(p.period_start, p.calls) for p in weeks.breakdown] == [
        (date(2025, 1, 27), 4),
        (date(2025, 2, 3), 2),
    ]
    months = await analytics.report(
        user_id="uma", start_date="2025-01-01", end_date="2025-02-28", granularity="month"
    )
    assert [(p.period_start, p.calls) for p in months.breakdown] == [
        (date(2025, 1, 1), 3),
        (date(2025, 2, 1), 3),
    ]
    feb = months.breakdown[1]
    assert {m.model: (m.calls, m.tokens.cached_tokens) for m in feb.models} == {
        "gpt-4o": (1, 2_000),
        "gpt-4o-mini": (1, 0),
        "llama-local-7b": (1, 0),
    }


async def test_totals_per_model_and_unpriced_calls_are_counted_not_hidden(app: App, recorded: Clock) -> None:
    report = await build_parts(app, recorded).analytics.report(
        user_id="uma", start_date="2025-01-01", end_date="2025-02-28"
    )
    priced = CALLS
    assert report.total_calls == 6 and report.unpriced_calls == 1 and report.failed_calls == 0
    assert report.total_cost == sum((price(*c[1:]) for c in priced), Decimal(0))
    assert (
        report.total_tokens.prompt_tokens
        == sum(c[2] for c in priced) + report.by_model[2].tokens.prompt_tokens
    )
    assert report.total_tokens.cached_tokens == 3_000
    assert (
        report.total_tokens.total_tokens
        == report.total_tokens.prompt_tokens + report.total_tokens.completion_tokens
    )
    models = {m.model: m for m in report.by_model}
    # a model none of whose calls has a price shows no cost, not a silent 0
    assert models["llama-local-7b"].unpriced_calls == 1 and models["llama-local-7b"].cost_usd is None
    assert models["gpt-4o"].calls == 3
    # one session (created Jan 31), its system prompt + 5 questions and 5 answers
    assert (report.total_sessions, report.total_messages) == (1, 11)


async def test_the_daily_sums_equal_the_usage_rows_they_sum(app: App, recorded: Clock) -> None:
    async with app.uow.read() as session:
        rows = list((await session.execute(select(UsageRecord))).scalars())
        daily = list((await session.execute(select(UsageDaily))).scalars())
    expected: dict[tuple[str, date, str], tuple[int, int, int, Decimal]] = {}
    for r in rows:
        key = (r.user_id, r.created_at.date(), r.model)
        calls, unpriced, prompt, cost = expected.get(key, (0, 0, 0, Decimal(0)))
        expected[key] = (
            calls + 1,
            unpriced + (r.cost_usd is None),
            prompt + (r.prompt_tokens or 0),
            cost + (r.cost_usd or 0),
        )
    assert {
        (d.user_id, d.day, d.model): (d.calls, d.unpriced_calls, d.prompt_tokens, d.cost_usd) for d in daily
    } == expected


async def test_the_range_is_inclusive_of_whole_utc_days(app: App, recorded: Clock) -> None:
    analytics = build_parts(app, recorded).analytics
    only_31st = await analytics.report(user_id="uma", start_date="2025-01-31", end_date="2025-01-31")
    assert only_31st.total_calls == 3
    everyone = await analytics.report(start_date="2025-02-03", end_date="2025-02-03")
    assert everyone.user_id is None and everyone.total_calls == 3


async def test_execution_calls_are_counted_with_the_users_budgets(
    app: App, openai_server: OpenAIServer
) -> None:
    openai_server.enqueue(Reply(usage=(1_000, 100, 0)), Reply(usage=(1_000, 100, 0)))
    await app.budgets.set(user_id="vic", limit_usd=Decimal(5), window="month")
    await app.executions.execute(ExecutionRequest(prompt="p", user_id="vic", model="gpt-4o"))
    await app.chat.complete(ask("q", model="gpt-4o", user_id="vic"))
    report = await app.usage_analytics.report(user_id="vic", granularity="month")
    assert report.total_calls == 2
    assert report.total_cost == 2 * price("gpt-4o", 1_000, 100, 0)
    (budget,) = report.budgets
    assert budget.spent_usd == report.total_cost and budget.limit_usd == 5
