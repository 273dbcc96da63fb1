"""Chat tools: completions (plain and streamed), sessions, messages, usage analytics."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field

from chittyos.analytics import UsageReport
from chittyos.app import App
from chittyos.chat import ChatCompletionView, ChatRequest, MessageView, SessionList, SessionView
from chittyos.server.client_logging import log_to_client
from chittyos.server.errors import tool_errors


class ChatMessageArg(BaseModel):
    """One message of a conversation."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str


# What a client (and the model choosing arguments) reads in each argument's JSON Schema.
Messages = Annotated[
    list[ChatMessageArg],
    Field(description="The new messages, in order: role system|user|assistant, content."),
]
Model = Annotated[str | None, Field(description="Model name; default CHITTY_DEFAULT_MODEL.")]
MaxTokens = Annotated[
    int, Field(description="Most completion tokens the model may generate (what a budget holds).")
]
Temperature = Annotated[float, Field(description="Sampling temperature.")]
SessionId = Annotated[str, Field(description="A chat session id (from chitty_chat_session_create).")]
OptionalSessionId = Annotated[
    str | None,
    Field(description="A chat session id: its earlier messages are sent first and the new ones stored."),
]
PayingUser = Annotated[
    str | None,
    Field(description="Who pays (usage, budgets); default the session's user, else 'anonymous'."),
]
UserId = Annotated[str, Field(description="The user the sessions belong to.")]
Limit = Annotated[int, Field(description="Page size (at most CHITTY_PAGE_SIZE_MAX).")]
Offset = Annotated[int, Field(description="Items to skip, for paging.")]


def _request(
    messages: list[ChatMessageArg],
    model: str | None,
    max_tokens: int,
    temperature: float,
    session_id: str | None,
    user_id: str | None,
) -> ChatRequest:
    return ChatRequest(
        messages=[m.model_dump() for m in messages],
        model=model,
        max_tokens=max_tokens,
        temperature=temperature,
        session_id=session_id,
        user_id=user_id,
    )


async def _warn(ctx: Context[App], result: ChatCompletionView) -> None:
    for line in result.warnings:
        await log_to_client(ctx, "warning", line)


