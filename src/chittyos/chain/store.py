"""The ChittyChain tables, as queries: the repository behind ``ChainLog``. No policy here.

Every function takes the caller's ``AsyncSession`` and runs inside its transaction. Core
statements on the tables (no ORM unit of work), so a full scan streams tuples.

An append, whatever the batch size, under the log lock:

    lock_head      SELECT tree_size, origin, peaks (+ which facts exist) FROM head FOR UPDATE
    write_leaves   INSERT facts, INSERT nodes, UPDATE head (size, peaks), only if the peaks that
                   the new nodes were hashed with are the stored nodes (``check``)

The lock is the head row's: ``SELECT ... FOR UPDATE`` on PostgreSQL (after waiting, READ
COMMITTED returns the row as the previous holder committed it, peaks included); on SQLite every
transaction already holds the database write lock (``BEGIN IMMEDIATE``, db/engine.py).

PostgreSQL: both go straight to psycopg on the session's own connection (same transaction), as
fixed SQL the server prepares once, each ONE statement (rows travel as one JSON parameter per
table). When the caller can guess the head (``lock_head(guess=...)``: this process wrote it
last), the locking statement also writes the guessed leaves if, under the lock, the head is
exactly the guessed one: one round trip per append instead of two. A wrong guess writes nothing.

SQLite: straight on the aiosqlite connection too, one thread hand-off per statement (SQLAlchemy's
adapter costs three or four): one SELECT, then UPDATE head, executemany facts, executemany nodes.
The indices always come from the head read under the lock, never from a SEQUENCE.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from chittyos.chain.facts import FACT_FIELDS
from chittyos.chain.merkle import NodeId
from chittyos.chain.records import FactRecord
from chittyos.db.models import ChainCheckpoint, ChainFact, ChainHead, ChainNode

__all__ = [
    "FACT_COLUMNS",
    "FACT_ROW_COLUMNS",
    "LOG_ID",
    "Leaves",
    "LockedHead",
    "checkpoint_at",
    "checkpoints",
    "driver_connection",
    "ensure_head",
    "facts_by_id",
    "head",
    "head_and_count",
    "insert_checkpoint",
    "is_postgres",
    "latest_checkpoints",
    "lock_checkpoints",
    "lock_head",
    "node_ranges",
    "nodes",
    "pg_lock_head",
    "query_facts",
    "record_from_row",
    "stray_facts",
    "stray_nodes",
    "write_leaves",
]

LOG_ID = 1
"""One log per database; the head row's key."""
_PREPARED_IDS_MAX = 16
"""Appends of more facts than this are not run as prepared statements (see ``pg_lock_head``)."""
_CHECKPOINT_LOCK = 0x43_48_41_49_4E_43_50  # "CHAINCP": pg_advisory_xact_lock key for signing

FACTS = ChainFact.__table__
NODES = ChainNode.__table__
HEAD = ChainHead.__table__
CHECKPOINTS = ChainCheckpoint.__table__
FACT_COLUMNS = (
    FACTS.c.id,
    FACTS.c.leaf_index,
    FACTS.c.leaf_hash,
    FACTS.c.subject,
    FACTS.c.predicate,
    FACTS.c.object,
    FACTS.c.source,
    FACTS.c.timestamp,
    FACTS.c.execution_id,
    FACTS.c.evidence_id,
    FACTS.c.signer,
    FACTS.c.signature,
    FACTS.c.verification_status,
    FACTS.c.created_at,
)
_IN_CHUNK = 500  # coordinates / ids per IN list


def record_from_row(row: Any) -> FactRecord:
    """A ``FactRecord`` from a row of ``FACT_COLUMNS``."""
    return FactRecord(
        fact_id=row[0],
        leaf_index=row[1],
        leaf_hash=bytes(row[2]).hex(),
        subject=row[3],
        predicate=row[4],
        object=row[5],
        source=row[6],
        timestamp=row[7],
        execution_id=row[8],
        evidence_id=row[9],
        signer=row[10],
        signature=row[11],
        verification_status=row[12],
        created_at=row[13],
    )


def is_postgres(session: AsyncSession) -> bool:
    return _dialect(session).name == "postgresql"


