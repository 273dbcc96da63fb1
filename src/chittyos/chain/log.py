"""ChainLog: ChittyChain on the database (DESIGN.md, ChittyChain).

::

    append(session, facts)       inside the CALLER's transaction, one lock for the whole batch:
      1. lock the log: SELECT tree size, peaks FROM head FOR UPDATE; with it, which of the facts
         are stored already (those are not appended again; their place is returned)
      2. the new leaves take indices size, size+1, ...; every left sibling they hash with is a
         peak of the tree or a node of this batch (the CompactRange step, _leaves)
      3. compute the complete subtrees they finish and the new peaks, each hash once
      4. insert leaves and nodes and move the head (one statement on PostgreSQL, three
         executemany/UPDATE on SQLite, straight on the driver), only if the peaks the new nodes
         were hashed with are the stored nodes (a head row changed behind the log's back is
         refused, never built on; PostgreSQL checks every peak, since that head becomes the
         next guess)
      PostgreSQL, the usual case: this process wrote the head last, so it computes 2.-4. for
      the head it expects BEFORE locking and sends them with 1.; the statement writes them only
      if the locked head is exactly that one and none of the facts is stored (else nothing, and
      2.-4. follow from the locked head). One round trip; the indices still come from the head
      read under the lock. Appends of one process take turns (bounded) so that each can guess.
      A rollback undoes the head too: no gap. UNIQUE(leaf_index) and the nodes' primary key make
      a second writer at the same index fail instead of forking the log.

    checkpoint()                 one signer at a time: sign the committed tree (C2SP
                                 tlog-checkpoint in a signed note) only after checking the tree
                                 added since the last checkpoint against the stored data (head
                                 peaks, every new node and leaf: O(leaves since), in read
                                 transactions) and the last signed checkpoint (signature, and a
                                 consistency proof from stored nodes up to the new root). Lazy:
                                 on demand for a proof, and from run_checkpointer every N leaves
                                 / T seconds.
    inclusion_proof(fact_id)     tlog-proof@v1 text against a signed checkpoint, O(log n) nodes
    consistency(old, new)        RFC 9162 consistency proof between two sizes
    query(...)                   facts by subject / predicate / source / time, in log order;
                                 ``keep`` filters further (a signature check) while paging, with
                                 offset / limit counting the kept facts (bounded scan)
    verify(fact_ids)             per-fact checks against the newest checkpoint (verify.py)
    verify_log(progress)         full streaming recompute of the whole log (verify.py)

Errors: ``InvalidInput`` (bad arguments), ``NotFound`` (no such fact), ``IntegrityError`` (the
stored log contradicts itself: a proof or checkpoint that does not verify, a missing node, a
fork), ``ConfigurationError`` (the database's log has another origin than the key).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anyio
import psycopg
import structlog
from anyio.abc import TaskStatus
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession

from chittyos.chain import scan, store
from chittyos.chain.facts import Fact, canonical_leaf_sorted, check_field, parse_fact_id, timestamp_ms
from chittyos.chain.merkle import (
    HASH_SIZE,
    NodeId,
    consistency_proof,
    consistency_proof_nodes,
    inclusion_proof,
    inclusion_proof_nodes,
    leaf_hash,
    node_hash,
    root_hash,
    root_nodes,
    verify_consistency,
    verify_inclusion,
)
from chittyos.chain.note import Checkpoint, NoteSigner, NoteVerifier, open_checkpoint, sign_checkpoint
from chittyos.chain.proof_text import format_tlog_proof
from chittyos.chain.records import (
    NOT_APPLICABLE,
    AppendedFact,
    ConsistencyProof,
    FactPage,
    FactProof,
    FactRecord,
    LogReport,
    NotApplicable,
    SignedCheckpoint,
    VerifyReport,
)
from chittyos.chain.verify import check_log_limits, verify_facts
from chittyos.chain.verify import verify_log as recompute_log
from chittyos.db.models import ChainFact, utcnow
from chittyos.db.uow import UnitOfWork
from chittyos.errors import (
    ChittyError,
    ConfigurationError,
    IntegrityError,
    InvalidInput,
    NotFound,
    ProofRejected,
)

__all__ = [
    "KEEP_SCAN_MAX",
    "NOT_APPLICABLE",
    "ChainLog",
    "CheckpointFailure",
    "FactCheck",
    "Keep",
    "NotApplicable",
    "Progress",
    "SignatureCheck",
]

log = structlog.get_logger("chittyos.chain")

_TURN_WAIT_S = 0.25
"""How long an append waits for the previous append of this process to finish before going
ahead without a guess. Bounded because the caller's transaction may hold the log lock already
(a second append in one transaction) while the append ahead of it waits for that lock."""
_TAIL_PAGE = 8192
"""Leaves per read transaction when a checkpoint checks the tree added since the last one."""
_TURN_MAX_FACTS = 16
"""Appends of more facts than this do not wait for their turn (see ``ChainLog._take_turn``)."""
_GROUP_MAX_FACTS = 64
"""Most facts one autocommit statement writes for queued standalone appends (``append_now``);
a larger append goes alone. Grouping pays for small appends (one round trip for many); for
large ones it only grows a statement whose fact-id lookup the planner may then turn into a
scan of the facts table (seen at 200 ids on a freshly filled table)."""
_KEEP_READ_PAGE = 200
"""Rows per read transaction of a query with ``keep`` (see ``ChainLog.query``)."""
KEEP_SCAN_MAX = 1000
"""Default bound on the matching rows one query with ``keep`` examines (``ChainLog.query``):
each may cost a gpg call, so a call stays within seconds whatever ``offset`` asks for."""

@dataclass(frozen=True)
class CheckpointFailure:
    """How the log's last checkpoint attempt failed: when, and why: the refusal's message, or
    for any other error its type (its message, which may quote the database, is only in the
    server log: ``chain checkpoint failed``)."""

    at: datetime
    error: str


FactCheck = Callable[[FactRecord], Awaitable["str | NotApplicable | None"]]
"""An extra per-fact check for ``verify``: None when it holds, ``NOT_APPLICABLE`` when it has
nothing to check on that fact, else what failed."""
SignatureCheck = Callable[[Mapping[str, Any]], Awaitable["str | None"]]
"""The OpenPGP signature check of ``verify_log``: a signed fact's stored fields (``FACT_FIELDS``
names) -> None when its signature verifies, else what failed."""
Keep = Callable[[FactRecord], Awaitable[bool]]
"""A filter of ``ChainLog.query`` that the database cannot apply (a signature check): whether
to keep a matching fact."""
Progress = Callable[[int, int], Any]
"""``(leaves done, tree size)``; may return an awaitable (MCP progress notifications)."""


class ChainLog:
    """The append-only log. Build it in ``app.py`` (no I/O here); ``signer`` is the log key,
    whose name is the checkpoint origin (``keys.load_or_create_log_key``)."""

    def __init__(
        self,
        *,
        uow: UnitOfWork,
        signer: NoteSigner,
        checkpoint_every: int = 1000,
        checkpoint_interval_s: float = 60.0,
        page_size_max: int = 500,
        keep_scan_max: int = KEEP_SCAN_MAX,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._uow = uow
        self._signer = signer
        self._verifier = signer.verifier()
        self._every = checkpoint_every
        self._interval = checkpoint_interval_s
        self._page_max = page_size_max
        check_log_limits(keep_scan_max=keep_scan_max)
        self._keep_scan_max = keep_scan_max
        self._clock = clock
        self._sign_lock = anyio.Lock()
        self._since_signed = 0  # leaves appended by this process since it last signed (a hint)
        self._due = anyio.Event()
        self._hint: tuple[int, bytes] | None = None  # (size, peaks) of the head this process left
        self._turn = anyio.Lock()  # see _take_turn
        self._turn_wait_s = _TURN_WAIT_S
        self._inflight = 0  # appends of this log under way in this process
        self._queue: deque[_Waiting] = deque()  # standalone appends waiting (see _append_alone)
        self._leading = False  # one of them is writing groups
        self.checkpoint_failure: CheckpointFailure | None = None
        """Set when the last checkpoint attempt (background or asked for) failed, until one succeeds."""

    @property
    def origin(self) -> str:
        return self._signer.name

    @property
    def verifier(self) -> NoteVerifier:
        """The log's public key, for ``open_checkpoint`` / ``verify_tlog_proof``."""
        return self._verifier

    @property
    def vkey(self) -> str:
        """The verifier key text to publish: ``origin+keyid+base64(0x01 || public key)``."""
        return self._verifier.to_vkey()

    # -- writing ------------------------------------------------------------------------------

    async def append(self, session: AsyncSession, facts: Sequence[Fact]) -> list[AppendedFact]:
        """Append ``facts`` in the caller's transaction; their places, in the order given.

        A fact already in the log (same fact id) is not appended again: its place comes back with
        ``existed=True``. The log lock is held from the index reservation to the caller's commit,
        so call this as late in the transaction as possible. Raises ``InvalidInput`` for a
        non-Fact, ``IntegrityError`` for a fork or a missing stored node, ``ConfigurationError``
        when the database's log has another origin.
        """
        unique = _unique(facts)
        if not unique:
            return []
        # PostgreSQL: this process's appends take turns, so each can guess the head the previous
        # one left and write it with the statement that takes the lock (one round trip).
        turn = store.is_postgres(session) and await self._take_turn(len(unique))
        self._inflight += 1
        try:
            guess = _leaves(*self._hint, list(unique.values())) if turn and self._hint else None
            self._hint = None  # until this append has placed its leaves
            placed, self._hint = await self._place(session, unique, guess)
        finally:
            self._inflight -= 1
            if turn:
                self._turn.release()
        return _appended(facts, placed)

    async def _take_turn(self, batch: int) -> bool:
        """Whether this append got its turn (then it guesses; release ``self._turn`` after).

        A small batch waits for the append ahead of it, at most ``_TURN_WAIT_S``. A large one
        takes its turn only when no other append of this process is under way: its rows are
        costly to compute and send for nothing when the guess is wrong, and its extra round
        trip is shared by many facts anyway; otherwise it goes straight to the database lock.
        """
        if batch > _TURN_MAX_FACTS and self._inflight:
            return False
        try:
            self._turn.acquire_nowait()
            return True
        except anyio.WouldBlock:
            if batch > _TURN_MAX_FACTS:
                return False
        with anyio.move_on_after(self._turn_wait_s):
            await self._turn.acquire()
            return True
        return False

    async def append_now(self, facts: Sequence[Fact]) -> list[AppendedFact]:
        """``append`` in a transaction of its own, committed on return (a standalone tool call).

        PostgreSQL, when this process knows the head: the guessed leaves go in one autocommit
        statement, one round trip in all (a transaction would add BEGIN and COMMIT), and the
        standalone appends that arrive while one is in flight go together in the next (group
        commit: each caller still gets its own places, and returns once they are committed).
        When the guess does not hold (another process appended, a fact is stored already, a
        conflict) that statement writes nothing and each of its appends runs as ``append`` does,
        in a transaction of its own.
        """
        unique = _unique(facts)
        if not unique:
            return []
        placed = await self._append_alone(unique)
        if placed is not None:
            return _appended(facts, placed)
        try:
            async with self._writing() as session:
                return await self.append(session, facts)
        except _Conflict:
            # PostgreSQL reads which facts are stored in the statement that waits for the lock,
            # so a fact that the holder it waited for committed looks new (see
            # ``store.lock_head``). The same fact sent twice at once is no fork: once more, in a
            # new transaction, it is found stored. A real conflict is refused again.
            async with self._writing() as session:
                return await self.append(session, facts)

    async def _append_alone(self, unique: dict[str, Fact]) -> _Placed | None:
        """The places of ``unique``, written with other standalone appends in one autocommit
        statement; None, with nothing written, when that could not be done.

        The appends queue; one of them leads: it writes groups from the front of the queue until
        its own is written, then hands the lead to the first one still waiting.
        """
        # The head is known, or will be when the append under way is written.
        if not (self._uow.is_postgres and (self._hint or self._leading)):
            return None
        me = _Waiting(unique)
        self._queue.append(me)
        if self._leading:
            try:
                await me.woken.wait()
            except BaseException:  # cancelled while waiting: out of the queue, lead passed on
                if me in self._queue:
                    self._queue.remove(me)
                if me.woken.is_set() and not me.done:
                    self._pass_lead()
                raise
            if me.done:
                return me.placed
        self._leading = True  # first in, or handed the lead
        try:
            while not me.done:
                await self._write_group(self._take_group())
        finally:
            self._pass_lead()
        return me.placed

    def _take_group(self) -> list[_Waiting]:
        """The queue's first appends, in order, while their facts are disjoint and at most
        ``_GROUP_MAX_FACTS`` in all (always at least one)."""
        group = [self._queue.popleft()]
        ids = set(group[0].facts)
        while self._queue:
            nxt = self._queue[0].facts
            if len(ids) + len(nxt) > _GROUP_MAX_FACTS or not ids.isdisjoint(nxt):
                break
            ids.update(nxt)
            group.append(self._queue.popleft())
        return group

    def _pass_lead(self) -> None:
        if self._queue:
            self._queue[0].woken.set()  # it leads now (``_leading`` stays set)
        else:
            self._leading = False

    async def _write_group(self, group: list[_Waiting]) -> None:
        """One autocommit statement for ``group``; every member is done after it, with its
        places or (nothing written) None."""
        placed: _Placed | None = None
        try:
            if not await self._take_turn(len(group[0].facts)):  # a group is as urgent as its lead
                return
            self._inflight += 1
            try:
                if self._hint is None:  # the append ahead of this one failed
                    return
                merged = [fact for waiting in group for fact in waiting.facts.values()]
                guess = _leaves(*self._hint, merged)
                self._hint = None
                with anyio.CancelScope(shield=True):  # see _writing
                    async with self._uow.postgres_autocommit() as raw:
                        try:
                            locked = await store.pg_lock_head(
                                raw, [f.fact_id for f in merged], guess=guess, origin=self.origin, now=self._clock()
                            )
                        except psycopg.IntegrityError:
                            return  # each append in a transaction of its own finds or names it
                if locked is not None and locked.written:
                    placed = _Placed({})
                    self._hint = self._placed(placed, guess)
            finally:
                self._inflight -= 1
                self._turn.release()
        finally:
            for waiting in group:
                waiting.placed, waiting.done = placed, True
                waiting.woken.set()

    async def _place(
        self, session: AsyncSession, unique: dict[str, Fact], guess: store.Leaves | None
    ) -> tuple[_Placed, tuple[int, bytes] | None]:
        """Lock, then write the new facts unless the guess was written already; the places of
        ``unique`` and the head after them (the next guess; None when nothing was appended)."""
        now = self._clock()
        ids = list(unique)
        with _conflicts(guess):
            locked = await store.lock_head(session, ids, guess=guess, origin=self.origin, now=now)
        if locked is None:
            await store.ensure_head(session, self.origin, now)
            locked = await store.lock_head(session, ids)
            assert locked is not None
        self._check_origin(locked.origin)
        placed = _Placed(locked.existing)
        leaves = guess if locked.written else None
        if leaves is None:
            new = [fact for fact_id, fact in unique.items() if fact_id not in placed]
            if not new:
                return placed, None  # peaks read, not checked: no guess from them
            leaves = _leaves(locked.tree_size, locked.peaks, new)
            # The peaks the new nodes hash with must be the stored nodes (PostgreSQL: every peak,
            # since the head computed here is the next guess, which is not checked again).
            check = _peak_checks(locked.tree_size, locked.peaks, len(new), every=store.is_postgres(session))
            with _conflicts(leaves):
                written = await store.write_leaves(session, locked, leaves, now=now, check=check)
            if not written:
                raise await self._bad_peak(session, locked.tree_size, check)
        return placed, self._placed(placed, leaves)

    def _placed(self, placed: _Placed, leaves: store.Leaves) -> tuple[int, bytes]:
        """Count ``leaves`` as written (in ``placed`` and towards the next checkpoint); the head
        after them."""
        placed.update((row[0], row[1]) for row in leaves.facts)
        self._since_signed += len(leaves.facts)
        if self._since_signed >= self._every:
            self._due.set()
        return leaves.tree_size, leaves.peaks

    @staticmethod
    async def _bad_peak(
        session: AsyncSession, size: int, check: Sequence[tuple[int, int, bytes]]
    ) -> IntegrityError:
        """The refusal of an append whose head peaks (``check``) are not the stored nodes."""
        stored = await store.nodes(session, [(level, index) for level, index, _ in check])
        for level, index, peak in check:
            if stored.get((level, index)) != peak:
                have = stored.get((level, index))
                return IntegrityError(
                    f"chain: the head's peak for node (level {level}, index {index}) of the tree of size {size} "
                    f"is {peak.hex()}, the stored node is {have.hex() if have else 'missing'}; refusing to append "
                    "(the head row or that stored node was changed: run `chittyos chain verify`)"
                )
        return IntegrityError(
            f"chain: the head's peaks of the tree of size {size} changed while appending; refusing to append "
            "(run `chittyos chain verify`)"
        )

    # -- transactions -------------------------------------------------------------------------

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A read transaction that a cancellation does not cut short (see ``_writing``)."""
        with anyio.CancelScope(shield=True):
            async with self._uow.read() as session:
                yield session

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncSession]:
        # Shielded: cancelled half-way, a session cannot roll back (every await in a cancelled
        # anyio scope raises again) and its connection would stay checked out holding its locks
        # (SQLite: the database write lock). What runs inside takes milliseconds.
        with anyio.CancelScope(shield=True):
            async with self._uow.begin() as session:
                yield session

    # -- checkpoints --------------------------------------------------------------------------

    async def checkpoint(self) -> SignedCheckpoint:
        """The signed checkpoint of the committed tree, signing one if the log grew since the last
        (``_checkpoint``); ``checkpoint_failure`` records whether this attempt failed."""
        try:
            signed = await self._checkpoint()
        except Exception as exc:
            why = str(exc) if isinstance(exc, ChittyError) else f"{type(exc).__name__} (see the server log)"
            self.checkpoint_failure = CheckpointFailure(at=utcnow(), error=why)
            # Logged here, whoever asked (the checkpointer, a proof, a verify): /health points here.
            if isinstance(exc, ChittyError):
                log.error("chain checkpoint refused", error=str(exc))
            else:
                first = (str(exc).strip().splitlines() or [""])[0][:300]
                log.error("chain checkpoint failed", error=f"{type(exc).__name__}: {first}")
            raise
        self.checkpoint_failure = None
        return signed

    async def _checkpoint(self) -> SignedCheckpoint:
        """See ``checkpoint``.

        Steps: 1. read the head (size n, peaks) and the last signed checkpoint (size m); 2. check
        the tree added since m against the stored data (``_check_tail``: the head's peaks are the
        stored root nodes of n, every node completed since m is the hash of its stored children
        and every leaf since m the leaf hash of its fact's stored fields), in read transactions,
        O(n - m); 3. one signer at a time (advisory lock on PostgreSQL, BEGIN IMMEDIATE on
        SQLite): the last signed checkpoint must open with the log key and match its row, and a
        consistency proof from stored nodes must take its root to the root of n (RFC 9162
        §2.1.4.2); 4. sign n and store. Raises ``IntegrityError`` (loudly, nothing signed) when 2
        or 3 fails or the last checkpoint is beyond the log.
        """
        async with self._sign_lock:
            # 1.
            async with self.reading() as session:
                head = await store.head(session)
                latest = await store.latest_checkpoints(session, 1)
            size, origin, peaks = head if head is not None else (0, self.origin, b"")
            if head is not None:
                self._check_origin(origin)
            checked_from = latest[0].tree_size if latest else 0
            if checked_from > size:
                raise IntegrityError(f"chain: checkpoint at size {checked_from} is beyond the log's size {size}")
            # 2. (nothing to sign when the log did not grow: step 3 returns the last checkpoint)
            tops = await self._check_tail(checked_from, size, peaks) if checked_from < size else {}
            async with self._writing() as session:
                await store.lock_checkpoints(session)
                now_head = await store.head(session)
                now_size = 0 if now_head is None else now_head[0]
                latest = await store.latest_checkpoints(session, 1)
                last = latest[0] if latest else None
                if last is not None and last.tree_size >= size:
                    if last.tree_size > now_size:
                        raise IntegrityError(
                            f"chain: checkpoint at size {last.tree_size} is beyond the log's size {now_size}"
                        )
                    # Signed meanwhile (another process), or no growth: handed out as the log's
                    # newest checkpoint, so it must still open (a changed row raises).
                    self.open_checkpoint(last)
                    return self.checkpoint_view(last)
                # 3.
                last_size = 0 if last is None else last.tree_size
                if last_size < checked_from:
                    raise IntegrityError(
                        f"chain: the checkpoint at size {checked_from} disappeared while signing; refusing "
                        "to sign (run `chittyos chain verify`)"
                    )
                last_root = None if last is None else self.open_checkpoint(last).root_hash
                coords = root_nodes(size)
                if last_size:
                    coords += consistency_proof_nodes(last_size, size)
                nodes = await store.nodes(session, coords)
                if any(nodes.get(node) != value for node, value in tops.items()):
                    raise IntegrityError(
                        f"chain: the root nodes of size {size} changed while they were checked; refusing to "
                        "sign (run `chittyos chain verify`)"
                    )
                root = _root(size, nodes)
                if last_root is not None and last_size:
                    try:
                        proof = consistency_proof(last_size, size, nodes)
                        verify_consistency(last_size, size, proof, last_root, root)
                    except (InvalidInput, ProofRejected) as exc:
                        raise IntegrityError(
                            f"chain: the tree of size {size} is not consistent with the checkpoint signed at "
                            f"size {last_size}; refusing to sign: {exc}"
                        ) from exc
                # 4.
                now = self._clock()
                note = sign_checkpoint(Checkpoint(self.origin, size, root), self._signer)
                await store.insert_checkpoint(session, size, root, note, now)
                stored = await store.checkpoint_at(session, size)
        self._since_signed = 0
        log.info("chain checkpoint signed", tree_size=size, root=root.hex())
        assert stored is not None
        return self.checkpoint_view(stored)

    async def _check_tail(self, last_size: int, size: int, peaks: bytes) -> dict[NodeId, bytes]:
        """Check the tree of ``size`` leaves beyond the last signed checkpoint (``last_size``)
        against what is stored, before it is signed; returns the stored root nodes of ``size``.

        * ``peaks`` (the head's) are the stored root nodes ``root_nodes(size)``;
        * each leaf ``i`` in ``[last_size, size)`` has a fact row whose fields (recomputed RFC 8785
          leaf) hash to its id and to its stored leaf hash, and node (0, i) is that leaf hash;
        * each node completed since ``last_size`` is ``H(0x01 || left || right)`` of its stored
          children (a left child from before ``last_size`` is a peak of the signed tree, which
          the consistency proof pins).

        O(size - last_size): pages of ``_TAIL_PAGE`` leaves, each in a read transaction of its own
        (rows at those indices never change, so no lock is held; on SQLite writers go on).
        Raises ``IntegrityError`` naming the first node, index or peak that disagrees.
        """
        coords = root_nodes(size)
        async with self.reading() as session:
            tops = await store.nodes(session, coords)
        if len(peaks) != HASH_SIZE * len(coords):
            raise _refuse(
                size,
                f"the head's peaks are {len(peaks)} bytes, a tree of size {size} has {len(coords)} peaks of "
                f"{HASH_SIZE}",
            )
        for k, node in enumerate(coords):
            if node not in tops:
                raise _refuse(size, f"root node (level {node[0]}, index {node[1]}) is not stored")
            if peaks[k * HASH_SIZE : (k + 1) * HASH_SIZE] != tops[node]:
                raise _refuse(
                    size,
                    f"the head's peak {k} ({peaks[k * HASH_SIZE : (k + 1) * HASH_SIZE].hex()}) is not the stored "
                    f"node (level {node[0]}, index {node[1]}) ({tops[node].hex()})",
                )
        for begin in range(last_size, size, _TAIL_PAGE):
            end = min(begin + _TAIL_PAGE, size)
            levels = scan.completed_ranges(begin, end)
            # Each level's nodes from the left child of the first node completed one level up.
            wanted = [
                (level, min(first, 2 * levels[level + 1][1]) if level + 1 < len(levels) else first, last)
                for level, first, last in levels
            ]
            async with self.reading() as session:
                rows = await scan.read_rows(session, begin, end)
                nodes = await store.node_ranges(session, wanted)
            _check_tail_page(size, begin, end, rows, levels, nodes)
        return tops

    async def latest_checkpoint(self) -> SignedCheckpoint | None:
        """The newest stored checkpoint (signs nothing); None before the first."""
        async with self.reading() as session:
            rows = await store.latest_checkpoints(session, 1)
        return self.checkpoint_view(rows[0]) if rows else None

    async def run_checkpointer(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Sign checkpoints in the background until cancelled: every ``checkpoint_interval_s``
        when the log grew, sooner once ``checkpoint_every`` leaves were appended here.

        A checkpoint that cannot be signed is logged as an error each time (the log stays
        unsigned beyond its last checkpoint, every proof asked for fails loudly, and
        ``checkpoint_failure`` says so until an attempt succeeds); the loop goes on.
        """
        task_status.started()
        while True:
            with anyio.move_on_after(self._interval):
                await self._due.wait()
            self._due = anyio.Event()
            try:
                await self.checkpoint()  # its transaction is shielded from cancellation
            except Exception:  # logged by checkpoint(); a dropped connection must not stop the server
                pass

    def open_checkpoint(self, row: Any) -> Checkpoint:
        """Open a stored checkpoint row ``(tree_size, root_hash, note, ...)`` with the log key and
        check that the note says what the row says. Raises ``IntegrityError`` naming the size."""
        size, root, note = row[0], bytes(row[1]), row[2]
        try:
            checkpoint = open_checkpoint(note, self._verifier, origin=self.origin)
        except ProofRejected as exc:
            raise IntegrityError(f"chain: checkpoint at size {size} does not verify: {exc}") from exc
        if checkpoint.tree_size != size or checkpoint.root_hash != root:
            raise IntegrityError(
                f"chain: checkpoint at size {size}: its signed note says size {checkpoint.tree_size} "
                f"root {checkpoint.root_hash.hex()}, the row says root {root.hex()}"
            )
        return checkpoint

    def checkpoint_view(self, row: Any) -> SignedCheckpoint:
        """A stored checkpoint row ``(tree_size, root_hash, note, signed_at)`` as handed out."""
        return SignedCheckpoint(
            origin=self.origin, tree_size=row[0], root_hash=bytes(row[1]).hex(), note=row[2], signed_at=row[3]
        )

    def _check_origin(self, origin: str) -> None:
        if origin != self.origin:
            raise ConfigurationError(
                f"CHITTY_LOG_ORIGIN: this database's log has origin {origin!r}, the log key is for "
                f"{self.origin!r}; set CHITTY_LOG_ORIGIN={origin}"
            )

    # -- proofs -------------------------------------------------------------------------------

    async def get(self, fact_id: str) -> FactRecord:
        """One stored fact. Raises ``InvalidInput`` / ``NotFound``."""
        key = parse_fact_id(fact_id)
        async with self.reading() as session:
            rows = await store.facts_by_id(session, [key])
        if not rows:
            raise NotFound("fact", key)
        return store.record_from_row(rows[0])

    async def inclusion_proof(self, fact_id: str) -> FactProof:
        """Proof that the fact is in the log, against the newest signed checkpoint (one is signed
        when none covers the fact yet). The proof is checked before it is returned.

        Raises ``InvalidInput`` / ``NotFound``; ``IntegrityError`` when the stored fact, nodes or
        checkpoint do not verify (a proof of tampered data is never handed out).
        """
        key = parse_fact_id(fact_id)
        async with self.reading() as session:
            rows = await store.facts_by_id(session, [key])
            if not rows:
                raise NotFound("fact", key)
            record = store.record_from_row(rows[0])
            latest = await store.latest_checkpoints(session, 1)
            covering = latest[0] if latest and latest[0].tree_size > record.leaf_index else None
            if covering is not None:
                nodes = await store.nodes(
                    session, inclusion_proof_nodes(record.leaf_index, covering.tree_size)
                )
        if covering is None:
            signed = await self.checkpoint()
            async with self.reading() as session:
                covering = await store.checkpoint_at(session, signed.tree_size)
                assert covering is not None
                nodes = await store.nodes(
                    session, inclusion_proof_nodes(record.leaf_index, covering.tree_size)
                )
        checkpoint = self.open_checkpoint(covering)
        leaf = record.leaf_bytes()
        leaf_hash = _check_record(record, leaf)
        try:
            path = inclusion_proof(record.leaf_index, checkpoint.tree_size, nodes)
            verify_inclusion(leaf_hash, record.leaf_index, checkpoint.tree_size, path, checkpoint.root_hash)
        except (InvalidInput, ProofRejected) as exc:
            raise IntegrityError(
                f"chain: fact {key} at index {record.leaf_index} is not included in the checkpoint at size "
                f"{checkpoint.tree_size}: {exc}"
            ) from exc
        signed_cp = self.checkpoint_view(covering)
        text = format_tlog_proof(record.leaf_index, path, signed_cp.note, extra=leaf)
        return FactProof(
            fact=record,
            checkpoint=signed_cp,
            inclusion=tuple(h.hex() for h in path),
            tlog_proof=text,
            vkey=self.vkey,
        )

    async def consistency(self, old_size: int, new_size: int | None = None) -> ConsistencyProof:
        """RFC 9162 proof that the tree of ``new_size`` (default: the newest checkpoint, signed on
        demand) extends the tree of ``old_size``. Requires 0 < old_size <= new_size <= tree size.
        The proof is checked before it is returned (``IntegrityError`` otherwise)."""
        if new_size is None:
            new_size = (await self.checkpoint()).tree_size
        for name, value in (("old_size", old_size), ("new_size", new_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInput(name, "must be a positive integer (a tree size)", value)
        if old_size > new_size:
            raise InvalidInput("old_size", f"must be <= new_size={new_size}", old_size)
        async with self.reading() as session:
            head = await store.head(session)
            size = 0 if head is None else head[0]
            if new_size > size:
                raise InvalidInput("new_size", f"must be <= the log's tree size {size}", new_size)
            coords = root_nodes(old_size) + root_nodes(new_size) + consistency_proof_nodes(old_size, new_size)
            nodes = await store.nodes(session, coords)
            row = await store.checkpoint_at(session, new_size)
        old_root, new_root = _root(old_size, nodes), _root(new_size, nodes)
        try:
            proof = consistency_proof(old_size, new_size, nodes)
            verify_consistency(old_size, new_size, proof, old_root, new_root)
        except (InvalidInput, ProofRejected) as exc:
            raise IntegrityError(
                f"chain: consistency {old_size} -> {new_size} does not verify: {exc}"
            ) from exc
        checkpoint = None
        if row is not None:
            if self.open_checkpoint(row).root_hash != new_root:
                raise IntegrityError(
                    f"chain: the checkpoint at size {new_size} does not match the stored tree"
                )
            checkpoint = self.checkpoint_view(row)
        return ConsistencyProof(
            old_size=old_size,
            new_size=new_size,
            old_root=old_root.hex(),
            new_root=new_root.hex(),
            proof=tuple(h.hex() for h in proof),
            checkpoint=checkpoint,
        )

    # -- reading ------------------------------------------------------------------------------

    async def query(
        self,
        *,
        subject: str | None = None,
        predicate: str | None = None,
        object: str | None = None,
        source: str | None = None,
        execution_id: str | None = None,
        evidence_id: str | None = None,
        since: datetime | int | None = None,
        until: datetime | int | None = None,
        limit: int = 50,
        offset: int = 0,
        keep: Keep | None = None,
    ) -> FactPage:
        """Facts matching every given filter exactly, in log order. ``since`` / ``until`` bound the
        fact timestamp (inclusive / exclusive; aware datetimes or epoch ms). Raises InvalidInput.

        ``keep`` (e.g. "its OpenPGP signature verifies"): only the matching facts it keeps count,
        for ``offset`` and ``limit`` alike, so a page holds up to ``limit`` kept facts and the
        next page is at ``offset + len(facts)``. The matching rows are read in pages of
        ``_KEEP_READ_PAGE``, each in a read transaction of its own (no connection is held while
        ``keep`` runs; the log only grows at its end, so the order is stable), and ``keep`` is
        awaited one fact at a time, until ``limit + 1`` facts are kept or the rows run out. At
        most ``keep_scan_max`` matching rows are examined per call (the ones skipped for
        ``offset`` included): when that bound stops the page short, it holds the kept facts
        found so far with ``has_more=True`` (never an empty page that says there is more);
        when it is reached before ``offset`` kept facts were skipped, ``InvalidInput`` names
        ``offset`` (narrow the query: subject, source, time).
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= self._page_max:
            raise InvalidInput(
                "limit", f"must be between 1 and {self._page_max} (CHITTY_PAGE_SIZE_MAX)", limit
            )
        if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= 2**31 - 1:
            raise InvalidInput("offset", "must be an integer from 0 to 2147483647", offset)
        columns = ChainFact.__table__.c
        conditions = []
        for name, value in (
            ("subject", subject),
            ("predicate", predicate),
            ("object", object),
            ("source", source),
            ("execution_id", execution_id),
            ("evidence_id", evidence_id),
        ):
            if value is not None:
                check_field(name, value)
                conditions.append(columns[name] == value)
        if since is not None:
            conditions.append(columns.timestamp >= _ms("since", since))
        if until is not None:
            conditions.append(columns.timestamp < _ms("until", until))
        if keep is not None:
            return await self._query_kept(conditions, keep, limit=limit, offset=offset)
        async with self.reading() as session:
            rows = await store.query_facts(session, conditions, limit=limit + 1, offset=offset)
        return FactPage(
            facts=tuple(store.record_from_row(r) for r in rows[:limit]),
            offset=offset,
            limit=limit,
            has_more=len(rows) > limit,
        )

    async def _query_kept(self, conditions: list[Any], keep: Keep, *, limit: int, offset: int) -> FactPage:
        """``query`` with ``keep``: see there. Reads by leaf index (keyset), not by row offset."""
        columns = ChainFact.__table__.c
        kept: list[FactRecord] = []
        skipped = examined = 0
        after = -1  # the leaf index of the last row examined
        while len(kept) <= limit:
            budget = self._keep_scan_max - examined
            if budget <= 0:
                if not kept:
                    raise InvalidInput(
                        "offset",
                        f"a filtered query examines at most {self._keep_scan_max} matching facts per call; "
                        f"they held {skipped} of the {offset} kept facts to skip and none after them: "
                        "narrow it (subject, predicate, source, start_time/end_time)",
                        offset,
                    )
                return FactPage(facts=tuple(kept), offset=offset, limit=limit, has_more=True)
            # One row past the bound tells a bound reached from the rows running out with it.
            want = min(_KEEP_READ_PAGE, budget + 1)
            async with self.reading() as session:
                rows = await store.query_facts(
                    session, [*conditions, columns.leaf_index > after], limit=want, offset=0
                )
            for row in rows[:budget]:
                record = store.record_from_row(row)
                examined += 1
                after = record.leaf_index
                if not await keep(record):
                    continue
                if skipped < offset:
                    skipped += 1
                    continue
                kept.append(record)
                if len(kept) > limit:
                    break
            if len(rows) < want:
                break  # the matching rows ran out
        return FactPage(facts=tuple(kept[:limit]), offset=offset, limit=limit, has_more=len(kept) > limit)

    # -- verification (verify.py) -------------------------------------------------------------

    async def verify(
        self, fact_ids: Sequence[str], *, checks: Mapping[str, FactCheck] | None = None
    ) -> VerifyReport:
        """Check facts against the newest signed checkpoint; see ``verify.verify_facts``."""
        return await verify_facts(self, fact_ids, checks=checks or {})

    async def verify_log(
        self,
        progress: Progress | None = None,
        *,
        signatures: SignatureCheck | None = None,
        page_size: int = 8192,
        max_findings: int = 10_000,
    ) -> LogReport:
        """Recompute the whole log from its facts; see ``verify.verify_log``. With ``signatures``
        (``checks.stored_signature_check``; ``ChainService.verify_log`` passes it), the OpenPGP
        signature of every signed fact is checked too."""
        return await recompute_log(
            self, progress=progress, signatures=signatures, page_size=page_size, max_findings=max_findings
        )


def _unique(facts: Sequence[Fact]) -> dict[str, Fact]:
    """``{fact id: fact}`` of ``facts``, first of each id kept, in order. Raises ``InvalidInput``
    for a non-Fact."""
    unique: dict[str, Fact] = {}
    for n, fact in enumerate(facts):
        if not isinstance(fact, Fact):
            raise InvalidInput(f"facts[{n}]", "must be a chittyos.chain.Fact", type(fact).__name__)
        unique.setdefault(fact.fact_id, fact)
    return unique


def _appended(facts: Sequence[Fact], placed: _Placed) -> list[AppendedFact]:
    return [AppendedFact(i, placed[i], i in placed.existed) for i in (f.fact_id for f in facts)]


@dataclass(eq=False)
class _Waiting:
    """A standalone append in the queue (``ChainLog._append_alone``)."""

    facts: dict[str, Fact]
    woken: anyio.Event = field(default_factory=anyio.Event)
    done: bool = False
    placed: _Placed | None = None
    """Its places once ``done``; None when they were not written (go on in a transaction)."""


class _Placed(dict[str, int]):
    """``{fact id: leaf index}``; ``existed`` holds the ids that were stored before this append."""

    __slots__ = ("existed",)

    def __init__(self, existing: Mapping[str, int]) -> None:
        super().__init__(existing)
        self.existed = frozenset(existing)


def _leaves(size: int, peaks: bytes, facts: Sequence[Fact]) -> store.Leaves:
    """The rows that append ``facts`` to a tree of ``size`` leaves whose peaks
    (``root_nodes(size)``'s hashes, largest subtree first) are ``peaks``. Pure.

    Each leaf at index i completes (0, i) and one node per trailing one-bit of i, hashing with
    the lowest peak (the CompactRange step, RFC 9162 node hashes). Raises ``IntegrityError`` when
    ``peaks`` is not one hash per peak of a tree of ``size``.
    """
    count = len(root_nodes(size))
    if len(peaks) != HASH_SIZE * count:
        raise IntegrityError(
            f"chain: the head's peaks are {len(peaks)} bytes, a tree of size {size} has "
            f"{count} peaks of {HASH_SIZE}; refusing to append (run `chittyos chain verify`)"
        )
    stack = [peaks[n : n + HASH_SIZE] for n in range(0, len(peaks), HASH_SIZE)]
    fact_rows: list[tuple[Any, ...]] = []
    node_rows: list[tuple[int, int, bytes]] = []
    for index, fact in enumerate(facts, size):
        acc = fact.leaf_hash
        fact_rows.append(
            (
                fact.fact_id,
                index,
                acc,
                fact.subject,
                fact.predicate,
                fact.object,
                fact.source,
                fact.timestamp,
                fact.execution_id,
                fact.evidence_id,
                fact.signer,
                fact.signature,
                "unverified" if fact.signature else "unsigned",
            )
        )
        node_rows.append((0, index, acc))
        level, node = 0, index
        while node & 1:
            acc = node_hash(stack.pop(), acc)
            node >>= 1
            level += 1
            node_rows.append((level, node, acc))
        stack.append(acc)
    return store.Leaves(size, peaks, fact_rows, node_rows, size + len(facts), b"".join(stack))


def _peak_checks(size: int, peaks: bytes, count: int, *, every: bool) -> list[tuple[int, int, bytes]]:
    """``(level, index, hash)`` of the head's peaks (``peaks`` of a tree of ``size``, checked to be
    whole by ``_leaves``) that appending ``count`` leaves hashes with (a peak at level L is
    hashed with once the tree reaches the next multiple of 2**(L+1)), or of ``every`` peak;
    largest first. The append writes only if each is the stored node."""
    out = []
    for k, (level, index) in enumerate(root_nodes(size)):
        if every or (size + count) >> (level + 1) > size >> (level + 1):
            out.append((level, index, peaks[k * HASH_SIZE : (k + 1) * HASH_SIZE]))
    return out


class _Conflict(IntegrityError):
    """An append's rows collided with stored ones (``_conflicts``)."""


@contextmanager
def _conflicts(leaves: store.Leaves | None) -> Iterator[None]:
    """A duplicate key while writing ``leaves`` as ``IntegrityError`` naming their indices."""
    try:
        yield
    except (sa_exc.IntegrityError, psycopg.IntegrityError, sqlite3.IntegrityError) as exc:
        if leaves is None:
            raise
        raise _Conflict(
            f"chain: appending leaves {leaves.base_size}..{leaves.tree_size - 1} conflicts with stored rows "
            f"(the same fact appended concurrently, a fork, or rows changed under the log): "
            f"{type(getattr(exc, 'orig', exc)).__name__}"
        ) from None


def _refuse(size: int, problem: str) -> IntegrityError:
    return IntegrityError(
        f"chain: refusing to sign a checkpoint at size {size}: {problem}; the stored log contradicts "
        "itself (run `chittyos chain verify`)"
    )


def _check_tail_page(
    size: int,
    begin: int,
    end: int,
    rows: Sequence[Any],
    levels: Sequence[tuple[int, int, int]],
    nodes: Mapping[NodeId, bytes | None],
) -> None:
    """``ChainLog._check_tail`` for leaves ``[begin, end)``: ``rows`` are their facts
    (``scan.ROW_COLUMNS``), ``levels`` ``scan.completed_ranges(begin, end)``, ``nodes`` the stored
    nodes of those levels (with the left children below them; None: not a 32-byte hash)."""
    index = begin
    for row in rows:
        if row[1] != index:
            raise _refuse(size, f"leaf {index} has no fact row")
        try:
            leaf = canonical_leaf_sorted(row[3:])
        except TypeError as exc:
            raise _refuse(size, f"fact {row[0]} at index {index}: a stored field has the wrong type ({exc})") from None
        recomputed = leaf_hash(leaf)
        if hashlib.sha256(leaf).hexdigest() != row[0] or recomputed != row[2]:
            raise _refuse(size, f"fact {row[0]} at index {index}: its stored fields do not hash to its id and leaf hash")
        if nodes.get((0, index)) != recomputed:
            raise _refuse(size, f"node (level 0, index {index}) is not the leaf hash of the fact at index {index}")
        index += 1
    if index != end:
        raise _refuse(size, f"leaf {index} has no fact row")
    for level, first, last in levels[1:]:
        for i in range(first, last + 1):
            coords = ((level - 1, 2 * i), (level - 1, 2 * i + 1), (level, i))
            left, right, value = (nodes.get(c) for c in coords)
            if left is None or right is None or value is None:
                lv, ix = next(c for c in coords if nodes.get(c) is None)
                raise _refuse(size, f"node (level {lv}, index {ix}) is missing or not a 32-byte hash")
            if node_hash(left, right) != value:
                raise _refuse(
                    size,
                    f"node (level {level}, index {i}) ({value.hex()}) is not H(0x01 || left || right) of its "
                    f"stored children (level {level - 1}, index {2 * i}) and (level {level - 1}, index {2 * i + 1})",
                )


def _root(size: int, nodes: Mapping[NodeId, bytes]) -> bytes:
    try:
        return root_hash(size, nodes)
    except InvalidInput as exc:
        raise IntegrityError(
            f"chain: the root of size {size} cannot be computed from stored nodes: {exc}"
        ) from exc


def _check_record(record: FactRecord, leaf: bytes) -> bytes:
    """The leaf hash of ``leaf`` after checking the record's id and stored leaf hash agree with it."""
    recomputed = leaf_hash(leaf)
    if hashlib.sha256(leaf).hexdigest() != record.fact_id or recomputed.hex() != record.leaf_hash:
        raise IntegrityError(
            f"chain: fact {record.fact_id} at index {record.leaf_index}: its stored fields do not hash to its "
            "id and leaf hash (the row was changed)"
        )
    return recomputed


def _ms(field: str, value: datetime | int) -> int:
    if isinstance(value, datetime):
        return timestamp_ms(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_MS:
        raise InvalidInput(field, f"must be an aware datetime or epoch milliseconds from 0 to {_MAX_MS}", value)
    return value


_MAX_MS = 2**63 - 1  # the timestamp column is a BIGINT
