"""Drive the real server through the real ``mcp`` client, over stdio (a subprocess) and HTTP."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest
import uvicorn
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from chittyos.config import Settings
from chittyos.server.http import create_http_app

API_TOKEN = "test-token-0123456789abcdef"

Connect = Callable[..., AbstractAsyncContextManager[Client]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment a subprocess needs to rebuild ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHITTY_", "OPENAI_", "PGP_"))}
    env.update(
        CHITTY_DATA_DIR=str(settings.chitty_data_dir),
        CHITTY_DATABASE_URL=settings.database_url,
        CHITTY_MODEL_TIMEOUT_S=str(settings.chitty_model_timeout_s),
        CHITTY_MODEL_MAX_RETRIES=str(settings.chitty_model_max_retries),
        CHITTY_MAX_PROMPT_CHARS=str(settings.chitty_max_prompt_chars),
        CHITTY_LOG_LEVEL="WARNING",
    )
    if settings.openai_base_url:
        env["OPENAI_BASE_URL"] = settings.openai_base_url
    if settings.openai_api_key is not None:
        env["OPENAI_API_KEY"] = settings.openai_api_key.get_secret_value()
    return env


@asynccontextmanager
async def running_http(settings: Settings) -> AsyncIterator[str]:
    """Serve ``create_http_app(settings)`` with uvicorn on a free loopback port; yield its base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_http_app(settings, host="127.0.0.1"), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True


@pytest.fixture(params=["stdio", "http"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def connect(transport: str, make_settings: Any) -> Connect:
    """``async with connect(**setting_overrides, client_kwargs=...) as client``."""

    @asynccontextmanager
    async def open_client(client_kwargs: dict[str, Any] | None = None, **overrides: Any) -> AsyncIterator[Client]:
        kwargs = dict(client_kwargs or {})
        if transport == "stdio":
            settings = make_settings(**overrides)
            params = StdioServerParameters(
                command=sys.executable, args=["-m", "chittyos", "serve"], env=settings_env(settings)
            )
            async with Client(params, **kwargs) as client:
                yield client
            return
        settings = make_settings(chitty_api_tokens=API_TOKEN, **overrides)
        async with running_http(settings) as base:
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30)
            async with http, Client(streamable_http_client(f"{base}/mcp", http_client=http), **kwargs) as client:
                yield client

    return open_client
