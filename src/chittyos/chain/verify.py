"""Verification of ChittyChain as stored: per fact (``verify_facts``) and the whole log (``verify_log``).

Both report every failure as a ``Finding`` naming the check and where (fact, index, node
(level, index), checkpoint size); neither raises for what it finds. They back
``ChainLog.verify`` / ``ChainLog.verify_log``.
"""

from __future__ import annotations

import hashlib
import inspect
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from chittyos.chain import store
from chittyos.chain.facts import canonical_leaf_sorted, parse_fact_id
from chittyos.chain.merkle import (
    EMPTY_ROOT,
    consistency_proof,
    consistency_proof_nodes,
    inclusion_proof,
    inclusion_proof_nodes,
    root_nodes,
    verify_consistency,
    verify_inclusion,
)
from chittyos.chain.note import Checkpoint, open_checkpoint
from chittyos.chain.records import FactVerification, Finding, LogReport, VerifyReport
from chittyos.errors import ChittyError, InvalidInput, ProofRejected

if TYPE_CHECKING:
    from chittyos.chain.log import ChainLog, FactCheck, Progress

__all__ = ["MAX_VERIFY_FACTS", "verify_facts", "verify_log"]

MAX_VERIFY_FACTS = 10_000
"""Facts one ``verify`` call checks at most."""
_ZERO = bytes(32)
_CHUNK = 256  # leaves hashed between two yields: the next page is read meanwhile, a socket read a turn


