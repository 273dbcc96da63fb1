"""Chat text at rest: message contents and session system prompts as AES-256-GCM envelopes.

Each envelope is bound to its row (table, column, row id), so a content copied to another
message fails to open. Token counts and hashes never need the plaintext stored.
"""

from __future__ import annotations

import uuid

from chittyos.signing import Sealer

__all__ = ["SEALED_CHAT_COLUMNS", "ChatSealer"]

SEALED_CHAT_COLUMNS = {"chat_messages": ("content",), "chat_sessions": ("system_prompt",)}
"""What key rotation re-seals here, by table."""


class ChatSealer:
    def __init__(self, *, sealer: Sealer) -> None:
        self._sealer = sealer

    def seal_message(self, message_id: uuid.UUID, text: str) -> str:
        return self._sealer.seal(text, table="chat_messages", column="content", row_id=message_id)

    def open_message(self, message_id: uuid.UUID, envelope: str) -> str:
        return self._sealer.open(envelope, table="chat_messages", column="content", row_id=message_id).decode()

    def seal_system_prompt(self, session_id: uuid.UUID, text: str) -> str:
        return self._sealer.seal(text, table="chat_sessions", column="system_prompt", row_id=session_id)

    def open_system_prompt(self, session_id: uuid.UUID, envelope: str | None) -> str | None:
        if envelope is None:
            return None
        return self._sealer.open(
            envelope, table="chat_sessions", column="system_prompt", row_id=session_id
        ).decode()
