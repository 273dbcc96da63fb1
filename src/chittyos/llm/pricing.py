"""What a model call cost, in USD, from a maintained price table.

``PriceBook.price`` answers in this order:

1. the base URL the model was served from is declared free (a local server): status ``free``, 0;
2. the model is in the override file (``CHITTY_PRICES_FILE``): status ``priced`` at those rates;
3. ``genai-prices`` (bundled data, works offline) knows the model, for the provider of the base
   URL (or, without a base URL, by model name) at the time of the request: status ``priced``.
   A base URL it does not know (a proxy, a self-hosted server) is not priced by model name,
   since a hosted provider's price would be a wrong number there;
4. otherwise status ``unknown_model``, cost None and a logged warning: never a silent 0.

Cached prompt tokens are part of ``prompt_tokens`` and are billed at the cached-input rate::

    cost = (prompt - cached) * input + cached * cached_input + completion * output   (per 1e6 tokens)

Money is ``Decimal`` throughout. A loopback URL is not free unless declared: it may be a proxy
(LiteLLM and the like) in front of a paid API.

The override file maps model names (matched case-insensitively, exactly) to USD per million
tokens; ``cached_input_per_mtok`` defaults to ``input_per_mtok``::

    {"my-llama": {"input_per_mtok": "0.20", "cached_input_per_mtok": "0.10", "output_per_mtok": 0.60}}
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import structlog

from chittyos.errors import ConfigurationError, InvalidInput
from chittyos.llm.base import TokenUsage

__all__ = ["CostQuote", "ModelRates", "PriceBook", "PriceFileError", "PriceStatus"]

PriceStatus = Literal["priced", "unknown_model", "free"]

_MTOK = Decimal(1_000_000)
_RATE_KEYS = ("input_per_mtok", "cached_input_per_mtok", "output_per_mtok")
_REQUIRED_KEYS = ("input_per_mtok", "output_per_mtok")

_log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class CostQuote:
    """The cost of one call.

    ``status`` says how it was priced; ``cost_usd`` is None only for ``unknown_model``.
    ``source`` names the table: ``genai-prices <version>``, ``override:<file>`` or
    ``free:<base url>``; ``price_version`` pins the rates used (package version, provider and
    model id for genai-prices; a hash of the file for overrides), to store next to the cost.
    """

    cost_usd: Decimal | None
    status: PriceStatus
    source: str
    price_version: str


@dataclass(frozen=True)
class ModelRates:
    """USD per million tokens for one model."""

    input_per_mtok: Decimal
    cached_input_per_mtok: Decimal
    output_per_mtok: Decimal

    def cost(self, usage: TokenUsage) -> Decimal:
        uncached = usage.prompt_tokens - usage.cached_tokens
        return (
            uncached * self.input_per_mtok
            + usage.cached_tokens * self.cached_input_per_mtok
            + usage.completion_tokens * self.output_per_mtok
        ) / _MTOK


class PriceFileError(ConfigurationError):
    """The override price file (``CHITTY_PRICES_FILE``) broke a rule; ``field`` and ``rule`` say which."""

    def __init__(self, path: str, field: str, rule: str, got: object = None) -> None:
        self.path, self.field, self.rule = path, field, rule
        shown = "" if got is None else f" (got {got!r})"
        super().__init__(f"CHITTY_PRICES_FILE ({path}): {field}: {rule}{shown}")


class PriceBook:
    """Prices model calls; build once at startup (a bad override file fails there).

    ``prices_file``: the override JSON (``CHITTY_PRICES_FILE``), read once, here. Raises
    ``PriceFileError`` when it cannot be read or breaks a rule. ``free_base_urls``: base URLs
    whose models cost nothing (``CHITTY_FREE_BASE_URLS``); a URL matches itself and every path
    below it. Raises ``ConfigurationError`` for one that is not an http(s) URL.
    """

    def __init__(
        self,
        *,
        prices_file: str | os.PathLike[str] | None = None,
        free_base_urls: Iterable[str] = (),
    ) -> None:
        self._free = tuple(_normalize_free_url(u) for u in free_base_urls if u.strip())
        self._overrides: dict[str, ModelRates] = {}
        self._override_source = ""
        self._override_version = ""
        if prices_file is not None:
            path = os.fspath(prices_file)
            raw = _read(path)
            self._overrides = _parse_overrides(raw, path)
            self._override_source = f"override:{path}"
            self._override_version = "sha256:" + hashlib.sha256(raw).hexdigest()[:16]
        self._warned: set[tuple[str, str | None]] = set()
        _load_genai_prices()  # here, at startup, not inside the first request on the event loop

    def __repr__(self) -> str:
        return f"PriceBook(overrides={len(self._overrides)}, free_base_urls={list(self._free)!r})"

    def price(
        self,
        model: str,
        usage: TokenUsage,
        at: datetime,
        provider_base_url: str | None = None,
    ) -> CostQuote:
        """The cost of ``usage`` on ``model`` at time ``at`` (timezone-aware).

        ``model`` should be the model that answered (``Completion.model``), ``provider_base_url``
        the base URL it was served from (None: OpenAI, or matched by model name). Raises
        ``InvalidInput`` for a naive ``at`` or cached tokens above prompt tokens.
        """
        if at.tzinfo is None or at.utcoffset() is None:
            raise InvalidInput("at", "must be timezone-aware (UTC)", at.isoformat())
        if min(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) < 0:
            raise InvalidInput("usage", "token counts must not be negative", usage)
        if usage.cached_tokens > usage.prompt_tokens:
            raise InvalidInput("usage.cached_tokens", "must not exceed prompt_tokens", usage)

        # 1. a declared-free server
        if provider_base_url is not None and (free := self._free_match(provider_base_url)):
            return CostQuote(Decimal(0), "free", f"free:{free}", "free")
        # 2. the override file
        if (rates := self._overrides.get(model.lower())) is not None:
            return CostQuote(rates.cost(usage), "priced", self._override_source, self._override_version)
        # 3. genai-prices
        quote, reason = _genai_price(model, usage, at.astimezone(UTC), provider_base_url)
        if quote is not None:
            return quote
        # 4. unknown: say so, once per model and URL
        if (model, provider_base_url) not in self._warned:
            self._warned.add((model, provider_base_url))
            _log.warning(
                "price.unknown_model",
                model=model,
                base_url=provider_base_url,
                reason=reason,
                fix="add the model to CHITTY_PRICES_FILE or its base URL to CHITTY_FREE_BASE_URLS",
            )
        return CostQuote(None, "unknown_model", _genai_source(), "unknown")

    def worst_case(
        self,
        model: str,
        prompt_tokens: int,
        max_tokens: int,
        *,
        at: datetime | None = None,
        provider_base_url: str | None = None,
    ) -> Decimal | None:
        """The most a call can cost: every prompt token uncached, ``max_tokens`` of output.

        For reserving budget before the call. None when the model is unknown; 0 when free.
        """
        usage = TokenUsage(prompt_tokens=prompt_tokens, completion_tokens=max_tokens, cached_tokens=0)
        return self.price(model, usage, at or datetime.now(UTC), provider_base_url).cost_usd

    def model_key(self, model: str) -> str:
        """The name under which budgets match ``model``: the override file's entry, else the
        genai-prices model id (so ``GPT-4o`` and ``gpt-4o-2024-08-06`` are both ``gpt-4o``), else
        the name trimmed and lower-cased."""
        name = model.strip().lower()
        if name in self._overrides:
            return name
        return _genai_model_id(name) or name

    def _free_match(self, base_url: str) -> str | None:
        url = _normalize_url(base_url)
        for free in self._free:
            if url == free or url.startswith(free + "/"):
                return free
        return None


# -- genai-prices ------------------------------------------------------------------------------


def _load_genai_prices() -> None:
    """Import genai-prices and its bundled table (~0.3 s, once per process)."""
    from genai_prices.data_snapshot import get_snapshot

    get_snapshot()


def _genai_source() -> str:
    from genai_prices import __version__

    return f"genai-prices {__version__}"


def _genai_price(
    model: str, usage: TokenUsage, at: datetime, base_url: str | None
) -> tuple[CostQuote | None, str]:
    """The genai-prices quote, or None and why not. Imported on first use: its data is large."""
    import genai_prices

    counts = genai_prices.Usage(
        input_tokens=usage.prompt_tokens,
        cache_read_tokens=usage.cached_tokens,
        output_tokens=usage.completion_tokens,
    )
    try:
        if base_url is None:
            calc = genai_prices.calc_price(counts, model, genai_request_timestamp=at)
        else:
            calc = genai_prices.calc_price(
                counts, model, provider_api_url=base_url, genai_request_timestamp=at
            )
    except LookupError as exc:  # no provider for the URL, or no such model at that provider
        return None, str(exc)
    except ValueError as exc:  # a price the package cannot apply to this usage
        return None, f"genai-prices could not price it: {exc}"
    version = f"{genai_prices.__version__}:{calc.provider.id}/{calc.model.id}"
    return CostQuote(calc.total_price, "priced", _genai_source(), version), ""


@functools.lru_cache(maxsize=4096)
def _genai_model_id(model: str) -> str | None:
    """genai-prices' id of the model ``model`` names (its default provider match), or None."""
    import genai_prices

    try:
        return genai_prices.calc_price(genai_prices.Usage(input_tokens=0), model).model.id
    except (LookupError, ValueError):
        return None


