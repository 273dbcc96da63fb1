"""Re-seal every sealed value under the active key, in batches, resumable.

Rotation without downtime: load the new key first and the old ones after it
(``CHITTY_ENCRYPTION_KEY=new,old``), run ``chittyos keys rotate-encryption``, then drop the old
keys. Each batch commits on its own; a value already sealed with the active key is skipped, so
an interrupted run simply finishes on the next one and nothing is lost or sealed twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, select, update

from chittyos.db.uow import UnitOfWork
from chittyos.signing.sealing import Sealer

__all__ = ["RotationReport", "rotate_sealed_values"]

DEFAULT_BATCH_SIZE = 500


@dataclass(frozen=True)
class RotationReport:
    rows_scanned: int
    values_resealed: int
    active_key_id: str


async def rotate_sealed_values(
    *,
    uow: UnitOfWork,
    sealer: Sealer,
    sealed: Mapping[Table, Sequence[str]],
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[str, int], Awaitable[None] | None] | None = None,
) -> RotationReport:
    """Re-seal ``sealed`` = {table: [columns]} (each table keyed by an ``id`` column).

    Tables are the mapped ``Table`` objects, so ids come back typed exactly as they were when
    sealed (a UUID, not SQLite's 32-hex storage form): the row identity is the associated data.

    Raises ``ProofRejected`` (from ``Sealer.reseal``) when a value cannot be opened with any
    loaded key: that batch rolls back and nothing of it is changed.
    """
    scanned = resealed = 0
    for t, columns in sealed.items():
        table_name = t.name
        last: Any = None
        while True:
            async with uow.begin() as session:
                query = select(t.c.id, *(t.c[c] for c in columns)).order_by(t.c.id).limit(batch_size)
                if last is not None:
                    query = query.where(t.c.id > last)
                rows = (await session.execute(query)).all()
                for row in rows:
                    changes = {}
                    for name in columns:
                        value = getattr(row, name)
                        if value is not None and sealer.needs_rotation(value):
                            changes[name] = sealer.reseal(value, table=table_name, column=name, row_id=row.id)
                    if changes:
                        await session.execute(update(t).where(t.c.id == row.id).values(**changes))
                        resealed += len(changes)
            scanned += len(rows)
            if progress is not None:
                maybe = progress(table_name, scanned)
                if maybe is not None:
                    await maybe
            if len(rows) < batch_size:
                break
            last = rows[-1].id
    return RotationReport(rows_scanned=scanned, values_resealed=resealed, active_key_id=sealer.keyring.active_key_id)
