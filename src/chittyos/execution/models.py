"""Boundary types of the execution path: what callers send and what they get back."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from chittyos.db.models import SECURITY_LEVELS, SecureExecution
from chittyos.errors import ChittyError, InvalidInput

__all__ = [
    "ExecutionFailedError",
    "ExecutionRequest",
    "ExecutionResults",
    "ExecutionUsage",
    "ExecutionVerification",
    "ExecutionView",
    "SecurityLevel",
    "parse_execution_id",
    "sha256_hex",
]

SecurityLevel = Literal["standard", "fortress", "verified"]
TextOpener = Callable[[str, str | None], str | None]
"""``(column, stored value) -> plaintext``: unseals a sealed column of the row at hand."""
ExecutionStatus = Literal["pending", "executing", "completed", "failed", "verified"]
MAX_IDENTIFIER_CHARS = 255


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ExecutionRequest:
    """One AI execution as asked for. ``validate`` checks every field before anything is written."""

    prompt: str
    user_id: str
    security_level: str = "standard"
    case_id: str | None = None
    model: str | None = None
    label: str | None = None
    create_evidence: bool = False
    max_tokens: int | None = None

    def validate(self, *, max_prompt_chars: int) -> None:
        """Raise ``InvalidInput`` naming the first field that breaks its rule."""
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise InvalidInput("prompt", "must be a non-empty string")
        if len(self.prompt) > max_prompt_chars:
            raise InvalidInput(
                "prompt",
                f"must be at most {max_prompt_chars} characters (CHITTY_MAX_PROMPT_CHARS)",
                f"{len(self.prompt)} characters",
            )
        _identifier("user_id", self.user_id, required=True)
        if self.security_level not in SECURITY_LEVELS:
            raise InvalidInput("security_level", f"must be one of {', '.join(SECURITY_LEVELS)}", self.security_level)
        _identifier("case_id", self.case_id)
        _identifier("model", self.model)
        _identifier("label", self.label)
        if self.max_tokens is not None and not (1 <= self.max_tokens <= 1_000_000):
            raise InvalidInput("max_tokens", "must be between 1 and 1000000", self.max_tokens)


def _identifier(field: str, value: str | None, *, required: bool = False) -> None:
    if value is None:
        if required:
            raise InvalidInput(field, "is required")
        return
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(field, "must be a non-empty string", value)
    if len(value) > MAX_IDENTIFIER_CHARS:
        raise InvalidInput(field, f"must be at most {MAX_IDENTIFIER_CHARS} characters", f"{len(value)} characters")
    if any(ord(c) < 32 for c in value):
        raise InvalidInput(field, "must not contain control characters")


def parse_execution_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidInput("execution_id", "must be a UUID", value) from None


class ExecutionFailedError(ChittyError):
    """An execution was recorded and then failed; its row holds the reason."""

    def __init__(self, execution_id: str, reason: str) -> None:
        self.execution_id, self.reason = execution_id, reason
        super().__init__(f"execution {execution_id} failed: {reason}")


@dataclass(frozen=True)
class ExecutionResults:
    chatgpt_response: str | None
    fortress_output: str | None
    output_hash: str | None
    """Hex SHA-256 of the UTF-8 output."""


@dataclass(frozen=True)
class ExecutionVerification:
    fortress_signed: bool
    signature_valid: bool | None
    """None when there was no signature to check (standard tier)."""
    chain_facts_logged: int
    verification_status: str | None


@dataclass(frozen=True)
class ExecutionUsage:
    """Tokens over every model call of the execution."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    total_tokens: int


@dataclass(frozen=True)
class ExecutionView:
    """What a client sees of one execution: built from a row, never the row. Times aware UTC."""

    execution_id: str
    status: ExecutionStatus
    security_level: SecurityLevel
    execution_method: str
    user_id: str
    case_id: str | None
    label: str | None
    model: str | None
    """The model asked for (the request's, else the configured default)."""
    answered_model: str | None
    """The model the provider says answered (None before an answer)."""
    provider: str | None
    provider_request_id: str | None
    prompt_hash: str
    results: ExecutionResults
    evidence_id: str | None
    verification: ExecutionVerification
    usage: ExecutionUsage | None
    chain_facts: list[str]
    error_message: str | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None

    @classmethod
    def from_row(cls, row: SecureExecution, *, open_text: TextOpener) -> ExecutionView:
        """The view of ``row``; ``open_text(column, value)`` unseals the sealed columns."""
        meta: dict[str, Any] = row.metadata_ or {}
        chatgpt_response = open_text("chatgpt_response", row.chatgpt_response)
        fortress_output = open_text("fortress_output", row.fortress_output)
        output = chatgpt_response if fortress_output is None else fortress_output
        usage = row.usage
        return cls(
            execution_id=str(row.id),
            status=row.status,  # type: ignore[arg-type]
            security_level=row.security_level,  # type: ignore[arg-type]
            execution_method=row.execution_method,
            user_id=row.user_id,
            case_id=row.case_id,
            label=row.label,
            model=row.model,
            answered_model=meta.get("answered_model"),
            provider=row.provider,
            provider_request_id=row.provider_request_id,
            prompt_hash=row.prompt_hash,
            results=ExecutionResults(
                chatgpt_response=chatgpt_response,
                fortress_output=fortress_output,
                output_hash=meta.get("output_hash") if output is not None else None,
            ),
            evidence_id=meta.get("evidence_id"),
            verification=ExecutionVerification(
                fortress_signed=row.fortress_signature is not None,
                signature_valid=meta.get("signature_valid"),
                chain_facts_logged=len(row.chain_facts or []),
                verification_status=row.verification_status,
            ),
            usage=ExecutionUsage(**usage) if usage else None,
            chain_facts=list(row.chain_facts or []),
            error_message=row.error_message,
            created_at=row.created_at,
            started_at=row.started_at,
            completed_at=row.completed_at,
        )
