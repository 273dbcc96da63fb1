"""PriceBook: genai-prices, override files, free local servers, unknown models."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import genai_prices
import pytest
from structlog.testing import capture_logs

from chittyos.errors import ConfigurationError, InvalidInput
from chittyos.llm.base import TokenUsage
from chittyos.llm.pricing import CostQuote, PriceBook, PriceFileError

# gpt-4o in genai-prices 0.2.3: $2.50 / M input, $1.25 / M cached input, $10 / M output, a flat
# price for its whole history in that data; we price at a fixed time all the same.
AT = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
USAGE = TokenUsage(prompt_tokens=12_000, completion_tokens=3_000, cached_tokens=8_000)
MTOK = Decimal(1_000_000)


def by_hand(usage: TokenUsage, input_: str, cached: str, output: str) -> Decimal:
    return (
        (usage.prompt_tokens - usage.cached_tokens) * Decimal(input_)
        + usage.cached_tokens * Decimal(cached)
        + usage.completion_tokens * Decimal(output)
    ) / MTOK


def write(tmp_path: Path, content: object, name: str = "prices.json") -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_gpt_4o_with_cached_tokens_matches_the_hand_computation() -> None:
    quote = PriceBook().price("gpt-4o", USAGE, AT)

    expected = by_hand(USAGE, "2.50", "1.25", "10")
    assert expected == Decimal("0.0500")  # 4000*2.5 + 8000*1.25 + 3000*10 = 50 000 per M
    assert quote == CostQuote(
        cost_usd=expected,
        status="priced",
        source=f"genai-prices {genai_prices.__version__}",
        price_version=f"{genai_prices.__version__}:openai/gpt-4o",
    )
    assert isinstance(quote.cost_usd, Decimal)


def test_cached_tokens_are_cheaper_than_uncached_ones() -> None:
    book = PriceBook()
    uncached = TokenUsage(prompt_tokens=12_000, completion_tokens=3_000)
    assert book.price("gpt-4o", uncached, AT).cost_usd == by_hand(uncached, "2.50", "1.25", "10")
    assert book.price("gpt-4o", USAGE, AT).cost_usd < book.price("gpt-4o", uncached, AT).cost_usd  # type: ignore[operator]


def test_a_dated_snapshot_and_the_openai_base_url_price_the_same() -> None:
    book = PriceBook()
    plain = book.price("gpt-4o", USAGE, AT)
    dated = book.price("gpt-4o-2024-08-06", USAGE, AT, provider_base_url="https://api.openai.com/v1")
    assert dated.cost_usd == plain.cost_usd


def test_the_request_time_picks_the_price() -> None:
    # o3's price dropped on 2025-06-10 in the genai-prices data: $10/$40 before, $2/$8 after
    book = PriceBook()
    usage = TokenUsage(prompt_tokens=1_000_000, completion_tokens=1_000_000)
    before = book.price("o3", usage, datetime(2025, 6, 1, tzinfo=UTC))
    after = book.price("o3", usage, datetime(2025, 7, 1, tzinfo=UTC))
    assert (before.cost_usd, after.cost_usd) == (Decimal(50), Decimal(10))


def test_an_override_file_wins_over_genai_prices(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '{"GPT-4o": {"input_per_mtok": "3.00", "cached_input_per_mtok": 0.5, "output_per_mtok": 12}}',
    )
    quote = PriceBook(prices_file=path).price("gpt-4o", USAGE, AT)

    assert quote.cost_usd == by_hand(USAGE, "3.00", "0.5", "12")
    assert quote.status == "priced"
    assert quote.source == f"override:{path}"
    assert quote.price_version.startswith("sha256:")


def test_an_override_prices_a_custom_model_and_cached_defaults_to_input(tmp_path: Path) -> None:
    path = write(tmp_path, {"my-llama": {"input_per_mtok": "0.20", "output_per_mtok": "0.60"}})
    quote = PriceBook(prices_file=path).price("my-llama", USAGE, AT)

    assert quote.cost_usd == by_hand(USAGE, "0.20", "0.20", "0.60")


def test_a_changed_override_file_changes_the_price_version(tmp_path: Path) -> None:
    one = PriceBook(prices_file=write(tmp_path, {"m": {"input_per_mtok": 1, "output_per_mtok": 2}}, "a.json"))
    two = PriceBook(prices_file=write(tmp_path, {"m": {"input_per_mtok": 1, "output_per_mtok": 3}}, "b.json"))
    assert one.price("m", USAGE, AT).price_version != two.price("m", USAGE, AT).price_version


def test_an_unknown_model_has_no_cost_and_is_logged() -> None:
    book = PriceBook()
    with capture_logs() as logs:
        quote = book.price("llama3:8b", USAGE, AT)
        book.price("llama3:8b", USAGE, AT)  # warned once per model and base URL

    assert quote.cost_usd is None
    assert quote.status == "unknown_model"
    [entry] = logs
    assert entry["log_level"] == "warning"
    assert entry["event"] == "price.unknown_model"
    assert entry["model"] == "llama3:8b"
    assert "CHITTY_PRICES_FILE" in entry["fix"]


def test_a_known_model_behind_an_unknown_base_url_is_not_guessed() -> None:
    # a local server naming a model like a hosted one is not billed at the hosted price
    with capture_logs():
        quote = PriceBook().price("gpt-4o", USAGE, AT, provider_base_url="http://127.0.0.1:8000/v1")
    assert quote.status == "unknown_model"


def test_models_on_a_declared_free_base_url_cost_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, {"llama3:8b": {"input_per_mtok": 1, "output_per_mtok": 1}})
    book = PriceBook(prices_file=path, free_base_urls=["http://127.0.0.1:11434/"])

    quote = book.price("llama3:8b", USAGE, AT, provider_base_url="http://127.0.0.1:11434/v1")
    assert quote == CostQuote(Decimal(0), "free", "free:http://127.0.0.1:11434", "free")
    # another port, or no base URL, is not free
    assert (
        book.price("llama3:8b", USAGE, AT, provider_base_url="http://127.0.0.1:11435/v1").status == "priced"
    )
    assert book.price("llama3:8b", USAGE, AT).status == "priced"


def test_worst_case_bills_every_prompt_token_uncached_and_all_max_tokens() -> None:
    book = PriceBook(free_base_urls=["http://localhost:11434"])
    assert (
        book.worst_case("gpt-4o", 10_000, 2_000, at=AT)
        == (10_000 * Decimal("2.50") + 2_000 * Decimal(10)) / MTOK
    )
    assert book.worst_case("gpt-4o", 10_000, 2_000, provider_base_url="http://localhost:11434/v1") == 0
    with capture_logs():
        assert book.worst_case("no-such-model-xyz", 10, 10) is None


@pytest.mark.parametrize(
    ("content", "field", "rule"),
    [
        ("{not json", "file", "must be valid JSON"),
        ("[1, 2]", "file", "must be a JSON object mapping model names to prices"),
        ('{"m": 3}', "m", "must be an object with input_per_mtok and output_per_mtok"),
        ('{"m": {"input_per_mtok": 1}}', "m.output_per_mtok", "is required"),
        ('{"m": {"input_per_mtok": 1, "output_per_mtok": 1, "inptu": 2}}', "m.inptu", "is not a known price"),
        ('{"m": {"input_per_mtok": -1, "output_per_mtok": 1}}', "m.input_per_mtok", "non-negative number"),
        (
            '{"m": {"input_per_mtok": "cheap", "output_per_mtok": 1}}',
            "m.input_per_mtok",
            "non-negative number",
        ),
        ('{"m": {"input_per_mtok": true, "output_per_mtok": 1}}', "m.input_per_mtok", "non-negative number"),
        ('{"m": {"input_per_mtok": NaN, "output_per_mtok": 1}}', "file", "must hold finite numbers only"),
        (
            '{"M": {"input_per_mtok": 1, "output_per_mtok": 1},'
            ' "m": {"input_per_mtok": 2, "output_per_mtok": 2}}',
            "m",
            "appears twice",
        ),
    ],
)
def test_a_bad_override_file_names_chitty_prices_file_and_the_rule(
    tmp_path: Path, content: str, field: str, rule: str
) -> None:
    path = write(tmp_path, content)
    with pytest.raises(PriceFileError) as caught:
        PriceBook(prices_file=path)

    assert isinstance(caught.value, ConfigurationError)
    assert caught.value.field == field
    assert rule in caught.value.rule
    assert str(caught.value).startswith(f"CHITTY_PRICES_FILE ({path}): {field}: ")


def test_a_missing_override_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PriceFileError, match=r"CHITTY_PRICES_FILE .*: file: cannot be read"):
        PriceBook(prices_file=tmp_path / "absent.json")


def test_a_bad_free_base_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="CHITTY_FREE_BASE_URLS"):
        PriceBook(free_base_urls=["localhost:11434"])


def test_naive_times_and_impossible_usage_are_refused() -> None:
    book = PriceBook()
    with pytest.raises(InvalidInput) as caught:
        book.price("gpt-4o", USAGE, datetime(2025, 6, 1))
    assert caught.value.field == "at"
    with pytest.raises(InvalidInput) as caught:
        book.price("gpt-4o", TokenUsage(prompt_tokens=1, completion_tokens=0, cached_tokens=2), AT)
    assert caught.value.field == "usage.cached_tokens"
