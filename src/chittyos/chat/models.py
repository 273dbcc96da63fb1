"""Boundary types of the chat capability: what callers send, what they get back, and the checks.

Every check raises ``InvalidInput`` naming the field (``messages[2].role``, ``limit``, ...) before
anything is written or any model is called. Money is ``Decimal`` (a string in JSON), times are
aware UTC.
"""

from __future__ import annotations

import math
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from chittyos.chat.sealing import ChatSealer
from chittyos.db.models import MONEY_PLACES, ChatSession, ChatSessionMessage, Usd, to_money
from chittyos.errors import InvalidInput
from chittyos.llm import ROLES, ChatMessage

__all__ = [
    "ANONYMOUS_USER",
    "ChatCompletionView",
    "ChatRequest",
    "ChatUsage",
    "CostStatus",
    "MessageView",
    "SessionList",
    "SessionView",
    "check_identifier",
    "parse_money",
    "parse_uuid",
]

ANONYMOUS_USER = "anonymous"
"""The user a chat call is accounted to when it names neither a session nor a user_id."""
MAX_IDENTIFIER_CHARS = 255
MAX_TEMPERATURE = 2.0

CostStatus = Literal["priced", "free", "estimated", "not_billed", "unknown_model", "unknown_usage"]
Role = Literal["system", "user", "assistant"]


# -- checks ------------------------------------------------------------------------------------


def check_identifier(field: str, value: object, *, required: bool = False) -> str | None:
    """A user id, model or name: a non-empty string of at most 255 characters, without surrounding
    whitespace, control or invisible formatting characters. Raises ``InvalidInput``."""
    if value is None:
        if required:
            raise InvalidInput(field, "is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(field, "must be a non-empty string", value)
    if len(value) > MAX_IDENTIFIER_CHARS:
        raise InvalidInput(
            field, f"must be at most {MAX_IDENTIFIER_CHARS} characters", f"{len(value)} characters"
        )
    if value != value.strip():
        raise InvalidInput(field, "must not start or end with whitespace", value)
    # Control and format characters (bidi overrides, zero-width) make two ids look alike.
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in value):
        raise InvalidInput(field, "must not contain control or invisible formatting characters")
    return value


def parse_uuid(field: str, value: object) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError:
        raise InvalidInput(field, "must be a UUID", value) from None


MAX_USD = Decimal(100_000_000)
"""The largest amount accepted: SQLite keeps money as 64-bit integer units of 1e-10 USD."""


def parse_money(field: str, value: object, *, required: bool = False) -> Decimal | None:
    """A non-negative, finite amount of USD (Decimal, int, or a decimal string), at most
    ``MAX_USD``. Raises ``InvalidInput`` naming ``field``."""
    if value is None:
        if required:
            raise InvalidInput(field, "is required")
        return None
    rule = "must be a non-negative amount of USD"
    shown = str(value)  # the caller's text, not Decimal('...')
    if isinstance(value, bool):
        raise InvalidInput(field, rule, shown)
    try:
        amount = Decimal(shown) if isinstance(value, float | int | str) else value
    except (InvalidOperation, ValueError):
        raise InvalidInput(field, rule, shown) from None
    if not isinstance(amount, Decimal) or not amount.is_finite() or amount < 0:
        raise InvalidInput(field, rule, shown)
    if amount > MAX_USD:
        raise InvalidInput(field, f"must be at most {MAX_USD} USD", shown)
    if to_money(amount) != amount:  # rounding would silently change it (1e-11 would become 0)
        raise InvalidInput(field, f"must have at most {MONEY_PLACES} decimal places", shown)
    return to_money(amount)


def parse_role(field: str, value: object) -> Role:
    if value not in ROLES:
        raise InvalidInput(field, f"must be one of {', '.join(ROLES)}", value)
    return value  # type: ignore[return-value]


