"""What a full-log verify reads, a page of leaves ``[begin, end)`` at a time: the queries behind
``verify.verify_log``.

``read_page`` / ``SqlitePages.read`` have the database do the bulk of the work in aggregates, so
that a page crosses to Python as a handful of values instead of ``end - begin`` rows of twelve
columns (building those rows and re-encoding their fields in Python cost more than the hashing):

* the leaf bytes of every fact, joined by ``b"\\n"`` (no RFC 8785 output holds a raw newline),
  built from its stored fields: the RFC 8785 encoding of a fact is its members in sorted key
  order (``SORTED_FIELDS``, None ones left out), each string a JSON string, the timestamp a
  decimal integer. SQLite's ``json_object`` / ``json_quote`` and PostgreSQL's ``to_json(text)``
  escape a string exactly as RFC 8785 (ECMAScript ``JSON.stringify``) does: ``\\"``, ``\\\\``,
  ``\\b \\t \\n \\f \\r``, other U+0000..U+001F as lowercase ``\\u00xx``, everything else
  verbatim in UTF-8 (tests/chain/test_scan.py holds them to ``rfc8785.dumps``). ``to_json`` is
  slow per call, so on PostgreSQL a string without ``"`` and ``\\`` is only put in quotes (a
  control character then stays raw: that leaf matches no genuine one and its page is read
  row by row);
* the stored fact ids joined by ``" "``, the stored leaf hashes concatenated;
* per level, the stored nodes those leaves complete, concatenated (``runs``).

Soundness does not rest on the database. The verifier hashes every leaf itself and compares
with the stored id and leaf hash; a page whose hashes differ anywhere, or that is not ``clean``
(a row missing, a value of a type the encoding cannot take: a BLOB in a text column makes
SQLite's JSON functions fail, a hash that is not a 32-byte BLOB), is read again row by row
(``read_rows``) and recomputed by ``facts.canonical_leaf_sorted``, naming each finding. And a
changed row cannot pass as a genuine one: every string is written as JSON that decodes to the
stored value (``"`` and ``\\`` always escaped), so bytes equal to a genuine leaf (valid UTF-8,
no raw control character) decode to the same fields.

Order: SQLite 3.40 has no ``group_concat(... ORDER BY)``, and on PostgreSQL ordered aggregates
over the facts would sort the wide rows once per aggregate. Both feed an aggregate in the order
of the index scan (or of an ``ORDER BY`` subquery) in practice but do not promise it, so those
statements also concatenate the indices they saw, and a page or level whose indices are not
``first, first+1, ...`` is not trusted (row by row, node by node) instead of being misread.

On SQLite the verifier reads on connections of its own (``SqlitePages``) in worker threads: a
statement runs without the GIL beside the hashing of the previous page, and a deferred read
transaction in WAL mode does not take the database write lock that every session transaction
takes (``BEGIN IMMEDIATE``, db/engine.py), so a long verify never holds writers up.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncSession

from chittyos.chain.store import driver_connection, is_postgres


__all__ = [
    "ROW_COLUMNS",
    "Page",
    "SqlitePages",
    "completed_ranges",
    "nodes_of_level",
    "read_page",
    "read_rows",
]

Run = tuple[int, int, bytes]
"""``(first index, count, their hashes concatenated in index order)`` of the stored nodes of a level."""


@dataclass(frozen=True)
class Page:
    """One page of the log as ``read_page`` found it.

    ``clean``: the table holds exactly the facts ``begin .. end - 1``, each with a text id, a
    32-byte leaf hash and fields of the types their encoding needs, and they came in index order.
    Only then are ``ids`` (joined by ``" "``), ``leaf_hashes`` (concatenated) and ``leaves``
    (leaf bytes joined by ``b"\\n"``, which no RFC 8785 output contains) meaningful.
    ``runs``: ``{level: Run}`` of the levels whose stored nodes in the page's range all are
    32-byte hashes with no index missing, read in index order; a level left out is compared
    node by node.
    """

    begin: int
    end: int
    clean: bool
    ids: str
    leaf_hashes: bytes
    leaves: bytes
    runs: dict[int, Run]


async def read_page(session: AsyncSession, begin: int, end: int) -> Page:
    """The page of leaves ``[begin, end)`` (``0 <= begin < end``) in the session's transaction."""
    raw = await driver_connection(session)
    ranges = completed_ranges(begin, end)
    if is_postgres(session):
        cursor = await raw.execute(_PG_PAGE, (begin, end), binary=True)  # bytea as bytes, not hex
        page = await cursor.fetchone()
        cursor = await raw.execute(_PG_RUNS, _pg_ranges(ranges), binary=True)
        return _page(begin, end, page, _runs(await cursor.fetchall()))
    try:
        row = (await raw.execute_fetchall(_SQLITE_PAGE, (begin, end)))[0]
    except sqlite3.OperationalError:  # a BLOB where JSON wants text: the page is read row by row
        row = None
    nodes = (await raw.execute_fetchall(_sqlite_nodes(ranges), _sqlite_ranges(ranges)))[0]
    runs = _sqlite_runs_at_once(ranges, nodes)
    if runs is None:
        runs = _runs(await raw.execute_fetchall(_sqlite_runs(ranges), _sqlite_ranges(ranges)))
    return _page(begin, end, row, runs)


