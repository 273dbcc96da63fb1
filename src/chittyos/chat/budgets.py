"""Budgets: a USD limit per user (optionally per user and model) over a day, a month or in total.

Enforced by reservation, so that parallel calls cannot overshoot a limit::

    reserve   lock the user's budget rows (PostgreSQL SELECT ... FOR UPDATE; SQLite transactions
              are BEGIN IMMEDIATE) and refuse with BudgetExceeded when spent + unexpired holds +
              this call's worst case > limit; else hold the worst case
    call      the model call, outside any transaction
    settle    in the transaction that records the call: drop the hold and add the real cost to
              spent, with one UPDATE per call that also starts a new window when the old is over

A hold whose call never settles (a crashed process) stops counting at its ``expires_at``
(CHITTY_BUDGET_RESERVATION_TTL_S). A model without a known price cannot be reserved for, so
under a budget it is refused rather than run unmetered. Lock order: a chat session row before
budget rows, budget rows by id.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import structlog
from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from chittyos.chat import budget_sql as sql
from chittyos.chat.costing import CallPricer
from chittyos.chat.models import check_identifier, parse_money
from chittyos.chat.windows import Window, window_end, window_start
from chittyos.db.models import (
    ALL_MODELS,
    BUDGET_WINDOWS,
    Budget,
    UsageRecord,
    Usd,
    to_money,
    utcnow,
)
from chittyos.db.uow import UnitOfWork
from chittyos.errors import BudgetExceeded, InvalidInput, NotFound

__all__ = ["BudgetService", "BudgetView", "Hold", "usd"]

log = structlog.get_logger("chittyos.budgets")

DEFAULT_SOFT_LIMIT_RATIO = Decimal("0.8")
_SWEEP_EVERY = 64
_ZERO = to_money(0)


def _parse_ratio(field: str, value: object) -> Decimal:
    """A share above 0 and at most 1 (Decimal, int or decimal string). Raises ``InvalidInput``."""
    ratio = None
    if isinstance(value, int | float | str | Decimal) and not isinstance(value, bool):
        try:
            ratio = Decimal(str(value))
        except ArithmeticError:
            pass
    if ratio is None or not ratio.is_finite() or not (0 < ratio <= 1):
        raise InvalidInput(field, "must be a number above 0 and at most 1", str(value))
    return to_money(ratio)


def usd(amount: Decimal) -> str:
    """``$1.25``: an amount for messages, at most 6 places, no trailing zeros."""
    shown = amount.quantize(Decimal("0.000001")).normalize()
    return f"${shown:f}"


@dataclass(frozen=True)
class BudgetView:
    """One budget as it stands now. Amounts in USD; times aware UTC."""

    user_id: str
    model: str | None
    """None: the budget covers every model of the user."""
    limit_usd: Usd
    window: Window
    soft_limit_ratio: Decimal
    spent_usd: Usd
    """Settled spend in the current window."""
    reserved_usd: Usd
    """Held by calls in flight."""
    remaining_usd: Usd
    window_start: datetime
    resets_at: datetime | None
    """None for a total budget, which never resets."""
    state: Literal["ok", "warning", "exceeded"]
    """warning: spent reached the soft limit; exceeded: spent reached the limit."""


@dataclass(frozen=True)
class Hold:
    """A reservation made for one call: ``amount_usd`` held on each of ``budgets`` budgets."""

    hold_id: uuid.UUID
    amount_usd: Decimal
    budgets: int


class BudgetService:
    def __init__(
        self,
        *,
        uow: UnitOfWork,
        pricer: CallPricer,
        reservation_ttl_s: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._uow = uow
        self._pricer = pricer
        self._ttl = timedelta(seconds=reservation_ttl_s)
        self._clock = clock
        self._reserves = 0

    # -- management (CLI, analytics) ---------------------------------------------------------

    async def set(
        self,
        *,
        user_id: str,
        limit_usd: object,
        window: str,
        model: str | None = None,
        soft_limit_ratio: object = DEFAULT_SOFT_LIMIT_RATIO,
    ) -> BudgetView:
        """Create or replace the budget of ``user_id`` (and ``model``; None: every model).

        Spend already recorded in the current window counts from the start. Raises
        ``InvalidInput`` for a negative limit, an unknown window or a soft ratio outside (0, 1].
        """
        check_identifier("user_id", user_id, required=True)
        check_identifier("model", model)
        limit = parse_money("limit_usd", limit_usd, required=True)
        if window not in BUDGET_WINDOWS:
            raise InvalidInput("window", f"must be one of {', '.join(BUDGET_WINDOWS)}", window)
        assert limit is not None
        soft = _parse_ratio("soft_limit_ratio", soft_limit_ratio)
        at = self._clock()
        start = window_start(window, at)
        if model is not None:
            model = self._pricer.model_key(model)  # "GPT-4o" and "gpt-4o-2024-08-06" are gpt-4o
        scope = model or ALL_MODELS
        async with self._uow.begin() as session:
            # Spend so far in the window, under every name of the model ("GPT-4o", dated ids).
            spent_query = (
                select(UsageRecord.requested_model, func.sum(UsageRecord.cost_usd))
                .where(UsageRecord.user_id == user_id, UsageRecord.created_at >= start)
                .group_by(UsageRecord.requested_model)
            )
            spent = to_money(
                sum(
                    (
                        cost or _ZERO
                        for requested, cost in await session.execute(spent_query)
                        if model is None or self._pricer.model_key(requested) == model
                    ),
                    _ZERO,
                )
            )
            values: dict[str, Any] = {
                "limit_usd": limit,
                "window_kind": window,
                "soft_limit_ratio": soft,
                "spent_usd": spent,
                "window_start": start,
                "updated_at": at,
            }
            dialect = postgresql if session.bind.dialect.name == "postgresql" else sqlite
            upsert = dialect.insert(Budget).values(
                id=uuid.uuid4(), user_id=user_id, model=scope, created_at=at, **values
            )
            await session.execute(
                upsert.on_conflict_do_update(index_elements=["user_id", "model"], set_=values)
            )
            (view,) = [v for v in await self._views(session, user_id, at) if v.model == model]
        log.info("budget set", user_id=user_id, model=model, limit_usd=str(limit), window=window)
        return view

    async def remove(self, *, user_id: str, model: str | None = None) -> None:
        """Delete a budget (and its holds). Raises ``NotFound`` when there is none."""
        async with self._uow.begin() as session:
            result = await session.execute(
                delete(Budget).where(
                    Budget.user_id == user_id,
                    Budget.model == (ALL_MODELS if model is None else self._pricer.model_key(model)),
                )
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise NotFound("budget", f"of user {user_id!r} for {model or 'all models'}")

    async def show(self, user_id: str) -> list[BudgetView]:
        """Every budget of ``user_id`` as it stands now (all models first, then by model)."""
        check_identifier("user_id", user_id, required=True)
        async with self._uow.read() as session:
            return await self._views(session, user_id, self._clock())

    async def views(self, session: AsyncSession, user_id: str) -> list[BudgetView]:
        """``show`` inside a caller's transaction."""
        return await self._views(session, user_id, self._clock())

    # -- enforcement -------------------------------------------------------------------------

    async def reserve(
        self, *, user_id: str, model: str, provider: str, prompt_tokens: int, max_tokens: int
    ) -> Hold | None:
        """``reserve_in`` in a transaction of its own (chat calls).

        On SQLite, a user and model that no budget covers (the usual case) return None after one
        read outside any transaction, without taking the database write lock. A budget set at
        that moment misses this one call, as it would if set just after the locking read."""
        found = await self._uow.peek_sqlite(
            sql.ANY_BUDGET_SQLITE, (user_id, ALL_MODELS, self._pricer.model_key(model))
        )
        if found == []:
            return None
        async with self._uow.begin() as session:
            return await self.reserve_in(
                session,
                user_id=user_id,
                model=model,
                provider=provider,
                prompt_tokens=prompt_tokens,
                max_tokens=max_tokens,
            )

    async def reserve_in(
        self,
        session: AsyncSession,
        *,
        user_id: str,
        model: str,
        provider: str,
        prompt_tokens: int,
        max_tokens: int,
        calls: int = 1,
        execution_id: uuid.UUID | None = None,
    ) -> Hold | None:
        """Hold the worst case of ``calls`` calls of ``model`` on every budget they fall under.

        Returns None when no budget applies (nothing is held). Raises ``BudgetExceeded`` (nothing
        held) when a budget would pass its limit, or when the model has no known price.
        """
        at = self._clock()
        budgets = (
            await session.execute(sql.LOCK_BUDGETS, {"b_user": user_id, "b_model": self._pricer.model_key(model)})
        ).all()
        if not budgets:
            return None
        worst_one = self._pricer.worst_case(
            model=model, provider=provider, prompt_tokens=prompt_tokens, max_tokens=max_tokens, at=at
        )
        if worst_one is None:
            raise BudgetExceeded(
                f"budget: model {model!r} has no known price, so a budget of user {user_id!r} cannot be "
                "enforced for it; no model call was made (add the model to CHITTY_PRICES_FILE)"
            )
        worst = worst_one * calls
        ids = [b.id for b in budgets]
        self._reserves += 1
        if self._reserves % _SWEEP_EVERY == 1:  # housekeeping: expired holds no longer count anyway
            await session.execute(sql.DROP_EXPIRED, {"ids": ids, "at": at})
        reserved = await self._reserved(session, ids, at)
        for budget in budgets:
            spent = _current_spent(budget, at)
            held = reserved.get(budget.id, _ZERO)
            if spent + held + worst > budget.limit_usd:
                raise _exceeded(budget, spent, held, worst, at)
        hold = Hold(hold_id=uuid.uuid4(), amount_usd=worst, budgets=len(budgets))
        await session.execute(
            sql.HOLD,
            [
                {
                    "id": uuid.uuid4(),
                    "budget_id": b.id,
                    "hold_id": hold.hold_id,
                    "execution_id": execution_id,
                    "amount_usd": worst,
                    "created_at": at,
                    "expires_at": at + self._ttl,
                }
                for b in budgets
            ],
        )
        return hold

    async def release(self, hold: Hold | None) -> None:
        """Drop a hold whose call made no charge (it failed before any answer)."""
        if hold is None:
            return
        async with self._uow.begin() as session:
            await session.execute(sql.RELEASE_HOLD, {"b_hold": hold.hold_id})

    async def settle(
        self,
        session: AsyncSession,
        *,
        user_id: str,
        model: str,
        cost_usd: Decimal | None,
        hold: Hold | None = None,
        execution_id: uuid.UUID | None = None,
    ) -> list[str]:
        """Drop the hold (``hold``, or the holds of ``execution_id``) and charge ``cost_usd`` to the
        user's budgets. A chat call that held nothing (no budget applied when it started) charges
        nothing: a budget counts the spend recorded before it was set (``set``) and the calls that
        start after. An unknown cost is charged at the amount held, so that it still counts.

        Returns a warning line for every budget at or past its soft limit after the charge.
        """
        if hold is None and execution_id is None:
            return []
        if hold is not None:
            await session.execute(sql.RELEASE_HOLD, {"b_hold": hold.hold_id})
            held: Decimal | None = hold.amount_usd
        else:
            released = await session.execute(sql.RELEASE_EXECUTION, {"b_execution": execution_id})
            held = max(released.scalars(), default=None)
        charge = cost_usd if cost_usd is not None else (held or _ZERO)
        if charge <= 0:
            return []
        at = self._clock()
        rows = (
            await session.execute(
                sql.SETTLE,
                {
                    "b_user": user_id,
                    "b_model": self._pricer.model_key(model),
                    "day_start": window_start("day", at),
                    "month_start": window_start("month", at),
                    "charge": to_money(charge),
                    "b_at": at,
                },
            )
        ).all()
        warnings = []
        for scope, limit, window, soft, spent in rows:
            if spent >= limit * soft:
                state = "reached its limit" if spent >= limit else f"passed {soft * 100:.0f}% of its limit"
                warnings.append(
                    f"budget of user {user_id!r} for {scope or 'all models'} {state}: "
                    f"{usd(spent)} of {usd(limit)} {_per(window)}"
                )
        for line in warnings:
            log.warning("budget soft limit", user_id=user_id, detail=line)
        return warnings

    # -- internals ---------------------------------------------------------------------------

    async def _reserved(
        self, session: AsyncSession, ids: Sequence[uuid.UUID], at: datetime
    ) -> dict[uuid.UUID, Decimal]:
        rows = await session.execute(sql.RESERVED, {"ids": list(ids), "at": at})
        return {budget_id: to_money(total) for budget_id, total in rows}

    async def _views(self, session: AsyncSession, user_id: str, at: datetime) -> list[BudgetView]:
        budgets = list(
            (
                await session.execute(select(Budget).where(Budget.user_id == user_id).order_by(Budget.model))
            ).scalars()
        )
        reserved = await self._reserved(session, [b.id for b in budgets], at) if budgets else {}
        views = []
        for b in budgets:
            spent = _current_spent(b, at)
            held = reserved.get(b.id, _ZERO)
            state: Literal["ok", "warning", "exceeded"] = (
                "exceeded"
                if spent >= b.limit_usd
                else "warning"
                if spent >= b.limit_usd * b.soft_limit_ratio
                else "ok"
            )
            views.append(
                BudgetView(
                    user_id=b.user_id,
                    model=b.model or None,
                    limit_usd=b.limit_usd,
                    window=b.window_kind,  # type: ignore[arg-type]
                    soft_limit_ratio=b.soft_limit_ratio.normalize(),  # "0.8", not the column's "0.8000000000"
                    spent_usd=spent,
                    reserved_usd=held,
                    remaining_usd=max(_ZERO, b.limit_usd - spent - held),
                    window_start=window_start(b.window_kind, at),
                    resets_at=window_end(b.window_kind, at),
                    state=state,
                )
            )
        return views


def _current_spent(budget: Any, at: datetime) -> Decimal:
    """Settled spend of the window that holds ``at``: 0 once the stored window is over."""
    return budget.spent_usd if budget.window_start >= window_start(budget.window_kind, at) else _ZERO


def _per(window: str) -> str:
    return "in total" if window == "total" else f"per {window}"


def _exceeded(budget: Any, spent: Decimal, held: Decimal, worst: Decimal, at: datetime) -> BudgetExceeded:
    resets = window_end(budget.window_kind, at)
    when = (
        f"the window resets at {resets.strftime('%Y-%m-%dT%H:%M:%SZ')}"
        if resets is not None
        else "a total budget never resets (raise it with `chittyos budget set`)"
    )
    exc = BudgetExceeded(
        f"budget exceeded: user {budget.user_id!r} for {budget.model or 'all models'} has spent {usd(spent)} "
        f"(+ {usd(held)} held by calls in flight) of {usd(budget.limit_usd)} {_per(budget.window_kind)}; "
        f"this call may cost up to {usd(worst)}, so no model call was made; {when}"
    )
    exc.spent_usd, exc.limit_usd, exc.reserved_usd, exc.resets_at = spent, budget.limit_usd, held, resets  # type: ignore[attr-defined]
    return exc
