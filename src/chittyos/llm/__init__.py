"""Model providers: OpenAI-compatible HTTP, MCP sampling; prices."""

from chittyos.llm.base import (
    ROLES,
    ChatMessage,
    Completion,
    CompletionRequest,
    DeltaCallback,
    Provider,
    Role,
    StreamInterrupted,
    TokenUsage,
)

__all__ = [
    "ROLES",
    "ChatMessage",
    "Completion",
    "CompletionRequest",
    "DeltaCallback",
    "Provider",
    "Role",
    "StreamInterrupted",
    "TokenUsage",
]
