"""Alembic environment: batch mode on SQLite, lock and statement timeouts on PostgreSQL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from chittyos.db.models import Base

config = context.config
# A fixed key for pg_advisory_lock so two deploys never migrate at once.
_MIGRATION_LOCK_KEY = 0x43_48_49_54_54_59  # "CHITTY"


def run_migrations_online() -> None:
    connection = config.attributes["connection"]
    sqlite = connection.dialect.name == "sqlite"
    if not sqlite:
        connection.execute(text("SET lock_timeout = '10s'"))
        connection.execute(text("SET statement_timeout = '300s'"))
        connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
        connection.commit()
    try:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=sqlite,
            compare_type=True,
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        if not sqlite:
            connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK_KEY})
            connection.commit()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run `chittyos db upgrade`")
run_migrations_online()
