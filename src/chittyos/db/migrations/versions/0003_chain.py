"""chain: chitty_chain_facts, chitty_chain_nodes, chitty_chain_head, chitty_chain_checkpoints

Revision ID: 0003_chain
Revises: 0002_chat
Create Date: 2026-11-30

ChittyChain on the database (DESIGN.md, ChittyChain): facts are the leaves, nodes the complete
subtrees, the head row is what appends lock (it also caches the root's peaks), checkpoints are
the signed notes. No SEQUENCE:
indices come from the head row under its lock, and UNIQUE(leaf_index) makes a fork fail.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_chain"
down_revision = "0002_chat"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
HASH = sa.LargeBinary(32)


def upgrade() -> None:
    op.create_table(
        "chitty_chain_head",
        sa.Column("log_id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("origin", sa.String(255), nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("peaks", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint("tree_size >= 0", name=op.f("ck_chitty_chain_head_tree_size")),
        sa.PrimaryKeyConstraint("log_id", name=op.f("pk_chitty_chain_head")),
    )

    op.create_table(
        "chitty_chain_facts",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("leaf_index", sa.BigInteger(), nullable=False),
        sa.Column("leaf_hash", HASH, nullable=False),
        sa.Column("subject", sa.String(1024), nullable=False),
        sa.Column("predicate", sa.String(255), nullable=False),
        sa.Column("object", sa.Text(), nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("execution_id", sa.String(255), nullable=True),
        sa.Column("evidence_id", sa.String(255), nullable=True),
        sa.Column("signer", sa.String(64), nullable=True),
        sa.Column("signature", sa.Text(), nullable=True),
        sa.Column("verification_status", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint("leaf_index >= 0", name=op.f("ck_chitty_chain_facts_leaf_index")),
        sa.CheckConstraint(
            "verification_status IN ('unsigned', 'unverified', 'verified', 'rejected')",
            name=op.f("ck_chitty_chain_facts_verification_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chitty_chain_facts")),
        sa.UniqueConstraint("leaf_index", name=op.f("uq_chitty_chain_facts_leaf_index")),
    )
    op.create_index("ix_chitty_chain_facts_subject", "chitty_chain_facts", ["subject"])
    op.create_index("ix_chitty_chain_facts_predicate", "chitty_chain_facts", ["predicate"])
    op.create_index("ix_chitty_chain_facts_source", "chitty_chain_facts", ["source"])
    op.create_index("ix_chitty_chain_facts_timestamp", "chitty_chain_facts", ["timestamp"])
    op.create_index("ix_chitty_chain_facts_execution_id", "chitty_chain_facts", ["execution_id"])

    op.create_table(
        "chitty_chain_nodes",
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", HASH, nullable=False),
        sa.CheckConstraint("level >= 0 AND level < 64", name=op.f("ck_chitty_chain_nodes_level")),
        sa.CheckConstraint('"index" >= 0', name=op.f("ck_chitty_chain_nodes_index")),
        sa.PrimaryKeyConstraint("level", "index", name=op.f("pk_chitty_chain_nodes")),
    )

    op.create_table(
        "chitty_chain_checkpoints",
        sa.Column("tree_size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root_hash", HASH, nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("signed_at", TS, nullable=False),
        sa.CheckConstraint("tree_size >= 0", name=op.f("ck_chitty_chain_checkpoints_tree_size")),
        sa.PrimaryKeyConstraint("tree_size", name=op.f("pk_chitty_chain_checkpoints")),
    )


def downgrade() -> None:
    op.drop_table("chitty_chain_checkpoints")
    op.drop_table("chitty_chain_nodes")
    op.drop_index("ix_chitty_chain_facts_execution_id", table_name="chitty_chain_facts")
    op.drop_index("ix_chitty_chain_facts_timestamp", table_name="chitty_chain_facts")
    op.drop_index("ix_chitty_chain_facts_source", table_name="chitty_chain_facts")
    op.drop_index("ix_chitty_chain_facts_predicate", table_name="chitty_chain_facts")
    op.drop_index("ix_chitty_chain_facts_subject", table_name="chitty_chain_facts")
    op.drop_table("chitty_chain_facts")
    op.drop_table("chitty_chain_head")
