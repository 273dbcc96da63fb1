"""Pure parts: budget windows, token bounds, and exact money on both databases."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from pydantic import TypeAdapter
from sqlalchemy import func, insert, select

from chittyos.app import App
from chittyos.chat import estimate_prompt_tokens, window_end, window_start
from chittyos.db.models import UsageRecord, Usd, to_money, usd_text
from chittyos.llm import ChatMessage
from tests.openai_server import count_prompt_tokens


@pytest.mark.parametrize(
    ("window", "at", "start", "end"),
    [
        (
            "day",
            datetime(2025, 1, 31, 23, 59, 59, tzinfo=UTC),
            datetime(2025, 1, 31, tzinfo=UTC),
            datetime(2025, 2, 1, tzinfo=UTC),
        ),
        # 00:30 at UTC+1 is 23:30 the day before in UTC
        (
            "day",
            datetime(2025, 2, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))),
            datetime(2025, 1, 31, tzinfo=UTC),
            datetime(2025, 2, 1, tzinfo=UTC),
        ),
        (
            "month",
            datetime(2025, 12, 31, 12, tzinfo=UTC),
            datetime(2025, 12, 1, tzinfo=UTC),
            datetime(2026, 1, 1, tzinfo=UTC),
        ),
        (
            "month",
            datetime(2024, 2, 29, tzinfo=UTC),
            datetime(2024, 2, 1, tzinfo=UTC),
            datetime(2024, 3, 1, tzinfo=UTC),
        ),
        ("total", datetime(2025, 6, 1, tzinfo=UTC), datetime(1970, 1, 1, tzinfo=UTC), None),
    ],
)
def test_windows_are_utc_calendar_periods(
    window: str, at: datetime, start: datetime, end: datetime | None
) -> None:
    assert window_start(window, at) == start
    assert window_end(window, at) == end


@pytest.mark.parametrize("text", ["hello world", "naïve café", "契約書を要約して", "🙂 " * 50, "a" * 3000])
def test_the_prompt_bound_is_never_below_the_servers_count(text: str) -> None:
    messages = [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content=text)]
    assert estimate_prompt_tokens(messages) >= count_prompt_tokens([{"content": m.content} for m in messages])
    assert estimate_prompt_tokens(messages) >= len(text.encode()) + len(b"Be brief.")


def test_money_is_exact_and_refuses_floats() -> None:
    assert to_money("0.1") + to_money("0.2") == to_money("0.3")
    assert to_money(Decimal("0.00000000005")) == Decimal("0E-10")  # half-even to 10 places
    with pytest.raises(TypeError):
        to_money(0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        to_money(Decimal("NaN"))


@pytest.mark.anyio
async def test_sums_of_money_in_the_database_are_exact(app: App) -> None:
    at = datetime(2025, 1, 1, tzinfo=UTC)
    costs = [
        Decimal("0.1"),
        Decimal("0.2"),
        *([Decimal("0.0000000001")] * 1000),
        Decimal("123456.0000000009"),
    ]
    rows = [
        {
            "id": uuid.uuid4(),
            "user_id": "m",
            "source": "chat",
            "provider": "openai",
            "requested_model": "x",
            "model": "x",
            "cost_usd": cost,
            "cost_status": "priced",
            "status": "completed",
            "created_at": at,
        }
        for cost in costs
    ]
    async with app.uow.begin() as session:
        await session.execute(insert(UsageRecord), rows)
    async with app.uow.read() as session:
        total = await session.scalar(select(func.sum(UsageRecord.cost_usd)))
        stored = set((await session.execute(select(UsageRecord.cost_usd))).scalars())
    assert total == Decimal("123456.3000001009")
    assert Decimal("0.0000000001") in stored and Decimal("123456.0000000009") in stored


@pytest.mark.parametrize(
    ("amount", "text"),
    [("0E-10", "0"), ("0.0000000000", "0"), ("1.5E-7", "0.00000015"), ("12.3400000000", "12.34"), ("1E+2", "100")],
)
def test_amounts_leave_as_plain_decimal_text(amount: str, text: str) -> None:
    assert usd_text(Decimal(amount)) == text
    assert TypeAdapter(Usd).dump_python(Decimal(amount), mode="json") == text
