"""Model providers: OpenAI-compatible HTTP, MCP sampling; prices."""

from chittyos.llm.base import (
    ROLES,
    SAMPLING_PROVIDER,
    ChatMessage,
    Completion,
    CompletionRequest,
    DeltaCallback,
    FailedCall,
    Provider,
    Role,
    StreamInterrupted,
    TokenUsage,
    failed_call,
)

__all__ = [
    "ROLES",
    "SAMPLING_PROVIDER",
    "ChatMessage",
    "Completion",
    "CompletionRequest",
    "DeltaCallback",
    "FailedCall",
    "Provider",
    "Role",
    "StreamInterrupted",
    "TokenUsage",
    "failed_call",
]
