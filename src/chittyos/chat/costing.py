"""What one model call cost: the price book, plus which base URL each provider is priced as.

The answer always says how it was reached (``cost_status``) and from which table (``source``,
``version``), to be stored next to the cost::

    priced          usage reported by the provider, model in the price table
    free            the call went to a base URL declared free (CHITTY_FREE_BASE_URLS)
    estimated       usage not reported (a stream that broke off, a call that timed out or got a
                    malformed answer): an upper-bound token estimate
    not_billed      the provider answered with an error status: 0 tokens, cost 0
    unknown_model   the model has no known price: cost None, and the price book logs a warning
    unknown_usage   the provider reported no usage (MCP sampling): cost None
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_CEILING, Decimal

from chittyos.chat.models import CostStatus
from chittyos.db.models import MONEY_PLACES, to_money
from chittyos.llm import TokenUsage
from chittyos.llm.pricing import PriceBook

__all__ = ["NOT_BILLED", "CallCost", "CallPricer"]


@dataclass(frozen=True)
class CallCost:
    cost_usd: Decimal | None
    """USD with 10 places; None for unknown_model and unknown_usage."""
    status: CostStatus
    source: str | None
    version: str | None


_NO_USAGE = CallCost(None, "unknown_usage", None, None)
NOT_BILLED = CallCost(to_money(0), "not_billed", None, None)
"""A call the provider refused with an error status: it reports and bills no tokens."""


class CallPricer:
    """Prices calls by provider name.

    ``base_urls`` maps a provider name (``Completion.provider``) to the base URL whose prices
    apply (CHITTY_PRICING_BASE_URL, else the URL the provider calls); a provider not in it is
    priced by model name alone.
    """

    def __init__(self, *, prices: PriceBook, base_urls: Mapping[str, str | None]) -> None:
        self._prices = prices
        self._base_urls = dict(base_urls)

    def base_url(self, provider: str) -> str | None:
        return self._base_urls.get(provider)

    def model_key(self, model: str) -> str:
        """The name budgets match ``model`` under (``PriceBook.model_key``)."""
        return self._prices.model_key(model)

    def cost(
        self, *, model: str, provider: str, usage: TokenUsage | None, at: datetime, estimated: bool = False
    ) -> CallCost:
        """The cost of a call of ``model`` at ``at``. ``estimated``: ``usage`` is an estimate."""
        if usage is None:
            return _NO_USAGE
        quote = self._prices.price(model, usage, at, self.base_url(provider))
        cost = None if quote.cost_usd is None else to_money(quote.cost_usd)
        status: CostStatus = quote.status
        if estimated and status == "priced":
            status = "estimated"
        return CallCost(cost, status, quote.source, quote.price_version)

    def worst_case(
        self, *, model: str, provider: str, prompt_tokens: int, max_tokens: int, at: datetime
    ) -> Decimal | None:
        """The most one call can cost (no cached tokens, all of ``max_tokens``); None if unknown."""
        worst = self._prices.worst_case(
            model, prompt_tokens, max_tokens, at=at, provider_base_url=self.base_url(provider)
        )
        # Rounded up, so that a reservation is never a fraction below the true worst case.
        return None if worst is None else worst.quantize(_QUANTUM, rounding=ROUND_CEILING)


_QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)
