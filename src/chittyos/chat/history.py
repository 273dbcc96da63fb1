"""What of a session's history goes upstream: all of it when it fits, else the newest part.

The request sent for a session call is ``system prompt + earlier messages + new messages``, and
all of it counts against ``CHITTY_MAX_PROMPT_CHARS``, the same bound a single prompt has. A long
conversation must not become unusable, so the oldest earlier messages are left out (the way chat
clients slide their context window) and the caller is told how many; the system prompt and the
new messages are always sent. The stored session is never changed.
"""

from __future__ import annotations

from dataclasses import dataclass

from chittyos.errors import InvalidInput
from chittyos.llm import ChatMessage

__all__ = ["FittedHistory", "fit_history"]


@dataclass(frozen=True)
class FittedHistory:
    messages: tuple[ChatMessage, ...]
    """The history to send, in order: the session's system prompt, then the newest earlier
    messages."""
    dropped: int
    """Earlier messages left out, oldest first."""
    dropped_chars: int


def fit_history(
    history: tuple[ChatMessage, ...], new: tuple[ChatMessage, ...], *, max_chars: int
) -> FittedHistory:
    """The newest part of ``history`` that, with ``new``, holds at most ``max_chars`` characters
    of content. The leading system message(s) (the session's system prompt) are always kept; a
    kept rest never starts with an assistant message (its question was left out). Raises ``InvalidInput`` (field ``messages``) when the system prompt and ``new`` alone
    pass the bound."""
    lead = next((i for i, m in enumerate(history) if m.role != "system"), len(history))
    system, earlier = history[:lead], history[lead:]
    room = max_chars - sum(len(m.content) for m in (*system, *new))
    if room < 0:
        raise InvalidInput(
            "messages",
            f"with the session's system prompt must hold at most {max_chars} characters "
            "(CHITTY_MAX_PROMPT_CHARS)",
            f"{max_chars - room}",
        )
    kept: list[ChatMessage] = []
    for message in reversed(earlier):
        if len(message.content) > room:
            break
        room -= len(message.content)
        kept.append(message)
    kept.reverse()
    while len(kept) < len(earlier) and kept and kept[0].role == "assistant":
        kept.pop(0)
    gone = earlier[: len(earlier) - len(kept)]
    return FittedHistory(
        messages=(*system, *kept), dropped=len(gone), dropped_chars=sum(len(m.content) for m in gone)
    )
