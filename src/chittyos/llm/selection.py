"""Which provider runs a call: the configured OpenAI-compatible endpoint, else MCP sampling."""

from __future__ import annotations

from typing import Any

from chittyos.errors import ConfigurationError
from chittyos.llm.base import Provider
from chittyos.llm.sampling import SamplingProvider, client_supports_sampling

__all__ = ["ProviderSelector"]


class ProviderSelector:
    """``select(session)`` -> the provider for one call.

    Order: the OpenAI-compatible provider when ``OPENAI_API_KEY`` or ``OPENAI_BASE_URL`` is set;
    otherwise MCP sampling when the calling client declared it; otherwise ``ConfigurationError``
    saying which variable to set.
    """

    def __init__(self, *, openai: Provider | None, sampling_timeout_s: float) -> None:
        self._openai = openai
        self._sampling_timeout_s = sampling_timeout_s

    @property
    def configured(self) -> str | None:
        return self._openai.name if self._openai is not None else None

    def select(self, session: Any | None = None) -> Provider:
        if self._openai is not None:
            return self._openai
        if session is not None and client_supports_sampling(session):
            return SamplingProvider(session=session, timeout_s=self._sampling_timeout_s)
        raise ConfigurationError(
            "no model provider: set OPENAI_API_KEY (and OPENAI_BASE_URL for a compatible server such as "
            "Ollama or vLLM), or connect from an MCP client that supports sampling over a connection "
            "that can carry server-to-client requests (the initialize handshake, as Claude Desktop uses)"
        )
