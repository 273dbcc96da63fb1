"""``secure_executions``: one row per AI execution, as the seed schema has it."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from chittyos.db.models.base import Base, utcnow

SECURITY_LEVELS = ("standard", "fortress", "verified")
EXECUTION_METHODS = ("direct", "sandboxed", "verified")
EXECUTION_STATUSES = ("pending", "executing", "completed", "failed", "verified")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class SecureExecution(Base):
    __tablename__ = "secure_executions"
    __table_args__ = (
        CheckConstraint(_in("security_level", SECURITY_LEVELS), name="security_level"),
        CheckConstraint(_in("execution_method", EXECUTION_METHODS), name="execution_method"),
        CheckConstraint(_in("status", EXECUTION_STATUSES), name="status"),
        Index("ix_secure_executions_user_created", "user_id", "created_at"),
        Index("ix_secure_executions_case_id", "case_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[str] = mapped_column(String(255))
    prompt: Mapped[str] = mapped_column(Text)
    prompt_hash: Mapped[str] = mapped_column(String(64))
    """Hex SHA-256 of the UTF-8 prompt (the plaintext, also once prompts are sealed)."""
    security_level: Mapped[str] = mapped_column(String(16))
    execution_method: Mapped[str] = mapped_column(String(16))
    case_id: Mapped[str | None] = mapped_column(String(255))
    label: Mapped[str | None] = mapped_column(String(255))
    model: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    chatgpt_response: Mapped[str | None] = mapped_column(Text)
    fortress_output: Mapped[str | None] = mapped_column(Text)
    fortress_signature: Mapped[str | None] = mapped_column(Text)
    verification_status: Mapped[str | None] = mapped_column(String(32))
    chain_facts: Mapped[list[Any]] = mapped_column(default=list)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    error_message: Mapped[str | None] = mapped_column(Text)
    provider: Mapped[str | None] = mapped_column(String(64))
    provider_request_id: Mapped[str | None] = mapped_column(String(255))
    usage: Mapped[dict[str, Any] | None]
