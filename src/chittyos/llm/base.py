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


class StreamInterrupted(ProviderError):
    """A streamed answer broke off; ``partial`` holds what arrived before the break."""

    def __init__(self, message: str, *, provider: str, partial: Completion) -> None:
        super().__init__(message, provider=provider)
        self.partial = partial


class Provider(Protocol):
    """A model provider.

    ``complete`` raises ``ProviderError`` (``ProviderTimeout`` when the timeout passes) and
    ``ConfigurationError`` when it cannot be used as configured. ``stream`` calls ``on_delta``
    with each text delta and returns the whole ``Completion``; a stream that breaks halfway
    raises ``StreamInterrupted`` carrying what arrived.
    """

    name: str

    async def complete(self, request: CompletionRequest) -> Completion: ...

    async def stream(self, request: CompletionRequest, on_delta: DeltaCallback) -> Completion: ...