def _dialect(session: AsyncSession) -> Any:
    # The session's own engine (UnitOfWork binds one); get_bind() resolves it again every call.
    return (session.bind or session.get_bind()).dialect


def _insert(session: AsyncSession) -> Any:
    return pg_insert if is_postgres(session) else sqlite_insert


# -- head ---------------------------------------------------------------------------------------


async def head(session: AsyncSession) -> tuple[int, str, bytes] | None:
    """``(tree_size, origin, peaks)`` as committed (no lock), or None before the first append."""
    stmt = select(HEAD.c.tree_size, HEAD.c.origin, HEAD.c.peaks).where(HEAD.c.log_id == LOG_ID)
    row = (await session.execute(stmt)).first()
    return None if row is None else (row[0], row[1], bytes(row[2]))


async def ensure_head(session: AsyncSession, origin: str, now: datetime) -> None:
    """Create the head row (size 0) unless it exists."""
    stmt = _insert(session)(HEAD).values(log_id=LOG_ID, origin=origin, tree_size=0, peaks=b"", updated_at=now)
    await session.execute(stmt.on_conflict_do_nothing(index_elements=[HEAD.c.log_id]))


FACT_ROW_COLUMNS = ("id", "leaf_index", "leaf_hash", *FACT_FIELDS, "verification_status")
"""The order of a fact row tuple in ``Leaves.facts`` (``leaf_hash`` as 32 bytes)."""


@dataclass(frozen=True, slots=True)
class Leaves:
    """What one append writes, computed for a head of ``base_size`` leaves with ``base_peaks``:

    * ``facts``: one tuple per new fact, ``FACT_ROW_COLUMNS`` order, leaf indices from ``base_size``;
    * ``nodes``: ``(level, index, hash)`` of every complete subtree they finish;
    * ``tree_size`` / ``peaks``: the head after them.

    Only valid under the lock, on a head that still has ``base_size`` and ``base_peaks``.
    """

    base_size: int
    base_peaks: bytes
    facts: list[tuple[Any, ...]]
    nodes: list[tuple[int, int, bytes]]
    tree_size: int
    peaks: bytes


@dataclass(frozen=True, slots=True)
class LockedHead:
    """The head as read under the log lock; ``write_leaves`` needs it (proof that the lock is held)."""

    tree_size: int
    origin: str
    peaks: bytes
    existing: dict[str, int]
    """``{fact id: leaf index}`` of the asked-for facts that are stored already."""
    written: bool = False
    """The ``guess`` given to ``lock_head`` held and its leaves are written (nothing else to do)."""
    _driver: Any = None


async def lock_head(
    session: AsyncSession,
    fact_ids: Sequence[str],
    *,
    guess: Leaves | None = None,
    origin: str = "",
    now: datetime | None = None,
) -> LockedHead | None:
    """Take the log lock and read the head and which of ``fact_ids`` are stored already, in one
    statement. None when there is no head row yet (``ensure_head`` first).

    ``guess`` (PostgreSQL only; ignored on SQLite): leaves computed for the head this process
    expects. The same statement writes them (``created_at`` = ``now``) when, under the lock, the
    head has exactly ``origin``, ``guess.base_size`` and ``guess.base_peaks`` and none of
    ``fact_ids`` is stored; ``written`` says whether it did. Otherwise nothing is written and the
    caller goes on with ``write_leaves``. Either way the indices come from the locked head: the
    guess only saves a round trip.

    On PostgreSQL the existing facts are read in the statement that waits for the lock, so a fact
    committed by the previous holder while we waited is not seen: appending it again then fails
    on the primary key (loudly, nothing written) instead of being skipped.

    Raises ``psycopg.IntegrityError`` when the guessed leaves collide with stored rows.
    """
    raw = await driver_connection(session)
    if not is_postgres(session):
        # Every SQLite transaction here holds the write lock already (BEGIN IMMEDIATE).
        rows = await raw.execute_fetchall(_SQLITE_LOCK_HEAD, (_json_array(fact_ids),))
        if not rows:
            return None
        tree_size, origin, peaks, stored = rows[0]
        return LockedHead(tree_size, origin, bytes(peaks), json.loads(stored) if stored else {}, False, raw)
    return await pg_lock_head(raw, fact_ids, guess=guess, origin=origin, now=now)


