"""Streaming: deltas in order while the model answers, usage from the final chunk, broken streams."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from chittyos.app import App
from chittyos.llm import StreamInterrupted
from tests.chat.conftest import Connect, Parts, ask, by_hand, usage_rows, usage_rows_at
from tests.openai_server import BrokenStream, OpenAIServer, count_prompt_tokens

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("usage_chunk_has_choices", [False, True], ids=["usage-chunk", "usage-on-finish"])
async def test_a_streamed_call_sends_deltas_in_order_and_is_billed_from_the_final_chunk(
    app: App, parts: Parts, openai_server: OpenAIServer, usage_chunk_has_choices: bool
) -> None:
    openai_server.configure(usage_chunk_has_choices=usage_chunk_has_choices, cached_tokens=2)
    deltas: list[str] = []

    async def on_delta(text: str) -> None:
        deltas.append(text)

    result = await parts.chat.stream(ask("one two three four", model="gpt-4o"), on_delta)

    assert result.response == "Echo: one two three four"
    assert "".join(deltas) == result.response and len(deltas) == 5
    prompt = count_prompt_tokens([{"content": "one two three four"}])
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.cached_tokens) == (
        prompt,
        5,
        2,
    )
    assert result.cost_usd == by_hand(prompt, 5, 2, "2.50", "1.25", "10") and result.cost_usd > 0
    (sent,) = openai_server.chat_requests()
    assert sent.body["stream"] is True and sent.body["stream_options"] == {"include_usage": True}
    (row,) = await usage_rows(app)
    assert (row.status, row.cost_status, row.cost_usd) == ("completed", "priced", result.cost_usd)


async def test_a_stream_that_breaks_halfway_is_recorded_as_failed_with_an_estimate(
    app: App, parts: Parts, openai_server: OpenAIServer
) -> None:
    openai_server.configure(answer="alpha beta gamma delta epsilon")
    openai_server.enqueue(BrokenStream(after_deltas=3))
    deltas: list[str] = []

    async def on_delta(text: str) -> None:
        deltas.append(text)

    with pytest.raises(StreamInterrupted, match="broke off after 3 text deltas"):
        await parts.chat.stream(ask("go", model="gpt-4o", user_id="carol"), on_delta)

    assert "".join(deltas) == "alpha beta gamma "
    (row,) = await usage_rows(app)
    assert (row.status, row.user_id, row.cost_status) == ("failed", "carol", "estimated")
    # never $0: the upper bound of what was sent and what arrived
    assert row.completion_tokens == len(b"alpha beta gamma ")
    assert row.prompt_tokens is not None and row.prompt_tokens >= count_prompt_tokens([{"content": "go"}])
    assert row.cost_usd == by_hand(row.prompt_tokens, row.completion_tokens, 0, "2.50", "1.25", "10")
    assert row.cost_usd > Decimal(0)


async def test_a_broken_stream_in_a_session_stores_no_half_answer(
    parts: Parts, openai_server: OpenAIServer
) -> None:
    session = await parts.sessions.create(user_id="u", session_name="s")
    openai_server.enqueue(BrokenStream(after_deltas=1, clean_end=True))

    async def ignore(text: str) -> None:
        return None

    with pytest.raises(StreamInterrupted):
        await parts.chat.stream(ask("hello there", session_id=session.session_id), ignore)
    again = await parts.sessions.get(session.session_id)
    assert again.total_messages == 0 and again.messages == []


def payload(result: Any) -> dict[str, Any]:
    assert result.is_error is False, result.content
    body = json.loads(result.content[0].text)
    assert body == result.structured_content
    return body


async def test_chatgpt_stream_delivers_deltas_as_progress_notifications_in_order(
    connect: Connect, openai_server: OpenAIServer, database_url: str
) -> None:
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    async with connect() as client:
        result = await client.call_tool(
            "chatgpt_stream",
            {"messages": [{"role": "user", "content": "a b c d e f"}], "model": "gpt-4o", "user_id": "dana"},
            progress_callback=on_progress,
        )
    body = payload(result)
    assert body["response"] == "Echo: a b c d e f"
    assert [p[0] for p in progress] == list(range(1, 8))  # one notification per delta, increasing
    assert "".join(p[2] or "" for p in progress) == body["response"]
    assert body["usage"]["completion_tokens"] == 7
    assert body["cost_status"] == "priced" and Decimal(body["cost_usd"]) > 0
    (row,) = await usage_rows_at(database_url)
    assert (
        str(row.id) == body["usage_id"]
        and row.status == "completed"
        and row.cost_usd == Decimal(body["cost_usd"])
    )


async def test_a_broken_stream_through_mcp_is_an_error_and_a_failed_usage_row(
    connect: Connect, openai_server: OpenAIServer, database_url: str
) -> None:
    openai_server.configure(answer="one two three four five six")
    openai_server.enqueue(BrokenStream(after_deltas=2))
    progress: list[str | None] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(message)

    async with connect() as client:
        result = await client.call_tool(
            "chatgpt_stream",
            {"messages": [{"role": "user", "content": "go"}], "model": "gpt-4o"},
            progress_callback=on_progress,
        )
    assert result.is_error is True
    assert "broke off after 2 text deltas" in result.content[0].text
    assert progress == ["one ", "two "]
    (row,) = await usage_rows_at(database_url)
    assert row.status == "failed" and row.cost_status == "estimated" and row.cost_usd > 0
