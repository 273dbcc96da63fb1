"""chat: chat_sessions, chat_messages, usage_analytics, usage_daily, budgets, budget_reservations

Revision ID: 0002_chat
Revises: 0001_foundation
Create Date: 2026-11-30

Money columns are NUMERIC(30, 10) on PostgreSQL and integer units of 1e-10 USD on SQLite
(``chittyos.db.models.money``): SQLite has no exact decimal.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002_chat"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)
MONEY = sa.Numeric(30, 10).with_variant(sa.BigInteger(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "chat_sessions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("session_name", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("system_prompt", sa.Text(), nullable=True),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("total_messages", sa.Integer(), nullable=False),
        sa.Column("total_tokens", sa.BigInteger(), nullable=False),
        sa.Column("total_cost", MONEY, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint("status IN ('active', 'archived')", name=op.f("ck_chat_sessions_status")),
        sa.CheckConstraint("total_messages >= 0", name=op.f("ck_chat_sessions_total_messages")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_sessions")),
    )
    op.create_index("ix_chat_sessions_user_created", "chat_sessions", ["user_id", "created_at"])

    op.create_table(
        "chat_messages",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("tokens_used", sa.Integer(), nullable=True),
        sa.Column("cost", MONEY, nullable=True),
        sa.Column("model", sa.String(255), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint("role IN ('system', 'user', 'assistant')", name=op.f("ck_chat_messages_role")),
        sa.CheckConstraint("seq >= 1", name=op.f("ck_chat_messages_seq")),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["chat_sessions.id"],
            name=op.f("fk_chat_messages_session_id_chat_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_messages")),
        sa.UniqueConstraint("session_id", "seq", name="uq_chat_messages_session_seq"),
    )

    op.create_table(
        "usage_analytics",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=True),
        sa.Column("execution_id", sa.Uuid(), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("requested_model", sa.String(255), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("cached_tokens", sa.Integer(), nullable=True),
        sa.Column("cost_usd", MONEY, nullable=True),
        sa.Column("cost_status", sa.String(16), nullable=False),
        sa.Column("price_source", sa.String(255), nullable=True),
        sa.Column("price_version", sa.String(255), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("request_id", sa.String(255), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint("source IN ('chat', 'execution')", name=op.f("ck_usage_analytics_source")),
        sa.CheckConstraint("status IN ('completed', 'failed')", name=op.f("ck_usage_analytics_status")),
        sa.CheckConstraint(
            "cost_status IN ('priced', 'free', 'estimated', 'unknown_model', 'unknown_usage')",
            name=op.f("ck_usage_analytics_cost_status"),
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["chat_sessions.id"],
            name=op.f("fk_usage_analytics_session_id_chat_sessions"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["execution_id"],
            ["secure_executions.id"],
            name=op.f("fk_usage_analytics_execution_id_secure_executions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_analytics")),
    )
    op.create_index("ix_usage_analytics_user_created", "usage_analytics", ["user_id", "created_at"])
    op.create_index("ix_usage_analytics_created_at", "usage_analytics", ["created_at"])
    op.create_index("ix_usage_analytics_execution_id", "usage_analytics", ["execution_id"])

    op.create_table(
        "usage_daily",
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("failed_calls", sa.Integer(), nullable=False),
        sa.Column("unpriced_calls", sa.Integer(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cached_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", MONEY, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "day", "model", name=op.f("pk_usage_daily")),
    )
    op.create_index("ix_usage_daily_day", "usage_daily", ["day"])

    op.create_table(
        "budgets",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("limit_usd", MONEY, nullable=False),
        sa.Column("window_kind", sa.String(8), nullable=False),
        sa.Column("soft_limit_ratio", MONEY, nullable=False),
        sa.Column("spent_usd", MONEY, nullable=False),
        sa.Column("window_start", TS, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint("window_kind IN ('day', 'month', 'total')", name=op.f("ck_budgets_window_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budgets")),
        sa.UniqueConstraint("user_id", "model", name="uq_budgets_user_model"),
    )

    op.create_table(
        "budget_reservations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("budget_id", sa.Uuid(), nullable=False),
        sa.Column("hold_id", sa.Uuid(), nullable=False),
        sa.Column("execution_id", sa.Uuid(), nullable=True),
        sa.Column("amount_usd", MONEY, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["budget_id"],
            ["budgets.id"],
            name=op.f("fk_budget_reservations_budget_id_budgets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budget_reservations")),
    )
    op.create_index(
        "ix_budget_reservations_budget_expires", "budget_reservations", ["budget_id", "expires_at"]
    )
    op.create_index("ix_budget_reservations_hold_id", "budget_reservations", ["hold_id"])
    op.create_index("ix_budget_reservations_execution_id", "budget_reservations", ["execution_id"])


def downgrade() -> None:
    op.drop_index("ix_budget_reservations_execution_id", table_name="budget_reservations")
    op.drop_index("ix_budget_reservations_hold_id", table_name="budget_reservations")
    op.drop_index("ix_budget_reservations_budget_expires", table_name="budget_reservations")
    op.drop_table("budget_reservations")
    op.drop_table("budgets")
    op.drop_index("ix_usage_daily_day", table_name="usage_daily")
    op.drop_table("usage_daily")
    op.drop_index("ix_usage_analytics_execution_id", table_name="usage_analytics")
    op.drop_index("ix_usage_analytics_created_at", table_name="usage_analytics")
    op.drop_index("ix_usage_analytics_user_created", table_name="usage_analytics")
    op.drop_table("usage_analytics")
    op.drop_table("chat_messages")
    op.drop_index("ix_chat_sessions_user_created", table_name="chat_sessions")
    op.drop_table("chat_sessions")
