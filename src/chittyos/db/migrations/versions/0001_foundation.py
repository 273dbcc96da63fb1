"""foundation: secure_executions

Revision ID: 0001_foundation
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001_foundation"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "secure_executions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("prompt_hash", sa.String(64), nullable=False),
        sa.Column("security_level", sa.String(16), nullable=False),
        sa.Column("execution_method", sa.String(16), nullable=False),
        sa.Column("case_id", sa.String(255), nullable=True),
        sa.Column("label", sa.String(255), nullable=True),
        sa.Column("model", sa.String(255), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("completed_at", TS, nullable=True),
        sa.Column("chatgpt_response", sa.Text(), nullable=True),
        sa.Column("fortress_output", sa.Text(), nullable=True),
        sa.Column("fortress_signature", sa.Text(), nullable=True),
        sa.Column("verification_status", sa.String(32), nullable=True),
        sa.Column("chain_facts", JSON, nullable=False),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("provider", sa.String(64), nullable=True),
        sa.Column("provider_request_id", sa.String(255), nullable=True),
        sa.Column("usage", JSON, nullable=True),
        sa.CheckConstraint(
            "security_level IN ('standard', 'fortress', 'verified')",
            name=op.f("ck_secure_executions_security_level"),
        ),
        sa.CheckConstraint(
            "execution_method IN ('direct', 'sandboxed', 'verified')",
            name=op.f("ck_secure_executions_execution_method"),
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'executing', 'completed', 'failed', 'verified')",
            name=op.f("ck_secure_executions_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_secure_executions")),
    )
    op.create_index("ix_secure_executions_user_created", "secure_executions", ["user_id", "created_at"])
    op.create_index("ix_secure_executions_case_id", "secure_executions", ["case_id"])


def downgrade() -> None:
    op.drop_index("ix_secure_executions_case_id", table_name="secure_executions")
    op.drop_index("ix_secure_executions_user_created", table_name="secure_executions")
    op.drop_table("secure_executions")
