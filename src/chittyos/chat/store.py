"""Queries on chat_sessions and chat_messages, shared by the session and chat services.

``append_messages`` is the only writer of messages: one UPDATE adds to the session's totals
(SQL increments, never read-modify-write) and returns the new message count, which numbers the
new messages; the INSERT follows in the same transaction. The UPDATE's row lock orders
concurrent appends to one session, so the totals stay exact and ``seq`` has no gaps.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chittyos.chat.sealing import ChatSealer
from chittyos.db.models import ChatSession, ChatSessionMessage, to_money
from chittyos.errors import NotFound
from chittyos.llm import ChatMessage

__all__ = ["NewMessage", "append_messages", "load_history"]

_S = ChatSession.__table__
_M = ChatSessionMessage.__table__
# Built once, with bind parameters (see chat.budgets for why).
_GROW = (
    update(_S)
    .where(_S.c.id == bindparam("s_id"))
    .values(
        total_messages=_S.c.total_messages + bindparam("s_count"),
        total_tokens=_S.c.total_tokens + bindparam("s_tokens"),
        total_cost=_S.c.total_cost + bindparam("s_cost", type_=_S.c.total_cost.type),
        updated_at=bindparam("s_at", type_=_S.c.updated_at.type),
    )
    .returning(_S.c.total_messages)
)
_INSERT = insert(_M)
_HISTORY = select(_M.c.id, _M.c.role, _M.c.content).where(_M.c.session_id == bindparam("s_id")).order_by(_M.c.seq)


@dataclass(frozen=True)
class NewMessage:
    role: str
    content: str
    tokens_used: int | None = None
    cost: Decimal | None = None
    """USD; None when not known."""
    model: str | None = None


async def append_messages(
    session: AsyncSession,
    session_id: uuid.UUID,
    messages: Sequence[NewMessage],
    at: datetime,
    *,
    sealer: ChatSealer,
) -> list[dict[str, Any]]:
    """Add ``messages`` to the end of a chat session; return them as inserted (with ``seq``),
    contents in plaintext (they are stored sealed).

    Raises ``NotFound`` when the session does not exist.
    """
    tokens = sum(m.tokens_used or 0 for m in messages)
    cost = to_money(sum((m.cost for m in messages if m.cost is not None), Decimal(0)))
    count = await session.scalar(
        _GROW, {"s_id": session_id, "s_count": len(messages), "s_tokens": tokens, "s_cost": cost, "s_at": at}
    )
    if count is None:
        raise NotFound("chat session", session_id)
    first = count - len(messages) + 1
    rows = [
        {
            "id": uuid.uuid4(),
            "session_id": session_id,
            "seq": first + i,
            "role": m.role,
            "content": m.content,
            "tokens_used": m.tokens_used,
            "cost": None if m.cost is None else to_money(m.cost),
            "model": m.model,
            "created_at": at,
        }
        for i, m in enumerate(messages)
    ]
    await session.execute(_INSERT, [{**r, "content": sealer.seal_message(r["id"], r["content"])} for r in rows])
    return rows


async def load_history(
    session: AsyncSession, session_id: uuid.UUID, *, sealer: ChatSealer
) -> tuple[ChatSession, tuple[ChatMessage, ...]]:
    """The session row and its messages in order, ready to send upstream. Raises ``NotFound``."""
    row = await session.get(ChatSession, session_id)
    if row is None:
        raise NotFound("chat session", session_id)
    result = await session.execute(_HISTORY, {"s_id": session_id})
    return row, tuple(
        ChatMessage(role=role, content=sealer.open_message(message_id, content))
        for message_id, role, content in result
    )