async def pg_lock_head(
    raw: Any,
    fact_ids: Sequence[str],
    *,
    guess: Leaves | None = None,
    origin: str = "",
    now: datetime | None = None,
) -> LockedHead | None:
    """``lock_head`` on a psycopg connection ``raw``: in its transaction, or, in autocommit mode,
    as a transaction of its own (the lock is gone when it returns: only a ``written`` guess is
    then any use)."""
    ids = "{" + ",".join(fact_ids) + "}"  # 64 hex digits each: an array literal that needs no quoting
    # psycopg prepares a statement after a few runs, and the server's generic plan for the id
    # lookup (sized for a short array) scans the whole facts table for a long one: 27 ms against
    # 6 ms at 100 ids on a 17,000-fact log. Many ids: planned afresh each time (~0.3 ms).
    prepare = None if len(fact_ids) <= _PREPARED_IDS_MAX else False
    if guess is None:
        cursor = await raw.execute(_PG_LOCK_HEAD, (ids,), prepare=prepare)
    else:
        cursor = await raw.execute(
            _PG_LOCK_HEAD_AND_WRITE,
            {
                "ids": ids,
                "origin": origin,
                "base_size": guess.base_size,
                "base_peaks": guess.base_peaks,
                "facts": _pg_facts_json(guess.facts),
                "nodes": _pg_nodes_json(guess.nodes),
                "size": guess.tree_size,
                "peaks": guess.peaks,
                "now": now,
            },
            prepare=prepare,
        )
    row = await cursor.fetchone()
    if row is None:
        return None
    existing = {k: int(v) for k, v in (row[3] or {}).items()}
    return LockedHead(row[0], row[1], bytes(row[2]), existing, guess is not None and row[4], raw)


async def write_leaves(
    session: AsyncSession,
    locked: LockedHead,
    leaves: Leaves,
    *,
    now: datetime,
    check: Sequence[tuple[int, int, bytes]] = (),
) -> bool:
    """Insert ``leaves`` (facts and nodes) and move the head to ``leaves.tree_size`` /
    ``leaves.peaks``, under the lock ``locked`` was read with (``leaves`` computed from it), if
    each of ``check`` (``(level, index, hash)``: peaks the leaves were computed with) is the
    stored node. Returns False, with nothing written, when one is not.

    PostgreSQL: one statement. SQLite: three, straight on the driver (SQLAlchemy's aiosqlite
    adapter costs several thread hand-offs per statement; these cost one each): the UPDATE of
    the head first, which carries the check.

    Raises ``psycopg.IntegrityError`` / ``sqlite3.IntegrityError`` on a duplicate key."""
    raw = locked._driver
    if raw is None:
        raise ValueError("write_leaves needs a LockedHead from lock_head")
    if is_postgres(session):
        cursor = await raw.execute(
            _PG_WRITE_LEAVES,
            {
                "facts": _pg_facts_json(leaves.facts),
                "nodes": _pg_nodes_json(leaves.nodes),
                "size": leaves.tree_size,
                "peaks": leaves.peaks,
                "now": now,
                "check_levels": [c[0] for c in check],
                "check_index": [c[1] for c in check],
                "check_hashes": b"".join(c[2] for c in check) if check else None,
            },
        )
        return cursor.rowcount == 1
    created = _sqlite_time(session, now)
    # The head first: with the check, it moves only if the peaks are the stored nodes, and then
    # nothing at all is written when they are not.
    if check:
        cursor = await raw.execute(
            _SQLITE_MOVE_HEAD + "".join([_SQLITE_PEAK_IS] * len(check)),
            (leaves.tree_size, leaves.peaks, created, *(value for c in check for value in c)),
        )
        if cursor.rowcount != 1:
            return False
    else:
        await raw.execute(_SQLITE_MOVE_HEAD, (leaves.tree_size, leaves.peaks, created))
    await raw.executemany(_SQLITE_INSERT_FACTS, [(*row, created) for row in leaves.facts])
    await raw.executemany(_SQLITE_INSERT_NODES, leaves.nodes)
    return True


