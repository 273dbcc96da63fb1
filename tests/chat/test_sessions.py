"""Sessions: history sent upstream in order, exact totals under concurrency, listing."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import anyio
import pytest

from chittyos.app import App, open_app
from chittyos.chat import ChatRequest
from chittyos.errors import InvalidInput
from tests.chat.conftest import Parts, ask
from tests.openai_server import OpenAIServer, Reply

pytestmark = pytest.mark.anyio


async def test_the_session_history_is_sent_before_the_new_messages_in_order(
    parts: Parts, openai_server: OpenAIServer
) -> None:
    session = await parts.sessions.create(
        user_id="erin", session_name="Lease review", initial_system_prompt="You are a contracts paralegal."
    )
    first = await parts.chat.complete(ask("What is a lease?", session_id=session.session_id, model="gpt-4o"))
    await parts.chat.complete(
        ChatRequest(
            messages=[
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": "And a sublease?"},
            ],
            session_id=session.session_id,
            model="gpt-4o",
        )
    )

    sent = [r.body["messages"] for r in openai_server.chat_requests()]
    assert sent[0] == [
        {"role": "system", "content": "You are a contracts paralegal."},
        {"role": "user", "content": "What is a lease?"},
    ]
    assert sent[1] == [
        {"role": "system", "content": "You are a contracts paralegal."},
        {"role": "user", "content": "What is a lease?"},
        {"role": "assistant", "content": first.response},
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "And a sublease?"},
    ]
    assert first.user_id == "erin" and first.session_id == session.session_id

    stored = await parts.sessions.get(session.session_id)
    assert stored.messages is not None
    assert [(m.seq, m.role) for m in stored.messages] == [
        (1, "system"),
        (2, "user"),
        (3, "assistant"),
        (4, "system"),
        (5, "user"),
        (6, "assistant"),
    ]
    assistant = stored.messages[2]
    assert (
        assistant.content == first.response
        and assistant.cost == first.cost_usd
        and assistant.model == "gpt-4o"
    )
    assert first.usage is not None and assistant.tokens_used == first.usage.total_tokens
    assert stored.total_messages == 6
    assert stored.total_tokens == sum(m.tokens_used or 0 for m in stored.messages)
    assert stored.total_cost == sum((m.cost for m in stored.messages if m.cost is not None), Decimal(0))
    assert stored.system_prompt == "You are a contracts paralegal."


async def test_a_call_naming_another_user_than_the_sessions_is_refused(
    parts: Parts, openai_server: OpenAIServer
) -> None:
    from chittyos.errors import InvalidInput

    session = await parts.sessions.create(user_id="erin", session_name="s")
    with pytest.raises(InvalidInput) as caught:
        await parts.chat.complete(ask("q", session_id=session.session_id, user_id="mallory"))
    assert caught.value.field == "user_id"
    assert openai_server.chat_requests() == []


async def test_session_totals_equal_the_sum_of_their_messages_after_50_concurrent_adds(
    app: App, openai_server: OpenAIServer
) -> None:
    session = await app.sessions.create(user_id="frank", session_name="busy")
    openai_server.enqueue(*(Reply(usage=(100, 10, 0)) for _ in range(5)))

    async def add(i: int) -> None:
        await app.sessions.add_message(
            session_id=session.session_id,
            role="user" if i % 2 else "assistant",
            content=f"message {i}",
            tokens_used=i,
            cost=Decimal("0.0001") * i,
        )

    async def chat(i: int) -> None:
        await app.chat.complete(ask(f"question {i}", session_id=session.session_id, model="gpt-4o"))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(add, i)
            for i in range(5):
                tg.start_soon(chat, i)

    stored = await app.sessions.get(session.session_id)
    assert stored.messages is not None
    assert stored.total_messages == len(stored.messages) == 60
    assert [m.seq for m in stored.messages] == list(range(1, 61))
    assert stored.total_tokens == sum(m.tokens_used or 0 for m in stored.messages) == sum(range(50)) + 5 * 110
    assert stored.total_cost == sum((m.cost for m in stored.messages if m.cost is not None), Decimal(0))
    assert stored.total_cost == Decimal("0.0001") * sum(range(50)) + 5 * Decimal("0.00035")


async def test_sessions_list_newest_first_with_paging_and_a_status_filter(parts: Parts) -> None:
    for name in ("first", "second", "third"):
        await parts.sessions.create(user_id="gina", session_name=name)
        parts.clock.advance(minutes=1)
    await parts.sessions.create(user_id="someone-else", session_name="other")

    page = await parts.sessions.list(user_id="gina", limit=2)
    assert [s.session_name for s in page.sessions] == ["third", "second"]
    assert (page.count, page.total, page.limit, page.offset) == (2, 3, 2, 0)
    rest = await parts.sessions.list(user_id="gina", limit=2, offset=2)
    assert [s.session_name for s in rest.sessions] == ["first"]
    archived = await parts.sessions.list(user_id="gina", status="archived")
    assert archived.sessions == [] and archived.total == 0


async def test_get_without_messages_leaves_them_out(parts: Parts) -> None:
    session = await parts.sessions.create(user_id="hal", session_name="s", initial_system_prompt="Be terse.")
    view = await parts.sessions.get(session.session_id, include_messages=False)
    assert view.messages is None and view.total_messages == 1


async def test_a_history_over_the_prompt_bound_sends_its_newest_part_and_says_so(
    openai_server: OpenAIServer, make_settings: Any
) -> None:
    """The session's system prompt and the new message always go; the oldest turns are left out,
    never reordered, and the stored session keeps everything."""
    async with open_app(make_settings(chitty_max_prompt_chars=200)) as small:
        session = await small.sessions.create(user_id="ivy", session_name="Long", initial_system_prompt="Be exact.")
        turns = [f"question {i} " + "x" * 30 for i in range(6)]
        for turn in turns:
            answer = await small.chat.complete(ask(turn, session_id=session.session_id))
            sent = openai_server.chat_requests()[-1].body["messages"]
            assert sum(len(m["content"]) for m in sent) <= 200
            assert sent[0] == {"role": "system", "content": "Be exact."}
            assert sent[-1] == {"role": "user", "content": turn}
            assert sent[1]["role"] == "user"  # never an answer without its question
        assert any("oldest messages" in w and "CHITTY_MAX_PROMPT_CHARS (200)" in w for w in answer.warnings)
        stored = await small.sessions.get(session.session_id)
        assert stored.messages is not None and stored.total_messages == 1 + 2 * len(turns)
        earlier = [m.content for m in stored.messages[1:-2]]  # before the last question
        kept = [m["content"] for m in sent[1:-1]]
        assert 0 < len(kept) < len(earlier) and kept == earlier[-len(kept) :]  # the newest, in order

        with pytest.raises(InvalidInput) as too_long:
            await small.chat.complete(ask("y" * 195, session_id=session.session_id))
        assert too_long.value.field == "messages" and "system prompt" in too_long.value.rule
