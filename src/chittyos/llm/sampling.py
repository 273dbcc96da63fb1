"""MCP sampling as a provider: the connected client's own model answers (``sampling/createMessage``).

This is what lets a Claude Desktop user run executions without an OpenAI key. Sampling reports
no token usage, so completions made this way carry ``usage=None`` (and cost is unknown, not 0).
Once the request is sent, a failure still counts as a call: a client that answered with an error
is ``rejected``, one that timed out or answered with something other than text is ``unknown``.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
from mcp.shared.exceptions import MCPError
from mcp_types import ModelHint, ModelPreferences, SamplingMessage, TextContent

from chittyos.errors import ProviderError, ProviderTimeout
from chittyos.llm.base import SAMPLING_PROVIDER, Completion, CompletionRequest, DeltaCallback

__all__ = ["SamplingProvider", "client_supports_sampling"]

DEFAULT_SAMPLING_MAX_TOKENS = 1000


def client_supports_sampling(session: Any) -> bool:
    """True when the client declared the sampling capability and can receive requests now."""
    caps = getattr(session, "client_capabilities", None)
    return bool(caps is not None and caps.sampling is not None and getattr(session, "can_send_request", True))


class SamplingProvider:
    name = SAMPLING_PROVIDER

    def __init__(self, *, session: Any, timeout_s: float) -> None:
        self._session = session
        self._timeout_s = timeout_s

    async def complete(self, request: CompletionRequest) -> Completion:
        """Ask the client to sample. Raises ``ProviderTimeout`` / ``ProviderError``."""
        system = "\n\n".join(m.content for m in request.messages if m.role == "system") or None
        messages = [
            SamplingMessage(role=m.role, content=TextContent(type="text", text=m.content))
            for m in request.messages
            if m.role != "system"
        ]
        started = time.perf_counter()
        try:
            with anyio.fail_after(self._timeout_s):
                result = await self._session.create_message(
                    messages=messages,
                    max_tokens=request.max_tokens or DEFAULT_SAMPLING_MAX_TOKENS,
                    system_prompt=system,
                    temperature=request.temperature,
                    model_preferences=ModelPreferences(hints=[ModelHint(name=request.model)]),
                )
        except TimeoutError:
            raise ProviderTimeout(
                f"MCP sampling: the client did not answer within {self._timeout_s:g} s "
                "(CHITTY_MODEL_TIMEOUT_S)",
                provider=self.name,
                delivery="unknown",
                model=request.model,
                latency_ms=(time.perf_counter() - started) * 1000,
            ) from None
        except MCPError as exc:
            raise ProviderError(
                f"MCP sampling: the client refused: {exc.error.message}",
                provider=self.name,
                delivery="rejected",
                model=request.model,
                latency_ms=(time.perf_counter() - started) * 1000,
            ) from None
        content = result.content
        if not isinstance(content, TextContent):
            raise ProviderError(
                f"MCP sampling: expected a text answer, got {getattr(content, 'type', type(content).__name__)}",
                provider=self.name,
                delivery="unknown",
                model=result.model or request.model,
                latency_ms=(time.perf_counter() - started) * 1000,
            )
        return Completion(
            text=content.text,
            model=result.model,
            provider=self.name,
            usage=None,
            request_id=None,
            finish_reason=result.stop_reason,
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    async def stream(self, request: CompletionRequest, on_delta: DeltaCallback) -> Completion:
        """Sampling has no streaming: the whole answer arrives as one delta."""
        completion = await self.complete(request)
        await on_delta(completion.text)
        return completion
