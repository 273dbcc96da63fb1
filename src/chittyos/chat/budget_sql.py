"""The SQL of budget enforcement: statements built once, run with bind parameters.

Building a statement and its cache key on every call costs more than running it on SQLite, so
the hot path (reserve, settle) uses these. Names of bind parameters start with ``b_`` where a
column of the same name would clash in an UPDATE.
"""

from __future__ import annotations

from sqlalchemy import bindparam, case, delete, func, insert, literal, select, update

from chittyos.chat.windows import EPOCH
from chittyos.db.models import ALL_MODELS, Budget, BudgetReservation, Money, UTCDateTime

__all__ = [
    "ANY_BUDGET_SQLITE",
    "DROP_EXPIRED",
    "HOLD",
    "LOCK_BUDGETS",
    "RELEASE_EXECUTION",
    "RELEASE_HOLD",
    "RESERVED",
    "SETTLE",
]

_B = Budget.__table__
_R = BudgetReservation.__table__
_SCOPE = _B.c.model.in_((ALL_MODELS, bindparam("b_model")))
ANY_BUDGET_SQLITE = "SELECT 1 FROM budgets WHERE user_id = ? AND model IN (?, ?) LIMIT 1"
"""Whether any budget covers (user, model key): LOCK_BUDGETS's scope, as driver SQL for
``UnitOfWork.peek_sqlite``."""
LOCK_BUDGETS = (
    select(_B).where(_B.c.user_id == bindparam("b_user"), _SCOPE).order_by(_B.c.id).with_for_update()
)
DROP_EXPIRED = delete(_R).where(
    _R.c.budget_id.in_(bindparam("ids", expanding=True)),
    _R.c.expires_at <= bindparam("at", type_=UTCDateTime()),
)
RESERVED = (
    select(_R.c.budget_id, func.sum(_R.c.amount_usd))
    .where(
        _R.c.budget_id.in_(bindparam("ids", expanding=True)),
        _R.c.expires_at > bindparam("at", type_=UTCDateTime()),
    )
    .group_by(_R.c.budget_id)
)
HOLD = insert(_R)
RELEASE_HOLD = delete(_R).where(_R.c.hold_id == bindparam("b_hold"))
RELEASE_EXECUTION = delete(_R).where(_R.c.execution_id == bindparam("b_execution")).returning(_R.c.amount_usd)
_WINDOW_START = case(
    (_B.c.window_kind == "day", bindparam("day_start", type_=UTCDateTime())),
    (_B.c.window_kind == "month", bindparam("month_start", type_=UTCDateTime())),
    else_=literal(EPOCH, UTCDateTime()),
)
_CHARGE = bindparam("charge", type_=Money())
_ROLLED = _B.c.window_start < _WINDOW_START
SETTLE = (
    update(_B)
    .where(_B.c.user_id == bindparam("b_user"), _SCOPE)
    .values(
        spent_usd=case((_ROLLED, _CHARGE), else_=_B.c.spent_usd + _CHARGE),
        window_start=case((_ROLLED, _WINDOW_START), else_=_B.c.window_start),
        updated_at=bindparam("b_at", type_=UTCDateTime()),
    )
    .returning(_B.c.model, _B.c.limit_usd, _B.c.window_kind, _B.c.soft_limit_ratio, _B.c.spent_usd)
)
