"""What a chat call cost: published prices, cached tokens, overrides, unknown models."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import genai_prices
import pytest
from structlog.testing import capture_logs

from chittyos.app import App, open_app
from chittyos.config import Settings
from tests.chat.conftest import Parts, ask, by_hand, usage_rows
from tests.openai_server import OpenAIServer, Reply

pytestmark = pytest.mark.anyio


async def test_a_call_with_cached_tokens_costs_what_the_published_prices_say(
    app: App, parts: Parts, openai_server: OpenAIServer
) -> None:
    # gpt-4o: $2.50 per M input, $1.25 per M cached input, $10 per M output
    openai_server.enqueue(Reply(usage=(12_000, 3_000, 8_000)))
    result = await parts.chat.complete(ask("Summarise the lease", model="gpt-4o", user_id="alice"))

    expected = by_hand(12_000, 3_000, 8_000, "2.50", "1.25", "10")
    assert expected == Decimal("0.05")
    assert result.cost_usd == expected
    assert result.cost_status == "priced"
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.cached_tokens) == (
        12_000,
        3_000,
        8_000,
    )
    assert result.usage.total_tokens == 15_000
    assert result.price_source == f"genai-prices {genai_prices.__version__}"

    (row,) = await usage_rows(app)
    assert str(row.id) == result.usage_id
    assert row.cost_usd == expected and isinstance(row.cost_usd, Decimal)
    assert (row.user_id, row.source, row.status, row.model, row.cached_tokens) == (
        "alice",
        "chat",
        "completed",
        "gpt-4o",
        8_000,
    )
    assert row.price_source == f"genai-prices {genai_prices.__version__}"
    assert row.price_version == f"{genai_prices.__version__}:openai/gpt-4o"
    assert row.created_at == parts.clock()


async def test_cached_tokens_are_not_billed_at_the_full_input_rate(
    parts: Parts, openai_server: OpenAIServer
) -> None:
    openai_server.enqueue(Reply(usage=(10_000, 0, 0)), Reply(usage=(10_000, 0, 10_000)))
    full = await parts.chat.complete(ask("q", model="gpt-4o"))
    cached = await parts.chat.complete(ask("q", model="gpt-4o"))
    assert (full.cost_usd, cached.cost_usd) == (Decimal("0.025"), Decimal("0.0125"))


async def test_the_model_that_answered_is_priced_and_recorded(
    app: App, parts: Parts, openai_server: OpenAIServer
) -> None:
    openai_server.configure(answered_model="gpt-4o-2024-08-06")
    openai_server.enqueue(Reply(usage=(1_000, 1_000, 0)))
    result = await parts.chat.complete(ask("q", model="gpt-4o"))
    assert result.model == "gpt-4o-2024-08-06"
    assert result.cost_usd == by_hand(1_000, 1_000, 0, "2.50", "1.25", "10")
    (row,) = await usage_rows(app)
    assert (row.requested_model, row.model) == ("gpt-4o", "gpt-4o-2024-08-06")


async def test_an_override_file_changes_the_price_and_is_recorded_as_the_source(
    chat_settings: Callable[..., Settings], openai_server: OpenAIServer, tmp_path: Path
) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(
        json.dumps(
            {"gpt-4o": {"input_per_mtok": "3.00", "cached_input_per_mtok": "0.50", "output_per_mtok": "12"}}
        )
    )
    openai_server.enqueue(Reply(usage=(12_000, 3_000, 8_000)))
    async with open_app(chat_settings(chitty_prices_file=prices)) as app:
        result = await app.chat.complete(ask("q", model="gpt-4o"))
        (row,) = await usage_rows(app)
    assert result.cost_usd == by_hand(12_000, 3_000, 8_000, "3.00", "0.50", "12") == Decimal("0.052")
    assert row.price_source == f"override:{prices}"
    assert row.price_version is not None and row.price_version.startswith("sha256:")


async def test_an_unknown_model_has_no_cost_and_a_logged_warning_never_a_silent_zero(
    app: App, parts: Parts, openai_server: OpenAIServer
) -> None:
    with capture_logs() as logs:
        result = await parts.chat.complete(ask("q", model="llama-local-7b"))
    assert result.cost_usd is None
    assert result.cost_status == "unknown_model"
    assert result.usage is not None and result.usage.total_tokens > 0
    assert any(e["event"] == "price.unknown_model" and e["log_level"] == "warning" for e in logs)
    (row,) = await usage_rows(app)
    assert row.cost_usd is None and row.cost_status == "unknown_model"


async def test_without_a_pricing_url_a_loopback_server_is_not_guessed_to_be_openai(
    chat_settings: Callable[..., Settings], openai_server: OpenAIServer
) -> None:
    async with open_app(chat_settings(chitty_pricing_base_url=None)) as app:
        with capture_logs():
            result = await app.chat.complete(ask("q", model="gpt-4o"))
    assert (result.cost_usd, result.cost_status) == (None, "unknown_model")


async def test_a_declared_free_server_costs_zero_and_says_so(
    chat_settings: Callable[..., Settings], openai_server: OpenAIServer
) -> None:
    root = openai_server.base_url.removesuffix("/v1")
    async with open_app(chat_settings(chitty_pricing_base_url=None, chitty_free_base_urls=root)) as app:
        result = await app.chat.complete(ask("q", model="llama3:8b"))
    assert (result.cost_usd, result.cost_status) == (Decimal(0), "free")
    assert result.price_source == f"free:{root}"


async def test_an_execution_records_one_priced_usage_row_per_model_call(
    app: App, openai_server: OpenAIServer
) -> None:
    from chittyos.execution import ExecutionRequest

    openai_server.enqueue(Reply(usage=(12_000, 3_000, 8_000)))
    view = await app.executions.execute(ExecutionRequest(prompt="p", user_id="bob", model="gpt-4o"))
    (row,) = await usage_rows(app)
    assert str(row.execution_id) == view.execution_id
    assert (row.source, row.status, row.user_id) == ("execution", "completed", "bob")
    assert row.cost_usd == Decimal("0.05") and row.cost_status == "priced"


async def test_an_answer_cut_off_at_max_tokens_says_so_in_warnings(
    parts: Parts, openai_server: OpenAIServer
) -> None:
    cut = await parts.chat.complete(ask("one two three four five six", max_tokens=3))
    whole = await parts.chat.complete(ask("one two", max_tokens=50))
    assert cut.finish_reason == "length"
    assert any("cut off at max_tokens (3)" in w for w in cut.warnings)
    assert whole.finish_reason == "stop" and not any("cut off" in w for w in whole.warnings)