def _json_array(strings: Iterable[str]) -> str:
    """A JSON array of hex strings (nothing to escape)."""
    return '["' + '","'.join(strings) + '"]'


def _pg_facts_json(rows: Sequence[tuple[Any, ...]]) -> str:
    # One JSON document per table: one parameter, which psycopg passes as it is, and which the
    # server unpacks with jsonb_array_elements (C on both sides; no per-value adaptation).
    return json.dumps(
        [(r[0], r[1], r[2].hex(), *r[3:]) for r in rows], ensure_ascii=False, separators=(",", ":")
    )


def _pg_nodes_json(rows: Sequence[tuple[int, int, bytes]]) -> str:
    return json.dumps([(lv, ix, h.hex()) for lv, ix, h in rows], separators=(",", ":"))


def _sqlite_time(session: AsyncSession, when: datetime) -> Any:
    """``when`` as SQLAlchemy stores a ``UTCDateTime`` on SQLite (so reads through it agree)."""
    dialect = _dialect(session)
    processor = _SQLITE_TIME.get(dialect)
    if processor is None:
        processor = _SQLITE_TIME[dialect] = FACTS.c.created_at.type.bind_processor(dialect)
    return processor(when) if processor is not None else when


_SQLITE_TIME: dict[Any, Any] = {}

_FACT_INSERT_COLUMNS = (
    'id, leaf_index, leaf_hash, subject, predicate, object, source, "timestamp", execution_id, '
    "evidence_id, signer, signature, verification_status, created_at"
)
assert len(FACT_ROW_COLUMNS) + 1 == len(_FACT_INSERT_COLUMNS.split(",")), "column lists disagree"

_SQLITE_LOCK_HEAD = f"""
SELECT h.tree_size, h.origin, h.peaks,
       (SELECT json_group_object(f.id, f.leaf_index) FROM chitty_chain_facts f
         WHERE f.id IN (SELECT value FROM json_each(?)))
  FROM chitty_chain_head h WHERE h.log_id = {LOG_ID}
"""
_SQLITE_INSERT_FACTS = (
    f"INSERT INTO chitty_chain_facts ({_FACT_INSERT_COLUMNS}) "
    f"VALUES ({', '.join('?' * (len(FACT_ROW_COLUMNS) + 1))})"
)
_SQLITE_INSERT_NODES = 'INSERT INTO chitty_chain_nodes (level, "index", hash) VALUES (?, ?, ?)'
_SQLITE_MOVE_HEAD = (
    f"UPDATE chitty_chain_head SET tree_size = ?, peaks = ?, updated_at = ? WHERE log_id = {LOG_ID}"
)
# Appended to it once per checked peak (level, index, hash): the head moves only if each stored
# node is that hash (a missing one is NULL). One primary-key lookup each.
_SQLITE_PEAK_IS = ' AND (SELECT hash FROM chitty_chain_nodes WHERE level = ? AND "index" = ?) IS ?'

_PG_LOCK_HEAD = f"""
SELECT h.tree_size, h.origin, h.peaks,
       (SELECT json_object_agg(f.id, f.leaf_index) FROM chitty_chain_facts f WHERE f.id = ANY(%s::varchar[]))
  FROM chitty_chain_head h WHERE h.log_id = {LOG_ID} FOR UPDATE OF h
"""
# The rows of a JSON array of fact rows (FACT_ROW_COLUMNS order) and of nodes (level, index, hex).
# As jsonb: parsed once, then ->> is a lookup (on json every ->> parses the element again, which
# made 100-fact appends several times dearer on the server than json_to_recordset).
_PG_FACT_ROWS = """
  SELECT r->>0, (r->>1)::bigint, decode(r->>2, 'hex'), r->>3, r->>4, r->>5, r->>6, (r->>7)::bigint,
         r->>8, r->>9, r->>10, r->>11, r->>12, %(now)s
    FROM jsonb_array_elements(%(facts)s::jsonb) AS r"""
