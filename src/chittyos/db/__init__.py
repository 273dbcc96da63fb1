"""Storage: engine, session factory, models, unit of work, migrations."""

from chittyos.db.engine import create_engine, display_url, is_sqlite, make_session_factory
from chittyos.db.migrate import SchemaBehind, ensure_current, head_revision, upgrade
from chittyos.db.uow import UnitOfWork

__all__ = [
    "SchemaBehind",
    "UnitOfWork",
    "create_engine",
    "display_url",
    "ensure_current",
    "head_revision",
    "is_sqlite",
    "make_session_factory",
    "upgrade",
]
