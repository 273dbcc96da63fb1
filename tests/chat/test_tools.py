"""The chat tools end to end through a real MCP client, over stdio and Streamable HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from chittyos.app import open_app
from chittyos.config import Settings
from tests.chat.conftest import Connect
from tests.openai_server import OpenAIServer, Reply

pytestmark = pytest.mark.anyio


def payload(result: Any) -> dict[str, Any]:
    assert result.is_error is False, result.content
    body = json.loads(result.content[0].text)
    assert body == result.structured_content
    return body


async def test_a_conversation_through_the_tools_is_stored_and_accounted(
    connect: Connect, openai_server: OpenAIServer
) -> None:
    openai_server.enqueue(Reply(usage=(12_000, 3_000, 8_000)))
    async with connect() as client:
        session = payload(
            await client.call_tool(
                "chitty_chat_session_create",
                {"user_id": "wes", "session_name": "Case prep", "initial_system_prompt": "Cite sources."},
            )
        )
        sid = session["session_id"]
        answer = payload(
            await client.call_tool(
                "chatgpt_complete",
                {
                    "messages": [{"role": "user", "content": "Define estoppel"}],
                    "model": "gpt-4o",
                    "session_id": sid,
                },
            )
        )
        note = payload(
            await client.call_tool(
                "chitty_message_add",
                {"session_id": sid, "role": "user", "content": "noted", "tokens_used": 3, "cost": "0.001"},
            )
        )
        stored = payload(await client.call_tool("chitty_chat_session_get", {"session_id": sid}))
        listed = payload(await client.call_tool("chitty_chat_session_list", {"user_id": "wes"}))
        report = payload(await client.call_tool("chitty_usage_analytics", {"user_id": "wes"}))

    assert answer["response"] == "Echo: Define estoppel"
    assert answer["usage"] == {
        "prompt_tokens": 12_000,
        "completion_tokens": 3_000,
        "total_tokens": 15_000,
        "cached_tokens": 8_000,
    }
    assert answer["cost_usd"] == "0.05" and answer["cost_status"] == "priced"  # plain decimal text
    assert answer["session_id"] == sid and answer["user_id"] == "wes" and answer["model"] == "gpt-4o"
    assert note["seq"] == 4 and note["cost"] == "0.001"
    assert stored["messages"][0]["cost"] is None
    assert [m["role"] for m in stored["messages"]] == ["system", "user", "assistant", "user"]
    assert stored["total_messages"] == 4 and stored["total_tokens"] == 15_003
    assert Decimal(stored["total_cost"]) == Decimal("0.051")
    assert listed["count"] == 1 and listed["sessions"][0]["session_id"] == sid
    assert report["total_calls"] == 1 and report["total_sessions"] == 1 and report["total_messages"] == 4
    assert report["total_tokens"]["cached_tokens"] == 8_000 and Decimal(report["total_cost"]) == Decimal(
        "0.05"
    )
    assert report["by_model"][0]["model"] == "gpt-4o"


async def test_a_call_over_budget_is_an_mcp_error_with_spent_limit_and_reset(
    connect: Connect, openai_server: OpenAIServer, chat_settings: Callable[..., Settings]
) -> None:
    async with open_app(chat_settings()) as app:
        await app.budgets.set(user_id="xena", limit_usd=Decimal("0.000001"), window="month")
    async with connect() as client:
        result = await client.call_tool(
            "chatgpt_complete",
            {"messages": [{"role": "user", "content": "hi"}], "model": "gpt-4o", "user_id": "xena"},
        )
    assert result.is_error is True
    text = result.content[0].text
    assert "budget exceeded" in text and "has spent $0" in text and "of $0.000001 per month" in text
    assert "the window resets at" in text
    assert openai_server.chat_requests() == []
