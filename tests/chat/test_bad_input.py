"""Bad input: a clear error naming the field, nothing written, no model call."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from chittyos.app import App
from chittyos.chat import ChatRequest
from chittyos.db.models import Budget, ChatSession, ChatSessionMessage, UsageRecord
from chittyos.errors import InvalidInput, NotFound
from tests.chat.conftest import Connect, Parts, ask
from tests.openai_server import OpenAIServer

pytestmark = pytest.mark.anyio

UNKNOWN = str(uuid.UUID(int=7))

Case = Callable[[Parts, str], Awaitable[Any]]

CASES: list[tuple[str, Case, str]] = [
    ("empty messages", lambda p, s: p.chat.complete(ChatRequest(messages=[])), "messages"),
    ("messages not a list", lambda p, s: p.chat.complete(ChatRequest(messages="hi")), "messages"),  # type: ignore[arg-type]
    ("bad role", lambda p, s: p.chat.complete(ask("x", role="robot")), "messages[0].role"),
    (
        "blank content",
        lambda p, s: p.chat.complete(
            ChatRequest(messages=[{"role": "user", "content": "a"}, {"role": "user", "content": " "}])
        ),
        "messages[1].content",
    ),
    ("max_tokens 0", lambda p, s: p.chat.complete(ask("x", max_tokens=0)), "max_tokens"),
    ("temperature 3", lambda p, s: p.chat.stream(ask("x", temperature=3), _ignore), "temperature"),
    ("model blank", lambda p, s: p.chat.complete(ask("x", model="")), "model"),
    ("session_id not a uuid", lambda p, s: p.chat.complete(ask("x", session_id="nope")), "session_id"),
    ("negative limit", lambda p, s: p.sessions.list(user_id="u", limit=-1), "limit"),
    ("limit over the page size", lambda p, s: p.sessions.list(user_id="u", limit=10**6), "limit"),
    ("negative offset", lambda p, s: p.sessions.list(user_id="u", offset=-5), "offset"),
    ("unknown status", lambda p, s: p.sessions.list(user_id="u", status="gone"), "status"),
    ("blank session name", lambda p, s: p.sessions.create(user_id="u", session_name=""), "session_name"),
    (
        "message bad role",
        lambda p, s: p.sessions.add_message(session_id=s, role="robot", content="x"),
        "role",
    ),
    ("message empty", lambda p, s: p.sessions.add_message(session_id=s, role="user", content=""), "content"),
    (
        "negative cost",
        lambda p, s: p.sessions.add_message(session_id=s, role="user", content="x", cost=Decimal("-0.01")),
        "cost",
    ),
    (
        "negative tokens",
        lambda p, s: p.sessions.add_message(session_id=s, role="user", content="x", tokens_used=-1),
        "tokens_used",
    ),
    ("negative budget", lambda p, s: p.budgets.set(user_id="u", limit_usd=-1, window="month"), "limit_usd"),
    (
        "budget below a 1e-10 USD step",
        lambda p, s: p.budgets.set(user_id="u", limit_usd="0.00000000001", window="month"),
        "limit_usd",
    ),
    (
        "cost below a 1e-10 USD step",
        lambda p, s: p.sessions.add_message(session_id=s, role="user", content="x", cost="1e-30"),
        "cost",
    ),
    ("model with a trailing space", lambda p, s: p.chat.complete(ask("x", model="gpt-4o ")), "model"),
    (
        "session name with a bidi override",
        lambda p, s: p.sessions.create(user_id="u", session_name="u\u202eevil\u200b"),
        "session_name",
    ),
    ("unknown window", lambda p, s: p.budgets.set(user_id="u", limit_usd=1, window="year"), "window"),
    (
        "soft ratio above 1",
        lambda p, s: p.budgets.set(user_id="u", limit_usd=1, window="day", soft_limit_ratio="1.5"),
        "soft_limit_ratio",
    ),
    (
        "end before start",
        lambda p, s: p.analytics.report(start_date="2025-02-01", end_date="2025-01-31"),
        "end_date",
    ),
    ("not a date", lambda p, s: p.analytics.report(start_date="last tuesday"), "start_date"),
    ("unknown granularity", lambda p, s: p.analytics.report(granularity="hour"), "granularity"),
]


async def _ignore(text: str) -> None:
    return None


async def counts(app: App) -> tuple[int, ...]:
    async with app.uow.read() as session:
        return tuple(
            [
                await session.scalar(select(func.count()).select_from(table))  # type: ignore[misc]
                for table in (ChatSession, ChatSessionMessage, UsageRecord, Budget)
            ]
        )


@pytest.mark.parametrize(("case", "field"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
async def test_bad_input_names_the_field_and_writes_nothing(
    app: App, parts: Parts, openai_server: OpenAIServer, case: Case, field: str
) -> None:
    session = await parts.sessions.create(user_id="u", session_name="s")
    before = await counts(app)
    with pytest.raises(InvalidInput) as caught:
        await case(parts, session.session_id)
    assert caught.value.field == field
    assert field in str(caught.value)
    assert await counts(app) == before
    assert openai_server.chat_requests() == []


@pytest.mark.parametrize(
    "case",
    [
        lambda p: p.chat.complete(ask("x", session_id=UNKNOWN)),
        lambda p: p.sessions.get(UNKNOWN),
        lambda p: p.sessions.add_message(session_id=UNKNOWN, role="user", content="x"),
    ],
    ids=["chat", "get", "add_message"],
)
async def test_an_unknown_session_is_not_found_and_nothing_is_written(
    app: App, parts: Parts, openai_server: OpenAIServer, case: Callable[[Parts], Awaitable[Any]]
) -> None:
    with pytest.raises(NotFound, match=f"chat session {UNKNOWN} not found"):
        await case(parts)
    assert await counts(app) == (0, 0, 0, 0)
    assert openai_server.chat_requests() == []


async def test_the_chat_tools_are_listed_with_their_schemas(connect: Connect) -> None:
    async with connect() as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    for name in (
        "chatgpt_complete",
        "chatgpt_stream",
        "chitty_chat_session_create",
        "chitty_chat_session_list",
        "chitty_chat_session_get",
        "chitty_message_add",
        "chitty_usage_analytics",
    ):
        assert name in tools and tools[name].output_schema is not None, name
    complete = tools["chatgpt_complete"]
    assert complete.input_schema["required"] == ["messages"]
    props = complete.input_schema["properties"]
    assert props["max_tokens"]["default"] == 1000 and props["temperature"]["default"] == 0.7
    assert {"response", "usage", "model", "session_id", "cost_usd", "cost_status"} <= set(
        complete.output_schema["properties"]  # type: ignore[index]
    )
    assert set(tools["chitty_chat_session_create"].input_schema["required"]) == {"user_id", "session_name"}
    assert set(tools["chitty_message_add"].input_schema["required"]) == {"session_id", "role", "content"}
    assert tools["chitty_usage_analytics"].input_schema["properties"]["granularity"]["default"] == "day"


async def test_bad_input_through_mcp_is_an_error_naming_the_field(
    connect: Connect, openai_server: OpenAIServer
) -> None:
    calls: list[tuple[str, dict[str, Any], str]] = [
        ("chatgpt_complete", {"messages": []}, "messages"),
        ("chatgpt_complete", {"messages": [{"role": "robot", "content": "x"}]}, "role"),
        (
            "chatgpt_stream",
            {"messages": [{"role": "user", "content": "x"}], "session_id": UNKNOWN},
            "not found",
        ),
        ("chitty_chat_session_list", {"user_id": "u", "limit": -1}, "limit"),
        ("chitty_chat_session_get", {"session_id": "nope"}, "session_id"),
        ("chitty_message_add", {"session_id": UNKNOWN, "role": "user", "content": "x"}, "not found"),
        ("chitty_usage_analytics", {"start_date": "2025-02-01", "end_date": "2025-01-01"}, "end_date"),
    ]
    async with connect() as client:
        for tool, arguments, named in calls:
            result = await client.call_tool(tool, arguments)
            assert result.is_error is True, (tool, arguments)
            assert named in result.content[0].text, (tool, result.content[0].text)
    assert openai_server.chat_requests() == []
