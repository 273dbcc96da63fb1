"""Builds the MCP server: every tool, resource and protocol handler, around one ``App``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mcp.server.mcpserver import MCPServer
from mcp_types import SetLevelRequestParams

from chittyos import __version__
from chittyos.app import App
from chittyos.server import chain, chat, coordinator, fortress
from chittyos.server.client_logging import handle_set_level

INSTRUCTIONS = (
    "ChittyOS runs AI for legal and business work so that each run can be proven, contained and "
    "accounted for. Use chitty_secure_ai_execute to run a prompt at a security tier and "
    "chitty_execution_status to read an execution back."
)


def build_server(app: App) -> MCPServer[App]:
    """An ``MCPServer`` whose lifespan hands every request the already-open ``app``.

    The app is opened once per process by the caller (stdio runner, HTTP lifespan, tests), not
    once per MCP session.
    """

    @asynccontextmanager
    async def lifespan(_server: MCPServer[App]) -> AsyncIterator[App]:
        yield app

    mcp: MCPServer[App] = MCPServer(
        "chittyos",
        title="ChittyOS",
        instructions=INSTRUCTIONS,
        version=__version__,
        lifespan=lifespan,
        log_level=app.settings.chitty_log_level,
    )
    mcp._lowlevel_server.add_request_handler("logging/setLevel", SetLevelRequestParams, handle_set_level)
    coordinator.register(mcp)
    chat.register(mcp)
    fortress.register(mcp, app)
    chain.register(mcp, app)
    return mcp
