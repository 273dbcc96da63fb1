"""The standard tier: one direct model call, nothing between the prompt and the provider."""

from __future__ import annotations

from chittyos.llm import ChatMessage, CompletionRequest
from chittyos.tiers.base import TierContext, TierOutcome, TierRequest


class StandardTier:
    name = "standard"
    execution_method = "direct"

    async def run(self, request: TierRequest, ctx: TierContext) -> TierOutcome:
        """Ask ``ctx.provider`` once. Raises whatever the provider raises (``ProviderError``)."""
        await ctx.progress(0, 1, f"asking {ctx.provider.name} ({request.model})")
        completion = await ctx.provider.complete(
            CompletionRequest(
                messages=(ChatMessage(role="user", content=request.prompt),),
                model=request.model,
                max_tokens=request.max_tokens,
            )
        )
        await ctx.progress(1, 1, "answer received")
        return TierOutcome(output=completion.text, calls=(completion,), chatgpt_response=completion.text)
