"""What every model provider speaks: requests, completions, token usage.

A provider turns a ``CompletionRequest`` into a ``Completion``. Two exist: the OpenAI-compatible
HTTP provider (``openai_provider.py``, any server that speaks the chat completions API) and the
MCP-sampling provider (``sampling.py``, the connected client's own model). Tiers and chat tools
depend on this protocol only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from chittyos.errors import ProviderError

Role = Literal["system", "user", "assistant"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant")

DeltaCallback = Callable[[str], Awaitable[None]]
"""Called with each text delta of a streamed answer, in order."""

SAMPLING_PROVIDER = "mcp-sampling"
"""The provider name of calls answered by the MCP client's own model (``sampling.py``): they
report no usage and the client pays for them."""


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True)
class TokenUsage:
    """Token counts as the provider reported them.

    ``cached_tokens`` is the part of ``prompt_tokens`` served from the provider's prompt cache
    (OpenAI ``usage.prompt_tokens_details.cached_tokens``); it is included in ``prompt_tokens``.
    """

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class CompletionRequest:
    messages: tuple[ChatMessage, ...]
    model: str
    max_tokens: int | None = None
    temperature: float | None = None


@dataclass(frozen=True)
class Completion:
    """One answer of a model.

    ``model`` is the model the provider says answered (may differ from the one asked for);
    ``usage`` is None when the provider reported none (MCP sampling reports none);
    ``latency_ms`` is wall time from request to last byte.
    """

    text: str
    model: str
    provider: str
    usage: TokenUsage | None
    request_id: str | None
    finish_reason: str | None
    latency_ms: float


@dataclass(frozen=True)
class FailedCall:
    """A model call that was sent and brought back no usable answer: what accounting needs of it
    (built from a ``ProviderError`` by ``failed_call``), never its text.

    ``model`` is the model asked for (none answered); ``delivery`` is ``rejected`` (an error
    status: the provider bills nothing) or ``unknown`` (no answer known: it may have billed);
    ``status`` the HTTP status when there was one; ``latency_ms`` from sending to the failure.
    """

    model: str
    provider: str
    delivery: Literal["rejected", "unknown"]
    status: int | None
    request_id: str | None
    latency_ms: float


def failed_call(exc: BaseException, *, model: str, provider: str) -> FailedCall | None:
    """The ``FailedCall`` of a provider failure, or None when no call went out (``delivery``
    ``not_sent`` or not said, or not a ``ProviderError`` at all). ``model`` / ``provider``: what
    was asked for, used when the error does not name them."""
    if not isinstance(exc, ProviderError) or exc.delivery not in ("rejected", "unknown"):
        return None
    return FailedCall(
        model=exc.model or model,
        provider=exc.provider or provider,
        delivery=exc.delivery,
        status=exc.status,
        request_id=exc.request_id,
        latency_ms=exc.latency_ms or 0.0,
    )


class StreamInterrupted(ProviderError):
    """A streamed answer broke off; ``partial`` holds what arrived before the break.

    Its ``delivery`` is ``unknown``: the request was sent and the answer is incomplete.
    """

    def __init__(self, message: str, *, provider: str, partial: Completion) -> None:
        super().__init__(
            message,
            provider=provider,
            delivery="unknown",
            model=partial.model,
            latency_ms=partial.latency_ms,
            request_id=partial.request_id,
        )
        self.partial = partial


class Provider(Protocol):
    """A model provider.

    ``complete`` raises ``ProviderError`` (``ProviderTimeout`` when the timeout passes) and
    ``ConfigurationError`` when it cannot be used as configured. A ``ProviderError`` says how
    far the request got (``delivery``), so that a call that went out is accounted for.
    ``stream`` calls ``on_delta`` with each text delta and returns the whole ``Completion``; a
    stream that breaks halfway raises ``StreamInterrupted`` carrying what arrived.
    """

    name: str

    async def complete(self, request: CompletionRequest) -> Completion: ...

    async def stream(self, request: CompletionRequest, on_delta: DeltaCallback) -> Completion: ...