class SqlitePages:
    """Pages of a SQLite database file read on a connection of our own (see the module docstring).

    ``path_of(engine)`` is None when the engine's database is not a plain file (an in-memory
    database is only visible through the engine's own connection). Blocking: call ``read`` and
    ``close`` in a worker thread, one at a time per instance.
    """

    def __init__(self, path: str) -> None:
        # Not the engine's BEGIN IMMEDIATE: autocommit, and a deferred BEGIN per page below.
        self._conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA query_only = ON")  # a verifier never writes

    @staticmethod
    def path_of(engine: Engine) -> str | None:
        """The database file of a SQLite ``engine``, or None (in-memory, URI form, not SQLite)."""
        database = engine.url.database
        if engine.dialect.name != "sqlite" or not database or database == ":memory:":
            return None
        return None if database.startswith("file:") else database

    def read(self, begin: int, end: int) -> Page:
        """The page of leaves ``[begin, end)`` (``0 <= begin < end``), in one read transaction.

        Two statements of one row each (joined into one, SQLite would copy the blobs into
        temporary tables): every step back into Python waits for the GIL."""
        ranges = completed_ranges(begin, end)
        conn = self._conn
        conn.execute("BEGIN")
        try:
            try:
                row = conn.execute(_SQLITE_PAGE, (begin, end)).fetchone()
            except sqlite3.OperationalError:  # a BLOB where JSON wants text: read row by row
                row = None
            nodes = conn.execute(_sqlite_nodes(ranges), _sqlite_ranges(ranges)).fetchone()
            runs = _sqlite_runs_at_once(ranges, nodes)
            if runs is None:
                runs = _runs(conn.execute(_sqlite_runs(ranges), _sqlite_ranges(ranges)).fetchall())
        finally:
            conn.execute("COMMIT")
        return _page(begin, end, row, runs)

    def close(self) -> None:
        self._conn.close()


async def read_rows(session: AsyncSession, begin: int, end: int) -> list[tuple[Any, ...]]:
    """The facts with ``begin <= leaf_index < end``, in index order, as tuples of ``ROW_COLUMNS``
    (the fields in ``SORTED_FIELDS`` order after the first three), values as stored."""
    raw = await driver_connection(session)
    if is_postgres(session):
        return list(await (await raw.execute(_ROWS.format(p="%s"), (begin, end))).fetchall())
    return list(await raw.execute_fetchall(_ROWS.format(p="?"), (begin, end)))


ROW_COLUMNS = (
    "id", "leaf_index", "leaf_hash", "evidence_id", "execution_id", "object", "predicate", "signature",
    "signer", "source", "subject", "timestamp",
)  # fmt: skip
_ROWS = (
    "SELECT id, leaf_index, leaf_hash, evidence_id, execution_id, object, predicate, signature, signer, "
    'source, subject, "timestamp" FROM chitty_chain_facts WHERE leaf_index >= {p} AND leaf_index < {p} '
    "ORDER BY leaf_index"
)


async def nodes_of_level(
    session: AsyncSession, level: int, first: int, last: int
) -> dict[int, bytes | None]:
    """``{index: hash}`` of the stored nodes at ``level`` with ``first <= index <= last``, values
    as the driver returns them; None for one that is not a 32-byte hash (another type or length)."""
    raw = await driver_connection(session)
    if is_postgres(session):
        rows = await (await raw.execute(_LEVEL_NODES.format(p="%s"), (level, first, last))).fetchall()
    else:
        rows = await raw.execute_fetchall(_LEVEL_NODES.format(p="?"), (level, first, last))
    return {index: _hash_or_none(value) for index, value in rows}


_LEVEL_NODES = (
    'SELECT "index", hash FROM chitty_chain_nodes WHERE level = {p} AND "index" BETWEEN {p} AND {p}'
)


def _hash_or_none(value: object) -> bytes | None:
    if isinstance(value, bytes | bytearray | memoryview) and len(value) == 32:
        return bytes(value)
    return None


