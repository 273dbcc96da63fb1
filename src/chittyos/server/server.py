"""Builds the MCP server: every tool, resource and protocol handler, around one ``App``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp_types import CallToolResult, InputRequiredResult, SetLevelRequestParams, TextContent
from pydantic import ValidationError

from chittyos import __version__
from chittyos.app import App
from chittyos.errors import InvalidInput, TierNotAvailable
from chittyos.server import chain, chat, coordinator, fortress
from chittyos.server.client_logging import handle_set_level
from chittyos.server.errors import ArgumentCheck, argument_error

INSTRUCTIONS = (
    "ChittyOS runs AI for legal and business work so that each run can be proven, contained and "
    "accounted for. Use chitty_secure_ai_execute to run a prompt at a security tier and "
    "chitty_execution_status to read an execution back."
)


class ChittyServer(MCPServer[App]):
    """``MCPServer`` whose argument-validation errors read like the rest of ours, and whose text
    content is exactly its structured content as JSON.

    The SDK renders the text block by dumping the Python value without its declared type, so a
    field's serializer (``Usd``: plain decimal text, never ``"0E-10"``) would apply to
    ``structuredContent`` only, and clients reading the text (the seed's) would see other values.

    Arguments are first held to the tool's advertised input schema (``ArgumentCheck``): the SDK's
    own check ignores unknown names and coerces JSON types.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._arguments = ArgumentCheck()

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[App, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        schema = self._tool_input_schema(name)
        if schema is not None:
            self._arguments.check(name, schema, arguments or {})
        try:
            result = await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(exc, UnexpectedToolError):
                raise
            if isinstance(cause, ValidationError):
                raise argument_error(name, cause) from cause
            # A service refused an argument (tool_errors: ToolError from InvalidInput): the same
            # prefix as a schema refusal, not the SDK's "Error executing tool".
            if isinstance(cause, ToolError) and isinstance(cause.__cause__, InvalidInput | TierNotAvailable):
                raise ToolError(f"invalid arguments for {name}: {cause.__cause__}") from cause.__cause__
            raise
        if isinstance(result, CallToolResult) and result.structured_content is not None:
            text = json.dumps(result.structured_content, indent=2, ensure_ascii=False)
            result = result.model_copy(update={"content": [TextContent(type="text", text=text)]})
        return result


def build_server(app: App) -> MCPServer[App]:
    """An ``MCPServer`` whose lifespan hands every request the already-open ``app``.

    The app is opened once per process by the caller (stdio runner, HTTP lifespan, tests), not
    once per MCP session.
    """

    @asynccontextmanager
    async def lifespan(_server: MCPServer[App]) -> AsyncIterator[App]:
        yield app

    mcp: MCPServer[App] = ChittyServer(
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