async def verify_facts(
    chain: ChainLog, fact_ids: Sequence[str], *, checks: Mapping[str, FactCheck]
) -> VerifyReport:
    """Check each fact, and the newest signed checkpoint they are checked against.

    Per fact: 1. it is stored; 2. SHA-256 of its leaf bytes recomputed from the stored fields is
    its id, and SHA-256(0x00 || leaf) its stored leaf hash; 3. its inclusion proof, built from
    stored nodes with the RECOMPUTED leaf hash, verifies against the newest signed checkpoint (one
    is signed first when none covers the fact); 4. each of ``checks`` (``check.<name>``).
    Log: the newest and the previous checkpoint open with the log key and match their rows, and a
    consistency proof from stored nodes takes the previous root to the newest.
    Raises ``InvalidInput`` for malformed ids (none, more than 10000, not 64 hex digits).
    """
    if isinstance(fact_ids, str) or not isinstance(fact_ids, Sequence):
        raise InvalidInput("fact_ids", "must be a list of fact ids", type(fact_ids).__name__)
    ids = list(dict.fromkeys(parse_fact_id(f, f"fact_ids[{n}]") for n, f in enumerate(fact_ids)))
    if not 1 <= len(ids) <= MAX_VERIFY_FACTS:
        raise InvalidInput("fact_ids", f"must name between 1 and {MAX_VERIFY_FACTS} facts", len(ids))
    log_findings: list[Finding] = []
    async with chain.reading() as session:
        records = {r[0]: store.record_from_row(r) for r in await store.facts_by_id(session, ids)}
        latest = await store.latest_checkpoints(session, 2)
    highest = max((r.leaf_index for r in records.values()), default=-1)
    if not latest or latest[0].tree_size <= highest:
        try:
            await chain.checkpoint()
        except ChittyError as exc:
            log_findings.append(
                Finding("checkpoint.signing", f"no checkpoint covering the facts could be signed: {exc}")
            )
        else:
            async with chain.reading() as session:
                latest = await store.latest_checkpoints(session, 2)
    newest = latest[0] if latest else None
    previous = latest[1] if len(latest) > 1 else None
    trusted = _open(chain, newest, log_findings) if newest is not None else None
    if newest is None:
        log_findings.append(Finding("checkpoint.missing", "the log has no signed checkpoint"))
    earlier = _open(chain, previous, log_findings) if previous is not None else None

    coords = []
    if trusted is not None:
        for record in records.values():
            if record.leaf_index < trusted.tree_size:
                coords += inclusion_proof_nodes(record.leaf_index, trusted.tree_size)
        if earlier is not None and earlier.tree_size:
            coords += consistency_proof_nodes(earlier.tree_size, trusted.tree_size)
    async with chain.reading() as session:
        nodes = await store.nodes(session, coords) if coords else {}

    if trusted is not None and earlier is not None and earlier.tree_size:
        try:
            proof = consistency_proof(earlier.tree_size, trusted.tree_size, nodes)
            verify_consistency(
                earlier.tree_size, trusted.tree_size, proof, earlier.root_hash, trusted.root_hash
            )
        except (InvalidInput, ProofRejected) as exc:
            log_findings.append(
                Finding(
                    "checkpoint.consistency",
                    f"checkpoint at size {trusted.tree_size} is not consistent with the one at size "
                    f"{earlier.tree_size} (proof from stored nodes): {exc}",
                    tree_size=trusted.tree_size,
                )
            )

    results = []
    for fact_id in ids:
        record = records.get(fact_id)
        if record is None:
            finding = Finding("fact.missing", f"fact {fact_id} is not in the log", fact_id=fact_id)
            results.append(FactVerification(fact_id, None, (finding,)))
            continue
        found: list[Finding] = []
        where = {"fact_id": fact_id, "leaf_index": record.leaf_index}
        leaf = record.leaf_bytes()
        if hashlib.sha256(leaf).hexdigest() != fact_id:
            found.append(
                Finding(
                    "fact.id",
                    f"fact {fact_id} at index {record.leaf_index}: the stored fields "
                    "hash to another id (the row was changed)",
                    **where,
                )
            )
        leaf_hash = hashlib.sha256(b"\x00" + leaf).digest()
        if leaf_hash.hex() != record.leaf_hash:
            found.append(
                Finding(
                    "fact.leaf_hash",
                    f"fact {fact_id} at index {record.leaf_index}: stored leaf hash "
                    f"{record.leaf_hash} != recomputed {leaf_hash.hex()}",
                    **where,
                )
            )
        if trusted is None:
            found.append(
                Finding(
                    "fact.inclusion",
                    f"fact {fact_id}: no trusted checkpoint to check inclusion against",
                    **where,
                )
            )
        elif record.leaf_index >= trusted.tree_size:
            found.append(
                Finding(
                    "fact.uncovered",
                    f"fact {fact_id} at index {record.leaf_index} is beyond the "
                    f"newest checkpoint (size {trusted.tree_size})",
                    tree_size=trusted.tree_size,
                    **where,
                )
            )
        else:
            try:
                path = inclusion_proof(record.leaf_index, trusted.tree_size, nodes)
                verify_inclusion(leaf_hash, record.leaf_index, trusted.tree_size, path, trusted.root_hash)
            except (InvalidInput, ProofRejected) as exc:
                found.append(
                    Finding(
                        "fact.inclusion",
                        f"fact {fact_id} at index {record.leaf_index} is not "
                        f"included in the checkpoint at size {trusted.tree_size}: {exc}",
                        tree_size=trusted.tree_size,
                        **where,
                    )
                )
        for name, check in checks.items():
            try:
                problem = await check(record)
            except ChittyError as exc:
                problem = str(exc)
            if problem:
                found.append(Finding(f"check.{name}", problem, **where))
        results.append(FactVerification(fact_id, record, tuple(found)))
    return VerifyReport(
        checkpoint=chain.checkpoint_view(newest) if newest is not None else None,
        previous_checkpoint=chain.checkpoint_view(previous) if previous is not None else None,
        facts=tuple(results),
        log_findings=tuple(log_findings),
    )


def _open(chain: ChainLog, row: Any, findings: list[Finding]) -> Checkpoint | None:
    """The checkpoint of a stored row if its note opens with the log key and matches the row."""
    size, root = row[0], bytes(row[1])
    try:
        checkpoint = open_checkpoint(row[2], chain.verifier, origin=chain.origin)
    except ProofRejected as exc:
        findings.append(Finding("checkpoint.signature", f"checkpoint at size {size}: {exc}", tree_size=size))
        return None
    if checkpoint.tree_size != size or checkpoint.root_hash != root:
        findings.append(
            Finding(
                "checkpoint.note",
                f"checkpoint at size {size}: the signed note says size {checkpoint.tree_size} root "
                f"{checkpoint.root_hash.hex()}, the row says root {root.hex()}",
                tree_size=size,
            )
        )
        return None
    return checkpoint


