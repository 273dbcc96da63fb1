"""Fixtures for the chat tests: an app priced as OpenAI, a clock to move, the MCP client.

The loopback model server is not a known provider, so its calls would be priced
``unknown_model``; ``CHITTY_PRICING_BASE_URL`` says whose prices apply (OpenAI's here), as an
operator does for a proxy in front of a paid API.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from sqlalchemy import select

from chittyos.analytics import UsageAnalytics
from chittyos.app import App, open_app
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
from tests.server.conftest import API_TOKEN, running_http, settings_env

OPENAI_V1 = "https://api.openai.com/v1"
MTOK = Decimal(1_000_000)

Connect = Callable[..., AbstractAsyncContextManager[Client]]


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
def chat_settings(make_settings: Any) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"chitty_pricing_base_url": OPENAI_V1}
        values.update(overrides)
        return make_settings(**values)

    return make


@pytest.fixture
async def app(chat_settings: Callable[..., Settings]) -> AsyncIterator[App]:
    async with open_app(chat_settings()) as opened:
        yield opened


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2025, 1, 15, 12, 0, tzinfo=UTC))


@pytest.fixture
def parts(app: App, clock: Clock) -> Parts:
    return build_parts(app, clock)


# -- the MCP client, over stdio and Streamable HTTP ------------------------------------------------


def _env(settings: Settings) -> dict[str, str]:
    env = settings_env(settings)
    if settings.chitty_pricing_base_url:
        env["CHITTY_PRICING_BASE_URL"] = settings.chitty_pricing_base_url
    if settings.chitty_prices_file is not None:
        env["CHITTY_PRICES_FILE"] = str(settings.chitty_prices_file)
    env["CHITTY_RATE_LIMIT_PER_MINUTE"] = str(settings.chitty_rate_limit_per_minute)
    return env


@pytest.fixture(params=["stdio", "http"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def connect(transport: str, chat_settings: Callable[..., Settings]) -> Connect:
    """``async with connect(**setting_overrides, client_kwargs=...) as client``."""

    @asynccontextmanager
    async def open_client(
        client_kwargs: dict[str, Any] | None = None, **overrides: Any
    ) -> AsyncIterator[Client]:
        kwargs = dict(client_kwargs or {})
        if transport == "stdio":
            settings = chat_settings(**overrides)
            params = StdioServerParameters(
                command=sys.executable, args=["-m", "chittyos", "serve"], env=_env(settings)
            )
            async with Client(params, **kwargs) as client:
                yield client
            return
        settings = chat_settings(chitty_api_tokens=API_TOKEN, **overrides)
        async with running_http(settings) as base:
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30)
            async with (
                http,
                Client(streamable_http_client(f"{base}/mcp", http_client=http), **kwargs) as client,
            ):
                yield client

    return open_client