_PG_NODE_ROWS = """
  SELECT (n->>0)::smallint, (n->>1)::bigint, decode(n->>2, 'hex')
    FROM jsonb_array_elements(%(nodes)s::jsonb) AS n"""
# ``ok``: the checked peaks (arrays of coordinates, in order) are the stored nodes; a statement
# after the lock was taken, so it sees what the previous holder committed. Nothing is written
# otherwise (the UPDATE's row count says which).
_PG_WRITE_LEAVES = f"""
WITH ok AS MATERIALIZED (
  SELECT (SELECT string_agg(n.hash, ''::bytea ORDER BY w.ord)
            FROM unnest(%(check_levels)s::smallint[], %(check_index)s::bigint[]) WITH ORDINALITY AS w(level, idx, ord)
            JOIN chitty_chain_nodes n ON n.level = w.level AND n."index" = w.idx)
         IS NOT DISTINCT FROM %(check_hashes)s::bytea AS fine
), facts AS (
  INSERT INTO chitty_chain_facts ({_FACT_INSERT_COLUMNS}){_PG_FACT_ROWS}
   WHERE (SELECT fine FROM ok)
), nodes AS (
  INSERT INTO chitty_chain_nodes (level, "index", hash){_PG_NODE_ROWS}
   WHERE (SELECT fine FROM ok)
)
UPDATE chitty_chain_head SET tree_size = %(size)s, peaks = %(peaks)s, updated_at = %(now)s
 WHERE log_id = {LOG_ID} AND (SELECT fine FROM ok)
"""
# lock_head with a guess. ``head`` takes the lock (READ COMMITTED: after waiting, it returns the
# row as the previous holder committed it); ``fits`` is non-empty when that row is the guessed
# base and no asked-for fact is stored; every write is conditional on ``fits``, so a wrong guess
# writes nothing. The result is lock_head's, plus whether the head moved.
_PG_LOCK_HEAD_AND_WRITE = f"""
WITH head AS MATERIALIZED (
  SELECT tree_size, origin, peaks FROM chitty_chain_head WHERE log_id = {LOG_ID} FOR UPDATE
), stored AS MATERIALIZED (
  SELECT json_object_agg(f.id, f.leaf_index) AS ids FROM chitty_chain_facts f
   WHERE f.id = ANY(%(ids)s::varchar[])
), fits AS MATERIALIZED (
  SELECT 1 FROM head, stored
   WHERE head.origin = %(origin)s AND head.tree_size = %(base_size)s AND head.peaks = %(base_peaks)s
     AND stored.ids IS NULL
), facts AS (
  INSERT INTO chitty_chain_facts ({_FACT_INSERT_COLUMNS}){_PG_FACT_ROWS}
   WHERE EXISTS (SELECT FROM fits)
), nodes AS (
  INSERT INTO chitty_chain_nodes (level, "index", hash){_PG_NODE_ROWS}
   WHERE EXISTS (SELECT FROM fits)
), moved AS (
  UPDATE chitty_chain_head SET tree_size = %(size)s, peaks = %(peaks)s, updated_at = %(now)s
   WHERE log_id = {LOG_ID} AND EXISTS (SELECT FROM fits)
  RETURNING 1
)
SELECT head.tree_size, head.origin, head.peaks, stored.ids, EXISTS (SELECT FROM moved) FROM head, stored
"""


# -- facts --------------------------------------------------------------------------------------


async def facts_by_id(session: AsyncSession, fact_ids: Sequence[str]) -> list[Row[Any]]:
    out: list[Row[Any]] = []
    for chunk in _chunks(fact_ids):
        out.extend(await session.execute(select(*FACT_COLUMNS).where(FACTS.c.id.in_(chunk))))
    return out


async def leaf_hashes_at(session: AsyncSession, indices: Sequence[int]) -> dict[int, bytes]:
    """The stored leaf hash of the facts at ``indices``; missing places are left out."""
    out: dict[int, bytes] = {}
    for chunk in _chunks(list(dict.fromkeys(indices))):
        query = select(FACTS.c.leaf_index, FACTS.c.leaf_hash).where(FACTS.c.leaf_index.in_(chunk))
        rows = await session.execute(query)
        out.update((int(index), bytes(leaf_hash)) for index, leaf_hash in rows)
    return out


