"""Every model call that went upstream is one usage row, failed ones too (chat tools and executions).

An error status is recorded at 0 tokens and $0 (``not_billed``) and gives the budget hold back; no
known answer (a timeout, a dropped connection, a malformed body) is recorded at the bound the
hold was made for (``estimated``) and charged; a call that never went out is no row.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from mcp_types import CreateMessageRequestParams, ErrorData
from sqlalchemy import select

from chittyos.app import App, open_app
from chittyos.chat import estimate_prompt_tokens
from chittyos.config import Settings
from chittyos.db.models import UsageDaily
from chittyos.errors import ProviderError, ProviderTimeout
from chittyos.execution import ExecutionFailedError, ExecutionRequest
from chittyos.llm import ChatMessage, StreamInterrupted
from tests.chat.conftest import (
    Clock,
    Connect,
    Parts,
    ask,
    build_parts,
    by_hand,
    usage_rows,
    usage_rows_at,
    worst_case_of,
)
from tests.openai_server import BrokenStream, Fail, Garbage, OpenAIServer, Reply, Slow, server_error

pytestmark = pytest.mark.anyio

QUESTION = "Is this clause enforceable?"
MAX_TOKENS = 50
GPT_4O = ("2.50", "1.25", "10")  # $ per M input, cached input, output


def prompt_bound() -> int:
    return estimate_prompt_tokens([ChatMessage(role="user", content=QUESTION)])


def ask_q(user: str, **fields: Any) -> Any:
    return ask(QUESTION, model="gpt-4o", max_tokens=MAX_TOKENS, user_id=user, **fields)


@pytest.fixture
async def short_app(chat_settings: Callable[..., Settings]) -> AsyncIterator[App]:
    """An app whose model calls time out after 0.3 s and are not retried."""
    async with open_app(chat_settings(chitty_model_timeout_s=0.3, chitty_model_max_retries=0)) as opened:
        yield opened


async def budget_of(parts: Parts, user: str) -> tuple[Decimal, Decimal]:
    (view,) = await parts.budgets.show(user)
    return view.spent_usd, view.reserved_usd


async def daily(app: App) -> list[UsageDaily]:
    async with app.uow.read() as session:
        return list((await session.execute(select(UsageDaily))).scalars())


# -- chat: the provider answered with an error status --------------------------------------------


@pytest.mark.parametrize(
    ("scripts", "status"),
    [
        ([server_error(500, retry_after_ms=5)] * 3, 500),
        ([Fail(400, "bad request", "invalid_request_error")], 400),
        ([Fail(429, "slow down", headers={"x-should-retry": "false"})], 429),
    ],
    ids=["500-after-retries", "400", "429"],
)
async def test_an_error_status_is_one_failed_row_at_zero_and_the_hold_is_given_back(
    app: App, parts: Parts, openai_server: OpenAIServer, scripts: list[Fail], status: int
) -> None:
    await parts.budgets.set(user_id="ana", limit_usd=Decimal(1), window="month")
    openai_server.enqueue(*scripts)
    with pytest.raises(ProviderError) as caught:
        await parts.chat.complete(ask_q("ana"))
    assert caught.value.status == status

    assert len(openai_server.chat_requests()) == len(scripts)  # the SDK's retries are one call
    (row,) = await usage_rows(app)
    assert (row.status, row.source, row.user_id, row.provider) == ("failed", "chat", "ana", "openai")
    assert (row.prompt_tokens, row.completion_tokens, row.cached_tokens) == (0, 0, 0)
    assert (row.cost_usd, row.cost_status, row.price_source) == (Decimal(0), "not_billed", None)
    assert (row.requested_model, row.model) == ("gpt-4o", "gpt-4o")
    assert row.request_id is not None and row.request_id.startswith("req_loopback_")
    assert row.latency_ms is not None and row.latency_ms > 0
    assert await budget_of(parts, "ana") == (0, 0)  # settled at 0: the hold is released
    (day,) = await daily(app)
    sums = (day.calls, day.failed_calls, day.unpriced_calls, day.prompt_tokens, day.cost_usd)
    assert sums == (1, 1, 0, 0, 0)


async def test_an_error_status_on_a_stream_is_recorded_the_same_way(
    app: App, parts: Parts, openai_server: OpenAIServer
) -> None:
    openai_server.enqueue(*(server_error(503, retry_after_ms=5) for _ in range(3)))

    async def ignore(text: str) -> None:
        return None

    with pytest.raises(ProviderError) as caught:
        await parts.chat.stream(ask_q("ben"), ignore)
    assert caught.value.status == 503 and not isinstance(caught.value, StreamInterrupted)
    (row,) = await usage_rows(app)
    assert (row.status, row.cost_status, row.cost_usd) == ("failed", "not_billed", 0)


# -- chat: no answer known --------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
async def test_a_timeout_is_one_failed_row_estimated_at_the_bound_and_charged(
    short_app: App, openai_server: OpenAIServer, clock: Clock, streamed: bool
) -> None:
    parts = build_parts(short_app, clock)
    await parts.budgets.set(user_id="cy", limit_usd=Decimal(1), window="month")
    openai_server.enqueue(Slow(3.0))

    async def ignore(text: str) -> None:
        return None

    with pytest.raises(ProviderTimeout):
        if streamed:
            await parts.chat.stream(ask_q("cy"), ignore)
        else:
            await parts.chat.complete(ask_q("cy"))

    (row,) = await usage_rows(short_app)
    assert row.status == "failed" and row.cost_status == "estimated"
    # the bound the hold was made for: the prompt's bytes plus overheads, and all of max_tokens
    assert (row.prompt_tokens, row.completion_tokens) == (prompt_bound(), MAX_TOKENS)
    expected = by_hand(prompt_bound(), MAX_TOKENS, 0, *GPT_4O)
    assert row.cost_usd == expected and expected > 0
    assert expected <= worst_case_of(short_app, QUESTION, model="gpt-4o", max_tokens=MAX_TOKENS, at=clock())
    assert await budget_of(parts, "cy") == (expected, 0)  # charged what it may have cost
    (day,) = await daily(short_app)
    assert (day.calls, day.failed_calls, day.completion_tokens, day.cost_usd) == (1, 1, MAX_TOKENS, expected)


@pytest.mark.parametrize(
    "script",
    [Garbage(), Reply(usage=(5, 3, 9)), BrokenStream(after_deltas=0)],
    ids=["garbage-200", "impossible-usage", "dropped-after-sending"],
)
async def test_a_malformed_or_dropped_answer_is_estimated_and_charged(
    app: App, parts: Parts, openai_server: OpenAIServer, script: Any
) -> None:
    await parts.budgets.set(user_id="dee", limit_usd=Decimal(1), window="month")
    openai_server.enqueue(script, script, script)  # a dropped connection is retried by the SDK
    with pytest.raises(ProviderError) as caught:
        await parts.chat.complete(ask_q("dee"))
    assert caught.value.delivery == "unknown"

    (row,) = await usage_rows(app)
    assert (row.status, row.cost_status, row.completion_tokens) == ("failed", "estimated", MAX_TOKENS)
    assert row.prompt_tokens == prompt_bound()
    assert row.cost_usd == by_hand(prompt_bound(), MAX_TOKENS, 0, *GPT_4O)
    assert await budget_of(parts, "dee") == (row.cost_usd, 0)


async def test_a_stream_that_breaks_before_any_text_is_estimated_at_the_bound(
    app: App, parts: Parts, openai_server: OpenAIServer
) -> None:
    openai_server.enqueue(BrokenStream(after_deltas=0))

    async def ignore(text: str) -> None:
        return None

    with pytest.raises(StreamInterrupted):
        await parts.chat.stream(ask_q("eve"), ignore)
    (row,) = await usage_rows(app)
    assert (row.status, row.cost_status, row.completion_tokens) == ("failed", "estimated", MAX_TOKENS)


# -- chat: never sent -----------------------------------------------------------------------------


async def test_a_call_that_never_reached_the_provider_writes_nothing_and_releases_its_hold(
    chat_settings: Callable[..., Settings], clock: Clock
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = chat_settings(openai_base_url=f"http://127.0.0.1:{port}/v1", chitty_model_max_retries=0)
    async with open_app(settings) as app:
        parts = build_parts(app, clock)
        await parts.budgets.set(user_id="fay", limit_usd=Decimal(1), window="month")
        with pytest.raises(ProviderError) as caught:
            await parts.chat.complete(ask_q("fay"))
        assert caught.value.delivery == "not_sent"
        assert await usage_rows(app) == []
        assert await budget_of(parts, "fay") == (0, 0)


# -- executions -----------------------------------------------------------------------------------


async def test_an_execution_whose_call_got_a_500_is_failed_with_one_not_billed_row(
    app: App, openai_server: OpenAIServer
) -> None:
    await app.budgets.set(user_id="gus", limit_usd=Decimal(1), window="month")
    openai_server.enqueue(*(server_error(500, retry_after_ms=5) for _ in range(3)))
    with pytest.raises(ExecutionFailedError) as caught:
        await app.executions.execute(ExecutionRequest(prompt=QUESTION, user_id="gus", model="gpt-4o"))

    view = await app.executions.status(caught.value.execution_id)
    assert view.status == "failed" and view.provider == "openai"
    assert view.provider_request_id is not None and view.provider_request_id.startswith("req_loopback_")
    (row,) = await usage_rows(app)
    assert row.execution_id == uuid.UUID(caught.value.execution_id)
    assert (row.source, row.status, row.cost_status, row.cost_usd) == ("execution", "failed", "not_billed", 0)
    assert (row.prompt_tokens, row.completion_tokens) == (0, 0)
    (budget,) = await app.budgets.show("gus")
    assert (budget.spent_usd, budget.reserved_usd) == (0, 0)


async def test_an_execution_whose_call_timed_out_is_failed_with_one_estimated_charged_row(
    short_app: App, openai_server: OpenAIServer
) -> None:
    app = short_app
    await app.budgets.set(user_id="hal", limit_usd=Decimal(1), window="month")
    openai_server.enqueue(Slow(3.0))
    request = ExecutionRequest(prompt=QUESTION, user_id="hal", model="gpt-4o", max_tokens=MAX_TOKENS)
    with pytest.raises(ExecutionFailedError, match="CHITTY_MODEL_TIMEOUT_S") as caught:
        await app.executions.execute(request)

    (row,) = await usage_rows(app)
    assert str(row.execution_id) == caught.value.execution_id
    assert (row.source, row.status, row.cost_status) == ("execution", "failed", "estimated")
    assert (row.prompt_tokens, row.completion_tokens) == (prompt_bound(), MAX_TOKENS)
    worst = worst_case_of(app, QUESTION, model="gpt-4o", max_tokens=MAX_TOKENS, at=datetime.now(UTC))
    assert row.cost_usd == by_hand(prompt_bound(), MAX_TOKENS, 0, *GPT_4O)
    assert row.cost_usd is not None and 0 < row.cost_usd <= worst
    (budget,) = await app.budgets.show("hal")
    assert (budget.spent_usd, budget.reserved_usd) == (row.cost_usd, 0)


async def test_an_execution_refused_before_sending_writes_no_usage_row(
    app: App, openai_server: OpenAIServer
) -> None:
    await app.budgets.set(user_id="ida", limit_usd=Decimal(0), window="month")
    with pytest.raises(Exception, match="no model call was made"):
        await app.executions.execute(ExecutionRequest(prompt=QUESTION, user_id="ida", model="gpt-4o"))
    assert await usage_rows(app) == [] and openai_server.chat_requests() == []


# -- analytics ----------------------------------------------------------------------------------


async def test_analytics_count_failed_calls_and_their_estimated_cost(
    short_app: App, openai_server: OpenAIServer, clock: Clock
) -> None:
    app = short_app
    clock.now = datetime.now(UTC)  # executions use the app's own clock
    parts = build_parts(app, clock)
    openai_server.enqueue(
        Reply(usage=(1_000, 100, 0)),  # answered
        Fail(500, "boom", headers={"x-should-retry": "false"}),  # not billed
        Slow(3.0),  # timed out: estimated
    )
    ok = await parts.chat.complete(ask_q("jo"))
    with pytest.raises(ProviderError):
        await parts.chat.complete(ask_q("jo"))
    with pytest.raises(ProviderTimeout):
        await parts.chat.complete(ask_q("jo"))
    openai_server.enqueue(Fail(500, "boom", headers={"x-should-retry": "false"}))
    with pytest.raises(ExecutionFailedError):
        await app.executions.execute(ExecutionRequest(prompt=QUESTION, user_id="jo", model="gpt-4o"))

    rows = await usage_rows(app)
    estimated = [r for r in rows if r.cost_status == "estimated"]
    assert sorted(r.cost_status for r in rows) == ["estimated", "not_billed", "not_billed", "priced"]
    report = await parts.analytics.report(user_id="jo")
    assert (report.total_calls, report.failed_calls, report.unpriced_calls) == (4, 3, 0)
    assert ok.cost_usd is not None and estimated[0].cost_usd is not None
    assert report.total_cost == ok.cost_usd + estimated[0].cost_usd
    assert report.total_tokens.completion_tokens == 100 + MAX_TOKENS
    ((model,),) = [[m for m in p.models] for p in report.breakdown]
    assert (model.model, model.calls, model.failed_calls) == ("gpt-4o", 4, 3)
    assert report.breakdown[0].failed_calls == 3 and report.by_model[0].failed_calls == 3


# -- MCP sampling: the client's own model ---------------------------------------------------------


async def test_a_sampling_call_the_client_refused_counts_with_no_tokens_and_unknown_cost(
    connect: Connect, database_url: str
) -> None:
    asked: list[CreateMessageRequestParams] = []

    async def refuse(context: Any, params: CreateMessageRequestParams) -> ErrorData:
        asked.append(params)
        return ErrorData(code=-1, message="the user declined to sample")

    client_kwargs = {"sampling_callback": refuse, "mode": "legacy"}
    async with connect(openai_base_url=None, openai_api_key=None, client_kwargs=client_kwargs) as client:
        executed = await client.call_tool(
            "chitty_secure_ai_execute", {"prompt": "Hi there", "user_id": "kit"}
        )
        chatted = await client.call_tool(
            "chatgpt_complete", {"messages": [{"role": "user", "content": "Hi"}], "user_id": "kit"}
        )
    assert executed.is_error is True and "declined" in executed.content[0].text
    assert chatted.is_error is True and "declined" in chatted.content[0].text
    assert len(asked) == 2
    rows = sorted(await usage_rows_at(database_url), key=lambda r: r.source)
    assert [r.source for r in rows] == ["chat", "execution"]
    for row in rows:
        assert (row.provider, row.status, row.user_id) == ("mcp-sampling", "failed", "kit")
        assert (row.prompt_tokens, row.completion_tokens, row.cached_tokens) == (None, None, None)
        assert (row.cost_usd, row.cost_status) == (None, "unknown_usage")
    assert rows[1].execution_id is not None and rows[0].execution_id is None
