"""The standard tier end to end through ExecutionService, on SQLite and on PostgreSQL."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import anyio
import pytest
from sqlalchemy import func, select, update

from chittyos.app import App, open_app
from chittyos.db.models import SecureExecution
from chittyos.errors import ConfigurationError, InvalidInput, NotFound, TierNotAvailable
from chittyos.events import ExecutionCompleted
from chittyos.execution import ExecutionFailedError, ExecutionRequest
from tests.openai_server import OpenAIServer, Reply, Slow, server_error

pytestmark = pytest.mark.anyio


async def rows(app: App) -> list[SecureExecution]:
    async with app.uow.read() as session:
        return list((await session.execute(select(SecureExecution))).scalars())


async def test_standard_execution_completes_and_is_recorded(app: App, openai_server: OpenAIServer) -> None:
    openai_server.configure(answered_model="gpt-4o-mini-2024-07-18", cached_tokens=2)
    view = await app.executions.execute(
        ExecutionRequest(prompt="Summarise the lease", user_id="alice", case_id="C-1", label="lease")
    )

    assert view.status == "completed"
    assert view.results.chatgpt_response == "Echo: Summarise the lease"
    assert view.results.output_hash == hashlib.sha256(b"Echo: Summarise the lease").hexdigest()
    assert view.prompt_hash == hashlib.sha256(b"Summarise the lease").hexdigest()
    assert view.provider == "openai"
    assert view.provider_request_id
    assert view.model == "gpt-4o-mini" and view.answered_model == "gpt-4o-mini-2024-07-18"
    assert view.usage is not None and view.usage.cached_tokens == 2
    assert view.usage.total_tokens == view.usage.prompt_tokens + view.usage.completion_tokens
    assert view.verification.fortress_signed is False
    assert view.created_at.tzinfo is not None and view.completed_at is not None
    assert view.started_at is not None and view.created_at <= view.started_at <= view.completed_at

    sent = openai_server.chat_requests()
    assert len(sent) == 1
    assert sent[0].body["messages"] == [{"role": "user", "content": "Summarise the lease"}]
    assert sent[0].body["model"] == "gpt-4o-mini"

    again = await app.executions.status(view.execution_id)
    assert again == view
    (row,) = await rows(app)
    assert row.status == "completed" and row.case_id == "C-1" and row.label == "lease"
    assert row.metadata_["answered_model"] == "gpt-4o-mini-2024-07-18"


async def test_upstream_500_after_retries_marks_the_execution_failed(app: App, openai_server: OpenAIServer) -> None:
    openai_server.enqueue(*(server_error(500, retry_after_ms=5) for _ in range(3)))
    with pytest.raises(ExecutionFailedError) as caught:
        await app.executions.execute(ExecutionRequest(prompt="hello", user_id="bob"))

    assert len(openai_server.chat_requests()) == 3  # first try + CHITTY_MODEL_MAX_RETRIES=2
    view = await app.executions.status(caught.value.execution_id)
    assert view.status == "failed"
    assert view.error_message and "500" in view.error_message
    assert view.results.chatgpt_response is None and view.completed_at is not None
    assert len(await rows(app)) == 1


async def test_upstream_slower_than_the_timeout_fails_with_a_timeout_reason(
    make_settings: Any, openai_server: OpenAIServer
) -> None:
    openai_server.enqueue(Slow(3.0))
    async with open_app(make_settings(chitty_model_timeout_s=0.3, chitty_model_max_retries=0)) as app:
        with pytest.raises(ExecutionFailedError) as caught:
            await app.executions.execute(ExecutionRequest(prompt="hello", user_id="bob"))
        view = await app.executions.status(caught.value.execution_id)
    assert view.status == "failed"
    assert "timed out" in (view.error_message or "") or "timeout" in (view.error_message or "").lower()
    assert "CHITTY_MODEL_TIMEOUT_S" in (view.error_message or "")


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"prompt": "", "user_id": "u"}, "prompt"),
        ({"prompt": "   ", "user_id": "u"}, "prompt"),
        ({"prompt": "x" * 1001, "user_id": "u"}, "prompt"),
        ({"prompt": "p", "user_id": ""}, "user_id"),
        ({"prompt": "p", "user_id": "u" * 256}, "user_id"),
        ({"prompt": "p", "user_id": "u", "security_level": "paranoid"}, "security_level"),
        ({"prompt": "p", "user_id": "u", "case_id": "a\nb"}, "case_id"),
        ({"prompt": "p", "user_id": "u", "model": ""}, "model"),
    ],
)
async def test_bad_input_names_the_field_and_writes_nothing(
    make_settings: Any, openai_server: OpenAIServer, request_fields: dict[str, Any], field: str
) -> None:
    async with open_app(make_settings(chitty_max_prompt_chars=1000)) as app:
        with pytest.raises(InvalidInput) as caught:
            await app.executions.execute(ExecutionRequest(**request_fields))
        assert caught.value.field == field
        assert await rows(app) == []
    assert openai_server.chat_requests() == []


async def test_a_tier_that_is_not_registered_is_named_and_nothing_is_written(
    app: App, openai_server: OpenAIServer
) -> None:
    with pytest.raises(TierNotAvailable) as caught:
        await app.executions.execute(ExecutionRequest(prompt="p", user_id="u", security_level="fortress"))
    assert caught.value.tier == "fortress"
    assert "fortress" in str(caught.value) and "standard" in str(caught.value)
    assert await rows(app) == []


async def test_unknown_and_malformed_execution_ids_are_refused(app: App) -> None:
    with pytest.raises(NotFound):
        await app.executions.status("3f0c1f3e-8a43-4f1e-9d8b-2c1f9f0b7a11")
    with pytest.raises(InvalidInput) as caught:
        await app.executions.status("not-a-uuid")
    assert caught.value.field == "execution_id"


async def test_without_any_provider_the_error_says_what_to_set(make_settings: Any) -> None:
    async with open_app(make_settings(openai_base_url=None, openai_api_key=None)) as app:
        with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
            await app.executions.execute(ExecutionRequest(prompt="p", user_id="u"))
        assert await rows(app) == []


async def test_a_failing_subscriber_rolls_the_completion_back_and_marks_it_failed(
    app: App, openai_server: OpenAIServer
) -> None:
    async def broken(event: ExecutionCompleted, session: Any) -> None:
        raise RuntimeError("subscriber exploded")

    app.bus.subscribe(ExecutionCompleted, broken)
    with pytest.raises(ExecutionFailedError, match="recording the completion failed"):
        await app.executions.execute(ExecutionRequest(prompt="p", user_id="u"))
    (row,) = await rows(app)
    assert row.status == "failed"
    assert row.chatgpt_response is None  # the completed values were rolled back with tx 2


async def test_parallel_executions_each_land_once(app: App, openai_server: OpenAIServer) -> None:
    results: list[str] = []

    async def one(i: int) -> None:
        view = await app.executions.execute(ExecutionRequest(prompt=f"question {i}", user_id="u"))
        results.append(view.execution_id)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(one, i)
    assert len(set(results)) == 20
    async with app.uow.read() as session:
        completed = await session.scalar(
            select(func.count()).select_from(SecureExecution).where(SecureExecution.status == "completed")
        )
    assert completed == 20


async def test_a_cancelled_execution_is_marked_failed_and_holds_no_lock(app: App, openai_server: OpenAIServer) -> None:
    openai_server.enqueue(Slow(3.0))
    with anyio.move_on_after(0.5):
        await app.executions.execute(ExecutionRequest(prompt="slow one", user_id="u"))
    (row,) = await rows(app)
    assert row.status == "failed" and row.error_message == "cancelled by the client"
    with anyio.fail_after(10):  # a leaked transaction would keep the database locked
        view = await app.executions.execute(ExecutionRequest(prompt="next", user_id="u"))
    assert view.status == "completed"


async def test_an_upstream_reporting_impossible_usage_fails_the_execution_not_the_caller(
    app: App, openai_server: OpenAIServer
) -> None:
    openai_server.enqueue(Reply(usage=(5, 3, 9)))  # more cached tokens than prompt tokens
    with pytest.raises(ExecutionFailedError) as caught:
        await app.executions.execute(ExecutionRequest(prompt="p", user_id="u"))
    assert "malformed" in caught.value.reason and "cached_tokens" in caught.value.reason
    (row,) = await rows(app)
    assert row.status == "failed"


async def test_executions_left_running_by_a_dead_process_are_failed_at_start_up(
    make_settings: Any, openai_server: OpenAIServer
) -> None:
    from datetime import UTC, datetime, timedelta

    settings = make_settings(chitty_execution_stale_s=60)
    async with open_app(settings) as app:
        view = await app.executions.execute(ExecutionRequest(prompt="p", user_id="u"))
        async with app.uow.begin() as session:  # as a killed process leaves it
            await session.execute(
                update(SecureExecution).values(
                    status="executing", completed_at=None, created_at=datetime.now(UTC) - timedelta(minutes=5)
                )
            )
    async with open_app(settings) as app:
        again = await app.executions.status(view.execution_id)
    assert again.status == "failed" and "abandoned" in (again.error_message or "")


async def test_the_usage_row_of_a_failed_call_lands_in_the_transaction_that_fails_the_execution(
    app: App, openai_server: OpenAIServer
) -> None:
    from chittyos.db.models import UsageRecord
    from chittyos.events import ExecutionFailed

    seen: list[tuple[str, list[tuple[str, str]]]] = []

    async def later(event: ExecutionFailed, session: Any) -> None:
        # registered after the spend guard: what it sees is what the same transaction wrote
        status = await session.scalar(
            select(SecureExecution.status).where(SecureExecution.id == uuid.UUID(event.execution_id))
        )
        usage = (await session.execute(select(UsageRecord.status, UsageRecord.cost_status))).all()
        seen.append((status, [tuple(u) for u in usage]))
        if len(seen) == 1:
            raise RuntimeError("a later subscriber exploded")

    app.bus.subscribe(ExecutionFailed, later)
    openai_server.enqueue(*(server_error(500, retry_after_ms=5) for _ in range(3)))
    with pytest.raises(RuntimeError, match="exploded"):
        await app.executions.execute(ExecutionRequest(prompt="p", user_id="u"))
    assert seen == [("failed", [("failed", "not_billed")])]
    # rolled back together: the row is not marked failed, so there is no usage row either
    (row,) = await rows(app)
    assert row.status == "executing"
    async with app.uow.read() as session:
        assert (await session.execute(select(UsageRecord))).all() == []

    openai_server.enqueue(*(server_error(500, retry_after_ms=5) for _ in range(3)))
    with pytest.raises(ExecutionFailedError) as caught:
        await app.executions.execute(ExecutionRequest(prompt="p", user_id="u"))
    async with app.uow.read() as session:
        usage = list((await session.execute(select(UsageRecord))).scalars())
    assert [(str(u.execution_id), u.status, u.cost_status) for u in usage] == [
        (caught.value.execution_id, "failed", "not_billed")
    ]