def register(mcp: MCPServer[App]) -> None:
    @mcp.tool(
        annotations=ToolAnnotations(title="Chat completion", read_only_hint=False, open_world_hint=True)
    )
    async def chatgpt_complete(
        messages: Messages,
        ctx: Context[App],
        model: Model = None,
        max_tokens: MaxTokens = 1000,
        temperature: Temperature = 0.7,
        session_id: OptionalSessionId = None,
        user_id: PayingUser = None,
    ) -> ChatCompletionView:
        """Ask the model for one answer and record its usage and cost (USD).

        With session_id, the session's system prompt and earlier messages are sent first and the
        new messages and the answer are stored in it. user_id is who pays (default: the session's
        user). A call that would pass a budget fails without reaching the model.
        """
        app = ctx.request_context.lifespan_context
        with tool_errors():
            result = await app.chat.complete(
                _request(messages, model, max_tokens, temperature, session_id, user_id),
                client_session=ctx.request_context.session,
            )
        await _warn(ctx, result)
        return result

    @mcp.tool(
        annotations=ToolAnnotations(
            title="Chat completion, streamed", read_only_hint=False, open_world_hint=True
        )
    )
    async def chatgpt_stream(
        messages: Messages,
        ctx: Context[App],
        model: Model = None,
        session_id: OptionalSessionId = None,
        user_id: PayingUser = None,
        max_tokens: MaxTokens = 1000,
        temperature: Temperature = 0.7,
    ) -> ChatCompletionView:
        """Stream the model's answer: with a progressToken, each text delta arrives as a progress
        notification (the delta is its message); the result holds the whole text and the usage
        from the final stream chunk. Sessions, budgets and cost as for chatgpt_complete.
        """
        app = ctx.request_context.lifespan_context
        sent = 0

        async def on_delta(delta: str) -> None:
            nonlocal sent
            sent += 1
            await ctx.report_progress(sent, None, delta)

        with tool_errors():
            result = await app.chat.stream(
                _request(messages, model, max_tokens, temperature, session_id, user_id),
                on_delta,
                client_session=ctx.request_context.session,
            )
        await _warn(ctx, result)
        return result

    @mcp.tool(annotations=ToolAnnotations(title="Create chat session", read_only_hint=False))
    async def chitty_chat_session_create(
        user_id: Annotated[str, Field(description="The user the session belongs to.")],
        session_name: Annotated[str, Field(description="A name for people to recognise the session.")],
        ctx: Context[App],
        initial_system_prompt: Annotated[
            str | None, Field(description="Stored as the session's first (system) message.")
        ] = None,
    ) -> SessionView:
        """Create a chat session for user_id; initial_system_prompt becomes its first message."""
        app = ctx.request_context.lifespan_context
        with tool_errors():
            return await app.sessions.create(
                user_id=user_id, session_name=session_name, initial_system_prompt=initial_system_prompt
            )

    @mcp.tool(annotations=ToolAnnotations(title="List chat sessions", read_only_hint=True))
    async def chitty_chat_session_list(
        user_id: UserId,
        ctx: Context[App],
        limit: Limit = 20,
        offset: Offset = 0,
        status: Annotated[
            Literal["active", "archived"] | None, Field(description="Only sessions in this status.")
        ] = None,
    ) -> SessionList:
        """The chat sessions of user_id, newest first (without their messages)."""
        app = ctx.request_context.lifespan_context
        with tool_errors():
            return await app.sessions.list(user_id=user_id, limit=limit, offset=offset, status=status)

    @mcp.tool(annotations=ToolAnnotations(title="Get chat session", read_only_hint=True))
    async def chitty_chat_session_get(
        session_id: SessionId,
        ctx: Context[App],
        include_messages: Annotated[bool, Field(description="Include the messages, in order.")] = True,
    ) -> SessionView:
        """One chat session with its totals (tokens, cost in USD) and, by default, its messages."""
        app = ctx.request_context.lifespan_context
        with tool_errors():
            return await app.sessions.get(session_id, include_messages=include_messages)

    @mcp.tool(annotations=ToolAnnotations(title="Add chat message", read_only_hint=False))
    async def chitty_message_add(
        session_id: SessionId,
        role: Annotated[Literal["system", "user", "assistant"], Field(description="Who said it.")],
        content: Annotated[str, Field(description="The message text (sealed at rest).")],
        ctx: Context[App],
        tokens_used: Annotated[
            int | None, Field(description="Tokens to add to the session's total.")
        ] = None,
        cost: Annotated[
            Decimal | None, Field(description="USD to add to the session's total (decimal text or number).")
        ] = None,
    ) -> MessageView:
        """Append a message to a session; its tokens and cost (USD) add to the session's totals."""
        app = ctx.request_context.lifespan_context
        with tool_errors():
            return await app.sessions.add_message(
                session_id=session_id, role=role, content=content, tokens_used=tokens_used, cost=cost
            )

    @mcp.tool(annotations=ToolAnnotations(title="Usage analytics", read_only_hint=True))
    async def chitty_usage_analytics(
        ctx: Context[App],
        user_id: Annotated[
            str | None, Field(description="Only this user's calls; default every user.")
        ] = None,
        start_date: Annotated[
            str | None, Field(description="First day, ISO date (2025-01-31, UTC); default 29 days earlier.")
        ] = None,
        end_date: Annotated[
            str | None, Field(description="Last day, ISO date, inclusive; default today (UTC).")
        ] = None,
        granularity: Annotated[
            Literal["day", "week", "month"], Field(description="Period of the breakdown (UTC; ISO weeks).")
        ] = "day",
    ) -> UsageReport:
        """Sessions, messages, calls, tokens and cost (USD) of every model call the server made
        (chat tools and executions), per UTC day, ISO week or month and per model, with the
        user's budgets. Dates are ISO (2025-01-31), both inclusive; default the last 30 days.
        """
        app = ctx.request_context.lifespan_context
        with tool_errors():
            return await app.usage_analytics.report(
                user_id=user_id, start_date=start_date, end_date=end_date, granularity=granularity
            )
