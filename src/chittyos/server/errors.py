"""The one place where ``ChittyError`` becomes an MCP ``ToolError``.

In mcp 2.x only a ``ToolError``'s text reaches the client; any other exception is logged and
shown as a generic failure, which keeps internals (and secrets) in. Arguments that fail the
tool's input schema are reported the same way as ``InvalidInput``: ``field: rule (got value)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from mcp.server.mcpserver.exceptions import ToolError
from pydantic import ValidationError

from chittyos.errors import ChittyError, InvalidInput


@contextmanager
def tool_errors() -> Iterator[None]:
    """Turn an anticipated ``ChittyError`` into a ``ToolError`` with the same message."""
    try:
        yield
    except ChittyError as exc:
        raise ToolError(str(exc)) from exc


def argument_error(tool: str, error: ValidationError) -> ToolError:
    """A ``ToolError`` naming each rejected argument and its rule, in ``InvalidInput``'s form,
    without pydantic's model name and documentation links."""
    problems = []
    for detail in error.errors(include_url=False):
        field = ".".join(str(part) for part in detail["loc"]) or "arguments"
        got = None if detail["type"] == "missing" else detail.get("input")
        problems.append(str(InvalidInput(field, detail["msg"].rstrip("."), got)))
    return ToolError(f"invalid arguments for {tool}: " + "; ".join(problems))