async def driver_connection(session: AsyncSession) -> Any:
    """The driver's own connection (psycopg / aiosqlite) under the session, in its transaction."""
    connection = await session.connection()
    # What get_raw_connection() returns, without its greenlet round: inside a transaction the
    # connection is live (an invalidated one raises here rather than reconnecting).
    return connection.sync_connection.connection.driver_connection


def _head_size() -> Any:
    return select(HEAD.c.tree_size).where(HEAD.c.log_id == LOG_ID).scalar_subquery()


async def stray_facts(session: AsyncSession, limit: int) -> Sequence[Row[Any]]:
    """``(id, leaf_index)`` of facts at or beyond the head's size, read with the size in ONE
    statement (one snapshot: a concurrent append is not mistaken for a stray row)."""
    stmt = (
        select(FACTS.c.id, FACTS.c.leaf_index)
        .where(FACTS.c.leaf_index >= func.coalesce(_head_size(), 0))
        .order_by(FACTS.c.leaf_index)
        .limit(limit)
    )
    return (await session.execute(stmt)).all()


async def head_and_count(session: AsyncSession) -> tuple[int, bytes, int]:
    """``(tree_size, peaks, number of fact rows)`` in one statement (one snapshot)."""
    count = select(func.count()).select_from(FACTS).scalar_subquery()
    row = (
        await session.execute(select(HEAD.c.tree_size, HEAD.c.peaks, count).where(HEAD.c.log_id == LOG_ID))
    ).first()
    if row is None:
        return 0, b"", int((await session.execute(select(count))).scalar_one())
    return row[0], bytes(row[1]), int(row[2])


async def query_facts(
    session: AsyncSession, conditions: Iterable[Any], *, limit: int, offset: int
) -> Sequence[Row[Any]]:
    stmt = select(*FACT_COLUMNS).where(*conditions).order_by(FACTS.c.leaf_index).limit(limit).offset(offset)
    return (await session.execute(stmt)).all()


# -- nodes --------------------------------------------------------------------------------------


async def nodes(session: AsyncSession, coords: Iterable[NodeId]) -> dict[NodeId, bytes]:
    """The stored hashes of ``coords``, one query per 500 (missing ones are left out).

    Through the driver with fixed SQL on PostgreSQL (arrays) and a plain OR of primary-key lookups
    on SQLite (which scans the whole table for a row-value IN list): a proof's cost is this query.
    """
    wanted = list(dict.fromkeys(coords))
    found: dict[NodeId, bytes] = {}
    if not wanted:
        return found
    raw = await driver_connection(session)
    postgres = is_postgres(session)
    for chunk in _chunks(wanted):
        if postgres:
            cursor = await raw.execute(_PG_NODES, ([c[0] for c in chunk], [c[1] for c in chunk]))
        else:
            where = " OR ".join(['(level = ? AND "index" = ?)'] * len(chunk))
            cursor = await raw.execute(
                f'SELECT level, "index", hash FROM chitty_chain_nodes WHERE {where}',
                [value for c in chunk for value in c],
            )
        found.update(((level, index), bytes(value)) for level, index, value in await cursor.fetchall())
    return found


_PG_NODES = """
SELECT n.level, n."index", n.hash
  FROM unnest(%s::smallint[], %s::bigint[]) AS w(level, idx)
  JOIN chitty_chain_nodes n ON n.level = w.level AND n."index" = w.idx
"""


async def node_ranges(
    session: AsyncSession, ranges: Sequence[tuple[int, int, int]]
) -> dict[NodeId, bytes | None]:
    """The stored nodes ``(level, first .. last)`` of each of ``ranges``, in one statement: ``{(level,
    index): hash}``, None for a value that is not a 32-byte hash (missing ones are left out)."""
    found: dict[NodeId, bytes | None] = {}
    if not ranges:
        return found
    raw = await driver_connection(session)
    if is_postgres(session):
        columns = ([r[0] for r in ranges], [r[1] for r in ranges], [r[2] for r in ranges])
        rows = await (await raw.execute(_PG_NODE_RANGES, columns)).fetchall()
    else:
        sql = " UNION ALL ".join([_SQLITE_NODE_RANGE] * len(ranges))
        rows = await raw.execute_fetchall(sql, [value for r in ranges for value in r])
    for level, index, value in rows:
        ok = isinstance(value, bytes | bytearray | memoryview) and len(value) == 32
        found[(level, index)] = bytes(value) if ok else None
    return found