def completed_ranges(begin: int, end: int) -> list[tuple[int, int, int]]:
    """``(level, first index, last index)`` of the nodes completed by leaves ``[begin, end)``."""
    out = []
    level = 0
    while (end >> level) - 1 >= begin >> level:
        out.append((level, begin >> level, (end >> level) - 1))
        level += 1
    return out


def _indices(first: int, last: int) -> str:
    """``"first,first+1,...,last"``: what an aggregate that saw them in order concatenates."""
    return ",".join(map(str, range(first, last + 1)))


def _in_order(indices: str | None, first: int, last: int) -> bool:
    """The indices an aggregate saw (``"5,6,7"``) are ``first .. last`` in order."""
    return indices == _indices(first, last)


def _runs(rows: Any) -> dict[int, Run]:
    """The trusted runs among rows ``(level, count, 32-byte hashes, first, last, indices, blob)``;
    ``indices`` None: the blob was concatenated in index order by an ordered aggregate."""
    stored: dict[int, Run] = {}
    for level, n, n_hashes, first, last, order, blob in rows:
        if n and n == n_hashes == last - first + 1 and (order is None or _in_order(order, first, last)):
            stored[level] = (first, n, bytes(blob))
    return stored


def _page(begin: int, end: int, page: Any, stored: dict[int, Run]) -> Page:
    """A ``Page`` from the page aggregate's row (None: it failed) and the trusted runs."""
    if page is None:
        return Page(begin, end, False, "", b"", b"", stored)
    count, well_typed, indices, ids, leaf_hashes, leaves = page
    if not (count == well_typed == end - begin and _in_order(indices, begin, end - 1)):
        return Page(begin, end, False, "", b"", b"", stored)
    return Page(begin, end, True, ids, bytes(leaf_hashes), bytes(leaves), stored)


# -- SQLite -------------------------------------------------------------------------------------


_REQUIRED = ("object", "predicate", "source", "subject", "timestamp")


def _sqlite_object(*optional: str) -> str:
    keys = sorted((*optional, *_REQUIRED))
    return "json_object(" + ", ".join(f"'{key}', \"{key}\"" for key in keys) + ")"


def _sqlite_member(column: str) -> str:
    return f"CASE WHEN {column} IS NULL THEN '' ELSE '\"{column}\":' || json_quote({column}) || ',' END"


# json_object / json_quote raise an error for a BLOB (the page is then not clean); a NULL
# required field (null) or a timestamp that is not an integer (1.5, 1.0e+15, "x") is written as
# no genuine leaf has it. Most facts take one json_object call (the costly part here, but a
# third of a json_quote per field); the others are spelt out.
_SQLITE_LEAF = (
    "CASE WHEN evidence_id IS NULL AND signature IS NULL AND signer IS NULL THEN "
    f"CASE WHEN execution_id IS NULL THEN {_sqlite_object()} ELSE {_sqlite_object('execution_id')} END "
    f"ELSE '{{' || {_sqlite_member('evidence_id')} || {_sqlite_member('execution_id')}"
    " || '\"object\":' || json_quote(object) || ',\"predicate\":' || json_quote(predicate) || ','"
    f" || {_sqlite_member('signature')} || {_sqlite_member('signer')}"
    " || '\"source\":' || json_quote(source) || ',\"subject\":' || json_quote(subject)"
    " || ',\"timestamp\":' || json_quote(\"timestamp\") || '}' END"
)
# No ORDER BY subquery: the rows come in the order of the leaf_index index scan, which is what
# the concatenated indices are checked against (a subquery costs a third more here). Storage
# classes order NULL < numbers < TEXT < BLOB, and the id column's affinity turns numbers into
# TEXT: ``id < x''`` is "id is TEXT", ``leaf_hash >= x''`` "leaf_hash is a BLOB" (cheaper than typeof).
_SQLITE_PAGE = (
    "SELECT count(*), sum(id < x'' AND leaf_hash >= x'' AND length(leaf_hash) = 32), "
    "group_concat(leaf_index, ','), group_concat(id, ' '), CAST(group_concat(leaf_hash, '') AS BLOB), "
    f"CAST(group_concat({_SQLITE_LEAF}, char(10)) AS BLOB) "
    "FROM chitty_chain_facts WHERE leaf_index >= ? AND leaf_index < ?"
)
_SQLITE_RUN = (
    "SELECT {level}, count(*), count(h), min(\"index\"), max(\"index\"), group_concat(\"index\", ','), "
    "CAST(group_concat(h, '') AS BLOB) FROM (SELECT \"index\", CASE WHEN typeof(hash) = 'blob' AND "
    "length(hash) = 32 THEN hash END AS h FROM chitty_chain_nodes WHERE level = ? AND \"index\" BETWEEN ? "
    "AND ? ORDER BY \"index\")"
)


