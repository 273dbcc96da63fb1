"""``usage_daily``: usage_analytics summed per user, UTC day and model, for the analytics query.

Kept in the transaction that inserts each usage row (an upsert that adds the row's counts), so it
always equals ``SELECT ... GROUP BY user_id, date(created_at), model`` over usage_analytics; the
analytics of a year then read at most 366 rows per model instead of every call. ``cost_usd`` sums
the known costs only; ``unpriced_calls`` counts the calls whose cost is not known.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from sqlalchemy import BigInteger, Date, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from chittyos.db.models.base import Base
from chittyos.db.models.money import Money


class UsageDaily(Base):
    __tablename__ = "usage_daily"
    __table_args__ = (Index("ix_usage_daily_day", "day"),)

    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    """UTC calendar day of the calls."""
    model: Mapped[str] = mapped_column(String(255), primary_key=True)
    """The model that answered."""
    calls: Mapped[int] = mapped_column(Integer)
    failed_calls: Mapped[int] = mapped_column(Integer)
    unpriced_calls: Mapped[int] = mapped_column(Integer)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    completion_tokens: Mapped[int] = mapped_column(BigInteger)
    cached_tokens: Mapped[int] = mapped_column(BigInteger)
    cost_usd: Mapped[Decimal] = mapped_column(Money())
