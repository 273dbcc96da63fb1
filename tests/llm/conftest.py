"""Fixtures for the llm tests.

The loopback model server is the session-wide ``openai_server`` of ``tests/conftest.py`` (reset
before and after each test); ``make_provider`` builds an ``OpenAIProvider`` pointed at it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from chittyos.llm.openai_provider import OpenAIProvider
from tests.openai_server import OpenAIServer

TEST_KEY = "sk-test-Zq8WvN3kLp0aR7tY"
"""The API key the provider tests use; messages and reprs must never show it."""


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def api_key() -> str:
    return TEST_KEY


@pytest.fixture
def make_provider(openai_server: OpenAIServer) -> Callable[..., OpenAIProvider]:
    """Build an ``OpenAIProvider`` for the loopback server (no retries unless asked); use ``async with``."""

    def make(**overrides: Any) -> OpenAIProvider:
        kwargs: dict[str, Any] = {
            "api_key": TEST_KEY,
            "base_url": openai_server.base_url,
            "timeout_s": 5.0,
            "max_retries": 0,
        }
        kwargs.update(overrides)
        return OpenAIProvider(**kwargs)

    return make