# -- the override file -------------------------------------------------------------------------


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise PriceFileError(path, "file", f"cannot be read ({exc.strerror or type(exc).__name__})") from exc


class _NonFiniteError(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NonFiniteError(name)


def _parse_overrides(raw: bytes, path: str) -> dict[str, ModelRates]:
    """Check the override file rule by rule and return its rates by lower-case model name."""
    # 1. valid JSON, numbers as Decimal (no float rounding), no NaN/Infinity
    try:
        data = json.loads(raw, parse_float=Decimal, parse_int=Decimal, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise PriceFileError(path, "file", f"must be valid JSON ({exc.msg} at line {exc.lineno})") from None
    except _NonFiniteError as exc:
        raise PriceFileError(path, "file", f"must hold finite numbers only (found {exc})") from None
    except ValueError as exc:  # not UTF-8/16/32
        raise PriceFileError(path, "file", f"must be valid UTF-8 JSON ({type(exc).__name__})") from None
    # 2. an object of model name -> object of rates
    if not isinstance(data, dict):
        raise PriceFileError(
            path, "file", "must be a JSON object mapping model names to prices", type(data).__name__
        )
    rates: dict[str, ModelRates] = {}
    for model, entry in data.items():
        if not model.strip():
            raise PriceFileError(path, "model name", "must not be empty")
        if not isinstance(entry, dict):
            raise PriceFileError(
                path, model, "must be an object with input_per_mtok and output_per_mtok", type(entry).__name__
            )
        # 3. only known keys, the required ones present
        for key in entry:
            if key not in _RATE_KEYS:
                raise PriceFileError(
                    path, f"{model}.{key}", f"is not a known price (known: {', '.join(_RATE_KEYS)})"
                )
        for key in _REQUIRED_KEYS:
            if key not in entry:
                raise PriceFileError(path, f"{model}.{key}", "is required")
        # 4. each a finite, non-negative number of USD per million tokens
        values = {key: _rate(path, f"{model}.{key}", entry[key]) for key in entry}
        values.setdefault("cached_input_per_mtok", values["input_per_mtok"])
        if model.lower() in rates:
            raise PriceFileError(path, model, "appears twice (model names are matched case-insensitively)")
        rates[model.lower()] = ModelRates(**values)
    return rates


def _rate(path: str, field: str, value: object) -> Decimal:
    rule = "must be a non-negative number of USD per million tokens"
    if isinstance(value, bool) or not isinstance(value, Decimal | str):
        raise PriceFileError(path, field, rule, value)
    try:
        number = Decimal(value.strip()) if isinstance(value, str) else value
    except InvalidOperation:
        raise PriceFileError(path, field, rule, value) from None
    if not number.is_finite() or number < 0:
        raise PriceFileError(path, field, rule, str(value))
    return number


# -- URLs --------------------------------------------------------------------------------------


def _normalize_url(url: str) -> str:
    """scheme://host[:port]/path in lower case (path kept), without userinfo or trailing slash."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return f"{parts.scheme.lower()}://{host}{parts.path.rstrip('/')}"


def _normalize_free_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"CHITTY_FREE_BASE_URLS: each entry must be an http(s) URL such as http://127.0.0.1:11434 "
            f"(got {url.strip()[:80]!r})"
        )
    return _normalize_url(url)
