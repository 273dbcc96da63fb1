"""``budget_reservations``: the worst-case cost of a call in flight, held against a budget.

One row per budget a call falls under, all sharing the call's ``hold_id``. A settle deletes them;
a process that crashed mid-call leaves rows that stop counting at ``expires_at``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, Index
from sqlalchemy.orm import Mapped, mapped_column

from chittyos.db.models.base import Base, utcnow
from chittyos.db.models.money import Money


class BudgetReservation(Base):
    __tablename__ = "budget_reservations"
    __table_args__ = (
        Index("ix_budget_reservations_budget_expires", "budget_id", "expires_at"),
        Index("ix_budget_reservations_hold_id", "hold_id"),
        Index("ix_budget_reservations_execution_id", "execution_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    budget_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("budgets.id", ondelete="CASCADE"))
    hold_id: Mapped[uuid.UUID]
    execution_id: Mapped[uuid.UUID | None]
    """Set for executions, whose settle runs in the completion subscriber."""
    amount_usd: Mapped[Decimal] = mapped_column(Money())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
