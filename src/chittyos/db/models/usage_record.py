"""``usage_analytics``: one row per model call the server made (chat tools and every tier).

The cost is stored with the price source and version used, so a later price change never
rewrites history. ``cost_usd`` is None when it is not known (``cost_status`` says why), never 0
by default. Token counts are None when the provider reported none (MCP sampling).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from chittyos.db.models.base import Base, utcnow
from chittyos.db.models.money import Money

USAGE_SOURCES = ("chat", "execution")
USAGE_STATUSES = ("completed", "failed")
COST_STATUSES = ("priced", "free", "estimated", "not_billed", "unknown_model", "unknown_usage")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class UsageRecord(Base):
    __tablename__ = "usage_analytics"
    __table_args__ = (
        CheckConstraint(_in("source", USAGE_SOURCES), name="source"),
        CheckConstraint(_in("status", USAGE_STATUSES), name="status"),
        CheckConstraint(_in("cost_status", COST_STATUSES), name="cost_status"),
        Index("ix_usage_analytics_user_created", "user_id", "created_at"),
        Index("ix_usage_analytics_created_at", "created_at"),
        Index("ix_usage_analytics_execution_id", "execution_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[str] = mapped_column(String(255))
    session_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("chat_sessions.id", ondelete="SET NULL"))
    execution_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("secure_executions.id"))
    source: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str] = mapped_column(String(64))
    requested_model: Mapped[str] = mapped_column(String(255))
    model: Mapped[str] = mapped_column(String(255))
    """The model the provider says answered."""
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    cached_tokens: Mapped[int | None] = mapped_column(Integer)
    """Part of prompt_tokens served from the provider's prompt cache."""
    cost_usd: Mapped[Decimal | None] = mapped_column(Money())
    cost_status: Mapped[str] = mapped_column(String(16))
    price_source: Mapped[str | None] = mapped_column(String(255))
    price_version: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    request_id: Mapped[str | None] = mapped_column(String(255))
    latency_ms: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