_SQLITE_NODES = (
    "SELECT count(*), count(h), group_concat(\"index\", ','), CAST(group_concat(h, '') AS BLOB) FROM ({})"
)
_SQLITE_LEVEL = (
    "SELECT \"index\", CASE WHEN typeof(hash) = 'blob' AND length(hash) = 32 THEN hash END AS h "
    "FROM chitty_chain_nodes WHERE level = ? AND \"index\" BETWEEN ? AND ?"
)


def _sqlite_nodes(ranges: list[tuple[int, int, int]]) -> str:
    """Every level's nodes in the page's ranges, one level after the other, in one row."""
    return _SQLITE_NODES.format(" UNION ALL ".join([_SQLITE_LEVEL] * len(ranges)))


def _sqlite_runs_at_once(ranges: list[tuple[int, int, int]], row: Any) -> dict[int, Run] | None:
    """The runs of ``_sqlite_nodes``'s row, or None when any node is missing, not a 32-byte
    hash or out of order (then each level is read on its own, ``_sqlite_runs``)."""
    n, n_hashes, indices, blob = row
    if not n or n != n_hashes or indices != ",".join(_indices(first, last) for _, first, last in ranges):
        return None
    runs: dict[int, Run] = {}
    at = 0
    for level, first, last in ranges:
        count = last - first + 1
        runs[level] = (first, count, bytes(blob[at : at + 32 * count]))
        at += 32 * count
    return runs


def _sqlite_runs(ranges: list[tuple[int, int, int]]) -> str:
    return " UNION ALL ".join(_SQLITE_RUN.format(level=int(level)) for level, _, _ in ranges)


def _sqlite_ranges(ranges: list[tuple[int, int, int]]) -> list[int]:
    return [value for r in ranges for value in r]


# -- PostgreSQL ---------------------------------------------------------------------------------


def _pg_text(column: str) -> str:
    return (
        f"CASE WHEN strpos({column}, '\"') = 0 AND strpos({column}, '\\') = 0 "
        f"THEN '\"' || {column} || '\"' ELSE to_json({column})::text END"
    )


def _pg_optional(column: str, quote: Any = _pg_text) -> str:
    return f"CASE WHEN {column} IS NULL THEN '' ELSE '\"{column}\":' || {quote(column)} || ',' END"


# Columns are typed on PostgreSQL; a NULL required field makes the whole leaf NULL. A signature
# is multi-line: to_json at once.
_PG_LEAF = (
    "CASE WHEN octet_length(leaf_hash) = 32 THEN "
    f"'{{' || {_pg_optional('evidence_id')} || {_pg_optional('execution_id')}"
    f" || '\"object\":' || {_pg_text('object')} || ',\"predicate\":' || {_pg_text('predicate')} || ','"
    f" || {_pg_optional('signature', lambda c: f'to_json({c})::text')} || {_pg_optional('signer')}"
    f" || '\"source\":' || {_pg_text('source')} || ',\"subject\":' || {_pg_text('subject')}"
    " || ',\"timestamp\":' || \"timestamp\"::text || '}' END"
)
_PG_PAGE = (
    "SELECT count(*), count(leaf), string_agg(leaf_index::text, ','), string_agg(id, ' '), "
    "string_agg(leaf_hash, ''::bytea), string_agg(convert_to(leaf, 'UTF8'), '\\x0a'::bytea) "
    f"FROM (SELECT leaf_index, id, leaf_hash, {_PG_LEAF} AS leaf FROM chitty_chain_facts "
    "WHERE leaf_index >= %s AND leaf_index < %s ORDER BY leaf_index) AS f"
)
# Here an ordered aggregate: the planner sorts each level's nodes anyway (bitmap heap scan).
_PG_RUNS = """
SELECT r.level, a.n, a.n_hashes, a.first, a.last, NULL, a.hashes
  FROM unnest(%s::smallint[], %s::bigint[], %s::bigint[]) AS r(level, first, last)
 CROSS JOIN LATERAL (
       SELECT count(*) AS n, count(*) FILTER (WHERE octet_length(n.hash) = 32) AS n_hashes,
              min(n."index") AS first, max(n."index") AS last,
              string_agg(n.hash, ''::bytea ORDER BY n."index") AS hashes
         FROM chitty_chain_nodes n WHERE n.level = r.level AND n."index" BETWEEN r.first AND r.last
       ) AS a
 WHERE a.n > 0
"""


def _pg_ranges(ranges: list[tuple[int, int, int]]) -> tuple[list[int], list[int], list[int]]:
    return [r[0] for r in ranges], [r[1] for r in ranges], [r[2] for r in ranges]
