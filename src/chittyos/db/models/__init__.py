"""SQLAlchemy 2 typed models, one module per table."""

from chittyos.db.models.base import Base, UTCDateTime, utcnow
from chittyos.db.models.secure_execution import (
    EXECUTION_METHODS,
    EXECUTION_STATUSES,
    SECURITY_LEVELS,
    SecureExecution,
)

__all__ = [
    "EXECUTION_METHODS",
    "EXECUTION_STATUSES",
    "SECURITY_LEVELS",
    "Base",
    "SecureExecution",
    "UTCDateTime",
    "utcnow",
]