def parse_content(field: str, value: object, *, max_chars: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(field, "must be a non-empty string", value)
    if len(value) > max_chars:
        raise InvalidInput(
            field,
            f"must be at most {max_chars} characters (CHITTY_MAX_PROMPT_CHARS)",
            f"{len(value)} characters",
        )
    return value


def parse_messages(raw: object, *, max_chars: int) -> tuple[ChatMessage, ...]:
    """``[{role, content}, ...]`` (or ``ChatMessage``s) checked one by one; at least one, and at
    most ``max_chars`` characters of content in all."""
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise InvalidInput("messages", "must be a list of {role, content} objects", type(raw).__name__)
    if not raw:
        raise InvalidInput("messages", "must hold at least one message")
    messages: list[ChatMessage] = []
    for i, item in enumerate(raw):
        where = f"messages[{i}]"
        if isinstance(item, ChatMessage):
            role, content = item.role, item.content
        elif isinstance(item, Mapping):
            role, content = item.get("role"), item.get("content")
        else:
            raise InvalidInput(where, "must be an object with role and content", type(item).__name__)
        messages.append(
            ChatMessage(
                role=parse_role(f"{where}.role", role),
                content=parse_content(f"{where}.content", content, max_chars=max_chars),
            )
        )
    total = sum(len(m.content) for m in messages)
    if total > max_chars:
        raise InvalidInput(
            "messages",
            f"must hold at most {max_chars} characters in all (CHITTY_MAX_PROMPT_CHARS)",
            f"{total}",
        )
    return tuple(messages)


def check_max_tokens(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not (1 <= value <= 1_000_000):
        raise InvalidInput("max_tokens", "must be an integer between 1 and 1000000", value)
    return value


def check_temperature(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput("temperature", f"must be a number between 0 and {MAX_TEMPERATURE:g}", value)
    if not (0 <= value <= MAX_TEMPERATURE):
        raise InvalidInput("temperature", f"must be between 0 and {MAX_TEMPERATURE:g}", value)
    return float(value)


# -- requests ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatRequest:
    """One chat call as asked for. ``messages`` are the new ones; a session adds its history.

    ``user_id`` is who pays: the session's user when a session is named (a different user_id is
    refused), else ``user_id``, else ``ANONYMOUS_USER``. ``max_tokens`` None: CHITTY_MAX_TOKENS.
    """

    messages: Sequence[Mapping[str, Any] | ChatMessage]
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    session_id: str | None = None
    user_id: str | None = None


# -- views -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MessageView:
    message_id: str
    session_id: str
    seq: int
    """1, 2, ... in the order the session received them."""
    role: Role
    content: str
    tokens_used: int | None
    cost: Usd | None
    """USD; None when not known."""
    model: str | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: ChatSessionMessage | Mapping[str, Any], *, content: str | None = None) -> MessageView:
        """``content`` replaces the row's (the plaintext of a sealed row)."""
        get = row.get if isinstance(row, Mapping) else (lambda k: getattr(row, k))
        return cls(
            message_id=str(get("id")),
            session_id=str(get("session_id")),
            seq=get("seq"),
            role=get("role"),
            content=get("content") if content is None else content,
            tokens_used=get("tokens_used"),
            cost=get("cost"),
            model=get("model"),
            created_at=get("created_at"),
        )


@dataclass(frozen=True)
class SessionView:
    """One chat session; ``messages`` is None when not asked for."""

    session_id: str
    user_id: str
    session_name: str
    status: Literal["active", "archived"]
    system_prompt: str | None
    total_messages: int
    total_tokens: int
    total_cost: Usd
    """USD, the sum of the messages' known costs."""
    created_at: datetime
    updated_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)
    messages: list[MessageView] | None = None

    @classmethod
    def from_row(
        cls, row: ChatSession, messages: list[MessageView] | None = None, *, sealer: ChatSealer
    ) -> SessionView:
        meta = dict(row.metadata_ or {})
        return cls(
            session_id=str(row.id),
            user_id=row.user_id,
            session_name=row.session_name,
            status=row.status,  # type: ignore[arg-type]
            system_prompt=sealer.open_system_prompt(row.id, row.system_prompt),
            total_messages=row.total_messages,
            total_tokens=row.total_tokens,
            total_cost=row.total_cost,
            created_at=row.created_at,
            updated_at=row.updated_at,
            metadata=meta,
            messages=messages,
        )


@dataclass(frozen=True)
class SessionList:
    sessions: list[SessionView]
    count: int
    """Sessions in this page."""
    total: int
    """Sessions of the user that match the filter."""
    limit: int
    offset: int


@dataclass(frozen=True)
class ChatUsage:
    """Tokens of one call as the provider reported them (or estimated, see cost_status)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int
    """Part of prompt_tokens served from the provider's prompt cache (billed cheaper)."""


@dataclass(frozen=True)
class ChatCompletionView:
    """The answer of ``chatgpt_complete`` / ``chatgpt_stream``.

    ``cost_usd`` is None unless ``cost_status`` is priced, free or estimated: an unknown model or
    a provider that reports no usage (MCP sampling) gives no cost, never a silent 0.
    """

    response: str
    usage: ChatUsage | None
    model: str
    """The model that answered, as the provider named it."""
    session_id: str | None
    cost_usd: Usd | None
    cost_status: CostStatus
    user_id: str
    provider: str
    usage_id: str
    """The usage_analytics row of this call."""
    price_source: str | None
    finish_reason: str | None
    request_id: str | None
    warnings: list[str] = field(default_factory=list)
    """One line each: budget soft-limit warnings; session history left out to fit the bound."""
