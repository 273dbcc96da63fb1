"""chat capability: sessions, messages, usage rows with their cost, budgets (reserve, then settle)."""

from chittyos.chat.budgets import BudgetService, BudgetView, Hold
from chittyos.chat.costing import CallCost, CallPricer
from chittyos.chat.guard import ExecutionSpendGuard
from chittyos.chat.models import (
    ANONYMOUS_USER,
    ChatCompletionView,
    ChatRequest,
    ChatUsage,
    CostStatus,
    MessageView,
    SessionList,
    SessionView,
)
from chittyos.chat.ratelimit import RateLimiter
from chittyos.chat.sealing import SEALED_CHAT_COLUMNS, ChatSealer
from chittyos.chat.service import ChatService
from chittyos.chat.sessions import SessionService
from chittyos.chat.tokens import estimate_prompt_tokens
from chittyos.chat.usage import UsageRecorder
from chittyos.chat.windows import window_end, window_start

__all__ = [
    "ANONYMOUS_USER",
    "SEALED_CHAT_COLUMNS",
    "BudgetService",
    "BudgetView",
    "CallCost",
    "CallPricer",
    "ChatCompletionView",
    "ChatRequest",
    "ChatSealer",
    "ChatService",
    "ChatUsage",
    "CostStatus",
    "ExecutionSpendGuard",
    "Hold",
    "MessageView",
    "RateLimiter",
    "SessionList",
    "SessionService",
    "SessionView",
    "UsageRecorder",
    "estimate_prompt_tokens",
    "window_end",
    "window_start",
]
