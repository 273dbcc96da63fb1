"""The ``SecurityTier`` protocol: what every tier (standard, fortress, verified) implements.

A tier gets a validated request and a context (the model provider to use, a progress
callback) and returns a ``TierOutcome``. It never touches the database: the execution
service records what the tier returns.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from chittyos.llm import Completion, Provider

ProgressFn = Callable[[float, float | None, str | None], Awaitable[None]]
"""``(progress, total, message)``, as MCP progress notifications carry them."""


async def no_progress(progress: float, total: float | None, message: str | None) -> None:
    return None


@dataclass(frozen=True)
class TierRequest:
    """What a tier needs to know; already validated by the execution service."""

    execution_id: str
    prompt: str
    user_id: str
    model: str
    max_tokens: int


@dataclass(frozen=True)
class TierContext:
    provider: Provider
    progress: ProgressFn = no_progress


@dataclass(frozen=True)
class TierOutcome:
    """What a tier produced.

    ``output`` is the answer text whose SHA-256 is recorded as the output hash; ``calls`` holds
    every model call the tier made (a verified run makes two) for usage and cost accounting.
    """

    output: str
    calls: tuple[Completion, ...]
    chatgpt_response: str | None = None
    fortress_output: str | None = None
    fortress_signature: str | None = None
    verification_status: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class SecurityTier(Protocol):
    name: str
    """standard | fortress | verified"""
    execution_method: str
    """direct | sandboxed | verified (the seed's column)"""

    async def run(self, request: TierRequest, ctx: TierContext) -> TierOutcome: ...
