"""Budgets: reservations that parallel calls cannot overshoot, windows, expiry, executions, CLI."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import anyio
import pytest
import structlog
from sqlalchemy import func, select
from structlog.testing import capture_logs
from typer.testing import CliRunner

from chittyos.app import App, open_app
from chittyos.chat import estimate_prompt_tokens
from chittyos.cli import app as cli
from chittyos.config import Settings
from chittyos.db.models import SecureExecution
from chittyos.errors import BudgetExceeded, InvalidInput, RateLimited
from chittyos.execution import ExecutionRequest
from chittyos.llm import ChatMessage
from tests.chat.conftest import Clock, Parts, ask, build_parts, usage_rows, worst_case_of
from tests.openai_server import OpenAIServer, Reply, Slow

pytestmark = pytest.mark.anyio

QUESTION = "Is this clause enforceable?"
MAX_TOKENS = 50


def prompt_bound(content: str = QUESTION) -> int:
    return estimate_prompt_tokens([ChatMessage(role="user", content=content)])


async def test_twenty_parallel_calls_against_a_budget_for_five_let_five_reach_the_model(
    app: App, parts: Parts, openai_server: OpenAIServer
) -> None:
    worst = worst_case_of(app, QUESTION, model="gpt-4o", max_tokens=MAX_TOKENS, at=parts.clock())
    limit = 5 * worst
    await parts.budgets.set(user_id="ivy", limit_usd=limit, window="month")
    # each answer costs its full worst case, so the budget holds exactly five
    openai_server.enqueue(*(Slow(0.05, Reply(usage=(prompt_bound(), MAX_TOKENS, 0))) for _ in range(20)))
    outcomes: list[str] = []

    async def call() -> None:
        try:
            await parts.chat.complete(ask(QUESTION, model="gpt-4o", max_tokens=MAX_TOKENS, user_id="ivy"))
            outcomes.append("ok")
        except BudgetExceeded as exc:
            assert "no model call was made" in str(exc)
            outcomes.append("refused")

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(call)

    assert len(openai_server.chat_requests()) == 5
    assert outcomes.count("ok") == 5 and outcomes.count("refused") == 15
    spent = sum((r.cost_usd for r in await usage_rows(app) if r.cost_usd is not None), Decimal(0))
    assert spent == limit
    (view,) = await parts.budgets.show("ivy")
    assert (view.spent_usd, view.reserved_usd, view.remaining_usd, view.state) == (limit, 0, 0, "exceeded")


async def test_cheaper_answers_settle_below_the_hold_and_free_room_for_more_calls(
    app: App, parts: Parts, openai_server: OpenAIServer
) -> None:
    worst = worst_case_of(app, QUESTION, model="gpt-4o", max_tokens=MAX_TOKENS, at=parts.clock())
    await parts.budgets.set(user_id="ivy", limit_usd=2 * worst, window="month")
    for _ in range(3):  # the loopback answer is far below the worst case
        await parts.chat.complete(ask(QUESTION, model="gpt-4o", max_tokens=MAX_TOKENS, user_id="ivy"))
    (view,) = await parts.budgets.show("ivy")
    assert view.reserved_usd == 0
    assert view.spent_usd == sum((r.cost_usd for r in await usage_rows(app) if r.cost_usd), Decimal(0))
    assert view.spent_usd < 2 * worst


async def test_the_refusal_says_spent_limit_and_when_the_window_resets_and_the_window_does_reset(
    app: App, openai_server: OpenAIServer
) -> None:
    clock = Clock(datetime(2025, 1, 31, 23, 59, 30, tzinfo=UTC))
    parts = build_parts(app, clock)
    worst = worst_case_of(app, QUESTION, model="gpt-4o", max_tokens=MAX_TOKENS, at=clock())
    await parts.budgets.set(user_id="jack", limit_usd=worst, window="day")
    openai_server.enqueue(*(Reply(usage=(prompt_bound(), MAX_TOKENS, 0)) for _ in range(2)))
    request = ask(QUESTION, model="gpt-4o", max_tokens=MAX_TOKENS, user_id="jack")

    await parts.chat.complete(request)
    with pytest.raises(BudgetExceeded) as caught:
        await parts.chat.complete(request)
    message = str(caught.value)
    assert "resets at 2025-02-01T00:00:00Z" in message
    assert "has spent $" in message and "per day" in message and "'jack'" in message
    assert caught.value.spent_usd == worst and caught.value.limit_usd == worst  # type: ignore[attr-defined]
    assert len(openai_server.chat_requests()) == 1

    clock.now = datetime(2025, 2, 1, 0, 0, tzinfo=UTC)
    await parts.chat.complete(request)
    (view,) = await parts.budgets.show("jack")
    assert view.window_start == datetime(2025, 2, 1, tzinfo=UTC)
    assert view.spent_usd == worst and view.resets_at == datetime(2025, 2, 2, tzinfo=UTC)


async def test_a_hold_left_by_a_crashed_process_expires(app: App, openai_server: OpenAIServer) -> None:
    clock = Clock(datetime(2025, 3, 3, 9, 0, tzinfo=UTC))
    parts = build_parts(app, clock, ttl_s=120)
    worst = worst_case_of(app, QUESTION, model="gpt-4o", max_tokens=MAX_TOKENS, at=clock())
    await parts.budgets.set(user_id="kim", limit_usd=worst, window="month")
    # a call that reserved and then died: nothing will ever settle this hold
    hold = await parts.budgets.reserve(
        user_id="kim", model="gpt-4o", provider="openai", prompt_tokens=prompt_bound(), max_tokens=MAX_TOKENS
    )
    assert hold is not None and hold.amount_usd == worst
    request = ask(QUESTION, model="gpt-4o", max_tokens=MAX_TOKENS, user_id="kim")
    with pytest.raises(BudgetExceeded, match="held by calls in flight"):
        await parts.chat.complete(request)

    clock.advance(seconds=121)
    (view,) = await parts.budgets.show("kim")
    assert view.reserved_usd == 0  # the expired hold no longer counts
    result = await parts.chat.complete(request)
    assert result.cost_status == "priced"


async def test_a_model_budget_and_an_all_models_budget_both_apply(
    app: App, parts: Parts, openai_server: OpenAIServer
) -> None:
    await parts.budgets.set(user_id="lee", limit_usd=Decimal(10), window="total")
    await parts.budgets.set(user_id="lee", limit_usd=Decimal(0), window="month", model="gpt-4o")
    with pytest.raises(BudgetExceeded, match="for gpt-4o"):
        await parts.chat.complete(ask(QUESTION, model="gpt-4o", user_id="lee"))
    result = await parts.chat.complete(ask(QUESTION, model="gpt-4o-mini", user_id="lee"))
    views = {v.model: v for v in await parts.budgets.show("lee")}
    assert views[None].spent_usd == result.cost_usd and views["gpt-4o"].spent_usd == 0
    assert views[None].resets_at is None


async def test_a_model_budget_covers_every_name_of_its_model(
    parts: Parts, openai_server: OpenAIServer
) -> None:
    """Spelling the model differently (case, a dated snapshot) is no way around its budget."""
    await parts.chat.complete(ask(QUESTION, model="gpt-4o-2024-08-06", user_id="kim"))
    view = await parts.budgets.set(user_id="kim", limit_usd=Decimal(1), window="total", model="GPT-4o")
    assert view.model == "gpt-4o" and view.spent_usd > 0  # earlier spend under the dated name counts
    await parts.budgets.set(user_id="kim", limit_usd=view.spent_usd, window="total", model="gpt-4o")
    for name in ("gpt-4o", "GPT-4o", "gpt-4o-2024-08-06"):
        with pytest.raises(BudgetExceeded, match="for gpt-4o"):
            await parts.chat.complete(ask(QUESTION, model=name, user_id="kim"))
    await parts.chat.complete(ask(QUESTION, model="gpt-4o-mini", user_id="kim"))  # another model
    assert len(await parts.budgets.show("kim")) == 1
    await parts.budgets.remove(user_id="kim", model="GPT-4o-2024-08-06")
    assert await parts.budgets.show("kim") == []


@pytest.mark.parametrize("ratio", ["-0.1", "0", "1.5", "abc", "NaN", True])
async def test_a_soft_limit_ratio_outside_0_to_1_is_refused_as_a_ratio(parts: Parts, ratio: object) -> None:
    with pytest.raises(InvalidInput) as refused:
        await parts.budgets.set(user_id="rae", limit_usd=Decimal(1), window="day", soft_limit_ratio=ratio)
    assert refused.value.field == "soft_limit_ratio" and "at most 1" in refused.value.rule
    assert "USD" not in str(refused.value)
    assert await parts.budgets.show("rae") == []


async def test_under_a_budget_a_model_without_a_price_is_refused_not_run_unmetered(
    parts: Parts, openai_server: OpenAIServer
) -> None:
    await parts.budgets.set(user_id="max", limit_usd=Decimal(100), window="month")
    with capture_logs(), pytest.raises(BudgetExceeded, match="CHITTY_PRICES_FILE"):
        await parts.chat.complete(ask(QUESTION, model="llama-local-7b", user_id="max"))
    assert openai_server.chat_requests() == []


async def test_the_soft_limit_warns_in_the_result(
    app: App, parts: Parts, openai_server: OpenAIServer
) -> None:
    worst = worst_case_of(app, QUESTION, model="gpt-4o", max_tokens=MAX_TOKENS, at=parts.clock())
    await parts.budgets.set(user_id="ned", limit_usd=2 * worst, window="month", soft_limit_ratio="0.5")
    openai_server.enqueue(Reply(usage=(prompt_bound(), MAX_TOKENS, 0)))
    result = await parts.chat.complete(ask(QUESTION, model="gpt-4o", max_tokens=MAX_TOKENS, user_id="ned"))
    assert len(result.warnings) == 1 and "passed 50% of its limit" in result.warnings[0]
    (view,) = await parts.budgets.show("ned")
    assert view.state == "warning"


async def test_spend_recorded_before_a_budget_is_set_counts_in_its_window(
    app: App, parts: Parts, openai_server: OpenAIServer
) -> None:
    first = await parts.chat.complete(ask(QUESTION, model="gpt-4o", user_id="ola"))
    view = await parts.budgets.set(user_id="ola", limit_usd=Decimal(1), window="day")
    assert view.spent_usd == first.cost_usd


async def test_executions_reserve_in_their_first_transaction_and_settle_in_the_subscriber(
    app: App, openai_server: OpenAIServer
) -> None:
    at = datetime.now(UTC)
    worst = worst_case_of(app, QUESTION, model="gpt-4o", max_tokens=MAX_TOKENS, at=at)
    await app.budgets.set(user_id="pam", limit_usd=worst, window="month")
    request = ExecutionRequest(prompt=QUESTION, user_id="pam", model="gpt-4o", max_tokens=MAX_TOKENS)

    view = await app.executions.execute(request)
    (budget,) = await app.budgets.show("pam")
    (row,) = await usage_rows(app)
    assert budget.reserved_usd == 0 and budget.spent_usd == row.cost_usd and row.cost_usd > 0
    assert str(row.execution_id) == view.execution_id

    with pytest.raises(BudgetExceeded, match="no model call was made"):
        await app.executions.execute(request)
    assert len(openai_server.chat_requests()) == 1
    async with app.uow.read() as session:  # the refused execution left no row
        assert await session.scalar(select(func.count()).select_from(SecureExecution)) == 1


async def test_a_failed_execution_gives_its_hold_back(app: App, openai_server: OpenAIServer) -> None:
    from chittyos.execution import ExecutionFailedError
    from tests.openai_server import server_error

    await app.budgets.set(user_id="quinn", limit_usd=Decimal(1), window="month")
    openai_server.enqueue(*(server_error(500, retry_after_ms=5) for _ in range(3)))
    with pytest.raises(ExecutionFailedError):
        await app.executions.execute(ExecutionRequest(prompt="p", user_id="quinn", model="gpt-4o"))
    (budget,) = await app.budgets.show("quinn")
    assert (budget.reserved_usd, budget.spent_usd) == (0, 0)


async def test_the_rate_limit_refuses_before_any_model_call_and_lets_up_after_a_minute(
    app: App, openai_server: OpenAIServer
) -> None:
    clock = Clock(datetime(2025, 5, 5, 8, 0, tzinfo=UTC))
    parts = build_parts(app, clock, rate_limit=2)
    await parts.chat.complete(ask("a", user_id="rae"))
    clock.advance(seconds=30)
    await parts.chat.complete(ask("b", user_id="rae"))
    with pytest.raises(RateLimited, match="CHITTY_RATE_LIMIT_PER_MINUTE") as caught:
        await parts.chat.complete(ask("c", user_id="rae"))
    assert "retry in 30.0 s" in str(caught.value)
    await parts.chat.complete(ask("d", user_id="someone-else"))
    assert len(openai_server.chat_requests()) == 3
    clock.advance(seconds=30)
    await parts.chat.complete(ask("e", user_id="rae"))


async def test_executions_share_the_rate_limit(
    chat_settings: Callable[..., Settings], openai_server: OpenAIServer
) -> None:
    async with open_app(chat_settings(chitty_rate_limit_per_minute=1)) as app:
        await app.executions.execute(ExecutionRequest(prompt="p", user_id="sam"))
        with pytest.raises(RateLimited):
            await app.chat.complete(ask("q", user_id="sam"))
        with pytest.raises(RateLimited):
            await app.executions.execute(ExecutionRequest(prompt="p", user_id="sam"))
        async with app.uow.read() as session:
            assert await session.scalar(select(func.count()).select_from(SecureExecution)) == 1
    assert len(openai_server.chat_requests()) == 1


def test_the_budget_cli_sets_and_shows_budgets(
    settings_for_cli: dict[str, str], restore_logging: None
) -> None:
    runner = CliRunner()
    set_ = runner.invoke(
        cli,
        [
            "budget",
            "set",
            "--user",
            "tess",
            "--limit",
            "10",
            "--window",
            "month",
            "--model",
            "gpt-4o",
            "--soft",
            "0.8",
        ],
        env=settings_for_cli,
    )
    assert set_.exit_code == 0, set_.output
    assert '"limit_usd": "10"' in set_.output and '"model": "gpt-4o"' in set_.output
    runner.invoke(
        cli, ["budget", "set", "--user", "tess", "--limit", "25.5", "--window", "total"], env=settings_for_cli
    )
    show = runner.invoke(cli, ["budget", "show", "--user", "tess"], env=settings_for_cli)
    assert show.exit_code == 0, show.output
    assert show.output.count('"window"') == 2 and '"window": "total"' in show.output

    bad = runner.invoke(
        cli, ["budget", "set", "--user", "tess", "--limit", "-1", "--window", "month"], env=settings_for_cli
    )
    assert bad.exit_code == 2 and "--limit: " in bad.output and "limit_usd" not in bad.output
    assert '"soft_limit_ratio": "0.8"' in show.output  # the ratio as given, not NUMERIC's 0.8000000000

    removed = runner.invoke(
        cli, ["budget", "remove", "--user", "tess", "--model", "gpt-4o"], env=settings_for_cli
    )
    assert removed.exit_code == 0, removed.output
    again = runner.invoke(
        cli, ["budget", "remove", "--user", "tess", "--model", "gpt-4o"], env=settings_for_cli
    )
    assert again.exit_code == 2 and "not found" in again.output
    show = runner.invoke(cli, ["budget", "show", "--user", "tess"], env=settings_for_cli)
    assert show.output.count('"window"') == 1


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The CLI points logging at its (captured, then closed) stderr; put it back afterwards."""
    config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.configure(**config)
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def settings_for_cli(chat_settings: Callable[..., Settings]) -> dict[str, Any]:
    settings = chat_settings()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHITTY_", "OPENAI_"))}
    env.update(
        CHITTY_DATA_DIR=str(settings.chitty_data_dir),
        CHITTY_DATABASE_URL=settings.database_url,
        CHITTY_LOG_LEVEL="WARNING",
    )
    return env


