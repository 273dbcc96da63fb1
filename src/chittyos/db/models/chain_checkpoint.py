"""``chitty_chain_checkpoints``: signed checkpoints of ChittyChain, one per tree size.

``note`` is the C2SP signed note (tlog-checkpoint body, Ed25519 log key) exactly as signed;
``root_hash`` repeats its root for queries. Each was signed only after checking it is consistent
with the previous one.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, LargeBinary, Text
from sqlalchemy.orm import Mapped, mapped_column

from chittyos.db.models.base import Base, utcnow


class ChainCheckpoint(Base):
    __tablename__ = "chitty_chain_checkpoints"
    __table_args__ = (CheckConstraint("tree_size >= 0", name="tree_size"),)

    tree_size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)
    signed_at: Mapped[datetime] = mapped_column(default=utcnow)
