"""``chitty_chain_nodes``: the complete subtrees ("tiles") of the ChittyChain Merkle tree.

Row ``(level, index)`` holds the hash of leaves ``[index * 2**level, (index + 1) * 2**level)``
(level 0: the leaf hash). A node is written once, when its last leaf is appended, and never
changes; incomplete right-hand subtrees are never stored (``chittyos.chain.merkle``). A tree of
n leaves has fewer than 2n rows; any proof reads O(log n) of them by primary key.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, LargeBinary, SmallInteger
from sqlalchemy.orm import Mapped, mapped_column

from chittyos.db.models.base import Base


class ChainNode(Base):
    __tablename__ = "chitty_chain_nodes"
    __table_args__ = (
        CheckConstraint("level >= 0 AND level < 64", name="level"),
        CheckConstraint('"index" >= 0', name="index"),
    )

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))