async def test_a_completion_rolled_back_by_a_later_subscriber_is_settled_once_by_the_failure(
    app: App, openai_server: OpenAIServer
) -> None:
    from chittyos.events import ExecutionCompleted
    from chittyos.execution import ExecutionFailedError

    async def broken(event: ExecutionCompleted, session: Any) -> None:
        raise RuntimeError("a later subscriber exploded")

    app.bus.subscribe(ExecutionCompleted, broken)
    await app.budgets.set(user_id="uli", limit_usd=Decimal(1), window="month")
    with pytest.raises(ExecutionFailedError, match="recording the completion failed"):
        await app.executions.execute(ExecutionRequest(prompt="p", user_id="uli", model="gpt-4o"))
    (row,) = await usage_rows(app)  # the completed row was rolled back with tx 2
    assert row.status == "failed" and row.cost_usd is not None and row.cost_usd > 0
    (budget,) = await app.budgets.show("uli")
    assert (budget.spent_usd, budget.reserved_usd) == (row.cost_usd, 0)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_on_sqlite_a_user_without_a_budget_reserves_without_waiting_for_the_write_lock(
    app: App, parts: Parts, database_url: str
) -> None:
    # Another writer holds SQLite's one write lock. A user no budget covers needs nothing locked,
    # so the reserve answers at once; a user with a budget still queues for the lock.
    import sqlite3

    await parts.budgets.set(user_id="capped", limit_usd=Decimal(5), window="month")
    path = database_url.removeprefix("sqlite:///")
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    other.execute("BEGIN IMMEDIATE")
    capped: list[Any] = []

    async def reserve_capped() -> None:
        capped.append(
            await parts.budgets.reserve(
                user_id="capped", model="gpt-4o-mini", provider="openai", prompt_tokens=10, max_tokens=10
            )
        )

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(reserve_capped)
            with anyio.fail_after(2):
                hold = await parts.budgets.reserve(
                    user_id="free", model="gpt-4o-mini", provider="openai", prompt_tokens=10, max_tokens=10
                )
            assert hold is None
            await anyio.sleep(0.3)
            assert capped == []  # still queued behind the other writer
            other.execute("ROLLBACK")
    finally:
        other.close()
    assert capped[0] is not None and capped[0].budgets == 1
