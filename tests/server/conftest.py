"""Helpers to drive the real server: the HTTP server on a free port, a subprocess's environment.

The ``transport`` and ``connect`` fixtures built on them live in the root conftest, so every
test folder can run one body over stdio and Streamable HTTP."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import uvicorn
from mcp import Client

from pydantic import SecretStr

from chittyos.config import Settings
from chittyos.server.http import create_http_app

API_TOKEN = "test-token-0123456789abcdef"

Connect = Callable[..., AbstractAsyncContextManager[Client]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment a subprocess needs to rebuild ``settings``: every setting, by its name."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHITTY_", "OPENAI_", "PGP_"))}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        env[name.upper()] = _env_text(value)
    env["CHITTY_DATABASE_URL"] = settings.database_url
    env["CHITTY_LOG_LEVEL"] = "WARNING"
    return env


def _env_text(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(_env_text(v) for v in value)
    return str(value)


@asynccontextmanager
async def running_http(settings: Settings, *, app: Any = None) -> AsyncIterator[str]:
    """Serve ``create_http_app(settings)`` with uvicorn on a free loopback port; yield its base URL.
    With ``app`` (an open App), serve that one, as ``serve --http`` does."""
    port = free_port()
    config = uvicorn.Config(
        create_http_app(settings, host="127.0.0.1", app=app),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
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