class _Findings:
    def __init__(self, limit: int) -> None:
        self.kept: list[Finding] = []
        self.dropped = 0
        self.counts: Counter[str] = Counter()
        self._limit = limit

    def add(self, finding: Finding) -> None:
        self.counts[finding.check] += 1
        if len(self.kept) < self._limit:
            self.kept.append(finding)
        else:
            self.dropped += 1


async def verify_log(
    chain: ChainLog, *, progress: Progress | None, page_size: int, max_findings: int
) -> LogReport:
    """Recompute the log from its facts, streaming in index order: O(log n) + one page of memory.

    Steps: 1. read the head (size n) and every checkpoint; each must open with the log key, match
    its row and not lie beyond n; 2. page by page (leaf ranges, each read in its own short
    transaction, so writers are not held up, the next page read while this one is hashed):
    indices are contiguous (a gap is reported and the stored level-0 node stands in for the
    missing leaf); each leaf is recomputed from the stored fields and must hash to the fact id and
    the stored leaf hash; the tree is rebuilt over the recomputed leaves as ``CompactRange.append``
    does (unrolled: this loop is the cost of a full verify), every complete subtree it yields
    compared with the stored node (a page's nodes of one level compared at once, then one by one
    only when they differ); at each checkpoint's size the recomputed root must equal the signed
    root; 3. no fact or node lies beyond n, the table holds n facts, and the head's cached peaks
    are the stored root nodes.
    """
    for name, value in (("page_size", page_size), ("max_findings", max_findings)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInput(name, "must be a positive integer", value)
    started = time.perf_counter()
    out = _Findings(max_findings)
    # 1.
    async with chain.reading() as session:
        stored_checkpoints = await store.checkpoints(session)  # first: the head read next only grew
        head = await store.head(session)
    size, origin, _ = head if head is not None else (0, chain.origin, b"")
    if origin != chain.origin:
        out.add(Finding("head.origin", f"the log's origin is {origin!r}, the log key's is {chain.origin!r}"))
    targets: dict[int, bytes] = {}
    for row in stored_checkpoints:
        if row[0] > size:
            out.add(
                Finding(
                    "checkpoint.beyond_head",
                    f"checkpoint at size {row[0]} is beyond the log's size {size}",
                    tree_size=row[0],
                )
            )
        opened: list[Finding] = []
        _open(chain, row, opened)
        for finding in opened:
            out.add(finding)
        targets[row[0]] = bytes(row[1])

    # 2.
    tree = _Recompute(targets, out)
    tree.check_root(0, EMPTY_ROOT)
    leaves = nodes_checked = 0

    async def fetch(begin: int, end: int) -> tuple[list[Any], dict[int, tuple[int, int, bytes]]]:
        async with chain.reading() as session:
            return await store.scan_page(session, begin, end)

    send, receive = anyio.create_memory_object_stream[tuple[int, int, list[Any], dict[int, Any]]](1)

    async def produce() -> None:
        # Reads the next page while this one is hashed (the loop yields every _CHUNK leaves).
        async with send:
            for begin in range(0, size, page_size):
                end = min(begin + page_size, size)
                await send.send((begin, end, *await fetch(begin, end)))

    async with anyio.create_task_group() as tg, receive:
        tg.start_soon(produce)
        async for begin, end, rows, runs in receive:
            tree.start_page(begin, end)
            contiguous = len(rows) == end - begin  # sorted, unique, in [begin, end): no gap
            for at in range(0, len(rows), _CHUNK):
                chunk = rows[at : at + _CHUNK]
                if not (contiguous and tree.fast(chunk)):
                    for row in chunk:
                        if row[1] != tree.size:
                            await tree.gap(chain, row[1], runs)
                        tree.slow(row)
                await anyio.lowlevel.checkpoint()  # other clients, and the next page's query, get a turn
            if tree.size < end:
                await tree.gap(chain, end, runs)
            nodes_checked += await _compare_nodes(chain, begin, end, tree.computed, runs, out)
            leaves += len(rows)
            if progress is not None:
                result = progress(end, size)
                if inspect.isawaitable(result):
                    await result
    # 3. In one snapshot per statement, against the head as it is NOW: appends that committed
    #    during the recompute are not strays (the next verify covers them).
    async with chain.reading() as session:
        stray_facts = await store.stray_facts(session, max_findings + 1)
        stray_nodes = await store.stray_nodes(session, max_findings + 1)
        now_size, now_peaks, count = await store.head_and_count(session)
        peak_nodes = await store.nodes(session, root_nodes(now_size))
    for fact_id, index in stray_facts:
        out.add(
            Finding(
                "index.beyond_head",
                f"fact {fact_id} at index {index} is beyond the log's size {now_size}",
                fact_id=fact_id,
                leaf_index=index,
            )
        )
    for level, index in stray_nodes:
        out.add(
            Finding(
                "node.unexpected",
                f"node (level {level}, index {index}) does not belong to a tree of size {now_size}",
                node=(level, index),
            )
        )
    if count != now_size:
        out.add(Finding("head.size", f"the head says {now_size} leaves, the table holds {count} facts"))
    # The head's peaks are a cache of the stored root nodes (each compared with the recompute above).
    expected_peaks = b"".join(bytes(peak_nodes.get(node, _ZERO)) for node in root_nodes(now_size))
    if now_peaks != expected_peaks:
        out.add(
            Finding(
                "head.peaks",
                f"the head's cached peaks ({len(now_peaks)} bytes) are not the stored root "
                f"nodes of a tree of size {now_size}; appends would compute wrong nodes",
            )
        )
    return LogReport(
        origin=origin,
        tree_size=size,
        root=tree.root().hex(),
        leaves_checked=leaves,
        nodes_checked=nodes_checked,
        checkpoints_checked=len(stored_checkpoints),
        findings=tuple(out.kept),
        findings_dropped=out.dropped,
        seconds=round(time.perf_counter() - started, 3),
        counts=dict(out.counts),
    )


class _Recompute:
    """The tree rebuilt over recomputed leaves: ``CompactRange`` unrolled into the loops that are
    the whole cost of a full verify, keeping per page the nodes each level completed."""

    def __init__(self, targets: Mapping[int, bytes], out: _Findings) -> None:
        self.targets, self.out = targets, out
        self.peaks: list[bytes] = []  # left to right, largest subtree first
        self.size = 0
        self.computed: list[list[bytes]] = []
        self._begin = self._end = 0
        self._level0: dict[int, bytes] | None = None

    def start_page(self, begin: int, end: int) -> None:
        self.computed = [[] for _ in range(64)]
        self._begin, self._end, self._level0 = begin, end, None

    def root(self) -> bytes:
        return _fold(self.peaks) if self.peaks else EMPTY_ROOT

    def check_root(self, at: int, root: bytes) -> None:
        want = self.targets.get(at)
        if want is not None and want != root:
            self.out.add(
                Finding(
                    "checkpoint.root",
                    f"checkpoint at size {at}: signed root {want.hex()} != recomputed root {root.hex()}",
                    tree_size=at,
                )
            )

    def fast(self, rows: list[Any]) -> bool:
        """Leaves ``size .. size + len(rows) - 1``, no gap. False (nothing done) if a stored field
        has the wrong type: the caller takes ``slow`` for them."""
        sha, encode = hashlib.sha256, canonical_leaf_sorted
        try:
            leaves = [encode(row[3:]) for row in rows]
        except TypeError:
            return False
        hashes = [sha(b"\x00" + leaf).digest() for leaf in leaves]
        if hashes != [row[2] for row in rows] or [sha(leaf).hexdigest() for leaf in leaves] != [
            r[0] for r in rows
        ]:
            for row, leaf, leaf_hash in zip(rows, leaves, hashes, strict=True):
                self._check_fact(row, leaf, leaf_hash)
        peaks, computed, targets, size = self.peaks, self.computed, self.targets, self.size
        computed[0].extend(hashes)
        for acc in hashes:
            # CompactRange.append: leaf i completes (0, i) and one node per trailing 1-bit of i.
            i, level = size, 0
            while i & 1:
                acc = sha(b"\x01" + peaks.pop() + acc).digest()
                i >>= 1
                level += 1
                computed[level].append(acc)
            peaks.append(acc)
            size += 1
            if size in targets:
                self.check_root(size, _fold(peaks))
        self.size = size
        return True

    def slow(self, row: Any) -> None:
        """One leaf, its fields taken as they come (wrong types reported, not raised)."""
        try:
            leaf = canonical_leaf_sorted(row[3:])
        except TypeError as exc:
            leaf = repr(row[3:]).encode()
            self.out.add(
                Finding(
                    "fact.id",
                    f"fact {row[0]} at index {row[1]}: a stored field has the wrong type ({exc})",
                    fact_id=row[0],
                    leaf_index=row[1],
                )
            )
        leaf_hash = hashlib.sha256(b"\x00" + leaf).digest()
        self._check_fact(row, leaf, leaf_hash)
        self.add(leaf_hash)

    def add(self, leaf_hash: bytes) -> None:
        acc, size, peaks = leaf_hash, self.size, self.peaks
        self.computed[0].append(acc)
        i, level = size, 0
        while i & 1:
            acc = hashlib.sha256(b"\x01" + peaks.pop() + acc).digest()
            i >>= 1
            level += 1
            self.computed[level].append(acc)
        peaks.append(acc)
        self.size = size + 1
        if self.size in self.targets:
            self.check_root(self.size, _fold(peaks))

    async def gap(self, chain: ChainLog, upto: int, runs: dict[int, tuple[int, int, bytes]]) -> None:
        """Leaves ``size .. upto - 1`` have no fact row: report them, and let the stored leaf
        hashes (level-0 nodes) stand in so that the nodes above are still checked."""
        self.out.add(
            Finding(
                "index.gap", f"leaves {self.size}..{upto - 1} are missing (no fact row)", leaf_index=self.size
            )
        )
        begin, end = self._begin, self._end
        first, count, blob = runs.get(0, (begin, 0, b""))
        while self.size < upto:
            index = self.size
            if first == begin and count == end - begin:
                self.add(blob[(index - begin) * 32 : (index - begin + 1) * 32])
                continue
            if self._level0 is None:
                async with chain.reading() as session:
                    self._level0 = await store.nodes_of_level(session, 0, begin, end - 1)
            self.add(self._level0.get(index, _ZERO))

    def _check_fact(self, row: Any, leaf: bytes, leaf_hash: bytes) -> None:
        if leaf_hash != row[2]:
            self.out.add(
                Finding(
                    "fact.leaf_hash",
                    f"fact {row[0]} at index {row[1]}: stored leaf hash "
                    f"{bytes(row[2]).hex()} != recomputed {leaf_hash.hex()}",
                    fact_id=row[0],
                    leaf_index=row[1],
                )
            )
        if hashlib.sha256(leaf).hexdigest() != row[0]:
            self.out.add(
                Finding(
                    "fact.id",
                    f"fact {row[0]} at index {row[1]}: the stored fields hash to another "
                    "id (the row was changed)",
                    fact_id=row[0],
                    leaf_index=row[1],
                )
            )


def _fold(peaks: list[bytes]) -> bytes:
    """The root over the peaks (``CompactRange.root``)."""
    acc = peaks[-1]
    for peak in reversed(peaks[:-1]):
        acc = hashlib.sha256(b"\x01" + peak + acc).digest()
    return acc


async def _compare_nodes(
    chain: ChainLog,
    begin: int,
    end: int,
    computed: list[list[bytes]],
    runs: dict[int, tuple[int, int, bytes]],
    out: _Findings,
) -> int:
    """Compare the nodes a page completed with the stored ones, a level at a time; one by one only
    for a level that differs, to name each node. Returns how many nodes were compared."""
    checked = 0
    level = 0
    while (end >> level) - 1 >= begin >> level:
        first, last = begin >> level, (end >> level) - 1
        mine = computed[level]
        checked += len(mine)
        stored = runs.get(level)
        if stored != (first, len(mine), b"".join(mine)):
            async with chain.reading() as session:
                by_index = await store.nodes_of_level(session, level, first, last)
            for offset, value in enumerate(mine):
                have = by_index.get(first + offset)
                if have is None:
                    out.add(
                        Finding(
                            "node.missing",
                            f"node (level {level}, index {first + offset}) is not stored",
                            node=(level, first + offset),
                        )
                    )
                elif have != value:
                    out.add(
                        Finding(
                            "node.mismatch",
                            f"node (level {level}, index {first + offset}): stored "
                            f"{have.hex()} != recomputed {value.hex()}",
                            node=(level, first + offset),
                        )
                    )
        level += 1
    return checked
