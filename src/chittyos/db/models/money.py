"""``Money``: an exact decimal column for USD amounts, identical on PostgreSQL and SQLite.

PostgreSQL keeps ``NUMERIC(30, 10)``. SQLite has no exact decimal (its NUMERIC affinity turns
values into floating point), so there the same amount is stored as an integer count of
1e-10 USD. Sums (``SUM``) and increments (``x = x + :amount``) are then exact integer arithmetic
in the database, and the column reads back as ``Decimal`` with 10 places on both backends.

Ten places hold every per-token price of the form $N.NNNN per million tokens exactly; a value
with more places is rounded half-even, the same way on both backends (``to_money``).
SQLite's int64 range caps one value or one sum at about 922 million USD.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import CoreSchema, core_schema
from sqlalchemy import BigInteger, Numeric
from sqlalchemy.types import TypeDecorator

__all__ = ["MONEY_PLACES", "Money", "Usd", "to_money", "usd_text"]

MONEY_PLACES = 10
_QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)


def to_money(value: Decimal | int | str) -> Decimal:
    """``value`` as a Decimal with exactly 10 places (half-even). Floats are refused: they are
    how money goes wrong. Raises ``TypeError`` / ``ValueError``."""
    if isinstance(value, bool | float):
        raise TypeError(f"money must be Decimal, int or str, not {type(value).__name__}")
    try:
        amount = value if isinstance(value, Decimal) else Decimal(value)
    except InvalidOperation:
        raise ValueError(f"not a decimal amount: {value!r}") from None
    if not amount.is_finite():
        raise ValueError(f"money must be finite (got {value!r})")
    return amount.quantize(_QUANTUM, rounding=ROUND_HALF_EVEN)


def usd_text(amount: Decimal) -> str:
    """``amount`` as plain decimal text, without exponent or trailing zeros: ``"0"``,
    ``"0.00000015"``, ``"12.5"`` (``str(Decimal)`` would give ``"0E-10"`` and ``"1.5E-7"``)."""
    text = format(amount.normalize(), "f")
    return "0" if text in ("-0", "0") else text


class Usd(Decimal):
    """The type of a USD amount in a result: any ``Decimal`` in Python, plain decimal text
    (``usd_text``) in JSON.

    A class rather than ``Annotated[Decimal, PlainSerializer(...)]`` because the MCP SDK builds a
    tool's output model from ``get_type_hints`` without extras, which drops ``Annotated``
    metadata on a result's top-level fields.
    """

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.decimal_schema(
            serialization=core_schema.plain_serializer_function_ser_schema(
                usd_text, return_schema=core_schema.str_schema(), when_used="json"
            )
        )


class Money(TypeDecorator[Decimal]):
    """USD, exact: NUMERIC(30, 10) on PostgreSQL, integer units of 1e-10 on SQLite."""

    impl = Numeric(30, MONEY_PLACES, asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(30, MONEY_PLACES, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        amount = to_money(value)
        return int(amount.scaleb(MONEY_PLACES)) if dialect.name == "sqlite" else amount

    def process_result_value(self, value: Any, dialect: Any) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(int(value)).scaleb(-MONEY_PLACES)
        return to_money(value)
