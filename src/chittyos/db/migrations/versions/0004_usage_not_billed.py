"""usage: cost_status 'not_billed' (a model call the provider refused with an error status)

Revision ID: 0004_usage_not_billed
Revises: 0003_chain
Create Date: 2026-12-01

Every model call that went upstream now leaves a usage_analytics row, failed ones too; a call
the provider answered with an error status is recorded with 0 tokens, cost 0 and cost_status
``not_billed``. Only the CHECK constraint on cost_status changes (batch mode rebuilds the table
on SQLite; PostgreSQL drops and adds the constraint).
"""

from __future__ import annotations

from alembic import op

revision = "0004_usage_not_billed"
down_revision = "0003_chain"
branch_labels = None
depends_on = None

_NAME = "ck_usage_analytics_cost_status"
_BEFORE = ("priced", "free", "estimated", "unknown_model", "unknown_usage")
_AFTER = ("priced", "free", "estimated", "not_billed", "unknown_model", "unknown_usage")


def _check(values: tuple[str, ...]) -> str:
    return f"cost_status IN ({', '.join(repr(v) for v in values)})"


def _replace(values: tuple[str, ...]) -> None:
    with op.batch_alter_table("usage_analytics") as batch:
        batch.drop_constraint(op.f(_NAME), type_="check")
        batch.create_check_constraint(op.f(_NAME), _check(values))


def upgrade() -> None:
    _replace(_AFTER)


def downgrade() -> None:
    # Rows recorded as not_billed cost 0 and carry 0 tokens: as "free" they keep their sums.
    op.execute("UPDATE usage_analytics SET cost_status = 'free' WHERE cost_status = 'not_billed'")
    _replace(_BEFORE)
