"""chitty_chain_facts: the subject index is a hash index on PostgreSQL

Revision ID: 0005_fact_subject_hash_index
Revises: 0004_usage_not_billed
Create Date: 2026-12-01

A subject may be 1,024 characters, up to 4,096 bytes of UTF-8; a PostgreSQL B-tree entry may be
at most 2,704 bytes, so 900 CJK characters were refused by the index ("index row size exceeds
btree maximum") while SQLite stored them. Subjects are only ever matched for equality, which a
hash index serves with no size limit. SQLite keeps its B-tree (no such limit there).
"""

from __future__ import annotations

from alembic import op

revision = "0005_fact_subject_hash_index"
down_revision = "0004_usage_not_billed"
branch_labels = None
depends_on = None

_INDEX, _TABLE = "ix_chitty_chain_facts_subject", "chitty_chain_facts"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index(_INDEX, table_name=_TABLE)
        op.create_index(_INDEX, _TABLE, ["subject"], postgresql_using="hash")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index(_INDEX, table_name=_TABLE)
        op.create_index(_INDEX, _TABLE, ["subject"])
