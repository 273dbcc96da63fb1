"""The one place where ``ChittyError`` becomes an MCP ``ToolError``.

In mcp 2.x only a ``ToolError``'s text reaches the client; any other exception is logged and
shown as a generic failure, which keeps internals (and secrets) in. Arguments that fail the
tool's input schema are reported the same way as ``InvalidInput``: ``field: rule (got value)``.

``check_arguments`` holds arguments to the JSON Schema the tool advertises (``tools/list``)
before the SDK's own pydantic check, which is lax: it ignores unknown names (a misspelt
``max_token`` would silently leave the default) and turns ``true`` into ``1``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from jsonschema import Draft202012Validator

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


class ArgumentCheck:
    """Holds a tool's arguments to the JSON Schema it advertises (one compiled validator per tool)."""

    def __init__(self) -> None:
        self._validators: dict[str, Draft202012Validator] = {}

    def check(self, tool: str, schema: Mapping[str, Any], arguments: Mapping[str, Any]) -> None:
        """Raise a ``ToolError`` naming every argument that ``schema`` (the tool's input schema,
        an object schema) does not declare, or whose JSON value it rejects (JSON Schema 2020-12
        types: ``true`` is not an integer, ``"5"`` is not a number)."""
        known = schema.get("properties", {})
        names = ", ".join(sorted(known)) or "none"
        problems = [
            str(InvalidInput(name, f"is not an argument of {tool} (known: {names})"))
            for name in arguments
            if name not in known
        ]
        if not problems:
            validator = self._validators.get(tool)
            if validator is None:
                validator = self._validators[tool] = Draft202012Validator(dict(schema))
            errors = sorted(
                validator.iter_errors(dict(arguments)), key=lambda e: [str(p) for p in e.absolute_path]
            )
            for error in errors:
                at = ".".join(str(part) for part in error.absolute_path)
                if error.validator == "required":
                    missing = [n for n in error.validator_value if n not in error.instance]
                    problems += [str(InvalidInput(f"{at}.{n}" if at else n, "is required")) for n in missing]
                else:
                    problems.append(str(InvalidInput(at or "arguments", _rule(error), _AsJson(error.instance))))
            problems = list(dict.fromkeys(problems))  # one "required" error per missing name
        if problems:
            raise ToolError(f"invalid arguments for {tool}: " + "; ".join(problems))


def _rule(error: Any) -> str:
    if error.validator == "type":
        return f"must be of JSON type {' or '.join(_types(error.validator_value))}"
    if error.validator in ("anyOf", "oneOf") and error.context:
        # Optional arguments are anyOf [T, null]: say which types, not "not valid under any".
        if all(e.validator in ("type", "enum") for e in error.context):
            enums = [e for e in error.context if e.validator == "enum"]
            # A branch {"type": "string", "enum": [...]} fails both; its enum says enough.
            strings = enums and all(isinstance(v, str) for e in enums for v in e.validator_value)
            said = {"string"} if strings else set()
            shown = [e for e in error.context if e in enums or set(_types(e.validator_value)) - said]
            return "must be " + " or ".join(dict.fromkeys(_expected(e) for e in shown))
    # minimum, maxLength, enum, anyOf, ...: jsonschema's message starts with the value
    # (shown again as "got"); drop it.
    message: str = error.message
    shown = repr(error.instance)
    return message[len(shown) :].strip() if message.startswith(shown) else message


def _types(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _expected(error: Any) -> str:
    if error.validator == "enum":
        return f"one of {error.validator_value}"
    return f"of JSON type {' or '.join(_types(error.validator_value))}"


class _AsJson:
    """A value shown as the JSON the client sent (``true``, ``"5"``), not as Python (``True``)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return json.dumps(self.value, ensure_ascii=False, default=str)
