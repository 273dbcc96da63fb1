"""The one place where ``ChittyError`` becomes an MCP ``ToolError``.

In mcp 2.x only a ``ToolError``'s text reaches the client; any other exception is logged and
shown as a generic failure, which keeps internals (and secrets) in.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from mcp.server.mcpserver.exceptions import ToolError

from chittyos.errors import ChittyError


@contextmanager
def tool_errors() -> Iterator[None]:
    """Turn an anticipated ``ChittyError`` into a ``ToolError`` with the same message."""
    try:
        yield
    except ChittyError as exc:
        raise ToolError(str(exc)) from exc
