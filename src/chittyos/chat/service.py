"""ChatService: one chat call, accounted for.

::

    check the request; load the session's history        InvalidInput / NotFound: nothing written
    rate limit, pick the provider, reserve the budget    RateLimited / BudgetExceeded: no model call
    call the model (streamed or not)                     no transaction held
    one transaction: the session's new messages, the usage row with its cost, the budget settle

Every call that was sent upstream is recorded, failed ones too (status ``failed``):

* text began to arrive (a stream that broke off, a client that went away): the usage the
  provider reported, or an upper-bound estimate marked ``estimated``, charged to the budget;
* the provider answered with an error status: 0 tokens, cost 0 (``not_billed``), hold released;
* no answer is known (a timeout, a connection dropped after sending, a malformed body): the
  bound the hold was made for (estimated prompt tokens + max_tokens), ``estimated``, charged;
* MCP sampling: no tokens and an unknown cost, as for a sampled answer (see ``chat.usage``).

A call that never went out (refused before sending, no connection) only gives its hold back.
The caller gets the original error.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import anyio
import structlog

from chittyos.chat.budgets import BudgetService, Hold
from chittyos.chat.history import fit_history
from chittyos.chat.models import (
    ANONYMOUS_USER,
    ChatCompletionView,
    ChatRequest,
    ChatUsage,
    check_identifier,
    check_max_tokens,
    check_temperature,
    parse_messages,
    parse_uuid,
)
from chittyos.chat.ratelimit import RateLimiter
from chittyos.chat.sealing import ChatSealer
from chittyos.chat.store import NewMessage, append_messages, load_history
from chittyos.chat.tokens import estimate_prompt_tokens, max_text_tokens
from chittyos.chat.usage import RecordedCall, UsageRecorder
from chittyos.db.models import utcnow
from chittyos.db.uow import UnitOfWork
from chittyos.errors import InvalidInput
from chittyos.llm import (
    SAMPLING_PROVIDER,
    ChatMessage,
    Completion,
    CompletionRequest,
    FailedCall,
    Provider,
    StreamInterrupted,
    TokenUsage,
    failed_call,
)
from chittyos.llm.selection import ProviderSelector

__all__ = ["ChatService"]

log = structlog.get_logger("chittyos.chat")

DeltaFn = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class _Call:
    """A checked request, ready to send."""

    user_id: str
    session_key: uuid.UUID | None
    new: tuple[ChatMessage, ...]
    upstream: CompletionRequest
    notes: tuple[str, ...] = ()
    """Warnings about the request itself (history left out), returned with the answer."""


class ChatService:
    def __init__(
        self,
        *,
        uow: UnitOfWork,
        providers: ProviderSelector,
        budgets: BudgetService,
        limiter: RateLimiter,
        recorder: UsageRecorder,
        sealer: ChatSealer,
        default_model: str,
        default_max_tokens: int,
        max_prompt_chars: int,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._uow = uow
        self._providers = providers
        self._budgets = budgets
        self._limiter = limiter
        self._recorder = recorder
        self._sealer = sealer
        self._default_model = default_model
        self._default_max_tokens = default_max_tokens
        self._max_chars = max_prompt_chars
        self._clock = clock

    async def complete(
        self, request: ChatRequest, *, client_session: Any | None = None
    ) -> ChatCompletionView:
        """One answer, not streamed (``chatgpt_complete``).

        Raises ``InvalidInput`` / ``NotFound`` / ``ConfigurationError`` (nothing written),
        ``RateLimited`` / ``BudgetExceeded`` (no model call made), ``ProviderError``.
        """
        return await self._run(request, client_session, None)

    async def stream(
        self, request: ChatRequest, on_delta: DeltaFn, *, client_session: Any | None = None
    ) -> ChatCompletionView:
        """One answer, streamed: ``on_delta`` gets each text delta in order (``chatgpt_stream``).

        The usage is the one the final stream chunk carries. Raises as ``complete`` does, and
        ``StreamInterrupted`` when the stream broke off (the call is then recorded as failed).
        """
        return await self._run(request, client_session, on_delta)

    # -- internals ------------------------------------------------------------------------

    async def _prepare(self, request: ChatRequest) -> _Call:
        new = parse_messages(request.messages, max_chars=self._max_chars)
        model = check_identifier("model", request.model) or self._default_model
        max_tokens = check_max_tokens(
            self._default_max_tokens if request.max_tokens is None else request.max_tokens
        )
        temperature = check_temperature(request.temperature)
        user_id = check_identifier("user_id", request.user_id)
        session_key = None if request.session_id is None else parse_uuid("session_id", request.session_id)
        history: tuple[ChatMessage, ...] = ()
        notes: tuple[str, ...] = ()
        if session_key is not None:
            async with self._uow.read() as session:
                row, stored = await load_history(session, session_key, sealer=self._sealer)
            if user_id is not None and user_id != row.user_id:
                raise InvalidInput("user_id", "must be the session's user_id, or left out", user_id)
            user_id = row.user_id
            fitted = fit_history(stored, new, max_chars=self._max_chars)
            history = fitted.messages
            if fitted.dropped:
                notes = (
                    f"session history: the {fitted.dropped} oldest messages ({fitted.dropped_chars} "
                    f"characters) were not sent, to stay within CHITTY_MAX_PROMPT_CHARS ({self._max_chars})",
                )
        return _Call(
            user_id=user_id or ANONYMOUS_USER,
            session_key=session_key,
            new=new,
            upstream=CompletionRequest(
                messages=(*history, *new), model=model, max_tokens=max_tokens, temperature=temperature
            ),
            notes=notes,
        )

    async def _run(
        self, request: ChatRequest, client_session: Any | None, on_delta: DeltaFn | None
    ) -> ChatCompletionView:
        call = await self._prepare(request)
        provider = self._providers.select(client_session)
        self._limiter.admit(call.user_id)
        bound = self._bound(call)
        hold = await self._budgets.reserve(
            user_id=call.user_id,
            model=call.upstream.model,
            provider=provider.name,
            prompt_tokens=bound.prompt_tokens,
            max_tokens=bound.completion_tokens,
        )
        received: list[str] = []

        async def collect(delta: str) -> None:
            received.append(delta)
            if on_delta is not None:
                await on_delta(delta)

        try:
            if on_delta is None:
                completion = await provider.complete(call.upstream)
            else:
                completion = await provider.stream(call.upstream, collect)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._after_failure(call, provider, hold, None, received)
            raise
        except Exception as exc:
            partial = exc.partial if isinstance(exc, StreamInterrupted) else None
            if partial is not None and not partial.text and partial.usage is None and not received:
                partial = None  # a stream that broke before any text: no answer known, as a timeout
            failed = failed_call(exc, model=call.upstream.model, provider=provider.name)
            with anyio.CancelScope(shield=True):
                await self._after_failure(call, provider, hold, partial, received, failed)
            raise
        # The model answered and its provider billed it: record it even if the client goes away.
        with anyio.CancelScope(shield=True):
            return await self._settle(call, completion, hold)

    async def _settle(self, call: _Call, completion: Completion, hold: Hold | None) -> ChatCompletionView:
        at = self._clock()
        recorded = self._recorder.price(
            user_id=call.user_id,
            source="chat",
            requested_model=call.upstream.model,
            completion=completion,
            status="completed",
            at=at,
            chat_session_id=call.session_key,
        )
        async with self._uow.begin() as session:
            # Lock order: the chat session row, then budget rows (see chat.budgets).
            if call.session_key is not None:
                answer = NewMessage(
                    "assistant",
                    completion.text,
                    tokens_used=None if recorded.usage is None else recorded.usage.total_tokens,
                    cost=recorded.cost.cost_usd,
                    model=completion.model,
                )
                new = [NewMessage(m.role, m.content) for m in call.new]
                await append_messages(session, call.session_key, [*new, answer], at, sealer=self._sealer)
            await self._recorder.insert(session, recorded)
            warnings = await self._budgets.settle(
                session,
                user_id=call.user_id,
                model=call.upstream.model,
                cost_usd=recorded.cost.cost_usd,
                hold=hold,
            )
        usage = recorded.usage
        return ChatCompletionView(
            response=completion.text,
            usage=None
            if usage is None
            else ChatUsage(
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                total_tokens=usage.total_tokens,
                cached_tokens=usage.cached_tokens,
            ),
            model=completion.model,
            session_id=None if call.session_key is None else str(call.session_key),
            cost_usd=recorded.cost.cost_usd,
            cost_status=recorded.cost.status,
            user_id=call.user_id,
            provider=completion.provider,
            usage_id=str(recorded.usage_id),
            price_source=recorded.cost.source,
            finish_reason=completion.finish_reason,
            request_id=completion.request_id,
            warnings=[*call.notes, *_cut_off(completion, call.upstream.max_tokens), *warnings],
        )

    async def _after_failure(
        self,
        call: _Call,
        provider: Provider,
        hold: Hold | None,
        partial: Completion | None,
        received: list[str],
        failed: FailedCall | None = None,
    ) -> None:
        """Record what arrived before a failure, else the failed call when it was sent (``failed``),
        else give the hold back. Never raises: the caller re-raises the original error."""
        try:
            if partial is None and not received:
                if failed is None:
                    await self._budgets.release(hold)
                else:
                    await self._record_failed(call, hold, failed)
                return
            text = partial.text if partial is not None else "".join(received)
            completion = partial or Completion(
                text=text,
                model=call.upstream.model,
                provider=provider.name,
                usage=None,
                request_id=None,
                finish_reason=None,
                latency_ms=0.0,
            )
            usage, estimated = completion.usage, False
            if usage is None and provider.name != SAMPLING_PROVIDER:
                # The provider bills what it generated; bound it from above rather than record 0.
                usage = TokenUsage(
                    prompt_tokens=estimate_prompt_tokens(call.upstream.messages),
                    completion_tokens=max_text_tokens(text),
                )
                estimated = True
            recorded = self._recorder.price(
                user_id=call.user_id,
                source="chat",
                requested_model=call.upstream.model,
                completion=completion,
                status="failed",
                at=self._clock(),
                usage=usage,
                estimated=estimated,
                chat_session_id=call.session_key,
            )
            await self._record(call, hold, recorded, recorded.cost.cost_usd)
            log.info(
                "chat call failed after text arrived; recorded",
                usage_id=str(recorded.usage_id),
                cost_status=recorded.cost.status,
                deltas=len(received),
            )
        except Exception:
            log.exception("recording a failed chat call crashed; its hold expires by itself")

    async def _record_failed(self, call: _Call, hold: Hold | None, failed: FailedCall) -> None:
        """One ``failed`` usage row for a call that was sent and brought back no answer, and the
        settle of its hold at what it charges (0 when the provider refused it)."""
        recorded = self._recorder.price_failed(
            user_id=call.user_id,
            source="chat",
            requested_model=call.upstream.model,
            failed=failed,
            bound=self._bound(call),
            at=self._clock(),
            chat_session_id=call.session_key,
        )
        await self._record(call, hold, recorded, recorded.charge_usd)
        log.info(
            "chat call failed upstream; recorded",
            usage_id=str(recorded.usage_id),
            delivery=failed.delivery,
            status=failed.status,
            cost_status=recorded.cost.status,
        )

    async def _record(
        self, call: _Call, hold: Hold | None, recorded: RecordedCall, charge_usd: Decimal | None
    ) -> None:
        """Insert the usage row ``recorded`` and settle ``hold`` at ``charge_usd``, in one transaction."""
        async with self._uow.begin() as session:
            await self._recorder.insert(session, recorded)
            await self._budgets.settle(
                session, user_id=call.user_id, model=call.upstream.model, cost_usd=charge_usd, hold=hold
            )

    def _bound(self, call: _Call) -> TokenUsage:
        """The most tokens one call can be billed for: what its budget hold was reserved for."""
        return TokenUsage(
            prompt_tokens=estimate_prompt_tokens(call.upstream.messages),
            completion_tokens=call.upstream.max_tokens or self._default_max_tokens,
        )


def _cut_off(completion: Completion, max_tokens: int | None) -> list[str]:
    """A warning when the model stopped at the token limit (finish_reason ``length``)."""
    if completion.finish_reason != "length":
        return []
    limit = f"max_tokens ({max_tokens})" if max_tokens is not None else "its token limit"
    return [f"the answer was cut off at {limit}; ask again with a larger max_tokens for the rest"]
