"""``chitty_chain_head``: one row per log, the row that appends lock.

``tree_size`` is the number of leaves; an append moves it forward in the same transaction that
inserts the leaves, so a rolled-back append leaves no gap. Indices are handed out from here under
the row lock (``SELECT ... FOR UPDATE``), never from a SEQUENCE. ``origin`` is the log's
checkpoint origin line, fixed when the row is created. ``peaks`` caches the hashes of the complete
subtrees whose fold is the root (``merkle.root_nodes(tree_size)``, 32 bytes each, largest first):
every left sibling an append hashes with is one of them, so an append reads only the row it locks.
They are copies of stored nodes; ``ChainLog.verify_log`` checks that they agree.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, LargeBinary, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from chittyos.db.models.base import Base, utcnow


class ChainHead(Base):
    __tablename__ = "chitty_chain_head"
    __table_args__ = (CheckConstraint("tree_size >= 0", name="tree_size"),)

    log_id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    origin: Mapped[str] = mapped_column(String(255))
    tree_size: Mapped[int] = mapped_column(BigInteger, default=0)
    peaks: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
