"""SQLAlchemy 2 typed models, one module per table."""

from chittyos.db.models.base import Base, UTCDateTime, utcnow
from chittyos.db.models.budget import ALL_MODELS, BUDGET_WINDOWS, Budget
from chittyos.db.models.budget_reservation import BudgetReservation
from chittyos.db.models.chain_checkpoint import ChainCheckpoint
from chittyos.db.models.chain_fact import FACT_VERIFICATION_STATUSES, ChainFact
from chittyos.db.models.chain_head import ChainHead
from chittyos.db.models.chain_node import ChainNode
from chittyos.db.models.chat_message import MESSAGE_ROLES, ChatSessionMessage
from chittyos.db.models.chat_session import SESSION_STATUSES, ChatSession
from chittyos.db.models.money import MONEY_PLACES, Money, Usd, to_money, usd_text
from chittyos.db.models.secure_execution import (
    EXECUTION_METHODS,
    EXECUTION_STATUSES,
    SECURITY_LEVELS,
    SecureExecution,
)
from chittyos.db.models.usage_daily import UsageDaily
from chittyos.db.models.usage_record import COST_STATUSES, USAGE_SOURCES, USAGE_STATUSES, UsageRecord

__all__ = [
    "ALL_MODELS",
    "BUDGET_WINDOWS",
    "COST_STATUSES",
    "EXECUTION_METHODS",
    "EXECUTION_STATUSES",
    "FACT_VERIFICATION_STATUSES",
    "MESSAGE_ROLES",
    "MONEY_PLACES",
    "SECURITY_LEVELS",
    "SESSION_STATUSES",
    "USAGE_SOURCES",
    "USAGE_STATUSES",
    "Base",
    "Budget",
    "BudgetReservation",
    "ChainCheckpoint",
    "ChainFact",
    "ChainHead",
    "ChainNode",
    "ChatSession",
    "ChatSessionMessage",
    "Money",
    "SecureExecution",
    "UTCDateTime",
    "UsageDaily",
    "UsageRecord",
    "Usd",
    "to_money",
    "usd_text",
    "utcnow",
]
