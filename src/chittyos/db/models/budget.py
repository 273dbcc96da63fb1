"""``budgets``: a USD limit per user (optionally per user and model) over a window.

``model`` is ``''`` for a budget over every model. ``spent_usd`` is the settled spend inside the
window that starts at ``window_start``; a settle that finds the window over starts it again
(one SQL statement, no read-modify-write). Open reservations live in ``budget_reservations``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from chittyos.db.models.base import Base, utcnow
from chittyos.db.models.money import Money

BUDGET_WINDOWS = ("day", "month", "total")
ALL_MODELS = ""
"""The ``model`` value of a budget that covers every model."""


class Budget(Base):
    __tablename__ = "budgets"
    __table_args__ = (
        CheckConstraint("window_kind IN ('day', 'month', 'total')", name="window_kind"),
        UniqueConstraint("user_id", "model", name="uq_budgets_user_model"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[str] = mapped_column(String(255))
    model: Mapped[str] = mapped_column(String(255), default=ALL_MODELS)
    limit_usd: Mapped[Decimal] = mapped_column(Money())
    window_kind: Mapped[str] = mapped_column(String(8))
    """day | month | total (UTC calendar day or month; total never resets)."""
    soft_limit_ratio: Mapped[Decimal] = mapped_column(Money())
    """Share of the limit (0..1) from which calls carry a warning."""
    spent_usd: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0))
    window_start: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
