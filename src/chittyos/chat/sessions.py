"""Chat sessions: create, list, read, and add messages by hand (``chitty_message_add``)."""

from __future__ import annotations

import uuid

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select

from chittyos.chat.models import (
    MessageView,
    SessionList,
    SessionView,
    check_identifier,
    parse_content,
    parse_money,
    parse_role,
    parse_uuid,
)
from chittyos.chat.sealing import ChatSealer
from chittyos.chat.store import NewMessage, append_messages
from chittyos.db.models import SESSION_STATUSES, ChatSession, ChatSessionMessage, to_money, utcnow
from chittyos.db.uow import UnitOfWork
from chittyos.errors import InvalidInput, NotFound

__all__ = ["SessionService"]

MAX_TOKENS_USED = 100_000_000
MAX_OFFSET = 2**31 - 1
"""Beyond any real page, and within every database's OFFSET range."""


class SessionService:
    def __init__(
        self,
        *,
        uow: UnitOfWork,
        sealer: ChatSealer,
        max_content_chars: int,
        page_size_max: int,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._uow = uow
        self._sealer = sealer
        self._max_chars = max_content_chars
        self._page_max = page_size_max
        self._clock = clock

    async def create(
        self, *, user_id: str, session_name: str, initial_system_prompt: str | None = None
    ) -> SessionView:
        """A new, empty session; the system prompt, when given, becomes its first message.

        Raises ``InvalidInput`` naming the field.
        """
        check_identifier("user_id", user_id, required=True)
        check_identifier("session_name", session_name, required=True)
        if initial_system_prompt is not None:
            parse_content("initial_system_prompt", initial_system_prompt, max_chars=self._max_chars)
        at = self._clock()
        session_id = uuid.uuid4()
        row = ChatSession(
            id=session_id,
            user_id=user_id,
            session_name=session_name,
            status="active",
            system_prompt=(
                self._sealer.seal_system_prompt(session_id, initial_system_prompt) if initial_system_prompt else None
            ),
            metadata_={},
            total_messages=0,
            total_tokens=0,
            total_cost=to_money(0),
            created_at=at,
            updated_at=at,
        )
        async with self._uow.begin() as session:
            session.add(row)
            await session.flush()
            messages: list[MessageView] | None = None
            if initial_system_prompt:
                inserted = await append_messages(
                    session, row.id, [NewMessage("system", initial_system_prompt)], at, sealer=self._sealer
                )
                messages = [MessageView.from_row(m) for m in inserted]
                await session.refresh(row)
            return SessionView.from_row(row, messages if messages is not None else [], sealer=self._sealer)

    async def list(
        self, *, user_id: str, limit: int = 20, offset: int = 0, status: str | None = None
    ) -> SessionList:
        """The user's sessions, newest first. Raises ``InvalidInput`` for a bad page or status."""
        check_identifier("user_id", user_id, required=True)
        if isinstance(limit, bool) or not isinstance(limit, int) or not (1 <= limit <= self._page_max):
            raise InvalidInput(
                "limit", f"must be an integer between 1 and {self._page_max} (CHITTY_PAGE_SIZE_MAX)", limit
            )
        if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= MAX_OFFSET:
            raise InvalidInput("offset", f"must be an integer from 0 to {MAX_OFFSET}", offset)
        if status is not None and status not in SESSION_STATUSES:
            raise InvalidInput("status", f"must be one of {', '.join(SESSION_STATUSES)}", status)
        where = [ChatSession.user_id == user_id]
        if status is not None:
            where.append(ChatSession.status == status)
        async with self._uow.read() as session:
            total = await session.scalar(select(func.count()).select_from(ChatSession).where(*where)) or 0
            rows = (
                await session.execute(
                    select(ChatSession)
                    .where(*where)
                    .order_by(ChatSession.created_at.desc(), ChatSession.id.desc())
                    .limit(limit)
                    .offset(offset)
                )
            ).scalars()
            sessions = [SessionView.from_row(r, sealer=self._sealer) for r in rows]
        return SessionList(sessions=sessions, count=len(sessions), total=total, limit=limit, offset=offset)

    async def get(self, session_id: str, *, include_messages: bool = True) -> SessionView:
        """One session, with its messages in order unless ``include_messages`` is False.

        Raises ``InvalidInput`` / ``NotFound``.
        """
        key = parse_uuid("session_id", session_id)
        async with self._uow.read() as session:
            row = await session.get(ChatSession, key)
            if row is None:
                raise NotFound("chat session", key)
            messages = None
            if include_messages:
                result = await session.execute(
                    select(ChatSessionMessage)
                    .where(ChatSessionMessage.session_id == key)
                    .order_by(ChatSessionMessage.seq)
                )
                messages = [
                    MessageView.from_row(m, content=self._sealer.open_message(m.id, m.content))
                    for m in result.scalars()
                ]
            return SessionView.from_row(row, messages, sealer=self._sealer)

    async def add_message(
        self,
        *,
        session_id: str,
        role: str,
        content: str,
        tokens_used: int | None = None,
        cost: Decimal | float | str | None = None,
    ) -> MessageView:
        """Append one message; the session's totals grow by its tokens and cost (USD).

        Raises ``InvalidInput`` naming the field, ``NotFound`` for an unknown session.
        """
        key = parse_uuid("session_id", session_id)
        checked_role = parse_role("role", role)
        parse_content("content", content, max_chars=self._max_chars)
        if tokens_used is not None and (
            isinstance(tokens_used, bool)
            or not isinstance(tokens_used, int)
            or not (0 <= tokens_used <= MAX_TOKENS_USED)
        ):
            raise InvalidInput(
                "tokens_used", f"must be an integer between 0 and {MAX_TOKENS_USED}", tokens_used
            )
        amount = parse_money("cost", cost)
        async with self._uow.begin() as session:
            (row,) = await append_messages(
                session,
                key,
                [NewMessage(checked_role, content, tokens_used=tokens_used, cost=amount)],
                self._clock(),
                sealer=self._sealer,
            )
        return MessageView.from_row(row)