_PG_NODE_RANGES = """
SELECT n.level, n."index", n.hash
  FROM unnest(%s::smallint[], %s::bigint[], %s::bigint[]) AS r(level, first, last)
  JOIN chitty_chain_nodes n ON n.level = r.level AND n."index" BETWEEN r.first AND r.last
"""
_SQLITE_NODE_RANGE = 'SELECT level, "index", hash FROM chitty_chain_nodes WHERE level = ? AND "index" BETWEEN ? AND ?'


async def stray_nodes(session: AsyncSession, limit: int) -> Sequence[Row[Any]]:
    """``(level, index)`` of stored nodes a tree of the head's size does not have (index >= size
    >> level), read with the size in one statement."""
    bound = func.coalesce(_head_size(), 0).op(">>")(NODES.c.level)
    stmt = (
        select(NODES.c.level, NODES.c.index)
        .where(NODES.c.index >= bound)
        .order_by(NODES.c.level, NODES.c.index)
        .limit(limit)
    )
    return (await session.execute(stmt)).all()


# -- checkpoints --------------------------------------------------------------------------------


async def lock_checkpoints(session: AsyncSession) -> None:
    """Serialise checkpoint signers until the transaction ends (SQLite: BEGIN IMMEDIATE did)."""
    if is_postgres(session):
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CHECKPOINT_LOCK})


async def latest_checkpoints(session: AsyncSession, n: int) -> Sequence[Row[Any]]:
    """The ``n`` checkpoints of largest tree size, largest first: ``(tree_size, root_hash, note, signed_at)``."""
    stmt = (
        select(CHECKPOINTS.c.tree_size, CHECKPOINTS.c.root_hash, CHECKPOINTS.c.note, CHECKPOINTS.c.signed_at)
        .order_by(CHECKPOINTS.c.tree_size.desc())
        .limit(n)
    )
    return (await session.execute(stmt)).all()


async def first_checkpoint(session: AsyncSession) -> Row[Any] | None:
    """The checkpoint of smallest tree size (the log's claim, at size 0, when nothing removed
    it): ``(tree_size, root_hash, note, signed_at)``; None when there is none."""
    stmt = select(
        CHECKPOINTS.c.tree_size, CHECKPOINTS.c.root_hash, CHECKPOINTS.c.note, CHECKPOINTS.c.signed_at
    )
    return (await session.execute(stmt.order_by(CHECKPOINTS.c.tree_size.asc()).limit(1))).first()


async def checkpoint_at(session: AsyncSession, size: int) -> Row[Any] | None:
    stmt = select(
        CHECKPOINTS.c.tree_size, CHECKPOINTS.c.root_hash, CHECKPOINTS.c.note, CHECKPOINTS.c.signed_at
    )
    return (await session.execute(stmt.where(CHECKPOINTS.c.tree_size == size))).first()


async def checkpoints(session: AsyncSession) -> Sequence[Row[Any]]:
    """Every checkpoint, smallest first: ``(tree_size, root_hash, note, signed_at)``."""
    stmt = select(
        CHECKPOINTS.c.tree_size, CHECKPOINTS.c.root_hash, CHECKPOINTS.c.note, CHECKPOINTS.c.signed_at
    )
    return (await session.execute(stmt.order_by(CHECKPOINTS.c.tree_size))).all()


async def insert_checkpoint(session: AsyncSession, size: int, root: bytes, note: str, now: datetime) -> None:
    """Store a signed checkpoint; one that exists at ``size`` already is kept."""
    stmt = _insert(session)(CHECKPOINTS).values(tree_size=size, root_hash=root, note=note, signed_at=now)
    await session.execute(stmt.on_conflict_do_nothing(index_elements=[CHECKPOINTS.c.tree_size]))


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]
