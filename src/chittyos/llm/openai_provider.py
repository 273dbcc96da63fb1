"""The OpenAI-compatible provider: OpenAI itself and any server that speaks chat completions.

Ollama, vLLM, llama.cpp and LiteLLM serve the same ``/v1/chat/completions`` API; point
``base_url`` at them. Such servers accept any key, so ``api_key`` may be None when a ``base_url``
is given (a placeholder is sent then).

Retries are the ``openai`` SDK's own (``max_retries``), because they already do what we need
(openai 3.x ``_base_client.py``):

* retried: connection errors, timeouts, HTTP 408, 409, 429 and 5xx (a server can force or forbid a
  retry with ``x-should-retry: true|false``);
* the wait honours ``retry-after-ms`` and then ``Retry-After`` (seconds, or an HTTP date) when it is
  above 0 and at most 120 s; a longer ``Retry-After`` means no retry at all (the error surfaces at
  once); without either header the wait is 0.5 s x 2^n, capped at 8 s, minus up to 25 % jitter;
* ``timeout_s`` applies per attempt, to connecting and to each read (so a stream may run longer as
  long as data keeps coming), and a timed-out attempt is retried like any other.

Errors are converted here, where the SDK is called (see ``chittyos.errors``), each with the
``delivery`` that tells accounting whether the provider may have billed the call::

    openai.APITimeoutError        -> ProviderTimeout   names timeout_s and CHITTY_MODEL_TIMEOUT_S
                                                       unknown (not_sent if it never connected)
    openai.AuthenticationError    -> ProviderError(401) says to check OPENAI_API_KEY;   rejected
    openai.APIStatusError         -> ProviderError(status) with a short reason and the attempts;
                                                       rejected
    openai.APIConnectionError     -> ProviderError naming the host of the base URL
                                                       not_sent if it never connected, else unknown
    a malformed answer on a 200   -> ProviderError                                     unknown
    any error once a stream began -> StreamInterrupted carrying the partial Completion; unknown

Only the last HTTP attempt is classified: when the SDK retried, earlier attempts failed the same
way in practice, and the SDK does not say how they ended.

No message, repr or chained exception carries the API key: upstream text is shortened and
anything key-like in it is masked, and status errors are raised ``from None`` because the SDK's
own exception may quote the upstream body.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import urlsplit, urlunsplit

import anyio
import openai
from openai import AsyncStream
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.completion_usage import CompletionUsage

from chittyos.errors import ConfigurationError, Delivery, InvalidInput, ProviderError, ProviderTimeout
from chittyos.llm.base import (
    Completion,
    CompletionRequest,
    DeltaCallback,
    StreamInterrupted,
    TokenUsage,
)

__all__ = ["OPENAI_BASE_URL", "OpenAIProvider"]

OPENAI_BASE_URL = "https://api.openai.com/v1"
"""Where the provider goes when no base URL is configured."""

_PLACEHOLDER_KEY = "chittyos-no-key"  # local servers want some bearer token, any will do
_REASON_LIMIT = 200
_KEYLIKE = re.compile(r"\b(sk|rk|pk|sess)-[A-Za-z0-9_\-*.]{6,}")
_BEARER = re.compile(r"(?i)\bbearer\s+\S+")

MaxTokensField = Literal["max_tokens", "max_completion_tokens"]


class OpenAIProvider:
    """A ``Provider`` over ``openai.AsyncOpenAI``.

    Build it once (in ``app.py`` or the lifespan) and close it with ``aclose()`` or ``async with``;
    it holds a connection pool bound to the event loop that first uses it.

    ``max_tokens_field`` names the request field that carries ``CompletionRequest.max_tokens``:
    OpenAI deprecated ``max_tokens`` in favour of ``max_completion_tokens`` (o-series and later
    models refuse the old name) while many compatible servers only know ``max_tokens``. Default:
    ``max_completion_tokens`` for api.openai.com, ``max_tokens`` for any other base URL.

    Raises ``ConfigurationError`` when neither an API key nor a base URL is given, or when a
    setting is out of range.
    """

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 2,
        name: str = "openai",
        max_tokens_field: MaxTokensField | None = None,
    ) -> None:
        if not api_key and not base_url:
            raise ConfigurationError(
                "OPENAI_API_KEY: set it to use the OpenAI API, or set OPENAI_BASE_URL to a local "
                "OpenAI-compatible server (which needs no key)"
            )
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float):
            raise ConfigurationError(
                f"CHITTY_MODEL_TIMEOUT_S: must be a number of seconds (got {timeout_s!r})"
            )
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ConfigurationError(f"CHITTY_MODEL_TIMEOUT_S: must be above 0 seconds (got {timeout_s!r})")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError(
                f"CHITTY_MODEL_MAX_RETRIES: must be an integer of 0 or more (got {max_retries!r})"
            )
        url = base_url or OPENAI_BASE_URL
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(
                f"OPENAI_BASE_URL: must be an http(s) URL with a host, such as http://127.0.0.1:11434/v1 "
                f"(got scheme {parts.scheme!r})"
            )
        self.name = name
        self.base_url = _without_userinfo(url)
        self.timeout_s = float(timeout_s)
        self.max_retries = max_retries
        self.max_tokens_field: MaxTokensField = max_tokens_field or (
            "max_completion_tokens" if parts.hostname == "api.openai.com" else "max_tokens"
        )
        self._host = parts.hostname + (f":{parts.port}" if parts.port else "")
        self._key = api_key or None  # only for masking upstream text; never formatted anywhere
        self._client = openai.AsyncOpenAI(
            api_key=api_key or _PLACEHOLDER_KEY,
            base_url=url,
            timeout=self.timeout_s,
            max_retries=max_retries,
        )

    def __repr__(self) -> str:
        key = "None" if self._key is None else "'***'"
        return (
            f"OpenAIProvider(name={self.name!r}, base_url={self.base_url!r}, api_key={key}, "
            f"timeout_s={self.timeout_s!r}, max_retries={self.max_retries!r})"
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- Provider ----------------------------------------------------------------------------

    async def complete(self, request: CompletionRequest) -> Completion:
        """One answer, not streamed.

        Returns the ``Completion`` with the model the server says answered, usage (cached tokens
        from ``prompt_tokens_details.cached_tokens``), the ``x-request-id`` header (else the
        response id) and the latency to the last byte. Raises ``ProviderTimeout`` or
        ``ProviderError`` after the SDK's retries; ``InvalidInput`` for an empty request.
        """
        params = self._params(request)
        started = time.perf_counter()
        try:
            response = await self._client.chat.completions.create(**params)
        except openai.OpenAIError as exc:
            raise self._convert(exc, request.model, started) from _cause(exc)
        except (ValueError, TypeError, AttributeError) as exc:  # a body the SDK could not parse
            raise self._malformed(exc, request.model, started) from None
        latency_ms = (time.perf_counter() - started) * 1000
        request_id = getattr(response, "_request_id", None) or getattr(response, "id", None) or None
        if not isinstance(response, ChatCompletion) or not response.choices:
            raise ProviderError(
                f"{self.name}: the answer from {self._host} held no choices (expected a chat completion)",
                provider=self.name,
                **self._sent(request.model, started, "unknown", request_id=_text_or_none(request_id)),
            )
        try:
            choice = response.choices[0]
            text = choice.message.content or ""
            if not isinstance(text, str):
                raise TypeError("message.content is not text")
            return Completion(
                text=text,
                model=response.model if isinstance(response.model, str) and response.model else request.model,
                provider=self.name,
                usage=_usage(response.usage),
                request_id=response._request_id or response.id or None,
                finish_reason=choice.finish_reason,
                latency_ms=latency_ms,
            )
        except (ValueError, TypeError, AttributeError) as exc:
            raise self._malformed(exc, request.model, started, request_id=_text_or_none(request_id)) from None

    def _malformed(
        self, exc: Exception, model: str, started: float, *, request_id: str | None = None
    ) -> ProviderError:
        """A 200 whose body is not a usable chat completion: sent, and maybe billed (``unknown``)."""
        return ProviderError(
            f"{self.name}: {self._host} answered with a malformed chat completion ({_malformed_reason(exc)})",
            provider=self.name,
            **self._sent(model, started, "unknown", request_id=request_id),
        )

    def _sent(
        self,
        model: str,
        started: float,
        delivery: Delivery,
        *,
        request_id: str | None = None,
        attempts: int | None = None,
    ) -> dict[str, Any]:
        """The structured part of a ``ProviderError`` (no text of the request, no key)."""
        return {
            "delivery": delivery,
            "model": model,
            "latency_ms": (time.perf_counter() - started) * 1000,
            "request_id": request_id,
            "attempts": attempts,
        }

    async def stream(self, request: CompletionRequest, on_delta: DeltaCallback) -> Completion:
        """One answer, streamed: ``on_delta`` gets each non-empty text delta in order.

        Asks for ``stream_options.include_usage``; the usage comes from the chunk that carries it
        (a separate ``choices: []`` chunk on OpenAI, the finish_reason chunk on some servers).
        Returns the whole ``Completion``. Raises ``StreamInterrupted`` (with the partial
        Completion) when the stream breaks off, or ends without a finish_reason; before the
        stream starts, the same errors as ``complete``. Errors raised by ``on_delta`` propagate
        unchanged and close the stream.
        """
        params = self._params(request)
        started = time.perf_counter()
        try:
            stream = await self._client.chat.completions.create(
                **params, stream=True, stream_options={"include_usage": True}
            )
        except openai.OpenAIError as exc:
            raise self._convert(exc, request.model, started) from _cause(exc)
        except (ValueError, TypeError, AttributeError) as exc:
            raise self._malformed(exc, request.model, started) from None

        request_id: str | None = stream.response.headers.get("x-request-id")
        model = request.model
        parts: list[str] = []
        usage: TokenUsage | None = None
        finish_reason: str | None = None

        def partial() -> Completion:
            return Completion(
                text="".join(parts),
                model=model,
                provider=self.name,
                usage=usage,
                request_id=request_id,
                finish_reason=finish_reason,
                latency_ms=(time.perf_counter() - started) * 1000,
            )

        try:
            # anext, not ``async for``: the SDK's __aiter__ wrapper would be one more generator
            # left suspended when on_delta raises (see _release).
            while (chunk := await anext(stream, None)) is not None:
                if not isinstance(chunk, ChatCompletionChunk):  # pragma: no cover - SDK contract
                    continue
                model = chunk.model or model
                request_id = request_id or chunk.id or None
                for choice in chunk.choices:
                    if choice.index != 0:
                        continue
                    if choice.delta.content:
                        parts.append(choice.delta.content)
                        await on_delta(choice.delta.content)
                    finish_reason = choice.finish_reason or finish_reason
                if chunk.usage is not None:
                    usage = _usage(chunk.usage)
        except (ValueError, TypeError, AttributeError) as exc:  # a chunk the SDK could not parse
            raise StreamInterrupted(
                f"{self.name}: the stream from {self._host} broke off after "
                f"{_count(len(parts), 'text delta')} (a malformed chunk: {_malformed_reason(exc)})",
                provider=self.name,
                partial=partial(),
            ) from None
        except openai.OpenAIError as exc:
            got, why = _count(len(parts), "text delta"), self._stream_reason(exc)
            raise StreamInterrupted(
                f"{self.name}: the stream from {self._host} broke off after {got} ({why})",
                provider=self.name,
                partial=partial(),
            ) from _cause(exc)
        finally:
            await _release(stream)
        if finish_reason is None:
            got = _count(len(parts), "text delta")
            raise StreamInterrupted(
                f"{self.name}: the stream from {self._host} ended after {got} without a finish_reason "
                "(the answer is incomplete)",
                provider=self.name,
                partial=partial(),
            )
        return partial()

    # -- helpers -----------------------------------------------------------------------------

    def _params(self, request: CompletionRequest) -> dict[str, Any]:
        if not request.model:
            raise InvalidInput("model", "must name a model")
        if not request.messages:
            raise InvalidInput("messages", "must hold at least one message")
        params: dict[str, Any] = {
            "model": request.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        }
        if request.max_tokens is not None:
            params[self.max_tokens_field] = request.max_tokens
        if request.temperature is not None:
            params["temperature"] = request.temperature
        return params

    def _convert(self, exc: openai.OpenAIError, model: str, started: float) -> ProviderError:
        """The ``ProviderError`` for an SDK error raised before any answer arrived (``model``: the
        model asked for; ``started``: ``perf_counter()`` when the call began)."""
        attempts = _attempts(exc)
        tries = f"after {_count(attempts, 'attempt')}"
        if isinstance(exc, openai.APITimeoutError):
            return ProviderTimeout(
                f"{self.name}: no answer from {self._host} within {self.timeout_s:g} s "
                f"(CHITTY_MODEL_TIMEOUT_S) {tries}",
                provider=self.name,
                **self._sent(model, started, _transport_delivery(exc), attempts=attempts),
            )
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            rid = f"; request id {exc.request_id}" if exc.request_id else ""
            sent = self._sent(
                model, started, "rejected", request_id=exc.request_id or None, attempts=attempts
            )
            if isinstance(exc, openai.AuthenticationError):
                # The upstream text is left out on purpose: OpenAI's 401 quotes part of the key.
                return ProviderError(
                    f"{self.name}: {self._host} refused the API key (HTTP 401) {tries}; "
                    f"check OPENAI_API_KEY{rid}",
                    provider=self.name,
                    status=status,
                    **sent,
                )
            reason = self._reason(exc.body) or exc.response.reason_phrase or "no reason given"
            wait = exc.response.headers.get("retry-after")
            later = f"; the server asked to retry after {wait} s" if status == 429 and wait else ""
            return ProviderError(
                f"{self.name}: {self._host} answered HTTP {status} ({reason}) {tries}{later}{rid}",
                provider=self.name,
                status=status,
                **sent,
            )
        if isinstance(exc, openai.APIConnectionError):
            cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else "connection error"
            delivery = _transport_delivery(exc)
            if delivery == "not_sent":
                problem = (
                    f"cannot reach {self._host} ({cause}) {tries}; check OPENAI_BASE_URL and that "
                    "the server is running"
                )
            else:
                # Connected and sent, then the connection broke: the address is right.
                problem = f"the connection to {self._host} broke before an answer came ({cause}) {tries}"
            return ProviderError(
                f"{self.name}: {problem}",
                provider=self.name,
                **self._sent(model, started, delivery, attempts=attempts),
            )
        # Any other APIError came back from the wire; an OpenAIError that is not one never left.
        delivery: Delivery = "unknown" if isinstance(exc, openai.APIError) else "not_sent"
        return ProviderError(
            f"{self.name}: the call to {self._host} failed ({type(exc).__name__}: {self._mask(str(exc))})",
            provider=self.name,
            **self._sent(model, started, delivery, attempts=attempts),
        )

    def _stream_reason(self, exc: openai.OpenAIError) -> str:
        if isinstance(exc, openai.APITimeoutError):
            return f"no data for {self.timeout_s:g} s, CHITTY_MODEL_TIMEOUT_S"
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__
            return f"connection lost: {type(cause).__name__ if cause is not None else 'connection error'}"
        if isinstance(exc, openai.APIError):
            return f"error event: {self._reason(exc.body) or self._mask(exc.message)}"
        return f"{type(exc).__name__}: {self._mask(str(exc))}"

    def _reason(self, body: object) -> str | None:
        """The short, masked reason in an OpenAI-style error body (or plain-text body)."""
        if isinstance(body, Mapping):
            message = body.get("message")
            return self._mask(message) if isinstance(message, str) and message else None
        if isinstance(body, str) and body.strip():
            return self._mask(body.strip().splitlines()[0])
        return None

    def _mask(self, text: str) -> str:
        """Shorten upstream text and mask anything that looks like a key (ours above all)."""
        if self._key:
            text = text.replace(self._key, "***")
        text = _BEARER.sub("Bearer ***", _KEYLIKE.sub(r"\1-***", text))
        return text if len(text) <= _REASON_LIMIT else text[: _REASON_LIMIT - 3] + "..."


async def _release(stream: AsyncStream[ChatCompletionChunk]) -> None:
    """Close the response, then run the SDK's generator chain to its end.

    Leaving the loop early (on_delta raised, a chunk was malformed) leaves a dozen async
    generators suspended (openai's SSE decoder down to httpcore's body reader). Closing the
    response alone does not finish them, so asyncio's collector hook would, later and in no set
    order, each in a task of its own: closing one whose close awaits another being closed raises
    "aclose(): asynchronous generator is already running" as an unraisable exception, in
    whatever test runs then. Reading on after the close hands back at most what was already
    buffered and then raises, which ends every generator in order, here. (After a whole answer
    the SDK still leaves the lower ones suspended, but their close awaits nothing.) Shielded,
    so that a cancelled caller still releases the connection.
    """
    with anyio.CancelScope(shield=True):
        await stream.close()
        with contextlib.suppress(Exception):
            while await anext(stream, None) is not None:
                pass


def _usage(usage: CompletionUsage | None) -> TokenUsage | None:
    """The usage the upstream reported, checked: token counts are non-negative integers and the
    cached part is within the prompt. Raises ``ValueError`` naming the bad count (the caller
    turns it into a ``ProviderError``: the upstream is at fault, not the caller)."""
    if usage is None:
        return None
    details = usage.prompt_tokens_details
    counts = {
        "prompt_tokens": usage.prompt_tokens or 0,
        "completion_tokens": usage.completion_tokens or 0,
        "cached_tokens": (details.cached_tokens or 0) if details is not None else 0,
    }
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
            raise ValueError(f"usage.{name} is not a token count ({value!r:.40})")
    if counts["cached_tokens"] > counts["prompt_tokens"]:
        raise ValueError("usage.cached_tokens exceeds usage.prompt_tokens")
    return TokenUsage(**counts)


_NOT_SENT_CAUSES = frozenset(
    {
        "ConnectError",
        "ConnectTimeout",
        "PoolTimeout",
        "UnsupportedProtocol",
        "ProxyError",
        "LocalProtocolError",
    }
)
"""Transport errors raised before a request reached the server (by class name: the SDK runs on
httpx2 or, when it is loaded, legacy httpx, and both name them alike)."""


def _transport_delivery(exc: openai.APIConnectionError) -> Delivery:
    """``not_sent`` when the last attempt never got a connection (refused, no route, pool full),
    else ``unknown``: the request may have been sent before the connection failed or timed out."""
    cause = exc.__cause__
    if cause is not None and any(c.__name__ in _NOT_SENT_CAUSES for c in type(cause).__mro__):
        return "not_sent"
    return "unknown"


def _malformed_reason(exc: Exception) -> str:
    """What was wrong with an answer, without quoting it: a usage check names the count."""
    return str(exc) if isinstance(exc, ValueError) and str(exc).startswith("usage.") else type(exc).__name__


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _attempts(exc: openai.OpenAIError) -> int:
    """How many HTTP attempts the SDK made: it stamps each with ``x-stainless-retry-count``."""
    request = None
    if isinstance(exc, openai.APIStatusError):
        request = exc.response.request
    elif isinstance(exc, openai.APIError):
        request = exc.request
    try:
        return int(request.headers.get("x-stainless-retry-count", "0")) + 1 if request is not None else 1
    except ValueError:
        return 1


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _cause(exc: openai.OpenAIError) -> BaseException | None:
    """What to chain: status errors quote the upstream body, so they are not chained."""
    return None if isinstance(exc, openai.APIStatusError) else exc


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
