"""Coordinator tools: secure AI execution and its status (the seed's chitty_* tools)."""

from __future__ import annotations

from typing import Annotated, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import ToolAnnotations
from pydantic import Field

from chittyos.app import App
from chittyos.execution import ExecutionRequest, ExecutionView
from chittyos.server.client_logging import log_to_client
from chittyos.server.errors import tool_errors


def register(mcp: MCPServer[App]) -> None:
    @mcp.tool(
        annotations=ToolAnnotations(title="Secure AI execution", read_only_hint=False, open_world_hint=True)
    )
    async def chitty_secure_ai_execute(
        prompt: Annotated[
            str, Field(description="The prompt (at most CHITTY_MAX_PROMPT_CHARS; sealed at rest).")
        ],
        user_id: Annotated[str, Field(description="Who runs it (recorded, and charged to their budgets).")],
        ctx: Context[App],
        security_level: Annotated[
            Literal["standard", "fortress", "verified"],
            Field(description="standard: one direct model call; fortress, verified: not on this server yet."),
        ] = "standard",
        case_id: Annotated[str | None, Field(description="The matter this run belongs to.")] = None,
        model: Annotated[str | None, Field(description="Model name; default CHITTY_DEFAULT_MODEL.")] = None,
        label: Annotated[str | None, Field(description="A short label for people.")] = None,
        create_evidence: Annotated[
            bool,
            Field(description="Ask for an evidence record; none are built here yet (evidence_id null)."),
        ] = False,
    ) -> ExecutionView:
        """Run a prompt at a security tier and record it (hashed, sealed at rest, logged to ChittyChain).

        standard: one direct model call. fortress and verified (sandboxed, signed, compared) are
        not available on this server yet and answer with an error naming the tier.
        Returns the execution (execution_id, status, results.chatgpt_response, verification).
        """
        app = ctx.request_context.lifespan_context

        async def progress(done: float, total: float | None, message: str | None) -> None:
            await ctx.report_progress(done, total, message)

        with tool_errors():
            view = await app.executions.execute(
                ExecutionRequest(
                    prompt=prompt,
                    user_id=user_id,
                    security_level=security_level,
                    case_id=case_id,
                    model=model,
                    label=label,
                    create_evidence=create_evidence,
                ),
                client_session=ctx.request_context.session,
                progress=progress,
            )
        await log_to_client(ctx, "info", f"execution {view.execution_id} {view.status}")
        return view

    @mcp.tool(annotations=ToolAnnotations(title="Execution status", read_only_hint=True))
    async def chitty_execution_status(
        execution_id: Annotated[str, Field(description="The execution_id a run returned (a UUID).")],
        ctx: Context[App],
    ) -> ExecutionView:
        """Status and results of one execution, by its execution_id (a UUID)."""
        app = ctx.request_context.lifespan_context
        with tool_errors():
            return await app.executions.status(execution_id)
