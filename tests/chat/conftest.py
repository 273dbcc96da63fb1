"""Fixtures for the chat tests: an app priced as OpenAI, a clock to move, the MCP client.

The loopback model server is not a known provider, so its calls would be priced
``unknown_model``; ``CHITTY_PRICING_BASE_URL`` says whose prices apply (OpenAI's here), as an
operator does for a proxy in front of a paid API.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from chittyos.analytics import UsageAnalytics
from chittyos.app import App
from chittyos.chat import (
    BudgetService,
    ChatSealer,
    ChatRequest,
    ChatService,
    RateLimiter,
    SessionService,
    UsageRecorder,
    estimate_prompt_tokens,
)
from chittyos.config import Settings
from chittyos.db import create_engine, make_session_factory
from chittyos.db.models import UsageRecord
from chittyos.llm import ChatMessage
from tests.server.conftest import Connect  # noqa: F401  (re-exported for the chat tests)

OPENAI_V1 = "https://api.openai.com/v1"
MTOK = Decimal(1_000_000)



class Clock:
    """A clock the test moves by hand; aware UTC unless set otherwise."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Parts:
    """The chat services of ``app`` rebuilt around ``clock``."""

    chat: ChatService
    sessions: SessionService
    budgets: BudgetService
    analytics: UsageAnalytics
    clock: Clock


def build_parts(app: App, clock: Clock, *, rate_limit: int = 0, ttl_s: float = 900.0) -> Parts:
    budgets = BudgetService(uow=app.uow, pricer=app.pricer, reservation_ttl_s=ttl_s, clock=clock)
    sealer = ChatSealer(sealer=app.sealer)
    chat = ChatService(
        sealer=sealer,
        uow=app.uow,
        providers=app.providers,
        budgets=budgets,
        limiter=RateLimiter(per_minute=rate_limit, clock=clock),
        recorder=UsageRecorder(pricer=app.pricer),
        default_model=app.settings.chitty_default_model,
        default_max_tokens=app.settings.chitty_max_tokens,
        max_prompt_chars=app.settings.chitty_max_prompt_chars,
        clock=clock,
    )
    sessions = SessionService(
        sealer=sealer,
        uow=app.uow,
        max_content_chars=app.settings.chitty_max_prompt_chars,
        page_size_max=app.settings.chitty_page_size_max,
        clock=clock,
    )
    return Parts(chat, sessions, budgets, UsageAnalytics(uow=app.uow, budgets=budgets, clock=clock), clock)


def ask(content: str, *, role: str = "user", **fields: Any) -> ChatRequest:
    return ChatRequest(messages=[{"role": role, "content": content}], **fields)


def by_hand(prompt: int, completion: int, cached: int, input_: str, cached_in: str, output: str) -> Decimal:
    """USD from per-million prices, as the price page gives them."""
    return (
        (prompt - cached) * Decimal(input_) + cached * Decimal(cached_in) + completion * Decimal(output)
    ) / MTOK


def worst_case_of(app: App, content: str, *, model: str, max_tokens: int, at: datetime) -> Decimal:
    worst = app.pricer.worst_case(
        model=model,
        provider="openai",
        prompt_tokens=estimate_prompt_tokens([ChatMessage(role="user", content=content)]),
        max_tokens=max_tokens,
        at=at,
    )
    assert worst is not None
    return worst


async def usage_rows(app: App) -> list[UsageRecord]:
    async with app.uow.read() as session:
        return list((await session.execute(select(UsageRecord).order_by(UsageRecord.created_at))).scalars())


async def usage_rows_at(url: str) -> list[UsageRecord]:
    """Usage rows read with an engine of our own (for servers running in another process)."""
    engine = create_engine(url)
    try:
        async with make_session_factory(engine)() as session:
            return list((await session.execute(select(UsageRecord))).scalars())
    finally:
        await engine.dispose()


@pytest.fixture
def make_settings(make_settings: Any) -> Callable[..., Settings]:
    """The root ``make_settings``, priced as OpenAI's API (the loopback server stands in for it)."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"chitty_pricing_base_url": OPENAI_V1}
        values.update(overrides)
        return make_settings(**values)

    return make


@pytest.fixture
def chat_settings(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    return make_settings


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2025, 1, 15, 12, 0, tzinfo=UTC))


@pytest.fixture
def parts(app: App, clock: Clock) -> Parts:
    return build_parts(app, clock)

