"""``chitty_chain_facts``: one row per ChittyChain leaf (the seed's columns plus the leaf's place).

A row is written once, by ``ChainLog.append``, and never updated except ``verification_status``
(the cached result of checking ``signature``, which is not part of the tree). ``id`` is the fact
id (hex SHA-256 of the leaf bytes); ``leaf_index`` is UNIQUE so that two writers that somehow got
the same index fail instead of forking the log.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Index, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from chittyos.db.models.base import Base, utcnow

FACT_VERIFICATION_STATUSES = ("unsigned", "unverified", "verified", "rejected")
"""unsigned: no signature; unverified: signed, not checked yet; verified / rejected: checked."""


class ChainFact(Base):
    __tablename__ = "chitty_chain_facts"
    __table_args__ = (
        CheckConstraint("leaf_index >= 0", name="leaf_index"),
        CheckConstraint(
            "verification_status IN ('unsigned', 'unverified', 'verified', 'rejected')",
            name="verification_status",
        ),
        # Hash on PostgreSQL: a B-tree entry holds at most 2,704 bytes, a subject up to 4,096.
        Index("ix_chitty_chain_facts_subject", "subject", postgresql_using="hash"),
        Index("ix_chitty_chain_facts_predicate", "predicate"),
        Index("ix_chitty_chain_facts_source", "source"),
        Index("ix_chitty_chain_facts_timestamp", "timestamp"),
        Index("ix_chitty_chain_facts_execution_id", "execution_id"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    """Fact id: hex SHA-256 of the leaf bytes (RFC 8785 JSON of the fact)."""
    leaf_index: Mapped[int] = mapped_column(BigInteger, unique=True)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    """SHA-256(0x00 || leaf bytes), 32 bytes."""
    subject: Mapped[str] = mapped_column(String(1024))
    predicate: Mapped[str] = mapped_column(String(255))
    object: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(255))
    timestamp: Mapped[int] = mapped_column(BigInteger)
    """UTC epoch milliseconds, as in the leaf."""
    execution_id: Mapped[str | None] = mapped_column(String(255))
    evidence_id: Mapped[str | None] = mapped_column(String(255))
    signer: Mapped[str | None] = mapped_column(String(64))
    """OpenPGP fingerprint of the key that signed the fact (in the leaf)."""
    signature: Mapped[str | None] = mapped_column(Text)
    """ASCII-armored detached signature over the fact's signing bytes (in the leaf)."""
    verification_status: Mapped[str] = mapped_column(String(16), default="unsigned")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def verified(self) -> bool:
        """The seed's flag: the signature was checked and holds."""
        return self.verification_status == "verified"
