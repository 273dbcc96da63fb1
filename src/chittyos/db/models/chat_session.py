"""``chat_sessions``: one conversation of one user.

``total_messages``, ``total_tokens`` and ``total_cost`` are kept by SQL increments in the same
transaction that inserts the messages (never read-modify-write), so they stay exact when many
messages arrive at once. ``total_messages`` also numbers the messages: a new message's ``seq`` is
the count after the increment.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from chittyos.db.models.base import Base, utcnow
from chittyos.db.models.money import Money

SESSION_STATUSES = ("active", "archived")


class ChatSession(Base):
    __tablename__ = "chat_sessions"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'archived')", name="status"),
        CheckConstraint("total_messages >= 0", name="total_messages"),
        Index("ix_chat_sessions_user_created", "user_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[str] = mapped_column(String(255))
    session_name: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="active")
    system_prompt: Mapped[str | None] = mapped_column(Text)
    """Sealed (AES-256-GCM envelope bound to this row); also the session's first message."""
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    total_messages: Mapped[int] = mapped_column(Integer, default=0)
    total_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    total_cost: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0))
    """USD, the sum of the messages' known costs."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
